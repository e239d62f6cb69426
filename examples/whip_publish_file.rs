//! Publish a local media file over WHIP as an anchor, in real time (as `ffmpeg -re` would): a send-only WebRTC
//! peer (str0m, over UDP) POSTs its offer to a WHIP URL, then sends the file's video as H.264 and its audio as
//! Opus. What is already H.264 Baseline / Constrained Baseline or Opus is sent untouched; anything else is
//! decoded and re-encoded with libav (ffmpeg-next): libx264 baseline without B-frames, libopus 48 kHz stereo.
//!
//! Run (a UserSig from `cargo run --example usersig -- <SDKAPPID> <KEY> cam1`):
//! ```sh
//! cargo run --example whip_publish_file -- show.mp4 \
//!     'http://127.0.0.1:8080/v2/pub/1400000001/demo_room?SessionID=cam1' --token <UserSig of cam1> --loop
//! ```
//! Output (stdout): `Source: show.mp4: video h264 (High) 1920x1080, audio aac 44100 Hz 2 ch, 60.0 s`,
//! `Video: h264 (High) -> H.264 baseline (libx264, 4000 kb/s)` or `Video: H.264 (Constrained Baseline) sent
//! as is`, `Audio: aac -> Opus 48000 Hz stereo 64 kb/s` or `Audio: Opus sent as is`, `Connected: ...`, and at
//! the end `Sent: 1800 video frames, 3000 audio packets, 60.0 s`. Stop with Ctrl-C, `--seconds`, or the end of
//! the file (without `--loop`); the WHIP session is then ended with a DELETE.
//!
//! Timing: the file's own timestamps pace the sending, mapped to each track's RTP clock (90 kHz video, 48 kHz
//! audio) from one common origin, so the gateway sees both tracks in sync.

mod common;

use clap::Parser;
use common::{Peer, Polled};
use ffmpeg_next as ff;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaTime, Mid};
use str0m::Event;

#[derive(Parser, Clone)]
#[command(about = "Publish a media file over WHIP as an anchor (H.264 baseline + Opus, re-encoded only if needed)")]
struct Args {
    /// The media file (anything libav reads: mp4, mkv, webm, flv, ts...).
    file: PathBuf,
    /// The WHIP URL: http(s)://HOST/v2/pub/<sdkappid>/<room>?SessionID=<userid>
    url: url::Url,
    /// The anchor's UserSig (sent as `Authorization: Bearer`).
    #[arg(long, env = "WHIP_TOKEN")]
    token: Option<String>,
    /// Start over at the end of the file, until stopped.
    #[arg(long = "loop")]
    repeat: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Bitrate of re-encoded video, kb/s (default: about 0.1 bit per pixel per frame).
    #[arg(long)]
    video_kbps: Option<u32>,
    /// Bitrate of re-encoded audio, kb/s.
    #[arg(long, default_value_t = 64)]
    audio_kbps: u32,
    /// Local IP for the UDP socket (default: the address this machine uses to reach the gateway).
    #[arg(long)]
    local_ip: Option<std::net::IpAddr>,
}

#[tokio::main]
async fn main() {
    common::exit_on_error(run(Args::parse()).await);
}

async fn run(args: Args) -> Result<(), String> {
    ff::init().map_err(|e| format!("libav: {e}"))?;
    ff::log::set_level(ff::log::Level::Error);

    // 1. Open the file first, on the thread that will send it (libav's contexts stay on one thread): a file we
    //    cannot read should not cost the gateway a session.
    let stop = Arc::new(AtomicBool::new(false));
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let (peer_tx, peer_rx) = std::sync::mpsc::channel::<Peer>();
    let (options, halt) = (args.clone(), stop.clone());
    let sender = std::thread::spawn(move || -> Result<Sent, String> {
        let source = match Source::open(&options) {
            Ok(s) => s,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return Ok(Sent::default());
            }
        };
        let _ = opened_tx.send(Ok(()));
        match peer_rx.recv() {
            Ok(peer) => peer.send(source, options.seconds, &halt),
            Err(_) => Ok(Sent::default()), // the gateway refused the offer
        }
    });
    opened_rx.await.map_err(|_| "the sender thread stopped")??;

    // 2. WHIP: a send-only peer (H.264 video + Opus audio) POSTs its offer and gets the answer.
    let token = args.token.as_deref();
    let (peer, session) = common::connect("WHIP", &args.url, token, args.local_ip, Direction::SendOnly).await?;

    // 3. Send on the source's thread (str0m and libav are synchronous); Ctrl-C stops it.
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.store(true, Ordering::Relaxed);
    });
    peer_tx.send(peer).map_err(|_| "the sender thread stopped")?;
    let result = tokio::task::spawn_blocking(move || sender.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the sender panicked")?;

    // 4. End the WHIP session: the anchor leaves the room now rather than at the gateway's timeout.
    session.end().await;
    let sent = result?;
    println!(
        "Sent: {} video frames, {} audio packets, {:.1} s",
        sent.video_frames, sent.audio_packets, sent.seconds
    );
    Ok(())
}

