//! A WHIP publisher built on str0m: H.264 (libx264 through ffmpeg-next, generated here) and Opus (libopus),
//! sent in real time. It counts the keyframe requests (PLI) it receives.

use super::whep_client::{install_crypto, post_offer, receive, Answered, Refused};
use ffmpeg_next as ff;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::Protocol;
use str0m::{Candidate, Event, Input, Output, Rtc};

#[derive(Clone, Copy)]
pub struct MediaSpec {
    pub width: u32,
    pub height: u32,
    /// Frames between keyframes.
    pub gop: u32,
    pub bframes: bool,
    /// Leave out the first keyframe, so nothing decodable is cached until the publisher is asked (PLI).
    pub skip_first_keyframe: bool,
    /// Offer and send VP8 (libvpx) instead of H.264, as some browsers do.
    pub vp8: bool,
    /// VP8 only: rewrite every keyframe header to declare this picture size (a hostile publisher).
    pub declared_vp8_size: Option<(u16, u16)>,
    /// Opus at this constant bitrate instead of 64 kb/s VBR (510 000: every packet 1275 bytes, near the largest Opus
    /// packet), each sent whole in one RTP packet.
    pub opus_cbr: Option<u32>,
}

impl Default for MediaSpec {
    fn default() -> Self {
        MediaSpec {
            width: 320,
            height: 240,
            gop: 30,
            bframes: false,
            skip_first_keyframe: false,
            vp8: false,
            declared_vp8_size: None,
            opus_cbr: None,
        }
    }
}

#[derive(Default)]
pub struct PubControls {
    stop: AtomicBool,
    /// While true, nothing is sent (a publisher whose network died).
    pub silent: AtomicBool,
    pub plis: AtomicU32,
    pub connected: AtomicBool,
}

