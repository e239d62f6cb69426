//! WHIP publishing with a str0m publisher (H.264 + Opus generated with libx264/libopus), watched over WHEP.

mod support;

use roomgate::room::{LeaveReason, RoomEvent};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::whep_client::{audio_of, play, post_offer, video_of, Transport};
use support::whip_client::{offer_sdp, publish, MediaSpec, WhipPublisher};
use support::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// `user` publishing `spec` media into `room` (with its UserSig).
async fn publishing(gw: &TestGateway, room: &str, user: &str, spec: MediaSpec) -> WhipPublisher {
    publish(&gw.whip_url(room, user), Some(&usersig(user)), spec)
        .await
        .unwrap()
}

/// A gateway and what its rooms report.
async fn observed_gateway() -> (TestGateway, UnboundedReceiver<RoomEvent>) {
    let gw = start_gateway().await;
    let events = gw.hub.observe();
    (gw, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_is_watched_over_whep() {
    let gw = start_gateway().await;
    let publisher = publishing(&gw, "wp", "obs1", MediaSpec::default()).await;
    assert!(publisher.location.starts_with("/v2/pub/session/"));
    assert!(!publisher.etag.is_empty());
    let anchor = gw
        .wait_anchor("wp", "obs1", Duration::from_secs(10))
        .await
        .expect("the publisher is an anchor");
    wait_until("video and audio flow", Duration::from_secs(10), || {
        anchor.video.has_cached_keyframe() && anchor.audio.has_media()
    })
    .await;
    let info = anchor.video_info();
    assert_eq!(
        (info.width, info.height),
        (Some(320), Some(240)),
        "resolution read from the in-band SPS"
    );

    let got = gw.watch("wp", "v1", Duration::from_secs(8), 30, 50).await;
    let video = video_of(&got);
    assert!(video.len() >= 30);
    assert_eq!(
        decode_h264_size_of(video.into_iter().take(1)),
        Some((320, 240)),
        "first frame decodes alone"
    );
    let (samples, peak) = decode_opus_of(audio_of(&got));
    assert!(
        samples >= 45 * 960 && peak > 0.05,
        "Opus forwarded untouched decodes: {samples} samples, peak {peak}"
    );

    // DELETE takes the anchor out of the room.
    assert_eq!(http_delete(&gw.http(&publisher.location)).await, 200);
    gw.wait_room_gone("wp", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_largest_opus_packets_reach_viewers_whole() {
    let gw = start_gateway().await;
    // Opus at 510 kb/s constant: every packet 1275 bytes (near the largest), above the size video is cut to.
    let spec = MediaSpec {
        opus_cbr: Some(510_000),
        ..MediaSpec::default()
    };
    let _publisher = publishing(&gw, "loud", "mic", spec).await;
    let anchor = gw
        .wait_anchor("loud", "mic", Duration::from_secs(10))
        .await
        .expect("the publisher is an anchor");
    wait_until("video and audio flow", Duration::from_secs(10), || {
        anchor.video.has_cached_keyframe() && anchor.audio.has_media()
    })
    .await;
    let got = gw.watch("loud", "v1", Duration::from_secs(8), 30, 50).await;
    let audio = audio_of(&got);
    let largest = audio.iter().map(|p| p.len()).max().unwrap_or(0);
    assert_eq!(
        (audio.len() >= 50, largest),
        (true, 1275),
        "{} packets reached the viewer, the largest {largest} bytes",
        audio.len()
    );
    let (samples, peak) = decode_opus_of(audio);
    assert!(
        samples >= 45 * 960 && peak > 0.05,
        "they decode: {samples} samples, peak {peak}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_only_publisher_is_transcoded_to_h264_for_viewers() {
    let gw = start_gateway().await;
    let spec = MediaSpec {
        vp8: true,
        width: 640,
        height: 480,
        ..MediaSpec::default()
    };
    let publisher = publishing(&gw, "vp", "chrome", spec).await;
    assert!(publisher.answer_sdp.contains("VP8/90000"), "{}", publisher.answer_sdp);
    let anchor = gw
        .wait_anchor("vp", "chrome", Duration::from_secs(10))
        .await
        .expect("the VP8 publisher is an anchor");
    wait_until("transcoded H.264 flows", Duration::from_secs(10), || {
        anchor.video.has_cached_keyframe()
    })
    .await;
    let info = anchor.video_info();
    assert_eq!(info.source_codec, "vp8");
    assert_eq!((info.width, info.height), (Some(640), Some(480)));
    let plid = info.profile_level_id.unwrap_or_default();
    assert!(plid.starts_with("42c0"), "constrained baseline: {plid}");

    let viewer = play(&gw.whep_url("vp", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    assert!(viewer.answer_sdp.contains("H264/90000"));
    let got = viewer
        .gather(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 45)
        .await;
    let video = video_of(&got);
    assert!(video.len() >= 45, "{} frames", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied().take(1)), Some((640, 480)));
    assert!(
        video.iter().all(|f| !roomgate::media::h264::has_b_slice(f)),
        "no B-frames in the transcoded video"
    );
    assert!(got.iter().all(|f| !f.video || f.contiguous), "no gaps");
    drop(publisher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_errors_say_what_is_wrong() {
    let gw = start_gateway_with(|c| {
        c.apps.push(roomgate::config::AppConfig {
            require_private_map_key: true,
            ..app(1400000002, "k2", "locked")
        })
    })
    .await;
    let url = gw.whip_url("r", "u1");
    assert_needs_own_usersig(&url, "u2", true).await;
    let u1 = usersig("u1");
    let e = refused_offer(&gw.http("/v2/pub/1400999999/r?SessionID=u1"), Some(&u1), true).await;
    assert_eq!(e.status, 404);
    let sig2 = roomgate::auth::UserSig::generate(1400000002, "k2", "u1", roomgate::auth::unix_now(), 600, None);
    let e = refused_offer(&gw.http("/v2/pub/1400000002/r?SessionID=u1"), Some(&sig2), true).await;
    assert_eq!(e.status, 403, "{}", e.body);
    assert!(e.body.contains("privatemapkey"));
    let e = refused_offer(&gw.whip_url("bad.room", "u1"), Some(&u1), true).await;
    assert_eq!(e.status, 400);
    assert_eq!(post_raw(&url, &u1, "v=0 nonsense").await, 400);
    // Offers without a codec roomgate takes: 406 naming what is missing.
    for (cfg, missing) in [
        (
            str0m::Rtc::builder()
                .clear_codecs()
                .enable_vp9(true)
                .enable_opus(true, false),
            "H.264 or VP8 video",
        ),
        (
            str0m::Rtc::builder()
                .clear_codecs()
                .enable_h264(true)
                .enable_pcmu(true, false),
            "Opus audio",
        ),
    ] {
        let e = post_offer(&url, Some(&u1), offer_sdp(cfg), "WHIP POST")
            .await
            .err()
            .expect("the offer is refused");
        assert_eq!(e.status, 406);
        assert!(e.body.contains(missing), "{}", e.body);
    }
    assert!(gw.hub.rooms().is_empty(), "nothing entered a room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_whip_publisher_replaces_the_first() {
    let (gw, mut events) = observed_gateway().await;
    let first = publishing(&gw, "tk", "dup", MediaSpec::default()).await;
    let a1 = gw.wait_anchor("tk", "dup", Duration::from_secs(10)).await.unwrap();
    let second = publishing(&gw, "tk", "dup", MediaSpec::default()).await;
    wait_until("the second publisher takes over", Duration::from_secs(10), || {
        gw.hub
            .participant(&gw.key("tk"), "dup")
            .is_some_and(|p| !std::sync::Arc::ptr_eq(&p, &a1))
    })
    .await;
    let a2 = gw.hub.participant(&gw.key("tk"), "dup").unwrap();
    wait_until("the new anchor's video flows", Duration::from_secs(10), || {
        a2.video.has_media()
    })
    .await;
    assert_eq!(gw.hub.room(&gw.key("tk")).unwrap().participants().len(), 1);
    assert!(
        left_reasons(&mut events).contains(&LeaveReason::Replaced),
        "the first anchor left as replaced"
    );
    // The first session is gone from the gateway (its resource is deleted).
    assert_eq!(http_delete(&gw.http(&first.location)).await, 404);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_times_out_and_leaves() {
    let gw = start_gateway_with(|c| c.rtc.session_timeout_secs = 2).await;
    let mut events = gw.hub.observe();
    let publisher = publishing(&gw, "to", "quiet", MediaSpec::default()).await;
    let anchor = gw.wait_anchor("to", "quiet", Duration::from_secs(10)).await.unwrap();
    wait_until("media flows", Duration::from_secs(10), || anchor.video.has_media()).await;
    publisher.controls.silent.store(true, Ordering::Relaxed);
    // The anchor leaves after the media timeout.
    gw.wait_room_gone("to", Duration::from_secs(8)).await;
    assert!(
        left_reasons(&mut events).contains(&LeaveReason::Timeout),
        "left with reason Timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_b_frames_end_the_publish() {
    let (gw, mut events) = observed_gateway().await;
    let spec = MediaSpec {
        bframes: true,
        ..MediaSpec::default()
    };
    let _publisher = publishing(&gw, "wb", "bf", spec).await;
    gw.wait_anchor("wb", "bf", Duration::from_secs(10)).await.unwrap();
    gw.wait_room_gone("wb", Duration::from_secs(10)).await;
    let reasons = left_reasons(&mut events);
    assert!(matches!(reasons.last(), Some(LeaveReason::Ended(r)) if r.contains("B-frames")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_viewer_gets_a_keyframe_from_the_publisher_when_none_is_cached() {
    let gw = start_gateway().await;
    // No keyframe ever, unless asked: the cache cannot serve a viewer.
    let spec = MediaSpec {
        gop: 100_000,
        skip_first_keyframe: true,
        ..MediaSpec::default()
    };
    let publisher = publishing(&gw, "kf", "cam", spec).await;
    let anchor = gw.wait_anchor("kf", "cam", Duration::from_secs(10)).await.unwrap();
    wait_until("P-frames flow", Duration::from_secs(10), || {
        anchor.video.stats().frames > 30
    })
    .await;
    assert!(!anchor.video.has_cached_keyframe());
    assert_eq!(publisher.controls.plis.load(Ordering::Relaxed), 0);
    let viewer = play(&gw.whep_url("kf", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let got = viewer
        .gather(Duration::from_secs(8), |g| {
            g.iter()
                .any(|f| f.video && decode_h264_size_of([&f.data[..]]).is_some())
        })
        .await;
    assert!(
        publisher.controls.plis.load(Ordering::Relaxed) >= 1,
        "the publisher was asked for a keyframe"
    );
    assert!(
        got.iter()
            .any(|f| f.video && decode_h264_size_of([&f.data[..]]) == Some((320, 240))),
        "the viewer got it"
    );
    // Many viewer requests become at most about one PLI a second.
    let plis_before = publisher.controls.plis.load(Ordering::Relaxed);
    for _ in 0..20 {
        anchor.request_keyframe();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plis = publisher.controls.plis.load(Ordering::Relaxed) - plis_before;
    assert!((1..=4).contains(&plis), "{plis} PLIs for 20 requests in 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_keyframe_declaring_16383x16383_is_refused_before_decoding() {
    let (gw, mut events) = observed_gateway().await;
    let spec = MediaSpec {
        vp8: true,
        declared_vp8_size: Some((16383, 16383)),
        ..MediaSpec::default()
    };
    // The offer itself is fine.
    let publisher = publishing(&gw, "huge", "u1", spec).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let reason = loop {
        assert!(std::time::Instant::now() < deadline, "the publish ends");
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(RoomEvent::AnchorLeft { reason, .. })) => break reason,
            _ => continue,
        }
    };
    assert!(
        matches!(&reason, LeaveReason::Ended(r) if r.contains("16383x16383") && r.contains("max_pixels")),
        "{reason:?}"
    );
    drop(publisher);
    let metrics = http_get(gw.http_addr, "/metrics").await.1;
    assert!(metrics.contains("reason=\"picture_size\""), "counted");
    assert_still_serves(&gw).await;
}