/// One frame ready to send, timed in seconds on the file's timeline.
struct Timed {
    at: f64,
    media: Media,
}

enum Media {
    /// An H.264 access unit, Annex B.
    Video(Vec<u8>),
    /// One Opus packet.
    Audio(Vec<u8>),
}

/// The file, demuxed, with what each kept stream needs to become H.264 / Opus.
struct Source {
    input: ff::format::context::Input,
    video: Option<(usize, ff::Rational, VideoPath)>,
    audio: Option<(usize, ff::Rational, AudioPath)>,
    /// Added to every timestamp: the length of the plays before this one (`--loop`).
    offset: f64,
    /// The latest timestamp seen in this play (where the next loop starts).
    end: f64,
    /// The first timestamp of the file (files need not start at 0).
    start: Option<f64>,
    repeat: bool,
    ready: VecDeque<Timed>,
}

/// Video: sent as is (length-prefixed NAL units turned into Annex B), or decoded and re-encoded.
enum VideoPath {
    Copy {
        /// Bytes of each NAL length prefix in AVCC (mp4/mkv/flv); None when the file is Annex B already (ts, .h264).
        nal_length: Option<usize>,
        /// SPS and PPS (Annex B), put before every keyframe so a viewer can start there.
        parameter_sets: Vec<u8>,
    },
    Encode(Box<VideoEncode>),
}

struct VideoEncode {
    decoder: ff::decoder::Video,
    scaler: Option<(ff::software::scaling::Context, ff::format::Pixel, u32, u32)>,
    x264: ff::encoder::Video,
    width: u32,
    height: u32,
    /// The decoder's time base, which the encoder uses too.
    time_base: ff::Rational,
    /// The encoder's bitrate, bit/s.
    bits: u64,
}

/// Audio: Opus sent as is, or decoded, resampled to 48 kHz stereo and encoded in 20 ms Opus packets.
enum AudioPath {
    Copy,
    Encode(Box<AudioEncode>),
}

struct AudioEncode {
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    opus: ff::encoder::Audio,
    /// Interleaved stereo samples waiting to fill a 960-sample Opus frame.
    fifo: Vec<i16>,
    /// File time (seconds) of the first sample in `fifo`.
    fifo_at: Option<f64>,
}

const OPUS_FRAME: usize = 960;

/// The longest wait for a datagram between two frames to send (a 30 fps video's frames come 33 ms apart).
const RECEIVE_WAIT: Duration = Duration::from_millis(10);