pub struct WhipPublisher {
    pub location: String,
    pub etag: String,
    pub answer_sdp: String,
    pub controls: Arc<PubControls>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WhipPublisher {
    fn drop(&mut self) {
        self.controls.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An encoded video frame: (is_keyframe, Annex-B access unit).
pub type EncodedVideo = (bool, Vec<u8>);

/// Encoded test media: video at 30 fps and 20 ms Opus packets.
pub fn make_media(spec: MediaSpec, seconds: u32) -> (Vec<EncodedVideo>, Vec<Vec<u8>>) {
    roomgate::media::transcode::init_libav();
    let codec = ff::encoder::find_by_name(if spec.vp8 { "libvpx" } else { "libx264" }).expect("video encoder");
    let mut enc = ff::codec::Context::new_with_codec(codec).encoder().video().unwrap();
    enc.set_width(spec.width);
    enc.set_height(spec.height);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ff::Rational::new(1, 30));
    enc.set_frame_rate(Some(ff::Rational::new(30, 1)));
    enc.set_gop(spec.gop);
    enc.set_max_b_frames(if spec.bframes { 2 } else { 0 });
    let mut opts = ff::Dictionary::new();
    if spec.vp8 {
        enc.set_bit_rate(500_000);
        opts.set("deadline", "realtime");
        opts.set("cpu-used", "8");
        opts.set("lag-in-frames", "0");
    } else {
        opts.set("preset", "ultrafast");
    }
    if spec.bframes {
        opts.set("profile", "high");
    } else if !spec.vp8 {
        opts.set("tune", "zerolatency");
        opts.set("profile", "baseline");
    }
    let mut enc = enc.open_as_with(codec, opts).unwrap();
    let mut video = Vec::new();
    let mut pkt = ff::Packet::empty();
    let n = seconds * 30;
    for i in 0..n {
        let mut f = ff::frame::Video::new(ff::format::Pixel::YUV420P, spec.width, spec.height);
        let stride = f.stride(0);
        for (y, row) in f.data_mut(0).chunks_mut(stride).enumerate() {
            for (x, p) in row.iter_mut().enumerate() {
                *p = ((x + y + i as usize * 4) % 256) as u8;
            }
        }
        f.data_mut(1).fill(128);
        f.data_mut(2).fill(100);
        f.set_pts(Some(i as i64));
        enc.send_frame(&f).unwrap();
        while enc.receive_packet(&mut pkt).is_ok() {
            video.push((pkt.is_key(), pkt.data().unwrap().to_vec()));
        }
    }
    enc.send_eof().unwrap();
    while enc.receive_packet(&mut pkt).is_ok() {
        video.push((pkt.is_key(), pkt.data().unwrap().to_vec()));
    }
    if let (true, Some((w, h))) = (spec.vp8, spec.declared_vp8_size) {
        for (key, data) in video.iter_mut().filter(|(k, _)| *k) {
            assert!(
                *key && data.len() >= 10 && data[3..6] == [0x9d, 0x01, 0x2a],
                "a VP8 keyframe header"
            );
            data[6..8].copy_from_slice(&(w & 0x3FFF).to_le_bytes());
            data[8..10].copy_from_slice(&(h & 0x3FFF).to_le_bytes());
        }
    }

    let codec = ff::encoder::find_by_name("libopus").expect("libopus");
    let mut a = ff::codec::Context::new_with_codec(codec).encoder().audio().unwrap();
    a.set_rate(48000);
    a.set_channel_layout(ff::ChannelLayout::STEREO);
    a.set_channels(2);
    a.set_format(ff::format::Sample::I16(ff::format::sample::Type::Packed));
    a.set_bit_rate(spec.opus_cbr.unwrap_or(64000) as usize);
    a.set_time_base(ff::Rational::new(1, 48000));
    let mut opus_opts = ff::Dictionary::new();
    if spec.opus_cbr.is_some() {
        opus_opts.set("vbr", "off");
    }
    let mut a = a.open_as_with(codec, opus_opts).unwrap();
    let mut audio = Vec::new();
    for k in 0..seconds * 50 {
        let mut f = ff::frame::Audio::new(
            ff::format::Sample::I16(ff::format::sample::Type::Packed),
            960,
            ff::ChannelLayout::STEREO,
        );
        f.set_rate(48000);
        f.set_pts(Some(k as i64 * 960));
        for (j, s) in f.data_mut(0).chunks_exact_mut(4).enumerate() {
            let t = (k as f64 * 960.0 + j as f64) / 48000.0;
            let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
            s[..2].copy_from_slice(&v.to_ne_bytes());
            s[2..].copy_from_slice(&v.to_ne_bytes());
        }
        a.send_frame(&f).unwrap();
        while a.receive_packet(&mut pkt).is_ok() {
            audio.push(pkt.data().unwrap().to_vec());
        }
    }
    (video, audio)
}

/// A send-only audio+video offer from a str0m peer configured by `cfg` (to offer codecs roomgate lacks).
pub fn offer_sdp(cfg: str0m::RtcConfig) -> String {
    install_crypto();
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().expect("an offer").0.to_sdp_string()
}

/// POST an offer (send-only H.264, or VP8 with `spec.vp8`, + Opus) to `url` and publish `spec` media, looping, until dropped.
pub async fn publish(url: &str, token: Option<&str>, spec: MediaSpec) -> Result<WhipPublisher, Refused> {
    install_crypto();
    let builder = if spec.vp8 {
        Rtc::builder().clear_codecs().enable_vp8(true).enable_opus(true, false)
    } else {
        Rtc::builder()
    };
    // str0m cuts an Opus packet larger than its MTU into several RTP packets (which no decoder takes back):
    // large ones go whole in a larger datagram, as browsers send them.
    let builder = match spec.opus_cbr {
        Some(_) => builder.set_mtu(1400..=1500),
        None => builder,
    };
    let mut rtc = builder.build(Instant::now());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    let vmid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let amid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let Answered {
        location, etag, body, ..
    } = post_offer(url, token, offer.to_sdp_string(), "WHIP POST").await?;
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body).expect("answer"))
        .expect("answer accepted");
    let controls = Arc::new(PubControls::default());
    let ctl = controls.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let (video, audio) = make_media(spec, 4);
        let _ = ready_tx.send(());
        run(rtc, sock, vmid, amid, video, audio, spec, ctl)
    });
    let _ = tokio::task::spawn_blocking(move || ready_rx.recv()).await;
    Ok(WhipPublisher {
        location,
        etag,
        answer_sdp: body,
        controls,
        thread: Some(thread),
    })
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut rtc: Rtc,
    sock: UdpSocket,
    vmid: Mid,
    amid: Mid,
    video: Vec<EncodedVideo>,
    audio: Vec<Vec<u8>>,
    spec: MediaSpec,
    ctl: Arc<PubControls>,
) {
    let local = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 2000];
    let start = Instant::now();
    let (mut vi, mut ai) = (0usize, 0usize);
    let mut keyframe_now = false;
    let first_key = video.iter().position(|(k, _)| *k).unwrap_or(0);
    if spec.skip_first_keyframe {
        vi = first_key + 1;
    }
    while !ctl.stop.load(Ordering::Relaxed) && rtc.is_alive() {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => ctl.connected.store(true, Ordering::Relaxed),
                Ok(Output::Event(Event::KeyframeRequest(_))) => {
                    ctl.plis.fetch_add(1, Ordering::Relaxed);
                    keyframe_now = true;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        };
        // Media due now (30 fps video, 50 pps audio), on one timeline.
        if ctl.connected.load(Ordering::Relaxed) && !ctl.silent.load(Ordering::Relaxed) {
            let now = Instant::now();
            let elapsed = now.duration_since(start);
            while (vi as u64) * 1000 / 30 <= elapsed.as_millis() as u64 {
                let (_, data) = if keyframe_now {
                    &video[first_key]
                } else {
                    &video[vi % video.len()]
                };
                keyframe_now = false;
                let codec = if spec.vp8 { Codec::Vp8 } else { Codec::H264 };
                let time = MediaTime::new(vi as u64 * 3000, Frequency::NINETY_KHZ);
                write(&mut rtc, vmid, codec, now, time, data);
                vi += 1;
            }
            while (ai as u64) * 20 <= elapsed.as_millis() as u64 {
                let time = MediaTime::new(ai as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
                write(&mut rtc, amid, Codec::Opus, now, time, &audio[ai % audio.len()]);
                ai += 1;
            }
        } else {
            // Keep the clocks moving while silent so media resumes "now".
            let elapsed = start.elapsed().as_millis() as u64;
            vi = vi.max((elapsed * 30 / 1000) as usize);
            ai = ai.max((elapsed / 20) as usize);
        }
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(10));
        sock.set_read_timeout(Some(wait)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => receive(&mut rtc, Protocol::Udp, from, local, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

/// Send one frame of `data` on m-line `mid` as `codec` at media time `time`, if that codec was negotiated.
fn write(rtc: &mut Rtc, mid: Mid, codec: Codec, now: Instant, time: MediaTime, data: &[u8]) {
    if let Some(w) = rtc.writer(mid) {
        let pt = w.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt());
        if let Some(pt) = pt {
            let _ = w.write(pt, now, time, data);
        }
    }
}
