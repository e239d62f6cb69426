//! WHIP publishing with a str0m publisher (H.264 + Opus generated with libx264/libopus), watched over WHEP.

mod support;

use roomgate::room::{LeaveReason, RoomEvent};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::whep_client::{play, Transport};
use support::whip_client::{publish, MediaSpec};
use support::*;

fn whip_url(gw: &TestGateway, room: &str, user: &str) -> String {
    gw.http(&format!("/v2/pub/{SDKAPPID}/{room}?SessionID={user}"))
}

fn whep_url(gw: &TestGateway, room: &str, viewer: &str) -> String {
    gw.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID={viewer}"))
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_is_watched_over_whep() {
    let gw = start_gateway().await;
    let publisher = publish(
        &whip_url(&gw, "wp", "obs1"),
        Some(&usersig("obs1")),
        MediaSpec::default(),
    )
    .await
    .unwrap();
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

    let viewer = play(&whep_url(&gw, "wp", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        viewer.collect(Duration::from_secs(8), |g| {
            g.iter().filter(|f| f.video).count() >= 30 && g.iter().filter(|f| !f.video).count() >= 50
        })
    })
    .await
    .unwrap();
    let video: Vec<&[u8]> = got.iter().filter(|f| f.video).map(|f| &f.data[..]).collect();
    assert!(video.len() >= 30);
    assert_eq!(
        decode_h264_size_of(video.into_iter().take(1)),
        Some((320, 240)),
        "first frame decodes alone"
    );
    let (samples, peak) = decode_opus_of(got.iter().filter(|f| !f.video).map(|f| &f.data[..]));
    assert!(
        samples >= 45 * 960 && peak > 0.05,
        "Opus forwarded untouched decodes: {samples} samples, peak {peak}"
    );

    // DELETE takes the anchor out of the room.
    let del = reqwest::Client::new()
        .delete(gw.http(&publisher.location))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    wait_until("the anchor leaves after DELETE", Duration::from_secs(5), || {
        gw.hub.room(&gw.key("wp")).is_none()
    })
    .await;
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
    let publisher = publish(&whip_url(&gw, "vp", "chrome"), Some(&usersig("chrome")), spec)
        .await
        .unwrap();
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

    let viewer = play(&whep_url(&gw, "vp", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    assert!(viewer.answer_sdp.contains("H264/90000"));
    let got = tokio::task::spawn_blocking(move || {
        let got = viewer.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 45);
        (got, viewer)
    })
    .await
    .unwrap()
    .0;
    let video: Vec<&[u8]> = got.iter().filter(|f| f.video).map(|f| &f.data[..]).collect();
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
            sdkappid: 1400000002,
            secret_key: "k2".into(),
            require_private_map_key: true,
            name: "locked".into(),
            ..Default::default()
        })
    })
    .await;
    let spec = MediaSpec::default();
    let e = publish(&whip_url(&gw, "r", "u1"), None, spec).await.err().unwrap();
    assert_eq!(e.status, 401, "{}", e.body);
    let e = publish(&whip_url(&gw, "r", "u1"), Some(&usersig("u2")), spec)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 401);
    assert!(e.body.contains("issued for user id"), "{}", e.body);
    let e = publish(
        &gw.http("/v2/pub/1400999999/r?SessionID=u1"),
        Some(&usersig("u1")),
        spec,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.status, 404);
    let sig2 = roomgate::auth::UserSig::generate(1400000002, "k2", "u1", roomgate::auth::unix_now(), 600, None);
    let e = publish(&gw.http("/v2/pub/1400000002/r?SessionID=u1"), Some(&sig2), spec)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 403, "{}", e.body);
    assert!(e.body.contains("privatemapkey"));
    let e = publish(&whip_url(&gw, "bad.room", "u1"), Some(&usersig("u1")), spec)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 400);
    let bad = reqwest::Client::new()
        .post(whip_url(&gw, "r", "u1"))
        .bearer_auth(usersig("u1"))
        .body("v=0 nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
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
        let r = reqwest::Client::new()
            .post(whip_url(&gw, "r", "u1"))
            .bearer_auth(usersig("u1"))
            .header("Content-Type", "application/sdp")
            .body(support::whip_client::offer_sdp(cfg))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 406);
        let body = r.text().await.unwrap();
        assert!(body.contains(missing), "{body}");
    }
    assert!(gw.hub.rooms().is_empty(), "nothing entered a room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_whip_publisher_replaces_the_first() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let first = publish(&whip_url(&gw, "tk", "dup"), Some(&usersig("dup")), MediaSpec::default())
        .await
        .unwrap();
    let a1 = gw.wait_anchor("tk", "dup", Duration::from_secs(10)).await.unwrap();
    let second = publish(&whip_url(&gw, "tk", "dup"), Some(&usersig("dup")), MediaSpec::default())
        .await
        .unwrap();
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
    let mut replaced = false;
    while let Ok(e) = events.try_recv() {
        replaced |= matches!(
            e,
            RoomEvent::AnchorLeft {
                reason: LeaveReason::Replaced,
                ..
            }
        );
    }
    assert!(replaced, "the first anchor left as replaced");
    // The first session is gone from the gateway (its resource is deleted).
    let del = reqwest::Client::new()
        .delete(gw.http(&first.location))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_times_out_and_leaves() {
    let gw = start_gateway_with(|c| c.rtc.session_timeout_secs = 2).await;
    let mut events = gw.hub.observe();
    let publisher = publish(
        &whip_url(&gw, "to", "quiet"),
        Some(&usersig("quiet")),
        MediaSpec::default(),
    )
    .await
    .unwrap();
    let anchor = gw.wait_anchor("to", "quiet", Duration::from_secs(10)).await.unwrap();
    wait_until("media flows", Duration::from_secs(10), || anchor.video.has_media()).await;
    publisher.controls.silent.store(true, Ordering::Relaxed);
    wait_until(
        "the anchor leaves after the media timeout",
        Duration::from_secs(8),
        || gw.hub.room(&gw.key("to")).is_none(),
    )
    .await;
    let mut timed_out = false;
    while let Ok(e) = events.try_recv() {
        timed_out |= matches!(
            e,
            RoomEvent::AnchorLeft {
                reason: LeaveReason::Timeout,
                ..
            }
        );
    }
    assert!(timed_out, "left with reason Timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_b_frames_end_the_publish() {
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let spec = MediaSpec {
        bframes: true,
        ..MediaSpec::default()
    };
    let _publisher = publish(&whip_url(&gw, "wb", "bf"), Some(&usersig("bf")), spec)
        .await
        .unwrap();
    gw.wait_anchor("wb", "bf", Duration::from_secs(10)).await.unwrap();
    wait_until("the anchor leaves", Duration::from_secs(10), || {
        gw.hub.room(&gw.key("wb")).is_none()
    })
    .await;
    let mut reason = None;
    while let Ok(e) = events.try_recv() {
        if let RoomEvent::AnchorLeft { reason: r, .. } = e {
            reason = Some(r);
        }
    }
    assert!(matches!(reason, Some(LeaveReason::Ended(r)) if r.contains("B-frames")));
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
    let publisher = publish(&whip_url(&gw, "kf", "cam"), Some(&usersig("cam")), spec)
        .await
        .unwrap();
    let anchor = gw.wait_anchor("kf", "cam", Duration::from_secs(10)).await.unwrap();
    wait_until("P-frames flow", Duration::from_secs(10), || {
        anchor.video.stats().frames > 30
    })
    .await;
    assert!(!anchor.video.has_cached_keyframe());
    assert_eq!(publisher.controls.plis.load(Ordering::Relaxed), 0);
    let viewer = play(&whep_url(&gw, "kf", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        viewer.collect(Duration::from_secs(8), |g| {
            g.iter()
                .any(|f| f.video && decode_h264_size_of([&f.data[..]]).is_some())
        })
    })
    .await
    .unwrap();
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
    let gw = start_gateway().await;
    let mut events = gw.hub.observe();
    let spec = MediaSpec {
        vp8: true,
        declared_vp8_size: Some((16383, 16383)),
        ..MediaSpec::default()
    };
    let publisher = publish(&whip_url(&gw, "huge", "u1"), Some(&usersig("u1")), spec)
        .await
        .expect("the offer itself is fine");
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
