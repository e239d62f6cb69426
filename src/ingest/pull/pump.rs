//! Playing an opened source: read a packet, wait until it is due (real time, scaled by Tempo), publish it into the
//! room (passthrough) or hand it to a transcoder, report progress. Between packets, `verdict` says whether the
//! opening must end (stop, kick, MaxDuration, new URL, a tuning that passthrough audio cannot follow) or pause.

use super::control::{verdict, Verdict};
use super::open::{start_video_transcoder, AudioPath, Chosen, OpenedSource, VideoPath};
use super::pacer::{rescale_us, Pacer};
use super::runner::{Ended, TaskRun};
use super::{IngestEventKind, TaskState};
use crate::media::h264::{self, AvcConfig};
use crate::media::transcode::StreamParameters;
use crate::media::{Codec, Frame, AUDIO_CLOCK, VIDEO_CLOCK};
use crate::room::AnchorHandle;
use bytes::Bytes;
use ffmpeg_next as ff;
use std::time::{Duration, Instant};

/// Play `src` until it ends, breaks or the task is told otherwise.
pub(super) fn pump(run: &mut TaskRun<'_>, mut src: OpenedSource) -> Ended {
    let task = run.task;
    let spec = task.spec();
    let kicked = run.anchor.as_ref().expect("joined when opened").kick_signal();
    let idle_limit = spec.idle_timeout.filter(|s| *s > 0);
    let counters = crate::ingest::InputCounters::new("pull");
    let mut clock: Option<Pacer> = None;
    let mut started = false;
    let mut waiting_keyframe = true;
    let mut packet = ff::Packet::empty();
    loop {
        let desired = task.control.snapshot();
        match verdict(&desired, kicked.borrow().is_some(), &src.terms, Instant::now()) {
            None => {}
            Some(Verdict::Stop) => return Ended::Stopped,
            Some(Verdict::Replaced) => return Ended::Replaced,
            Some(Verdict::MaxDuration) => return Ended::MaxDuration,
            Some(Verdict::UrlChanged) => return Ended::UrlChanged,
            Some(Verdict::Reconfigure) => return Ended::Reconfigure,
            Some(Verdict::Pause) => {
                task.set_status(|st| st.state = TaskState::Paused);
                let paused_at = Instant::now();
                while task.control.snapshot().paused && !task.control.stop_requested() {
                    task.control.sleep(Duration::from_millis(200));
                }
                if let Some(c) = clock.as_mut() {
                    c.shift(paused_at.elapsed());
                }
                task.set_status(|st| st.state = TaskState::Playing);
                continue;
            }
        }
        src.deadline.set(src.read_timeout);
        match packet.read(&mut src.input) {
            Ok(()) => {}
            Err(ff::Error::Eof) if !started => return src.failed("empty source: it ended before any media".into()),
            Err(ff::Error::Eof) => return Ended::Eof,
            Err(_) if task.control.stop_requested() => return Ended::Stopped,
            Err(ff::Error::InvalidData) => continue,
            Err(_) if src.deadline.passed() => {
                return match idle_limit {
                    Some(secs) => Ended::Idle(secs),
                    None => src.failed(format!("no data from the source for {} s", src.read_timeout.as_secs())),
                };
            }
            Err(e) => return src.failed(format!("reading the source failed: {e}")),
        }
        let idx = packet.stream();
        let (time_base, is_video) = match (&src.video, &src.audio) {
            (Some(v), _) if v.index == idx => (v.time_base, true),
            (_, Some(a)) if a.index == idx => (a.time_base, false),
            _ => continue,
        };
        let Some(ts) = packet.pts().or(packet.dts()) else {
            continue;
        };
        if packet.data().is_none() {
            continue;
        }
        // Real time: wait until the packet is due (waking for stop/pause/update).
        let media_us = rescale_us(ts, time_base);
        let tempo = task.control.snapshot().tempo; // as it is now, after a read that may have taken long
        let pacer = clock.get_or_insert_with(|| Pacer::new(media_us, run.epoch, tempo, Instant::now()));
        pacer.follow(media_us);
        pacer.set_tempo(media_us, tempo);
        let (due, out_us) = pacer.due(media_us);
        loop {
            let now = Instant::now();
            let d = task.control.snapshot();
            if now >= due || d.stop || d.paused {
                break;
            }
            task.control.sleep((due - now).min(Duration::from_millis(100)));
        }
        let received_at = Instant::now();
        let position = src
            .seek_base_ms
            .max(0)
            .saturating_add(media_us.saturating_sub(pacer.first_media_us).max(0) / 1000);
        let anchor = run.anchor.as_ref().expect("joined when opened");
        let sent = if is_video {
            let dts_us = packet.dts().map(|d| rescale_us(d, time_base)).unwrap_or(media_us);
            let (_, dts_out) = pacer.due(dts_us);
            let at = Stamp {
                pts_us: out_us,
                dts_us: dts_out,
                received_at,
            };
            video_packet(run, &mut src, &packet, at, &mut waiting_keyframe)
        } else {
            audio_packet(anchor, &src, &packet, out_us, received_at)
        };
        match sent {
            Sent::Published => {}
            Sent::Skipped => continue,
            Sent::Ended(e) => return e,
        }
        if is_video {
            &counters.video_frames
        } else {
            &counters.audio_frames
        }
        .increment(1);
        if !started {
            started = true;
            task.set_status(|st| {
                st.state = TaskState::Playing;
                st.reason.clear();
            });
            run.env.events.emit(task, IngestEventKind::Started);
        }
        task.set_status(|st| st.position_ms = position);
        run.progress(position);
    }
}