impl Source {
    fn open(args: &Args) -> Result<Source, String> {
        let input = ff::format::input(&args.file).map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
        let mut described = Vec::new();
        let mut plan = Vec::new();

        let video = match input.streams().best(ff::media::Type::Video) {
            None => None,
            Some(s) => {
                let params = s.parameters();
                let (codec, profile) = (params.id(), unsafe { (*params.as_ptr()).profile });
                let (w, h) = unsafe { ((*params.as_ptr()).width as u32, (*params.as_ptr()).height as u32) };
                let name = format!("{} ({})", codec_name(codec), profile_name(codec, profile));
                described.push(format!("video {name} {w}x{h}"));
                // Baseline (66) and Constrained Baseline (66 | 0x200) have no B-frames: every player decodes them.
                let path = if codec == ff::codec::Id::H264 && (profile == 66 || profile == 66 | 0x200) {
                    plan.push(format!("Video: H.264 ({}) sent as is", profile_name(codec, profile)));
                    let extradata = unsafe {
                        let p = params.as_ptr();
                        if (*p).extradata.is_null() {
                            &[][..]
                        } else {
                            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize)
                        }
                    };
                    avcc_config(extradata)
                } else {
                    let encode = VideoEncode::open(params, s.avg_frame_rate(), args.video_kbps)?;
                    plan.push(format!(
                        "Video: {name} -> H.264 baseline (libx264, {} kb/s)",
                        encode.bits / 1000
                    ));
                    VideoPath::Encode(Box::new(encode))
                };
                Some((s.index(), s.time_base(), path))
            }
        };
        let audio = match input.streams().best(ff::media::Type::Audio) {
            None => None,
            Some(s) => {
                let params = s.parameters();
                let codec = params.id();
                let (rate, channels) = unsafe {
                    let p = params.as_ptr();
                    #[allow(deprecated)]
                    ((*p).sample_rate, (*p).channels)
                };
                described.push(format!("audio {} {rate} Hz {channels} ch", codec_name(codec)));
                let path = if codec == ff::codec::Id::OPUS {
                    plan.push("Audio: Opus sent as is".to_string());
                    AudioPath::Copy
                } else {
                    plan.push(format!(
                        "Audio: {} -> Opus 48000 Hz stereo {} kb/s",
                        codec_name(codec),
                        args.audio_kbps
                    ));
                    AudioPath::Encode(Box::new(AudioEncode::open(params, args.audio_kbps)?))
                };
                Some((s.index(), s.time_base(), path))
            }
        };
        if video.is_none() && audio.is_none() {
            return Err(format!("{} has neither video nor audio", args.file.display()));
        }
        let duration = input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE);
        println!(
            "Source: {}: {}, {duration:.1} s",
            args.file.display(),
            described.join(", ")
        );
        for line in plan {
            println!("{line}");
        }
        Ok(Source {
            input,
            video,
            audio,
            offset: 0.0,
            end: 0.0,
            start: None,
            repeat: args.repeat,
            ready: VecDeque::new(),
        })
    }

    /// The next frame in file order, or None at the end (of the last play).
    fn next(&mut self) -> Result<Option<Timed>, String> {
        loop {
            if let Some(t) = self.ready.pop_front() {
                return Ok(Some(t));
            }
            let mut packet = ff::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => self.demuxed(&packet)?,
                Err(ff::Error::Eof) if self.repeat => {
                    // Start over: the next play begins where this one ended, one frame later.
                    self.offset = self.end + 0.040;
                    self.start = None;
                    self.input
                        .seek(0, ..)
                        .map_err(|e| format!("cannot seek back to the start: {e}"))?;
                    if let Some((_, _, VideoPath::Encode(v))) = &mut self.video {
                        v.decoder.flush();
                    }
                    if let Some((_, _, AudioPath::Encode(a))) = &mut self.audio {
                        a.decoder.flush();
                        a.fifo.clear();
                        a.fifo_at = None;
                    }
                }
                Err(ff::Error::Eof) => return Ok(None),
                Err(e) => return Err(format!("reading the file: {e}")),
            }
        }
    }

    /// Turn one demuxed packet into zero or more frames to send.
    fn demuxed(&mut self, packet: &ff::Packet) -> Result<(), String> {
        let index = packet.stream();
        let Some(ts) = packet.pts().or(packet.dts()) else {
            return Ok(()); // untimed: nothing to pace it by
        };
        let Some(data) = packet.data() else { return Ok(()) };
        let mut out = Vec::new();
        if let Some((i, tb, path)) = &mut self.video {
            if *i == index {
                let at = f64::from(*tb) * ts as f64;
                match path {
                    VideoPath::Copy {
                        nal_length,
                        parameter_sets,
                    } => {
                        let mut au = Vec::with_capacity(data.len() + parameter_sets.len() + 16);
                        if packet.is_key() {
                            au.extend_from_slice(parameter_sets);
                        }
                        match nal_length {
                            Some(n) => avcc_to_annex_b(data, *n, &mut au)?,
                            None => au.extend_from_slice(data),
                        }
                        out.push((at, Media::Video(au)));
                    }
                    VideoPath::Encode(v) => v.push(packet, &mut out)?,
                }
            }
        }
        if let Some((i, tb, path)) = &mut self.audio {
            if *i == index {
                let at = f64::from(*tb) * ts as f64;
                match path {
                    AudioPath::Copy => out.push((at, Media::Audio(data.to_vec()))),
                    AudioPath::Encode(a) => a.push(packet, *tb, &mut out)?,
                }
            }
        }
        for (at, media) in out {
            let start = *self.start.get_or_insert(at);
            let at = self.offset + (at - start).max(0.0);
            self.end = self.end.max(at);
            self.ready.push_back(Timed { at, media });
        }
        Ok(())
    }
}

