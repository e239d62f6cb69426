#!/usr/bin/env bash
# Makes the small sample media roomgate's tests and benchmarks use. Deterministic inputs (lavfi testsrc2 and
# sine), so re-running gives equivalent files. Needs the ffmpeg CLI (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")"
FF="ffmpeg -hide_banner -loglevel error -y"
V="-f lavfi -i testsrc2=size=1280x720:rate=30"
A="-f lavfi -i sine=frequency=440:sample_rate=44100"
DUR=6

# 720p30 H.264 constrained baseline (no B-frames) + AAC, 2 s GOP: what an RTMP anchor should send.
$FF $V $A -t $DUR -c:v libx264 -preset veryfast -profile:v baseline -g 60 -keyint_min 60 -sc_threshold 0 -b:v 600k \
  -c:a aac -b:a 96k -ac 2 sample-720p30-baseline.flv
# The same with B-frames (high profile, 3 B-frames): TRTC and roomgate refuse it over RTMP.
$FF $V $A -t $DUR -c:v libx264 -preset veryfast -profile:v high -bf 3 -g 60 -b:v 600k \
  -c:a aac -b:a 96k -ac 2 sample-720p30-bframes.flv
# MP4 (baseline + AAC), for pull sources.
$FF $V $A -t $DUR -c:v libx264 -preset veryfast -profile:v baseline -g 60 -b:v 600k -c:a aac -b:a 96k -ac 2 \
  -movflags +faststart sample-720p30.mp4
# MP4 with B-frames (high profile): a pull task re-encodes it to baseline without B-frames.
$FF $V $A -t $DUR -c:v libx264 -preset veryfast -profile:v high -bf 3 -g 60 -b:v 600k -c:a aac -b:a 96k -ac 2 \
  -movflags +faststart sample-720p30-bframes.mp4
# HLS set (2 s segments) of the baseline stream.
mkdir -p hls
$FF -i sample-720p30-baseline.flv -c copy -f hls -hls_time 2 -hls_list_size 0 -hls_segment_filename 'hls/seg%02d.ts' hls/index.m3u8
# MP3, audio only.
$FF $A -t $DUR -c:a libmp3lame -b:a 96k sample.mp3
# Small MPEG-TS files (as SRT publishers send them) for the TS demuxer's unit tests.
SMALL_V="-f lavfi -i testsrc=size=160x120:rate=30"
SMALL_A="-f lavfi -i sine=frequency=440:sample_rate=48000"
$FF $SMALL_V $SMALL_A -t 1 -c:v libx264 -profile:v baseline -g 15 -pix_fmt yuv420p -c:a aac -b:a 32k -f mpegts x264_aac.ts
$FF $SMALL_V $SMALL_A -t 0.5 -c:v libx264 -profile:v baseline -g 15 -pix_fmt yuv420p -c:a libopus -b:a 32k \
  -f mpegts x264_opus.ts
ls -l sample* hls *.ts
