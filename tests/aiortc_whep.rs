//! Playback proven with an independent WebRTC stack: aiortc (Python) plays an RTMP anchor over WHEP.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_an_rtmp_anchor_over_whep() {
    let gw = start_gateway().await;
    let ff = Ffmpeg::push(
        &lavfi("640x360", 40),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac",
        &gw.push_url("ai", "cam", &usersig("cam")),
    );
    gw.wait_anchor("ai", "cam", Duration::from_secs(15))
        .await
        .expect("anchor");
    let url = gw.http(&format!("/v2/sub/{SDKAPPID}/ai?SessionID=aiortc1"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whep_play.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("aiortc1"), "20"])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aiortc player failed (is aiortc installed? scripts/install-deps.sh does it):\n{stderr}"
    );
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["status"], 201);
    assert!(r["video_frames"].as_u64().unwrap() >= 30, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    assert!(r["audio_samples"].as_u64().unwrap() >= 48000, "{r}");
    assert_eq!(r["audio_rate"], 48000);
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_our_player_decodes_it() {
    use tokio::io::AsyncBufReadExt;
    let gw = start_gateway().await;
    let url = gw.http(&format!("/v2/pub/{SDKAPPID}/aw?SessionID=aiopub"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whip_publish.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("aiopub"), "12"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("aiortc answered")
        .unwrap()
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(r["status"], 201, "{r}");
    let anchor = gw
        .wait_anchor("aw", "aiopub", Duration::from_secs(10))
        .await
        .expect("aiortc is an anchor");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !anchor.video.has_cached_keyframe() {
        assert!(std::time::Instant::now() < deadline, "aiortc's H.264 reaches the room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let viewer = support::whep_client::play(
        &gw.http(&format!("/v2/sub/{SDKAPPID}/aw?SessionID=v1")),
        Some(&usersig("v1")),
        support::whep_client::Transport::Udp,
    )
    .await
    .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        viewer.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 10)
    })
    .await
    .unwrap();
    let video: Vec<&[u8]> = got.iter().filter(|f| f.video).map(|f| &f.data[..]).collect();
    assert_eq!(
        decode_h264_size_of(video.into_iter().take(1)),
        Some((640, 480)),
        "aiortc's picture decodes"
    );
    // aiortc DELETEs its session at the end: the anchor leaves.
    let done = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("aiortc finished")
        .unwrap()
        .unwrap();
    assert!(done.contains("\"deleted\": 200"), "{done}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.hub.room(&gw.key("aw")).is_some() {
        assert!(std::time::Instant::now() < deadline, "the anchor leaves after DELETE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// OBS as TRTC's guide sets it up publishes High profile (B-frames off); players that offer only (constrained)
/// baseline, as aiortc does, are answered with their own format and decode the High stream. An app that sets
/// `strict_h264_profile` keeps refusing them with 406.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_a_high_profile_anchor_it_did_not_offer() {
    let gw = start_gateway().await;
    let ff = Ffmpeg::push(
        &lavfi("640x360", 40),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v high -bf 0 -g 30 -c:a aac",
        &gw.push_url("obs", "cam", &usersig("cam")),
    );
    let anchor = gw
        .wait_anchor("obs", "cam", Duration::from_secs(15))
        .await
        .expect("anchor");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !anchor.video.has_cached_keyframe() {
        assert!(std::time::Instant::now() < deadline, "video flows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        anchor.video_info().profile.as_deref(),
        Some("High"),
        "{:?}",
        anchor.video_info()
    );
    let url = gw.http(&format!("/v2/sub/{SDKAPPID}/obs?SessionID=aiortc2"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whep_play.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("aiortc2"), "15"])
        .output()
        .await
        .expect("python3 runs");
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["status"], 201, "{r} {}", String::from_utf8_lossy(&out.stderr));
    assert!(r["video_frames"].as_u64().unwrap() >= 30, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    let metrics = http_get(gw.http_addr, "/metrics").await.1;
    assert!(metrics.contains("roomgate_whep_profile_mismatch_total"), "counted");
    ff.kill().await;

    // The same with strict_h264_profile: 406.
    let strict = start_gateway_with(|c| c.apps[0].strict_h264_profile = true).await;
    let ff = Ffmpeg::push(
        &lavfi("640x360", 20),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v high -bf 0 -g 30 -c:a aac",
        &strict.push_url("obs", "cam", &usersig("cam")),
    );
    let anchor = strict
        .wait_anchor("obs", "cam", Duration::from_secs(15))
        .await
        .expect("anchor");
    while anchor.video_info().profile.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = strict.http(&format!("/v2/sub/{SDKAPPID}/obs?SessionID=aiortc3"));
    let out = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("aiortc3"), "3"])
        .output()
        .await
        .expect("python3 runs");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(r["status"], 406, "{r} {}", String::from_utf8_lossy(&out.stderr));
    ff.kill().await;
}