impl VideoEncode {
    fn open(params: ff::codec::Parameters, rate: ff::Rational, kbps: Option<u32>) -> Result<Self, String> {
        let mut ctx = ff::codec::Context::from_parameters(params).map_err(|e| e.to_string())?;
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: 2,
            safe: false,
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| format!("no decoder for this video: {e}"))?;
        let (width, height) = (decoder.width() & !1, decoder.height() & !1);
        if width == 0 || height == 0 {
            return Err("the video has no picture size".into());
        }
        let fps = if rate.numerator() > 0 && rate.denominator() > 0 {
            (f64::from(rate).round() as u32).clamp(1, 120)
        } else {
            30
        };
        let time_base = decoder.time_base();
        let time_base = if time_base.numerator() > 0 {
            time_base
        } else {
            ff::Rational::new(1, 90_000)
        };
        let codec = ff::encoder::find_by_name("libx264").ok_or("this libav has no libx264")?;
        let mut enc = ff::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| e.to_string())?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(ff::Rational::new(fps as i32, 1)));
        enc.set_gop(fps * 2); // a keyframe every 2 s: viewers start within 2 s of joining
        enc.set_max_b_frames(0);
        let bits = kbps.map_or_else(
            || (width as u64 * height as u64 * fps as u64 / 10).clamp(300_000, 8_000_000),
            |k| k as u64 * 1000,
        );
        enc.set_bit_rate(bits as usize);
        enc.set_max_bit_rate(bits as usize * 3 / 2);
        let vbv = format!("vbv-bufsize={}", bits / 1000);
        let opts: ff::Dictionary = [
            ("preset", "veryfast"),
            ("tune", "zerolatency"),
            ("profile", "baseline"),
            ("forced-idr", "1"),
            ("x264-params", vbv.as_str()),
        ]
        .into_iter()
        .collect();
        // No global header: x264 then repeats SPS/PPS before every keyframe, in the stream.
        let x264 = enc.open_as_with(codec, opts).map_err(|e| format!("libx264: {e}"))?;
        Ok(VideoEncode {
            decoder,
            scaler: None,
            x264,
            width,
            height,
            time_base,
            bits,
        })
    }

    fn push(&mut self, packet: &ff::Packet, out: &mut Vec<(f64, Media)>) -> Result<(), String> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(()); // a damaged packet: skip it, as players do
        }
        let mut decoded = ff::frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let Some(pts) = decoded.timestamp().or(decoded.pts()) else {
                continue;
            };
            let (format, w, h) = (decoded.format(), decoded.width(), decoded.height());
            let mut picture = if format == ff::format::Pixel::YUV420P && (w, h) == (self.width, self.height) {
                decoded.clone()
            } else {
                let stale = !matches!(&self.scaler, Some((_, f, sw, sh)) if (*f, *sw, *sh) == (format, w, h));
                if stale {
                    let scaler = ff::software::scaling::Context::get(
                        format,
                        w,
                        h,
                        ff::format::Pixel::YUV420P,
                        self.width,
                        self.height,
                        ff::software::scaling::Flags::BILINEAR,
                    )
                    .map_err(|e| format!("scaler: {e}"))?;
                    self.scaler = Some((scaler, format, w, h));
                }
                let mut scaled = ff::frame::Video::empty();
                let (scaler, ..) = self.scaler.as_mut().expect("set above");
                scaler.run(&decoded, &mut scaled).map_err(|e| format!("scaler: {e}"))?;
                scaled
            };
            picture.set_pts(Some(pts));
            picture.set_kind(ff::picture::Type::None);
            self.x264.send_frame(&picture).map_err(|e| format!("libx264: {e}"))?;
            let mut encoded = ff::Packet::empty();
            while self.x264.receive_packet(&mut encoded).is_ok() {
                if let (Some(data), Some(pts)) = (encoded.data(), encoded.pts()) {
                    out.push((f64::from(self.time_base) * pts as f64, Media::Video(data.to_vec())));
                }
            }
        }
        Ok(())
    }
}