/// Where a packet sits on the output timeline.
#[derive(Clone, Copy)]
struct Stamp {
    /// µs since the task's epoch.
    pts_us: i64,
    dts_us: i64,
    received_at: Instant,
}

/// What became of one packet.
enum Sent {
    Published,
    /// Not published (waiting for a keyframe, malformed, switching paths): not counted.
    Skipped,
    Ended(Ended),
}

fn clock_ticks(us: i64, clock: u32) -> u64 {
    (us.max(0) as u64).saturating_mul(clock as u64) / 1_000_000
}

/// One video packet: passthrough (Annex-B, from the first keyframe; B-frames found switch to re-encoding) or into
/// the transcoder.
fn video_packet(
    run: &TaskRun<'_>,
    src: &mut OpenedSource,
    packet: &ff::Packet,
    at: Stamp,
    waiting_keyframe: &mut bool,
) -> Sent {
    let task = run.task;
    let anchor = run.anchor.as_ref().expect("joined when opened");
    let data = packet.data().unwrap_or_default();
    let keyframe = packet.is_key();
    let pts90 = clock_ticks(at.pts_us, VIDEO_CLOCK);
    let Some(Chosen { index, path, .. }) = src.video.as_mut() else {
        return Sent::Skipped;
    };
    match path {
        VideoPath::Passthrough { avcc, extradata } => {
            let annexb = match to_annex_b(avcc.as_ref(), extradata, data, keyframe) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(task = %task.id, error = %e, "malformed H.264 packet skipped");
                    return Sent::Skipped;
                }
            };
            if *waiting_keyframe && !keyframe {
                return Sent::Skipped;
            }
            if h264::has_b_slice(&annexb) {
                // The stream header said no B-frames, the stream has them: re-encode from here on.
                tracing::info!(task = %task.id, "B-frames found in an H.264 source; switching to re-encoding");
                let params = StreamParameters(src.input.stream(*index).expect("stream index").parameters());
                let max_pixels = run.env.config.video.max_pixels;
                match start_video_transcoder(&params, src.info.fps, &task.spec(), max_pixels, anchor, &src.label) {
                    Ok(t) => {
                        *path = VideoPath::Transcode(t);
                        src.info.video_passthrough = false;
                        task.set_status(|st| st.source = Some(src.info.clone()));
                        *waiting_keyframe = true;
                        return Sent::Skipped;
                    }
                    Err(e) => {
                        let fps = src.info.fps.map(|f| f.round() as u32);
                        return Sent::Ended(src.failed(format!("cannot re-encode B-frames: {e} (fps {fps:?})")));
                    }
                }
            }
            *waiting_keyframe = false;
            anchor.publish(Frame {
                codec: Codec::H264,
                pts: pts90,
                keyframe,
                data: annexb[..].into(),
                received_at: at.received_at,
            });
        }
        VideoPath::Transcode(t) => {
            if *waiting_keyframe && !keyframe {
                return Sent::Skipped;
            }
            *waiting_keyframe = false;
            let dts90 = clock_ticks(at.dts_us, VIDEO_CLOCK);
            if t.push_blocking(Bytes::copy_from_slice(data), pts90, dts90.min(pts90), at.received_at)
                .is_err()
            {
                return Sent::Ended(src.failed("the video transcoder stopped".to_string()));
            }
        }
    }
    Sent::Published
}

