//! Playback proven with an independent WebRTC stack: aiortc (Python) plays an RTMP anchor over WHEP.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::whep_client::video_of;
use support::*;

/// How OBS as TRTC's guide sets it up encodes: High profile, B-frames off.
const HIGH_NO_BFRAMES: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v high -bf 0 -g 30 -c:a aac";

/// tests/aiortc/whep_play.py playing `room` of `gw` as `viewer` for `seconds`: whether it exited well, its JSON
/// report (null if it printed none) and its stderr.
async fn aiortc_play(gw: &TestGateway, room: &str, viewer: &str, seconds: &str) -> (bool, Value, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whep_play.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &gw.whep_url(room, viewer), &usersig(viewer), seconds])
        .output()
        .await
        .expect("python3 runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), report, stderr)
}

/// aiortc's report: 30 frames or more of a 640x360 picture.
fn assert_saw_640x360(r: &Value) {
    assert!(r["video_frames"].as_u64().unwrap() >= 30, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_an_rtmp_anchor_over_whep() {
    let gw = start_gateway().await;
    let (ff, _) = gw.push_anchor("ai", "cam", "640x360", 40, LIVE_X264).await;
    let (ok, r, stderr) = aiortc_play(&gw, "ai", "aiortc1", "20").await;
    assert!(
        ok,
        "aiortc player failed (is aiortc installed? scripts/install-deps.sh does it):\n{stderr}"
    );
    assert_eq!(r["status"], 201);
    assert_saw_640x360(&r);
    assert!(r["audio_samples"].as_u64().unwrap() >= 48000, "{r}");
    assert_eq!(r["audio_rate"], 48000);
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_our_player_decodes_it() {
    use tokio::io::AsyncBufReadExt;
    let gw = start_gateway().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whip_publish.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, &gw.whip_url("aw", "aiopub"), &usersig("aiopub"), "12"])
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
    let r: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(r["status"], 201, "{r}");
    // aiortc is an anchor, and its H.264 reaches the room.
    gw.wait_video("aw", "aiopub", Duration::from_secs(15)).await;
    let got = gw.watch("aw", "v1", Duration::from_secs(8), 10, 0).await;
    assert_eq!(
        decode_h264_size_of(video_of(&got).into_iter().take(1)),
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
    gw.wait_room_gone("aw", Duration::from_secs(5)).await;
}

/// OBS as TRTC's guide sets it up publishes High profile (B-frames off); players that offer only (constrained)
/// baseline, as aiortc does, are answered with their own format and decode the High stream. An app that sets
/// `strict_h264_profile` keeps refusing them with 406.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_a_high_profile_anchor_it_did_not_offer() {
    let gw = start_gateway().await;
    let ff = gw.push_lavfi("obs", "cam", "640x360", 40, HIGH_NO_BFRAMES);
    let anchor = gw.wait_video("obs", "cam", Duration::from_secs(15)).await;
    assert_eq!(
        anchor.video_info().profile.as_deref(),
        Some("High"),
        "{:?}",
        anchor.video_info()
    );
    let (_, r, stderr) = aiortc_play(&gw, "obs", "aiortc2", "15").await;
    assert_eq!(r["status"], 201, "{r} {stderr}");
    assert_saw_640x360(&r);
    let metrics = http_get(gw.http_addr, "/metrics").await.1;
    assert!(metrics.contains("roomgate_whep_profile_mismatch_total"), "counted");
    ff.kill().await;

    // The same with strict_h264_profile: 406.
    let strict = start_gateway_with(|c| c.apps[0].strict_h264_profile = true).await;
    let (ff, anchor) = strict.push_anchor("obs", "cam", "640x360", 20, HIGH_NO_BFRAMES).await;
    while anchor.video_info().profile.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r, stderr) = aiortc_play(&strict, "obs", "aiortc3", "3").await;
    assert_eq!(r["status"], 406, "{r} {stderr}");
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_an_anchor_of_another_node_through_the_relay() {
    use support::redis::{join_cluster, Redis};
    let redis = Redis::start();
    let (url_a, url_b) = (redis.url(), redis.url());
    let a = start_gateway_with(move |c| join_cluster(c, url_a, "node-a")).await;
    let b = start_gateway_with(move |c| join_cluster(c, url_b, "node-b")).await;
    let (ff, _) = a.push_anchor("far", "cam", "640x360", 40, LIVE_X264).await;
    // Node B knows A's anchor once A has published its rooms (at once on the join; B reads them a second old).
    wait_until_async("node B lists the anchor on node A", Duration::from_secs(10), || async {
        let (_, v) = get_json(b.http_addr, "/v1/rooms").await;
        v["rooms"][0]["anchors"][0]["node"] == "node-a"
    })
    .await;
    let (ok, r, stderr) = aiortc_play(&b, "far", "aiortc2", "15").await;
    assert!(ok, "aiortc player failed:\n{stderr}");
    assert_eq!(r["status"], 201, "node B answers the offer itself: {r}");
    assert_saw_640x360(&r);
    assert!(r["audio_samples"].as_u64().unwrap() >= 48000, "{r}");
    ff.kill().await;
}