impl AudioEncode {
    fn open(params: ff::codec::Parameters, kbps: u32) -> Result<Self, String> {
        let ctx = ff::codec::Context::from_parameters(params).map_err(|e| e.to_string())?;
        let decoder = ctx
            .decoder()
            .audio()
            .map_err(|e| format!("no decoder for this audio: {e}"))?;
        let codec = ff::encoder::find_by_name("libopus").ok_or("this libav has no libopus")?;
        let mut enc = ff::codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| e.to_string())?;
        enc.set_rate(48_000);
        enc.set_channel_layout(ff::ChannelLayout::STEREO);
        enc.set_channels(2);
        enc.set_format(ff::format::Sample::I16(ff::format::sample::Type::Packed));
        enc.set_bit_rate(kbps as usize * 1000);
        enc.set_time_base(ff::Rational::new(1, 48_000));
        let mut opts = ff::Dictionary::new();
        opts.set("frame_duration", "20");
        let opus = enc.open_as_with(codec, opts).map_err(|e| format!("libopus: {e}"))?;
        Ok(AudioEncode {
            decoder,
            resampler: None,
            opus,
            fifo: Vec::new(),
            fifo_at: None,
        })
    }

    fn push(&mut self, packet: &ff::Packet, tb: ff::Rational, out: &mut Vec<(f64, Media)>) -> Result<(), String> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(()); // a damaged packet: skip it
        }
        let mut decoded = ff::frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let layout = if decoded.channel_layout().bits() == 0 {
                ff::ChannelLayout::default(decoded.channels() as i32)
            } else {
                decoded.channel_layout()
            };
            let target = ff::format::Sample::I16(ff::format::sample::Type::Packed);
            let stale = self.resampler.as_ref().is_none_or(|r| {
                r.input().format != decoded.format()
                    || r.input().rate != decoded.rate()
                    || r.input().channel_layout != layout
            });
            if stale {
                let r = ff::software::resampling::Context::get(
                    decoded.format(),
                    layout,
                    decoded.rate(),
                    target,
                    ff::ChannelLayout::STEREO,
                    48_000,
                )
                .map_err(|e| format!("resampler: {e}"))?;
                self.resampler = Some(r);
            }
            decoded.set_channel_layout(layout);
            // Room for the rate change plus what the resampler holds back (sized by hand: a frame sized like the
            // input would leave part of every upsampled frame inside the resampler, a growing delay).
            let capacity = decoded.samples() * 48_000 / decoded.rate().max(1) as usize + 256;
            let mut resampled = ff::frame::Audio::new(target, capacity, ff::ChannelLayout::STEREO);
            resampled.set_rate(48_000);
            self.resampler
                .as_mut()
                .expect("set above")
                .run(&decoded, &mut resampled)
                .map_err(|e| format!("resampler: {e}"))?;
            if self.fifo_at.is_none() {
                let ts = decoded.timestamp().or(decoded.pts()).or(packet.pts()).unwrap_or(0);
                self.fifo_at = Some(f64::from(tb) * ts as f64);
            }
            let bytes = &resampled.data(0)[..resampled.samples() * 4];
            self.fifo
                .extend(bytes.chunks_exact(2).map(|b| i16::from_ne_bytes([b[0], b[1]])));
            while self.fifo.len() >= OPUS_FRAME * 2 {
                let mut frame = ff::frame::Audio::new(target, OPUS_FRAME, ff::ChannelLayout::STEREO);
                frame.set_rate(48_000);
                let at = self.fifo_at.unwrap_or(0.0);
                frame.set_pts(Some((at * 48_000.0).round() as i64));
                for (dst, s) in frame
                    .data_mut(0)
                    .chunks_exact_mut(2)
                    .zip(self.fifo.drain(..OPUS_FRAME * 2))
                {
                    dst.copy_from_slice(&s.to_ne_bytes());
                }
                self.fifo_at = Some(at + OPUS_FRAME as f64 / 48_000.0);
                self.opus.send_frame(&frame).map_err(|e| format!("libopus: {e}"))?;
                let mut encoded = ff::Packet::empty();
                while self.opus.receive_packet(&mut encoded).is_ok() {
                    if let Some(data) = encoded.data() {
                        out.push((at, Media::Audio(data.to_vec())));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The avcC record of mp4/mkv/flv H.264 (ISO 14496-15 §5.2.4.1): the NAL length size and the SPS/PPS as
/// Annex B. Without one the stream is taken as Annex B already.
fn avcc_config(extradata: &[u8]) -> VideoPath {
    if extradata.len() < 7 || extradata[0] != 1 {
        return VideoPath::Copy {
            nal_length: None,
            parameter_sets: Vec::new(),
        };
    }
    let nal_length = (extradata[4] & 3) as usize + 1;
    let mut parameter_sets = Vec::new();
    let mut rest = &extradata[5..];
    // SPS count (low 5 bits), the SPSs, then the PPS count and the PPSs, each preceded by a 16-bit length.
    for mask in [0x1f, 0xff] {
        let Some((&count, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        for _ in 0..(count & mask) {
            if rest.len() < 2 {
                break;
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let Some(nal) = rest.get(2..2 + len) else { break };
            parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            parameter_sets.extend_from_slice(nal);
            rest = &rest[2 + len..];
        }
    }
    VideoPath::Copy {
        nal_length: Some(nal_length),
        parameter_sets,
    }
}

/// Length-prefixed NAL units (AVCC) to start-code-prefixed ones (Annex B, what RTP packetizers take).
fn avcc_to_annex_b(mut data: &[u8], nal_length: usize, out: &mut Vec<u8>) -> Result<(), String> {
    while !data.is_empty() {
        if data.len() < nal_length {
            return Err("a truncated H.264 packet in the file".into());
        }
        let len = data[..nal_length].iter().fold(0usize, |n, &b| n << 8 | b as usize);
        let nal = data
            .get(nal_length..nal_length + len)
            .ok_or("an H.264 NAL unit longer than its packet")?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        data = &data[nal_length + len..];
    }
    Ok(())
}

fn codec_name(id: ff::codec::Id) -> String {
    ff::decoder::find(id).map_or_else(|| format!("{id:?}").to_lowercase(), |c| c.name().to_string())
}

fn profile_name(id: ff::codec::Id, profile: i32) -> String {
    let name = unsafe { ff::ffi::avcodec_profile_name(id.into(), profile) };
    if name.is_null() {
        format!("profile {profile}")
    } else {
        unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()
    }
}

/// What was sent.
#[derive(Default)]
struct Sent {
    video_frames: u64,
    audio_packets: u64,
    seconds: f64,
}

impl Peer {
    /// Send the source in real time until its end, `limit` seconds, `stop`, or the session's end.
    fn send(mut self, mut source: Source, limit: Option<f64>, stop: &AtomicBool) -> Result<Sent, String> {
        let began = Instant::now();
        let mut sent = Sent::default();
        let mut clock: Option<Instant> = None; // when file time 0 is due; set once connected
        let mut next = source.next()?;
        let mut buf = [0u8; 2000];
        while !stop.load(Ordering::Relaxed) {
            let timeout = loop {
                match self.poll()? {
                    Polled::Timeout(t) => break t,
                    Polled::Event(Event::Connected) => clock = Some(Instant::now()),
                    // A re-encoded stream has a keyframe every 2 s; a copied one has the file's own.
                    Polled::Event(_) => {}
                }
            };
            if !self.rtc.is_alive() {
                return Err("the WebRTC session ended".into());
            }
            let Some(t0) = clock else {
                if began.elapsed() > Duration::from_secs(20) {
                    return Err("no WebRTC connection within 20 s (is the gateway's UDP port reachable?)".into());
                }
                self.receive(timeout, RECEIVE_WAIT, &mut buf)?;
                continue;
            };

            // Everything due by now, in file order.
            let now = Instant::now();
            let played = now.duration_since(t0).as_secs_f64();
            while let Some(t) = next.as_ref().filter(|t| t.at <= played) {
                let wall = t0 + Duration::from_secs_f64(t.at);
                match &t.media {
                    Media::Video(au) => {
                        let time = MediaTime::new((t.at * 90_000.0).round() as u64, Frequency::NINETY_KHZ);
                        if self.write(self.video_mid, Codec::H264, wall, time, au)? {
                            sent.video_frames += 1;
                        }
                    }
                    Media::Audio(packet) => {
                        let time = MediaTime::new((t.at * 48_000.0).round() as u64, Frequency::FORTY_EIGHT_KHZ);
                        if self.write(self.audio_mid, Codec::Opus, wall, time, packet)? {
                            sent.audio_packets += 1;
                        }
                    }
                }
                sent.seconds = t.at;
                next = source.next()?;
            }
            if next.is_none() || limit.is_some_and(|l| played >= l) {
                sent.seconds = played;
                break;
            }
            let due = t0 + Duration::from_secs_f64(next.as_ref().map_or(0.0, |t| t.at));
            self.receive(timeout.min(due), RECEIVE_WAIT, &mut buf)?;
        }
        Ok(sent)
    }

    /// Write one frame to the track `mid` with the payload type the gateway chose for `codec`; false if the
    /// gateway did not take that track.
    fn write(&mut self, mid: Mid, codec: Codec, wall: Instant, time: MediaTime, data: &[u8]) -> Result<bool, String> {
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(false);
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return Ok(false);
        };
        writer
            .write(pt, wall, time, data.to_vec())
            .map_err(|e| format!("WebRTC: {e}"))?;
        Ok(true)
    }
}
