//! Record an anchor over WHEP: a receive-only WebRTC player (str0m, over UDP) POSTs its offer to a WHEP URL,
//! then writes N seconds of the anchor's H.264 and Opus, untouched (no re-encoding), into an MKV or MP4 file
//! with libav (ffmpeg-next), and prints the video's resolution, frame rate and bitrates.
//!
//! Run (a viewer UserSig from `cargo run --example usersig -- <SDKAPPID> <KEY> viewer1`):
//! ```sh
//! cargo run --example whep_record -- 'http://127.0.0.1:8080/v2/sub/1400000001/demo_room?SessionID=viewer1' \
//!     --token <UserSig of viewer1> --seconds 10 --out demo.mkv
//! ```
//! Output (stdout): `Connected: ...`, `Video: H.264 1280x720, 30.0 fps, 2480 kb/s (300 frames)`,
//! `Audio: Opus 48000 Hz stereo, 64 kb/s (500 packets)`, `Wrote: demo.mkv (3123456 bytes, 10.0 s)`.
//! The container follows the file name (`.mkv`, `.mp4`, `.webm` is refused: it cannot hold H.264).
//!
//! How the streams are timed: each track's RTP clock (90 kHz video, 48 kHz audio) gives its frames' spacing;
//! the two tracks are placed against each other by when their first frame arrived (good to a few ms on a
//! LAN; a player that needs exact lip sync would use the RTCP sender reports instead).

mod common;

use clap::Parser;
use common::{Peer, Polled};
use ffmpeg_next as ff;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::Direction;
use str0m::Event;

#[derive(Parser)]
#[command(about = "Play an anchor over WHEP and record it to MKV/MP4 without re-encoding")]
struct Args {
    /// The WHEP URL: http(s)://HOST/v2/sub/<sdkappid>/<room>?SessionID=<viewer>[&anchor=<userid>]
    url: url::Url,
    /// The viewer's UserSig (sent as `Authorization: Bearer`); not needed on `public_playback` apps.
    #[arg(long, env = "WHEP_TOKEN")]
    token: Option<String>,
    /// Seconds to record, from the first keyframe.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Output file; its extension chooses the container (mkv, mp4).
    #[arg(long, default_value = "recording.mkv")]
    out: PathBuf,
    /// Local IP for the UDP socket (default: the address this machine uses to reach the gateway).
    #[arg(long)]
    local_ip: Option<std::net::IpAddr>,
}

#[tokio::main]
async fn main() {
    common::exit_on_error(run().await);
}

async fn run() -> Result<(), String> {
    let args = Args::parse();
    ff::init().map_err(|e| format!("libav: {e}"))?;

    // 1. WHEP: a receive-only peer (H.264 video + Opus audio) POSTs its offer and gets the answer.
    let token = args.token.as_deref();
    let (peer, session) = common::connect("WHEP", &args.url, token, args.local_ip, Direction::RecvOnly).await?;

    // 2. Receive and write on a thread of its own (str0m is a synchronous state machine).
    let out = args.out.clone();
    let seconds = args.seconds;
    let result = tokio::task::spawn_blocking(move || record(peer, &out, seconds))
        .await
        .map_err(|e| format!("the recorder panicked: {e}"))?;

    // 3. End the WHEP session (the gateway would also time it out).
    session.end().await;
    let stats = result?;
    stats.print(&args.out);
    Ok(())
}

/// What was recorded.
#[derive(Default)]
struct Stats {
    width: u32,
    height: u32,
    video_frames: u64,
    video_bytes: u64,
    video_rtp: Option<(u64, u64)>,
    audio_packets: u64,
    audio_bytes: u64,
    seconds: f64,
}

impl Stats {
    fn print(&self, out: &std::path::Path) {
        let span = self.video_rtp.map(|(a, b)| (b - a) as f64 / 90_000.0).unwrap_or(0.0);
        let fps = if span > 0.0 {
            self.video_frames.saturating_sub(1) as f64 / span
        } else {
            0.0
        };
        let kbps = |bytes: u64| {
            if self.seconds > 0.0 {
                bytes as f64 * 8.0 / self.seconds / 1000.0
            } else {
                0.0
            }
        };
        println!(
            "Video: H.264 {}x{}, {fps:.1} fps, {:.0} kb/s ({} frames)",
            self.width,
            self.height,
            kbps(self.video_bytes),
            self.video_frames
        );
        if self.audio_packets > 0 {
            println!(
                "Audio: Opus 48000 Hz stereo, {:.0} kb/s ({} packets)",
                kbps(self.audio_bytes),
                self.audio_packets
            );
        } else {
            println!("Audio: none");
        }
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        println!("Wrote: {} ({size} bytes, {:.1} s)", out.display(), self.seconds);
    }
}

