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
