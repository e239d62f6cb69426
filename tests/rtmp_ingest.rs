//! RTMP push ingest with the real ffmpeg CLI as the publisher.

mod support;

use roomgate::auth::{unix_now, UserSig};
use roomgate::media::{Codec, Frame};
use roomgate::room::{LeaveReason, TrackSubscriber};
use std::time::{Duration, Instant};
use support::*;

const MP3_AUDIO: &str = "-c:v libx264 -profile:v baseline -c:a libmp3lame -ar 44100";

const BASELINE: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac -b:a 96k";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// On a task of its own: the frames of `track` up to the first at `until_ms` or later (or 5 s without any).
fn record(mut track: TrackSubscriber, until_ms: u64) -> tokio::task::JoinHandle<Vec<Frame>> {
    tokio::spawn(async move {
        let mut got: Vec<Frame> = vec![];
        while let Ok(Some(f)) = tokio::time::timeout(Duration::from_secs(5), track.recv()).await {
            let done = f.pts_ms() >= until_ms;
            got.push(f);
            if done {
                break;
            }
        }
        got
    })
}

/// Push 10 s of 320x240 to `url` with `codec_args`, expecting ffmpeg to stop within 20 s; (success, stderr).
async fn push_to_end(url: &str, codec_args: &str) -> (bool, String) {
    Ffmpeg::push(&lavfi("320x240", 10), codec_args, url)
        .finish(Duration::from_secs(20))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_720p_push_becomes_an_anchor_with_h264_and_opus() {
    let gw = start_gateway().await;
    let (ff, p) = gw.push_anchor("room720", "anchor1", "1280x720", 14, BASELINE).await;
    let vtask = record(p.video.subscribe(), 10_500);
    let atask = record(p.audio.subscribe(), 10_500);
    let t0 = Instant::now();

    // The room listing shows the anchor with its codec and picture size while it publishes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, room) = get_json(gw.http_addr, "/v1/rooms/1400000001/room720").await;
    assert_eq!(status, 200, "{room}");
    let anchor = &room["anchors"][0];
    assert_eq!(anchor["userid"], "anchor1");
    assert_eq!(anchor["source"], "rtmp");
    assert_eq!(anchor["video"]["codec"], "h264");
    assert_eq!(anchor["video"]["width"], 1280);
    assert_eq!(anchor["video"]["height"], 720);
    assert_eq!(anchor["audio"]["codec"], "opus");
    assert_eq!(anchor["audio"]["source_codec"], "aac");
    // What viewers get is Opus at 48 kHz; the source's AAC rate is reported beside it.
    assert_eq!(anchor["audio"]["sample_rate"], 48000, "{anchor}");
    assert_eq!(anchor["audio"]["source_sample_rate"], 44100, "{anchor}");

    let v = vtask.await.unwrap();
    let a = atask.await.unwrap();
    assert!(v.len() > 250, "about 30 fps for 10 s, got {}", v.len());
    assert!(v[0].keyframe, "a subscriber starts on a keyframe");
    assert!(v.iter().all(|f| f.codec == Codec::H264));
    assert_eq!(
        decode_h264_size(&v[..1]),
        Some((1280, 720)),
        "the keyframe decodes on its own to 1280x720"
    );

    // Transcoded audio comes in packets of `audio.opus_frame_ms` (40 ms by default): 25 a second.
    let frame_ms = roomgate::config::DEFAULT_OPUS_FRAME_MS;
    let step = u64::from(frame_ms) * 48;
    assert!(
        a.len() > 9_000 / frame_ms as usize,
        "{frame_ms} ms Opus packets for 10 s, got {}",
        a.len()
    );
    let (samples, peak) = decode_opus(&a);
    assert!(
        samples >= a.len() * step as usize * 9 / 10,
        "Opus decodes to {frame_ms} ms frames: {samples} samples"
    );
    assert!(peak > 0.05, "the sine is audible after transcoding (peak {peak})");
    for w in a.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, step, "Opus timestamps advance by {frame_ms} ms");
    }

    // A/V alignment: ffmpeg -re sends both in real time, so after 10 s the media time of a frame's end minus
    // its arrival time must agree between audio and video (a drifting or offset audio timeline shows here).
    let offset = |frames: &[Frame], duration_ms: f64| {
        median(
            frames
                .iter()
                .filter(|f| f.pts_ms() >= 9_000)
                .map(|f| {
                    f.pts_ms() as f64 + duration_ms - f.received_at.saturating_duration_since(t0).as_secs_f64() * 1000.0
                })
                .collect(),
        )
    };
    let av = offset(&a, f64::from(frame_ms)) - offset(&v, 0.0);
    eprintln!("A/V offset after 10 s: {av:.1} ms");
    assert!(av.abs() < 40.0, "A/V offset after 10 s is {av:.1} ms");

    ff.kill().await;
    // The anchor leaves when the publisher goes away.
    gw.wait_room_gone("room720", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_refused_with_the_reason() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let rtmp = gw.rtmp_addr.unwrap();
    let old = UserSig::generate(SDKAPPID, KEY, "u1", unix_now() - 7200, 60, None);
    let other_key = UserSig::generate(SDKAPPID, "another-key", "u1", unix_now(), 3600, None);
    let foreign = UserSig::generate(1400999999, KEY, "u1", unix_now(), 3600, None);
    let cases = [
        (gw.push_url("r1", "u1", &other_key), "signature does not match"),
        (gw.push_url("r1", "u1", &old), "expired"),
        (
            format!("rtmp://{rtmp}/push/r1?sdkappid=1400999999&userid=u1&usersig={foreign}"),
            "unknown sdkappid 1400999999",
        ),
        (gw.push_url("bad.room", "u1", &usersig("u1")), "invalid room id"),
        (gw.push_url("r1", "u1", &usersig("u2")), "issued for user id \"u2\""),
        (
            format!(
                "rtmp://{rtmp}/live/r1?sdkappid={SDKAPPID}&userid=u1&usersig={}",
                usersig("u1")
            ),
            "RTMP app must be 'push'",
        ),
        (
            format!("rtmp://{rtmp}/push/r1?sdkappid={SDKAPPID}&userid=u1"),
            "missing usersig",
        ),
    ];
    for (url, why) in cases {
        let (ok, stderr) = push_to_end(&url, BASELINE).await;
        assert!(!ok, "{url} must fail");
        assert!(
            stderr.contains("Server error") && stderr.contains(why),
            "ffmpeg should print {why:?}, got:\n{stderr}"
        );
    }
    assert!(gw.hub.rooms().is_empty());
    assert!(events.try_recv().is_err(), "nothing entered any room");
    let (_, metrics) = http_get(gw.http_addr, "/metrics").await;
    assert!(
        metrics.contains("reason=\"usersig_expired\""),
        "refusals are counted by reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_map_key_is_required_when_the_app_says_so() {
    let gw = start_gateway_with(|c| c.apps[0].require_private_map_key = true).await;
    let url = gw.push_url("r1", "u1", &usersig("u1"));
    let (ok, stderr) = push_to_end(&url, BASELINE).await;
    assert!(!ok && stderr.contains("privatemapkey"), "{stderr}");
    // With a grant for this string room and publish privileges, the same push is accepted.
    let pmk = private_map_key("u1", "r1", 255);
    let ff = Ffmpeg::push(&lavfi("320x240", 10), BASELINE, &format!("{url}&privatemapkey={pmk}"));
    assert!(gw.wait_anchor("r1", "u1", Duration::from_secs(15)).await.is_some());
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_end_the_publish_and_the_anchor_leaves_cleanly() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let url = gw.push_url("rb", "bframes", &usersig("bframes"));
    let (ok, stderr) = push_to_end(&url, "-c:v libx264 -profile:v high -bf 3 -c:a aac").await;
    assert!(!ok);
    assert!(
        stderr.contains("B-frames are not supported") && stderr.contains("-bf 0"),
        "{stderr}"
    );
    assert!(gw.hub.rooms().is_empty(), "no anchor is left behind");
    let left = left_reasons(&mut events);
    assert!(matches!(left.last(), Some(LeaveReason::Ended(r)) if r.contains("B-frames")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_and_av1_over_enhanced_rtmp_are_refused() {
    let gw = start_gateway().await;
    let addr = gw.rtmp_addr.unwrap();
    for (tag, name) in [(b"hvc1", "H.265/HEVC"), (b"av01", "AV1")] {
        let key = format!("rh?sdkappid={SDKAPPID}&userid=u1&usersig={}", usersig("u1"));
        let mut seq = vec![0x90];
        seq.extend_from_slice(tag);
        seq.extend_from_slice(&[1, 2, 3, 4]);
        let out = tokio::task::spawn_blocking(move || support::rtmp_client::publish(addr, "push", &key, vec![seq]))
            .await
            .unwrap();
        assert!(out.publish_accepted);
        assert!(
            out.said(&format!("video codec {name} is not supported")),
            "{:?}",
            String::from_utf8_lossy(&out.after_publish)
        );
        assert!(out.closed_by_server);
    }
    assert!(gw.hub.rooms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_with_the_same_identity_replaces_the_first() {
    let gw = start_gateway().await;
    let (first, p1) = gw.push_anchor("rt", "dup", "320x240", 30, BASELINE).await;
    let second = gw.push_lavfi("rt", "dup", "320x240", 30, BASELINE);
    let deadline = Instant::now() + Duration::from_secs(15);
    let p2 = loop {
        let p = gw.wait_anchor("rt", "dup", Duration::from_secs(1)).await.unwrap();
        if !std::sync::Arc::ptr_eq(&p, &p1) {
            break p;
        }
        assert!(Instant::now() < deadline, "the second publisher takes over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (ok, stderr) = first.finish(Duration::from_secs(10)).await;
    assert!(!ok && stderr.contains("replaced by a new publisher"), "{stderr}");
    let room = gw.hub.room(&gw.key("rt")).unwrap();
    assert_eq!(room.participants().len(), 1);
    let mut sub = p2.video.subscribe();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap()
            .is_some(),
        "the new anchor's video flows"
    );
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_clients_do_not_disturb_a_good_publisher() {
    let gw = start_gateway().await;
    let (good, p) = gw.push_anchor("rg", "good", "320x240", 30, BASELINE).await;
    let addr = gw.rtmp_addr.unwrap();
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let mut results = vec![];
        // 1: noise from the first byte (a bad handshake version).
        // 2: a valid handshake, then noise as chunks.
        for complete_handshake in [false, true] {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            if complete_handshake {
                let mut hs = rml_rtmp::handshake::Handshake::new(rml_rtmp::handshake::PeerType::Client);
                s.write_all(&hs.generate_outbound_p0_and_p1().unwrap()).unwrap();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    match hs.process_bytes(&buf[..n]).unwrap() {
                        rml_rtmp::handshake::HandshakeProcessResult::InProgress { response_bytes } => {
                            s.write_all(&response_bytes).unwrap()
                        }
                        rml_rtmp::handshake::HandshakeProcessResult::Completed { response_bytes, .. } => {
                            s.write_all(&response_bytes).unwrap();
                            break;
                        }
                    }
                }
            } else {
                let mut first = noise(1537);
                first[0] = 0x55;
                let _ = s.write_all(&first);
            }
            let _ = s.write_all(&noise(256 * 1024));
            let mut buf = [0u8; 4096];
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
                }
            };
            results.push(closed);
        }
        results
    })
    .await
    .unwrap();
    assert_eq!(closed, vec![true, true], "the server closes each garbage connection");
    // The good anchor is still the same and its video still flows.
    let now = gw
        .hub
        .participant(&gw.key("rg"), "good")
        .expect("the good anchor is still there");
    assert!(std::sync::Arc::ptr_eq(&now, &p));
    let before = p.video.stats().frames;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(p.video.stats().frames > before + 20, "frames keep arriving");
    good.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_audio_is_transcoded_to_opus_too() {
    let gw = start_gateway().await;
    let (ff, p) = gw.push_anchor("rm", "mp3", "320x240", 20, MP3_AUDIO).await;
    let mut audio = p.audio.subscribe();
    let mut packets = vec![];
    while packets.len() < 100 {
        let f = tokio::time::timeout(Duration::from_secs(10), audio.recv())
            .await
            .expect("Opus packets flow")
            .expect("track open");
        packets.push(f);
    }
    let (samples, peak) = decode_opus(&packets);
    assert!(samples >= 90 * 960 && peak > 0.05, "{samples} samples, peak {peak}");
    assert_eq!(p.audio_info().source_codec, "mp3");
    ff.kill().await;
}
