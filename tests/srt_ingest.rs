//! SRT push ingest with the real ffmpeg CLI (libsrt, as OBS uses it) as the publisher: MPEG-TS over SRT in both
//! stream-id forms, played by a WHEP viewer; callers refused in the handshake with SRT reject codes; B-frames,
//! passphrases, takeover, and hostile callers.

mod support;

use roomgate::auth::{unix_now, UserSig};
use roomgate::room::LeaveReason;
use std::time::Duration;
use support::*;

/// `srt://` URL of the gateway's SRT listener with `stream_id` (percent-encoded) and extra query `more`.
fn srt_url(gw: &TestGateway, stream_id: &str, more: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(stream_id.as_bytes()).collect();
    format!("srt://{}?streamid={id}{more}", gw.srt_addr.unwrap())
}

/// The access-control stream id of `user` publishing into `room` with `sig`.
fn access_id(room: &str, user: &str, sig: &str) -> String {
    format!("#!::r={room},u={user},m=publish,sdkappid={SDKAPPID},usersig={sig}")
}

/// ffmpeg pushing `seconds` of `size` lavfi media as MPEG-TS to `url`.
fn push_srt(url: &str, size: &str, seconds: u32, codec_args: &str) -> Ffmpeg {
    Ffmpeg::push_as(&lavfi(size, seconds), codec_args, "mpegts", url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_push_in_the_access_control_form_plays_over_whep() {
    let gw = start_gateway().await;
    let url = srt_url(&gw, &access_id("srt1", "cam", &usersig("cam")), "");
    let ff = push_srt(&url, "640x360", 60, LIVE_X264);
    let anchor = gw.wait_video("srt1", "cam", Duration::from_secs(20)).await;
    wait_until("the audio reaches the room", Duration::from_secs(10), || {
        anchor.audio.has_media()
    })
    .await;
    let (status, room) = get_json(gw.http_addr, "/v1/rooms/1400000001/srt1").await;
    assert_eq!(status, 200, "{room}");
    let a = &room["anchors"][0];
    assert_eq!(a["source"], "srt");
    assert_eq!(a["video"]["codec"], "h264");
    assert_eq!(a["video"]["width"], 640);
    assert_eq!(a["audio"]["source_codec"], "aac", "{a}");

    let player = whep_client::play(
        &gw.whep_url("srt1", "v1"),
        Some(&usersig("v1")),
        whep_client::Transport::Udp,
    )
    .await
    .unwrap_or_else(|r| panic!("plays: {} {}", r.status, r.body));
    let frames = player
        .gather(Duration::from_secs(15), |f| whep_client::at_least(f, 60, 100))
        .await;
    assert!(whep_client::at_least(&frames, 60, 100), "{} frames", frames.len());
    let video = whep_client::video_of(&frames);
    assert_eq!(decode_h264_size_of(video.iter().copied().take(1)), Some((640, 360)));
    let (samples, peak) = decode_opus_of(whep_client::audio_of(&frames));
    assert!(
        samples >= 100 * 960 && peak > 0.05,
        "the tone is heard: {samples} samples, peak {peak}"
    );
    drop(anchor);
    ff.kill().await;
    gw.wait_left("srt1", "cam", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_push_in_the_stream_key_form_with_opus_passes_its_audio_through() {
    let gw = start_gateway().await;
    let key = format!("srt2?sdkappid={SDKAPPID}&userid=cam2&usersig={}", usersig("cam2"));
    let url = srt_url(&gw, &key, "&latency=200000");
    let ff = push_srt(
        &url,
        "320x240",
        60,
        "-c:v libx264 -preset ultrafast -profile:v baseline -g 30 -c:a libopus -ar 48000",
    );
    let anchor = gw.wait_video("srt2", "cam2", Duration::from_secs(20)).await;
    let mut audio = anchor.audio.subscribe();
    let mut got = vec![];
    while got.len() < 100 {
        let f = tokio::time::timeout(Duration::from_secs(10), audio.recv())
            .await
            .expect("audio flows")
            .expect("the anchor stays");
        got.push(f);
    }
    let (_, room) = get_json(gw.http_addr, "/v1/rooms/1400000001/srt2").await;
    assert_eq!(room["anchors"][0]["audio"]["source_codec"], "opus", "{room}");
    let (samples, peak) = decode_opus(&got);
    assert!(samples >= 100 * 960 && peak > 0.1, "{samples} samples, peak {peak}");
    let steps: Vec<u64> = got.windows(2).map(|w| w[1].pts - w[0].pts).collect();
    assert!(
        steps.iter().all(|&d| d == 960),
        "20 ms apart on the 48 kHz clock: {steps:?}"
    );
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_callers_are_rejected_in_the_handshake_with_the_reason() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let old = UserSig::generate(SDKAPPID, KEY, "u1", unix_now() - 7200, 60, None);
    let other_key = UserSig::generate(SDKAPPID, "another-key", "u1", unix_now(), 3600, None);
    let cases = [
        (access_id("r1", "u1", &other_key), 1401, "usersig"),
        (access_id("r1", "u1", &old), 1401, "usersig_expired"),
        (
            format!("#!::r=r1,u=u1,m=publish,sdkappid=1400999999,usersig={}", usersig("u1")),
            1404,
            "unknown_app",
        ),
        (
            format!("#!::r=r1,u=u1,sdkappid={SDKAPPID},usersig={}", usersig("u1")),
            1405,
            "bad_stream_id",
        ),
        (format!("r1?sdkappid={SDKAPPID}&userid=u1"), 1400, "bad_parameter"),
        (access_id("bad.room", "u1", &usersig("u1")), 1400, "bad_room_id"),
    ];
    for (id, code, reason) in cases {
        let (ok, stderr) = push_srt(&srt_url(&gw, &id, ""), "320x240", 5, QUICK_X264)
            .finish(Duration::from_secs(20))
            .await;
        assert!(!ok, "{id} must be refused");
        // ffmpeg's libsrt prints the rejection in the handshake.
        assert!(stderr.contains("REJECT"), "{id}: {stderr}");
        let _ = code;
        let (_, metrics) = http_get(gw.http_addr, "/metrics").await;
        assert!(
            metrics.contains(&format!("source=\"srt\",reason=\"{reason}\""))
                || metrics.contains(&format!("reason=\"{reason}\",source=\"srt\"")),
            "{reason} counted"
        );
    }
    assert!(gw.hub.rooms().is_empty());
    assert!(events.try_recv().is_err(), "nothing entered any room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_over_srt_end_the_publish_with_the_reason() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let url = srt_url(&gw, &access_id("rb", "bframes", &usersig("bframes")), "");
    let ff = push_srt(&url, "320x240", 30, "-c:v libx264 -profile:v high -bf 3 -c:a aac");
    let (ok, _) = ff.finish(Duration::from_secs(30)).await;
    assert!(!ok, "the connection is closed under the publisher");
    assert!(gw.hub.rooms().is_empty(), "no anchor is left behind");
    let left = left_reasons(&mut events);
    assert!(
        matches!(left.last(), Some(LeaveReason::Ended(r)) if r.contains("B-frames") && r.contains("-bf 0")),
        "{left:?}"
    );
}

/// Call the gateway's SRT listener with libsrt (as ffmpeg does) and `stream_id`: the connected socket, or the
/// reject code the listener gave.
async fn call(
    gw: &TestGateway,
    stream_id: &str,
    passphrase: Option<&str>,
) -> Result<roomgate::ingest::srt::ffi::Socket, i32> {
    use roomgate::ingest::srt::ffi::{SockOpt, Socket};
    let (addr, id, pass) = (
        gw.srt_addr.unwrap(),
        stream_id.to_string(),
        passphrase.map(str::to_string),
    );
    tokio::task::spawn_blocking(move || {
        let s = Socket::new().unwrap();
        s.set_str(SockOpt::StreamId, &id).unwrap();
        if let Some(p) = pass {
            s.set_str(SockOpt::Passphrase, &p).unwrap();
        }
        s.connect(addr).map(|()| s).map_err(|(_, code)| code)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_srt_reject_code() {
    let gw = start_gateway_with(|c| c.srt.max_connections_per_ip = 2).await;
    let other_key = UserSig::generate(SDKAPPID, "another-key", "u1", unix_now(), 3600, None);
    let cases = [
        (access_id("r1", "u1", &other_key), 1401),
        (
            format!("#!::r=r1,u=u1,m=publish,sdkappid=1400999999,usersig={}", usersig("u1")),
            1404,
        ),
        (
            format!("#!::r=r1,u=u1,m=request,sdkappid={SDKAPPID},usersig={}", usersig("u1")),
            1405,
        ),
        (format!("r1?sdkappid={SDKAPPID}&userid=u1"), 1400),
        (String::new(), 1400),
    ];
    for (id, code) in cases {
        assert_eq!(call(&gw, &id, None).await.err(), Some(code), "{id:?}");
    }
    // Two connections from one address are its share; the third is refused as overload.
    let first = call(&gw, &access_id("r1", "a", &usersig("a")), None)
        .await
        .expect("first");
    let second = call(&gw, &access_id("r2", "b", &usersig("b")), None)
        .await
        .expect("second");
    assert_eq!(
        call(&gw, &access_id("r3", "c", &usersig("c")), None).await.err(),
        Some(1402)
    );
    drop((first, second));
    // Their slots come back once the connections are gone.
    wait_until_async("the slots are given back", Duration::from_secs(10), || async {
        call(&gw, &access_id("r3", "c", &usersig("c")), None).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_passphrase_is_required_and_encrypts() {
    const PASS: &str = "roomgate-srt-secret";
    let gw = start_gateway_with(|c| c.apps[0].srt_passphrase = PASS.into()).await;
    let id = access_id("enc", "cam", &usersig("cam"));
    // Without it, or with another one, the caller is rejected in the handshake.
    assert!(call(&gw, &id, None).await.is_err(), "no passphrase");
    assert!(
        call(&gw, &id, Some("not-the-secret-1")).await.is_err(),
        "wrong passphrase"
    );
    let (ok, stderr) = push_srt(&srt_url(&gw, &id, ""), "320x240", 5, QUICK_X264)
        .finish(Duration::from_secs(20))
        .await;
    assert!(!ok && stderr.contains("REJECT"), "{stderr}");
    assert!(gw.hub.rooms().is_empty());
    // ffmpeg with the passphrase publishes (AES-128 by default).
    let ff = push_srt(
        &srt_url(&gw, &id, &format!("&passphrase={PASS}")),
        "320x240",
        30,
        QUICK_X264,
    );
    let anchor = gw.wait_video("enc", "cam", Duration::from_secs(20)).await;
    let mut video = anchor.video.subscribe();
    let f = tokio::time::timeout(Duration::from_secs(10), video.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode_h264_size(&[f]), Some((320, 240)), "decrypted pictures decode");
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_srt_publisher_with_the_same_identity_replaces_the_first() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let url = srt_url(&gw, &access_id("rt", "dup", &usersig("dup")), "");
    let first = push_srt(&url, "320x240", 60, QUICK_X264);
    let p1 = gw.wait_video("rt", "dup", Duration::from_secs(20)).await;
    let second = push_srt(&url, "320x240", 60, QUICK_X264);
    wait_until_async("the second publisher takes over", Duration::from_secs(20), || async {
        gw.wait_anchor("rt", "dup", Duration::from_secs(1))
            .await
            .is_some_and(|p| !std::sync::Arc::ptr_eq(&p, &p1) && p.video.has_cached_keyframe())
    })
    .await;
    assert!(left_reasons(&mut events).contains(&LeaveReason::Replaced));
    // The first publisher's connection is closed under it.
    let (ok, _) = first.finish(Duration::from_secs(15)).await;
    assert!(!ok, "the replaced publisher's connection ends");
    assert_eq!(gw.hub.room(&gw.key("rt")).unwrap().participants().len(), 1);
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_srt_callers_do_not_disturb_a_good_publisher() {
    let gw = start_gateway_with(|c| c.srt.idle_timeout_secs = 2).await;
    let mut events = gw.hub.observe();
    // Random datagrams at the SRT port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x5eed_u64;
    for i in 0..3000 {
        let len = 1 + (i * 37) % 1500;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = udp.send_to(&junk, gw.srt_addr.unwrap());
    }
    // An admitted caller that sends no MPEG-TS: its publish ends when no media came for the idle timeout.
    let garbage = call(&gw, &access_id("rg", "junk", &usersig("junk")), None)
        .await
        .expect("admitted");
    let sent = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        for i in 0..200u32 {
            let mut msg = vec![0x47u8; 1316];
            for (j, b) in msg.iter_mut().enumerate().skip(1) {
                *b = (i as usize * 31 + j * 7) as u8;
            }
            if garbage.send(&msg).is_ok() {
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (n, garbage)
    });
    let (n, garbage) = sent.await.unwrap();
    assert!(n > 100, "garbage was sent");
    gw.wait_left("rg", "junk", Duration::from_secs(10)).await;
    assert!(left_reasons(&mut events).contains(&LeaveReason::Timeout));
    drop(garbage);
    // A good publisher still plays.
    let url = srt_url(&gw, &access_id("good", "cam", &usersig("cam")), "");
    let ff = push_srt(&url, "320x240", 30, QUICK_X264);
    let anchor = gw.wait_video("good", "cam", Duration::from_secs(20)).await;
    let mut video = anchor.video.subscribe();
    let f = tokio::time::timeout(Duration::from_secs(10), video.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode_h264_size(&[f]), Some((320, 240)));
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_only_handshakes_takes_nobodys_place() {
    let gw = start_gateway_with(|c| c.srt.idle_timeout_secs = 2).await;
    let id = access_id("stay", "cam", &usersig("cam"));
    let ff = push_srt(&srt_url(&gw, &id, ""), "320x240", 60, QUICK_X264);
    let anchor = gw.wait_video("stay", "cam", Duration::from_secs(20)).await;
    // The same identity connects and sends nothing: the publisher stays until the silent caller is closed.
    let silent = call(&gw, &id, None).await.expect("admitted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = gw.wait_anchor("stay", "cam", Duration::from_secs(1)).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&now, &anchor), "the publisher was not replaced");
    let mut video = now.video.subscribe();
    assert!(tokio::time::timeout(Duration::from_secs(5), video.recv())
        .await
        .unwrap()
        .is_some());
    drop(silent);
    ff.kill().await;
}

/// The names of libsrt's receiving and sending threads (`SRT:RcvQ:w1`, `SRT:SndQ:w1`) among process `pid`'s.
fn libsrt_queue_threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("SRT:RcvQ") || name.starts_with("SRT:SndQ"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_srt_port_runs_no_libsrt_thread_until_a_caller_comes() {
    // libsrt's receiving thread wakes every 10 ms even with nothing to receive; the gateway holds the port itself
    // and gives it to libsrt only when a datagram comes. Its own process, so no other test's listener counts.
    let dir = tempfile::tempdir().unwrap();
    let http = support::nginx::free_port();
    let srt = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = support::process::roomgate_config(dir.path(), http, 0, 0, srt, "");
    let http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let gw = support::process::serve(&config, http_addr).await;
    let pid = gw.0.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        libsrt_queue_threads(pid),
        Vec::<String>::new(),
        "no libsrt queue thread while idle"
    );

    // The first caller wakes libsrt, gets in (its first handshake read by libsrt or repeated), and its publish
    // reaches the room.
    let id = access_id("srtidle", "cam", &usersig("cam"));
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let ff = push_srt(
        &format!("srt://127.0.0.1:{srt}?streamid={id}"),
        "320x240",
        30,
        QUICK_X264,
    );
    wait_until_async("the SRT publish reaches the room", Duration::from_secs(20), || async {
        let (_, room) = get_json(http_addr, "/v1/rooms/1400000001/srtidle").await;
        room["anchors"][0]["video"]["codec"] == "h264"
    })
    .await;
    assert!(
        libsrt_queue_threads(pid)
            .iter()
            .any(|name| name.starts_with("SRT:RcvQ")),
        "libsrt runs once a caller came: {:?}",
        libsrt_queue_threads(pid)
    );
    ff.kill().await;
}