/// One received frame, timed in its track's clock.
struct Media {
    video: bool,
    data: Vec<u8>,
    rtp: u64,
    at: Instant,
}

/// Run the WebRTC peer until `seconds` of media from the first keyframe have been written to `out`.
fn record(mut peer: Peer, out: &std::path::Path, seconds: f64) -> Result<Stats, String> {
    let started = Instant::now();
    let mut connected = false;
    let mut writer: Option<Writer> = None;
    let mut pending: Vec<Media> = Vec::new(); // frames from the first keyframe until the size is known
    let mut decoder =
        ff::codec::Context::new_with_codec(ff::decoder::find(ff::codec::Id::H264).ok_or("no H.264 decoder in libav")?)
            .decoder()
            .video()
            .map_err(|e| format!("H.264 decoder: {e}"))?;
    let mut stats = Stats::default();
    let mut first_key: Option<Instant> = None;
    let mut buf = vec![0u8; 65536];

    loop {
        // Everything str0m wants done now: packets to send, events, then when to wake up next.
        let timeout = loop {
            match peer.poll()? {
                Polled::Timeout(t) => break t,
                Polled::Event(Event::Connected) => connected = true,
                Polled::Event(Event::MediaData(d)) => {
                    let media = Media {
                        video: d.params.spec().codec == Codec::H264,
                        data: d.data.to_vec(),
                        rtp: d.time.numer(),
                        at: Instant::now(),
                    };
                    // Start at a keyframe: nothing before it can be decoded.
                    if first_key.is_none() {
                        if !(media.video && is_keyframe(&media.data)) {
                            continue;
                        }
                        first_key = Some(media.at);
                    }
                    match &mut writer {
                        Some(w) => w.write(media, &mut stats)?,
                        None => {
                            // Decode until the first picture tells the size, then open the file.
                            if media.video && stats.width == 0 {
                                let _ = decoder.send_packet(&ff::Packet::copy(&media.data));
                                let mut picture = ff::frame::Video::empty();
                                if decoder.receive_frame(&mut picture).is_ok() {
                                    (stats.width, stats.height) = (picture.width(), picture.height());
                                }
                            }
                            pending.push(media);
                            if stats.width > 0 {
                                let key = pending
                                    .iter()
                                    .find_map(|m| if m.video { parameter_sets(&m.data) } else { None });
                                let mut w = Writer::open(
                                    out,
                                    stats.width,
                                    stats.height,
                                    &key.unwrap_or_default(),
                                    first_key.expect("set at the first keyframe"),
                                )?;
                                for m in pending.drain(..) {
                                    w.write(m, &mut stats)?;
                                }
                                writer = Some(w);
                            }
                        }
                    }
                }
                Polled::Event(_) => {}
            }
        };
        if let Some(t0) = first_key {
            if t0.elapsed().as_secs_f64() >= seconds && writer.is_some() {
                break;
            }
        } else if started.elapsed() > Duration::from_secs(20) {
            return Err(if connected {
                "connected, but no keyframe from the anchor within 20 s".into()
            } else {
                "no WebRTC connection within 20 s (is the gateway's UDP port reachable?)".into()
            });
        }
        if !peer.rtc.is_alive() {
            return Err("the WebRTC session ended".into());
        }

        // Wait for a packet until str0m's next timeout.
        peer.receive(timeout, Duration::from_millis(50), &mut buf)?;
    }
    let w = writer.expect("checked above");
    stats.seconds = w.finish()?;
    Ok(stats)
}

/// The libav muxer and the timing state of its two streams.
struct Writer {
    octx: ff::format::context::Output,
    t0: Instant,
    /// Per stream (0 video, 1 audio): (RTP time of its first frame, its pts, last pts written).
    base: [Option<(u64, i64, i64)>; 2],
    end_pts: i64,
}

const VIDEO_TB: ff::Rational = ff::Rational(1, 90_000);
const AUDIO_TB: ff::Rational = ff::Rational(1, 48_000);