/// One audio packet: Opus published as is, anything else into the transcoder.
fn audio_packet(
    anchor: &AnchorHandle,
    src: &OpenedSource,
    packet: &ff::Packet,
    out_us: i64,
    received_at: Instant,
) -> Sent {
    let data = packet.data().unwrap_or_default();
    match src.audio.as_ref().map(|a| &a.path) {
        None => Sent::Skipped,
        Some(AudioPath::Passthrough) => {
            anchor.publish(Frame {
                codec: Codec::Opus,
                pts: clock_ticks(out_us, AUDIO_CLOCK),
                keyframe: false,
                data: data.into(),
                received_at,
            });
            Sent::Published
        }
        Some(AudioPath::Transcode(t)) => {
            match t.push_blocking(Bytes::copy_from_slice(data), out_us as u64 / 1000, received_at) {
                Ok(()) => Sent::Published,
                Err(_) => Sent::Ended(src.failed("the audio transcoder stopped".to_string())),
            }
        }
    }
}

/// An H.264 packet as Annex-B: AVCC (MP4, FLV, MKV) converted with the stream's avcC; Annex-B (MPEG-TS, HLS) with
/// the parameter sets of the extradata in front of keyframes that lack them.
fn to_annex_b(avcc: Option<&AvcConfig>, extradata: &Bytes, data: &[u8], keyframe: bool) -> Result<Bytes, String> {
    match avcc {
        Some(cfg) => cfg
            .to_annex_b(data, keyframe)
            .map(|(b, _)| b)
            .map_err(|e| e.to_string()),
        None => Ok(annex_b_with_parameter_sets(data, keyframe, extradata)),
    }
}

/// An Annex-B access unit (MPEG-TS, HLS): keyframes get the parameter sets from the extradata when they lack them.
fn annex_b_with_parameter_sets(data: &[u8], keyframe: bool, extradata: &Bytes) -> Bytes {
    let has_sps = h264::annex_b_nals(data).any(|n| n.first().map(|b| b & 0x1F) == Some(h264::NAL_SPS));
    if keyframe && !has_sps && !extradata.is_empty() {
        let mut v = Vec::with_capacity(extradata.len() + data.len());
        v.extend_from_slice(extradata);
        v.extend_from_slice(data);
        Bytes::from(v)
    } else {
        Bytes::copy_from_slice(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_b_keyframes_get_parameter_sets() {
        let extradata = Bytes::from_static(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3]);
        let idr = [0u8, 0, 0, 1, 0x65, 9, 9];
        let out = annex_b_with_parameter_sets(&idr, true, &extradata);
        assert!(out.starts_with(&extradata));
        assert!(out.ends_with(&idr));
        let delta = [0u8, 0, 0, 1, 0x41, 9];
        assert_eq!(&annex_b_with_parameter_sets(&delta, false, &extradata)[..], &delta);
        let with_sps = [0u8, 0, 0, 1, 0x67, 5, 0, 0, 0, 1, 0x65, 9];
        assert_eq!(&annex_b_with_parameter_sets(&with_sps, true, &extradata)[..], &with_sps);
    }

    #[test]
    fn output_timestamps_are_clock_ticks_and_never_negative() {
        assert_eq!(clock_ticks(1_000_000, VIDEO_CLOCK), 90_000);
        assert_eq!(clock_ticks(20_000, AUDIO_CLOCK), 960);
        assert_eq!(clock_ticks(-5, VIDEO_CLOCK), 0);
        assert_eq!(clock_ticks(i64::MAX, VIDEO_CLOCK), u64::MAX / 1_000_000);
    }
}