impl Writer {
    fn open(path: &std::path::Path, width: u32, height: u32, sps_pps: &[u8], t0: Instant) -> Result<Writer, String> {
        let mut octx = ff::format::output(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;

        // Stream parameters come from codec contexts we describe by hand: nothing is encoded.
        let mut video =
            ff::codec::Context::new_with_codec(ff::decoder::find(ff::codec::Id::H264).ok_or("no H.264 in libav")?);
        unsafe {
            let p = video.as_mut_ptr();
            (*p).codec_type = ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
            (*p).width = width as i32;
            (*p).height = height as i32;
            (*p).pix_fmt = ff::ffi::AVPixelFormat::AV_PIX_FMT_YUV420P;
        }
        set_extradata(&mut video, sps_pps); // Annex-B SPS+PPS: the muxers turn it into avcC
        let mut vs = octx.add_stream_with(&video).map_err(|e| format!("video stream: {e}"))?;
        vs.set_time_base(VIDEO_TB);

        let mut audio =
            ff::codec::Context::new_with_codec(ff::decoder::find(ff::codec::Id::OPUS).ok_or("no Opus in libav")?);
        unsafe {
            let p = audio.as_mut_ptr();
            (*p).codec_type = ff::ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
            (*p).sample_rate = 48_000;
            #[allow(deprecated)]
            {
                (*p).channels = 2;
                (*p).channel_layout = ff::ChannelLayout::STEREO.bits();
            }
        }
        // OpusHead (RFC 7845 §5.1): version 1, 2 channels, pre-skip 312, 48 kHz, gain 0, mapping family 0.
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        set_extradata(&mut audio, &head);
        let mut aus = octx.add_stream_with(&audio).map_err(|e| format!("audio stream: {e}"))?;
        aus.set_time_base(AUDIO_TB);

        octx.write_header()
            .map_err(|e| format!("cannot write {} (use .mkv or .mp4): {e}", path.display()))?;
        Ok(Writer {
            octx,
            t0,
            base: [None, None],
            end_pts: 0,
        })
    }

    fn write(&mut self, m: Media, stats: &mut Stats) -> Result<(), String> {
        let (index, tb, clock) = if m.video {
            (0, VIDEO_TB, 90_000)
        } else {
            (1, AUDIO_TB, 48_000)
        };
        // The first frame of a track is placed by its arrival time; the next ones by their RTP time.
        let (base_rtp, base_pts, last) = *self.base[index].get_or_insert_with(|| {
            let pts = (m.at.saturating_duration_since(self.t0).as_secs_f64() * clock as f64) as i64;
            (m.rtp, pts, -1)
        });
        let pts = base_pts + m.rtp.wrapping_sub(base_rtp) as i64;
        if pts <= last {
            return Ok(()); // a late or repeated frame: muxers need increasing timestamps
        }
        self.base[index] = Some((base_rtp, base_pts, pts));
        if m.video {
            stats.video_frames += 1;
            stats.video_bytes += m.data.len() as u64;
            stats.video_rtp = Some((stats.video_rtp.map_or(m.rtp, |(a, _)| a), m.rtp));
            self.end_pts = self.end_pts.max(pts);
        } else {
            stats.audio_packets += 1;
            stats.audio_bytes += m.data.len() as u64;
        }
        let mut packet = ff::Packet::copy(&m.data);
        packet.set_stream(index);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(pts)); // no B-frames over WebRTC: decode order is presentation order
        if m.video && is_keyframe(&m.data) {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        let stream_tb = self.octx.stream(index).expect("two streams").time_base();
        packet.rescale_ts(tb, stream_tb);
        packet
            .write_interleaved(&mut self.octx)
            .map_err(|e| format!("writing a packet: {e}"))
    }

    /// Close the file; the recorded video duration in seconds.
    fn finish(mut self) -> Result<f64, String> {
        self.octx
            .write_trailer()
            .map_err(|e| format!("finishing the file: {e}"))?;
        let first = self.base[0].map_or(0, |(_, p, _)| p);
        Ok((self.end_pts - first) as f64 / 90_000.0 + 1.0 / 30.0)
    }
}

/// An IDR picture (NAL type 5) is in this access unit.
fn is_keyframe(data: &[u8]) -> bool {
    roomgate::media::h264::annex_b_nals(data).any(|n| n.first().is_some_and(|b| b & 0x1f == 5))
}

/// The SPS and PPS of this access unit as Annex-B, if it has both.
fn parameter_sets(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut have = (false, false);
    for n in roomgate::media::h264::annex_b_nals(data) {
        match n.first().map(|b| b & 0x1f) {
            Some(7) => have.0 = true,
            Some(8) => have.1 = true,
            _ => continue,
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    (have.0 && have.1).then_some(out)
}

/// Give a codec context its extradata (libav owns and frees it).
fn set_extradata(ctx: &mut ff::codec::Context, data: &[u8]) {
    unsafe {
        let raw = ctx.as_mut_ptr();
        let buf = ff::ffi::av_mallocz(data.len() + ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        (*raw).extradata = buf;
        (*raw).extradata_size = data.len() as i32;
    }
}
