//! Pull tasks end to end: a real nginx serves the testdata files over HTTP and runs an RTMP server; tasks are
//! started over the signed Cloud API; WHEP viewers (the str0m test player) decode what the robot anchors play.

mod support;

use roomgate::room::Anchor;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cloud::{
    describe, describe_until, error_code, merge, start_params, start_task, stop, task_params, update, CloudClient,
};
use support::nginx::{free_port, Nginx};
use support::whep_client::{audio_of, video_of, Received};
use support::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// An nginx root with the testdata files plus the broken sources the failure tests need.
fn source_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(testdata()).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("empty.mp4"), b"").unwrap();
    std::fs::write(
        dir.path().join("notmedia.mp4"),
        b"this is not a media file, just some text\n".repeat(100),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("subtitles.srt"),
        "1\n00:00:00,000 --> 00:00:02,000\nhello\n\n",
    )
    .unwrap();
    dir
}

/// Watch `room`'s anchor over WHEP (up to 15 s) until `video`/`audio` frames arrived; the frames.
async fn watch(gw: &TestGateway, room: &str, video: usize, audio: usize) -> Vec<Received> {
    gw.watch(room, "viewer", Duration::from_secs(15), video, audio).await
}

/// What most tests here start from: nginx serving `source_root()`, a gateway, and a Cloud API client for it.
struct Pulling {
    api: CloudClient,
    gw: TestGateway,
    nginx: Nginx,
}

impl Pulling {
    /// nginx, a gateway with the test config, and the client.
    async fn start() -> Pulling {
        Pulling::start_with(|_| {}).await
    }

    /// `start` with `tweak` applied to the gateway's config.
    async fn start_with(tweak: impl FnOnce(&mut roomgate::Config)) -> Pulling {
        let nginx = Nginx::serving(source_root()).await;
        let gw = start_gateway_with(tweak).await;
        let api = CloudClient::new(gw.http_addr);
        Pulling { api, gw, nginx }
    }

    /// Start the task of robot "robot" playing nginx's `path` into `room`, with the `extra` StartStreamIngest
    /// parameters, and wait until the robot is in the room: (the TaskId, its anchor).
    async fn play(&self, room: &str, path: &str, extra: Value) -> (String, Arc<Anchor>) {
        let params = merge(start_params(room, "robot", &self.nginx.url(path)), extra);
        let task = start_task(&self.api, params).await;
        let anchor = self
            .gw
            .wait_anchor(room, "robot", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{room}: the robot enters the room"));
        (task, anchor)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_task_plays_to_a_whep_viewer_until_stopped() {
    let t = Pulling::start().await;
    let (task, anchor) = t.play("pull-mp4", "/sample-720p30.mp4", json!({"RepeatNum": -1})).await;
    assert!(task.len() >= 32, "an unguessable task id: {task}");
    assert_eq!(anchor.source, roomgate::room::SourceKind::Pull);
    let got = watch(&t.gw, "pull-mp4", 45, 50).await;
    let video = video_of(&got);
    assert!(video.len() >= 45, "{} video frames", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied()), Some((1280, 720)));
    let (samples, peak) = decode_opus_of(audio_of(&got));
    assert!(samples >= 48_000, "a second of audio decodes ({samples} samples)");
    assert!(peak > 0.05, "the sine is audible (peak {peak})");

    let r = describe(&t.api, &task).await;
    assert_eq!(r["Status"], "InProgress", "{r}");
    assert_eq!(r["State"], "playing", "{r}");
    assert_eq!(
        r["Source"]["VideoPassthrough"], true,
        "baseline H.264 passes through: {r}"
    );
    assert_eq!(r["Source"]["AudioCodec"], "aac", "{r}");
    assert!(r["PositionMs"].as_i64().unwrap() > 0, "{r}");

    stop(&t.api, &task).await;
    // Stopped once, it is finished: a second Stop says so at once, even while the robot may still be leaving.
    let r = t.api.call("StopStreamIngest", task_params(&task)).await;
    assert_eq!(error_code(&r), Some("FailedOperation.TaskFinished"), "{r}");
    t.gw.wait_left("pull-mp4", "robot", Duration::from_secs(5)).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(5), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "stopped", "{r}");
    let r = t.api.call("StopStreamIngest", task_params(&task)).await;
    assert_eq!(error_code(&r), Some("FailedOperation.TaskFinished"), "{r}");
    let r = describe(&t.api, "no-such-task").await;
    assert_eq!(r["Status"], "NotExist", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flv_hls_mp3_and_rtmp_sources_reach_viewers() {
    let Pulling { api, gw, nginx } = Pulling::start().await;

    // An RTMP source: ffmpeg publishes into nginx-rtmp, the task pulls it from there.
    let rtmp_source = format!("rtmp://{}/live/cam", nginx.rtmp);
    let pusher = Ffmpeg::push(
        &lavfi("640x360", 60),
        "-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g 30 -c:a aac -ar 44100",
        &rtmp_source,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (room, url, want_video) in [
        ("pull-flv", nginx.url("/sample-720p30-baseline.flv"), Some((1280, 720))),
        ("pull-hls", nginx.url("/hls/index.m3u8"), Some((1280, 720))),
        ("pull-mp3", nginx.url("/sample.mp3"), None),
        ("pull-rtmp", rtmp_source.clone(), Some((640, 360))),
    ] {
        let task = start_task(&api, start_params(room, "robot", &url)).await;
        gw.wait_anchor(room, "robot", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{room}: the robot enters the room"));
        let got = watch(&gw, room, if want_video.is_some() { 30 } else { 0 }, 50).await;
        let video = video_of(&got);
        match want_video {
            Some(size) => {
                assert!(video.len() >= 30, "{room}: {} video frames", video.len());
                assert_eq!(decode_h264_size_of(video.iter().copied()), Some(size), "{room}");
            }
            None => assert!(
                video.is_empty(),
                "{room}: an audio-only source makes an audio-only anchor"
            ),
        }
        let (samples, _) = decode_opus_of(audio_of(&got));
        assert!(samples >= 48_000, "{room}: audio decodes ({samples} samples)");
        stop(&api, &task).await;
    }
    pusher.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b_frame_high_profile_mp4_is_reencoded_to_baseline() {
    let t = Pulling::start().await;
    let (task, anchor) = t.play("pull-bf", "/sample-720p30-bframes.mp4", json!({})).await;
    wait_until("transcoded video flows", Duration::from_secs(10), || {
        anchor.video.has_cached_keyframe()
    })
    .await;
    let plid = anchor.video_info().profile_level_id.unwrap_or_default();
    assert!(plid.starts_with("42c0"), "constrained baseline: {plid}");
    let got = watch(&t.gw, "pull-bf", 45, 10).await;
    let video = video_of(&got);
    assert!(video.len() >= 45, "{} frames", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied()), Some((1280, 720)));
    assert!(
        video.iter().all(|f| !roomgate::media::h264::has_b_slice(f)),
        "no B-frames reach the viewer"
    );
    let r = describe(&t.api, &task).await;
    assert_eq!(r["Source"]["VideoPassthrough"], false, "{r}");
    assert_eq!(r["Source"]["VideoCodec"], "h264", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_larger_than_max_pixels_is_refused_before_decoding() {
    // 1280x720 is over this gateway's limit; it would have to be decoded (B-frames), so it is refused.
    let t = Pulling::start_with(|c| c.video.max_pixels = 640 * 360).await;
    let big = t.nginx.url("/sample-720p30-bframes.mp4");
    let task = start_task(&t.api, start_params("pull-big", "robot", &big)).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(20), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "failed", "{r}");
    let reason = r["Reason"].as_str().unwrap();
    assert!(
        reason.contains("1280x720") && reason.contains("video.max_pixels"),
        "{reason}"
    );
    // A passthrough source is not decoded, so the limit does not apply to it.
    let (ok, _) = t.play("pull-pass", "/sample-720p30.mp4", json!({})).await;
    assert_eq!(describe(&t.api, &ok).await["Status"], "InProgress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sources_fail_after_retries_with_distinct_reasons() {
    let Pulling { api, gw, nginx } = Pulling::start().await;
    let mut events = gw.pull.observe();
    let refused_port = free_port();
    // What the source's server answered is shown; how an address could not be reached (refused, TLS on a
    // plain port, timed out) is one generic reason, so Reason is no port-scan oracle (details in the log).
    let cases = [
        (
            "refused",
            format!("http://127.0.0.1:{refused_port}/a.mp4"),
            "the source could not be opened",
        ),
        ("notfound", nginx.url("/missing.mp4"), "HTTP 404"),
        (
            "tls",
            format!("https://{}/sample.mp3", nginx.http),
            "the source could not be opened",
        ),
        ("empty", nginx.url("/empty.mp4"), "empty source"),
        ("notmedia", nginx.url("/notmedia.mp4"), "not a media file"),
        (
            "nocodec",
            nginx.url("/subtitles.srt"),
            "container format is not accepted",
        ),
    ];
    let mut tasks = vec![];
    for (i, (name, url, _)) in cases.iter().enumerate() {
        tasks.push(start_task(&api, start_params(&format!("broken{i}"), name, url)).await);
    }
    for (task, (name, _, reason)) in tasks.iter().zip(cases.iter()) {
        let r = describe_until(&api, task, Duration::from_secs(20), |r| r["Status"] == "NotExist").await;
        assert_eq!(r["State"], "failed", "{name}: {r}");
        let got = r["Reason"].as_str().unwrap();
        assert!(got.contains(reason), "{name}: reason {got:?} should say {reason:?}");
        assert_eq!(r["Restarts"], 3, "{name}: retried at 0, 1 and 3 s: {r}");
    }
    // The events each task emitted: three restarts then one failure.
    let mut per_task: std::collections::HashMap<String, Vec<String>> = Default::default();
    while let Ok(ev) = events.try_recv() {
        let kind = match ev.kind {
            roomgate::ingest::pull::IngestEventKind::Started => "started",
            roomgate::ingest::pull::IngestEventKind::Restarting { .. } => "restarting",
            roomgate::ingest::pull::IngestEventKind::Failed { .. } => "failed",
            roomgate::ingest::pull::IngestEventKind::Stopped { .. } => "stopped",
        };
        per_task.entry(ev.task_id).or_default().push(kind.into());
    }
    for task in &tasks {
        assert_eq!(
            per_task.get(task).cloned().unwrap_or_default(),
            vec!["restarting", "restarting", "restarting", "failed"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_source_is_stopped_promptly() {
    // A server that accepts connections and never sends a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(tokio::sync::Mutex::new(vec![]));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.lock().await.push(s);
        }
    });
    let gw = start_gateway_with(|c| c.pull.open_timeout_secs = 60).await;
    let api = CloudClient::new(gw.http_addr);
    for scheme in ["http", "rtmp"] {
        let task = start_task(
            &api,
            start_params("stall", "robot", &format!("{scheme}://{addr}/live/x")),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = describe(&api, &task).await;
        assert_eq!(r["Status"], "InProgress", "{scheme}: still trying: {r}");
        let asked = Instant::now();
        stop(&api, &task).await;
        let r = describe_until(&api, &task, Duration::from_secs(3), |r| r["Status"] == "NotExist").await;
        assert_eq!(r["State"], "stopped", "{r}");
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{scheme}: a hung source does not hold Stop up"
        );
        assert!(gw.pull.list().is_empty(), "the runner thread ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_pauses_resumes_and_switches_the_source() {
    let t = Pulling::start().await;
    let (task, anchor) = t.play("pull-upd", "/sample-720p30.mp4", json!({"RepeatNum": -1})).await;
    wait_until("video flows", Duration::from_secs(10), || {
        anchor.video.has_cached_keyframe()
    })
    .await;

    let r = update(&t.api, &task, json!({"IsPause": true})).await;
    assert_eq!(r["Status"], "InProgress", "{r}");
    describe_until(&t.api, &task, Duration::from_secs(3), |r| r["State"] == "paused").await;
    let before = anchor.video.stats().frames;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let paused_frames = anchor.video.stats().frames - before;
    assert!(
        paused_frames <= 2,
        "a paused task sends nothing ({paused_frames} frames)"
    );
    update(&t.api, &task, json!({"IsPause": false, "Volume": 10})).await;
    describe_until(&t.api, &task, Duration::from_secs(3), |r| r["State"] == "playing").await;
    let before = anchor.video.stats().frames;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(anchor.video.stats().frames - before >= 15, "playing again");

    let r = update(&t.api, &task, json!({"StreamUrl": t.nginx.url("/sample.mp3")})).await;
    assert!(error_code(&r).is_none(), "{r}");
    describe_until(&t.api, &task, Duration::from_secs(5), |r| {
        r["Source"]["Format"].as_str().is_some_and(|f| f.contains("mp3"))
    })
    .await;

    let r = update(&t.api, &task, json!({"Tempo": 3.0})).await;
    assert_eq!(error_code(&r), Some("InvalidParameter.Tempo"), "{r}");
    let r = update(&t.api, "nope", json!({"Volume": 5})).await;
    assert_eq!(error_code(&r), Some("FailedOperation.TaskNotExist"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_and_signed() {
    let gw = start_gateway_with(|c| {
        c.api.rate_limit = 50;
        c.pull.allow_private_sources = false;
    })
    .await;
    let api = CloudClient::new(gw.http_addr);
    let good = start_params("room1", "robot", "https://example.com/a.mp4");
    let with = |k: &str, v: Value| {
        let mut p = good.clone();
        p[k] = v;
        p
    };
    let without = |k: &str| {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(k);
        p
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("SdkAppId"), "MissingParameter.SdkAppId"),
        (without("RoomId"), "MissingParameter.RoomId"),
        (without("UserId"), "MissingParameter.UserId"),
        (without("UserSig"), "MissingParameter.UserSig"),
        (without("StreamUrl"), "MissingParameter.StreamUrl"),
        (with("SdkAppId", json!(42)), "InvalidParameter.SdkAppId"),
        (
            with("SdkAppId", json!("1400000001")),
            "InvalidParameter.BodyParamsError",
        ),
        (with("RoomIdType", json!(1)), "InvalidParameter.RoomId"),
        (with("RoomIdType", json!(2)), "InvalidParameter.RoomIdType"),
        (with("RoomId", json!("bad room!")), "InvalidParameter.StrRoomId"),
        (with("UserId", json!("a/b")), "InvalidParameter.UserId"),
        (
            with("UserSig", json!(usersig("someone-else"))),
            "InvalidParameter.UserSig",
        ),
        (
            with("StreamUrl", json!("file:///etc/passwd")),
            "InvalidParameter.StreamUrl",
        ),
        (
            with("StreamUrl", json!("http://127.0.0.1:8080/x.mp4")),
            "InvalidParameter.StreamUrl",
        ),
        (
            with("StreamUrl", json!("http://localhost/x.mp4")),
            "InvalidParameter.StreamUrl",
        ),
        (
            with("StreamUrl", json!("http://169.254.169.254/latest")),
            "InvalidParameter.StreamUrl",
        ),
        (with("RepeatNum", json!(0)), "InvalidParameter.RepeatNum"),
        (with("RepeatNum", json!(1001)), "InvalidParameter.RepeatNum"),
        (with("RepeatNum", json!(-2)), "InvalidParameter.RepeatNum"),
        (with("MaxDuration", json!(0)), "InvalidParameter.MaxDuration"),
        (with("MaxDuration", json!(10081)), "InvalidParameter.MaxDuration"),
        (with("Volume", json!(201)), "InvalidParameter.Volume"),
        (with("Tempo", json!(1.1)), "InvalidParameter.Tempo"),
        (with("IdleTimeout", json!(601)), "InvalidParameter.IdleTimeout"),
        (with("SeekSecond", json!(-1)), "InvalidParameter.SeekSecond"),
        (
            with("VideoEncodeParams", json!({"Width": 4000})),
            "InvalidParameter.Width",
        ),
        (
            with("AudioEncodeParams", json!({"SampleRate": 8000})),
            "InvalidParameter.SampleRate",
        ),
        (with("SourceUrl", json!(["a", "b"])), "InvalidParameter.SourceUrl"),
        (with("StreamName", json!("x")), "UnknownParameter"),
    ];
    for (params, code) in cases {
        let r = api.call("StartStreamIngest", params.clone()).await;
        assert_eq!(error_code(&r), Some(code), "{params} -> {r}");
        assert!(!r["Error"]["Message"].as_str().unwrap().is_empty());
    }
    let r = api.call("DescribeStreamIngest", json!({"SdkAppId": SDKAPPID})).await;
    assert_eq!(error_code(&r), Some("MissingParameter.TaskId"), "{r}");
    let r = api.call("StopStreamIngest", json!({"TaskId": "x"})).await;
    assert_eq!(error_code(&r), Some("MissingParameter.SdkAppId"), "{r}");
    let r = api.call("DescribeRoomInfo", json!({})).await;
    assert_eq!(error_code(&r), Some("InvalidAction"), "{r}");

    // Signatures.
    let body = serde_json::to_vec(&task_params("x")).unwrap();
    let now = roomgate::auth::unix_now();
    let wrong = CloudClient::with_key(gw.http_addr, support::cloud::SECRET_ID, "not-the-key");
    let (status, r) = wrong.call_raw("DescribeStreamIngest", body.clone(), now).await;
    assert_eq!(
        (status, error_code(&r)),
        (200, Some("AuthFailure.SignatureFailure")),
        "{r}"
    );
    let (_, r) = api.call_raw("DescribeStreamIngest", body.clone(), now - 600).await;
    assert_eq!(error_code(&r), Some("AuthFailure.SignatureExpire"), "{r}");
    let unknown = CloudClient::with_key(gw.http_addr, "AKIDunknown", "k");
    let (_, r) = unknown.call_raw("DescribeStreamIngest", body.clone(), now).await;
    assert_eq!(error_code(&r), Some("AuthFailure.SecretIdNotFound"), "{r}");
    let (_, r) = api.call_raw("DescribeStreamIngest", b"not json".to_vec(), now).await;
    assert_eq!(error_code(&r), Some("InvalidParameter.BodyParamsError"), "{r}");
    let (status, r) = api.call_raw("DescribeStreamIngest", vec![b' '; 128 * 1024], now).await;
    assert_eq!((status, error_code(&r)), (200, Some("RequestSizeLimitExceeded")), "{r}");
    // A tampered body fails the signature.
    let tampered = serde_json::to_vec(&task_params("y")).unwrap();
    let (_, r) = api
        .send("DescribeStreamIngest", "2019-07-22", &body, tampered, now)
        .await;
    assert_eq!(error_code(&r), Some("AuthFailure.SignatureFailure"), "{r}");

    // Rate limit: 50/s per SecretId.
    let mut limited = 0;
    for _ in 0..80 {
        let r = describe(&api, "x").await;
        if error_code(&r) == Some("RequestLimitExceeded") {
            limited += 1;
        }
    }
    assert!(limited > 0, "a burst over the limit is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_robot_identity_ingests_once() {
    let Pulling { api, gw: _gw, nginx } = Pulling::start().await;
    let url = nginx.url("/sample.mp3");
    let body = serde_json::to_vec(&start_params("dup", "robot", &url)).unwrap();
    let now = roomgate::auth::unix_now();
    let (_, first) = api.call_raw("StartStreamIngest", body.clone(), now).await;
    let task = first["TaskId"].as_str().expect("started").to_string();
    // The same signed request again (a replay: TC3 has no nonce) is refused before it acts...
    let (_, replay) = api.call_raw("StartStreamIngest", body.clone(), now).await;
    assert_eq!(
        error_code(&replay),
        Some("AuthFailure.InvalidAuthorization"),
        "{replay}"
    );
    assert!(
        replay["Error"]["Message"].as_str().unwrap().contains("already used"),
        "{replay}"
    );
    // ...while the same request signed anew is judged on its merits.
    let (_, r) = api.call_raw("StartStreamIngest", body, now + 1).await;
    assert_eq!(error_code(&r), Some("FailedOperation.TaskExist"), "{r}");
    // Reads may repeat a signature (an SDK polling twice within a second signs the same bytes).
    let by_id = serde_json::to_vec(&task_params(&task)).unwrap();
    let (_, d1) = api.call_raw("DescribeStreamIngest", by_id.clone(), now).await;
    let (_, d2) = api.call_raw("DescribeStreamIngest", by_id, now).await;
    assert!(error_code(&d1).is_none() && error_code(&d2).is_none(), "{d1} {d2}");
    // Another room, or another robot, is fine.
    start_task(&api, start_params("dup2", "robot", &url)).await;
    start_task(&api, start_params("dup", "robot2", &url)).await;
    // A task that plays once ends by itself.
    let r = describe_until(&api, &task, Duration::from_secs(20), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "finished", "{r}");
    assert_eq!(r["LoopsDone"], 1, "{r}");
}

/// Run one of Tencent's official SDKs (`program` `script`, from tests/sdk/) against a gateway: it starts a task
/// in `room`, Describes, Updates, holds 4 s while a WHEP viewer watches, Stops, Stops again and tries a wrong
/// key. Its JSON summary, once the viewer saw the robot's video.
async fn run_official_sdk(program: &str, script: &str, room: &str) -> Value {
    let Pulling { api: _, gw, nginx } = Pulling::start().await;
    let robot = format!("{room}-robot");
    let child = tokio::process::Command::new(program)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script))
        .env("ROOMGATE_ENDPOINT", gw.http_addr.to_string())
        .env("SECRET_ID", support::cloud::SECRET_ID)
        .env("SECRET_KEY", support::cloud::SECRET_KEY)
        .env("SDKAPPID", SDKAPPID.to_string())
        .env("ROOM", room)
        .env("USERID", &robot)
        .env("USERSIG", usersig(&robot))
        .env("STREAM_URL", nginx.url("/sample-720p30.mp4"))
        .env("HOLD_SECONDS", "4")
        .kill_on_drop(true)
        .output();
    let watcher = async {
        gw.wait_anchor(room, &robot, Duration::from_secs(20))
            .await
            .expect("the SDK-started task's robot enters the room");
        watch(&gw, room, 30, 0).await
    };
    let (out, got) = tokio::join!(child, watcher);
    let out = out.unwrap_or_else(|e| panic!("{program} runs (scripts/install-deps.sh installs the SDK): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(video_of(&got).len() >= 30, "a viewer watched the SDK-started task");
    assert!(gw.hub.participant(&gw.key(room), &robot).is_none(), "stopped");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["StatusRunning"], "InProgress", "{summary}");
    assert_eq!(summary["SecondStop"], "FailedOperation.TaskFinished", "{summary}");
    assert_eq!(summary["WrongKey"], "AuthFailure.SignatureFailure", "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencents_python_sdk_drives_start_describe_stop() {
    run_official_sdk("python3", "trtc_sdk.py", "sdk-room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencents_nodejs_sdk_drives_start_describe_update_stop() {
    // The Node.js SDK signs with service "127" (the endpoint's first label) and the host without its port:
    // both were refused before (AuthFailure.InvalidAuthorization, then SignatureFailure).
    let summary = run_official_sdk("node", "trtc_sdk.mjs", "node-room").await;
    assert_eq!(summary["UpdateStatus"], "InProgress", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_cli_starts_lists_follows_and_stops_tasks() {
    let Pulling { api: _, gw, nginx } = Pulling::start().await;
    let cfg = gw.dir.path().join("cli.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nlisten = \"{}\"\n[[apps]]\nsdkappid = {SDKAPPID}\nsecret_key = \"{KEY}\"\n[[api_keys]]\nsecret_id = \"{}\"\nsecret_key = \"{}\"\n",
            gw.http_addr,
            support::cloud::SECRET_ID,
            support::cloud::SECRET_KEY
        ),
    )
    .unwrap();
    let cli = |args: Vec<String>| {
        let cfg = cfg.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
                .arg("-c")
                .arg(&cfg)
                .arg("ingest")
                .args(args)
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let (ok, out, err) = cli(args(&format!(
        "start --url {} --room cli-room --userid cli-robot --repeat -1",
        nginx.url("/sample-720p30.mp4")
    )))
    .await;
    assert!(ok, "{out}{err}");
    let task = out.trim().to_string();
    gw.wait_anchor("cli-room", "cli-robot", Duration::from_secs(10))
        .await
        .expect("the CLI-started robot is in the room");
    // On failure, what the CLI printed on stderr too (a stop once failed with nothing on stdout in CI).
    let (ok, out, err) = cli(args("list")).await;
    assert!(ok && out.contains(&task) && out.contains("cli-room"), "{out}{err}");
    let (ok, out, err) = cli(args(&format!("describe {task}"))).await;
    assert!(ok && out.contains("\"InProgress\""), "{out}{err}");
    let (ok, out, err) = cli(args(&format!("stop {task}"))).await;
    assert!(ok && out.contains("stopped"), "{out}{err}");
    let (ok, _, err) = cli(args(&format!("stop {task}"))).await;
    assert!(!ok && err.contains("FailedOperation.TaskFinished"), "{err}");

    // A file task followed to its end with the progress bar.
    let (ok, out, err) = cli(args(&format!(
        "start --url {} --room cli-room --userid cli-mp3 --follow",
        nginx.url("/sample.mp3")
    )))
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("] ") && out.contains(" s / 6.0 s"),
        "a progress bar: {out}"
    );
    assert!(out.contains("ended: played 1 time(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_publisher_with_the_robots_identity_replaces_it() {
    let t = Pulling::start().await;
    let (task, robot) = t.play("takeover", "/sample-720p30.mp4", json!({"RepeatNum": -1})).await;
    assert_eq!(robot.source, roomgate::room::SourceKind::Pull);
    let pusher = Ffmpeg::push(
        &lavfi("320x240", 20),
        "-c:v libx264 -preset ultrafast -profile:v baseline -g 30 -c:a aac",
        &t.gw.push_url("takeover", "robot", &usersig("robot")),
    );
    let r = describe_until(&t.api, &task, Duration::from_secs(15), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "stopped", "{r}");
    assert!(r["Reason"].as_str().unwrap().contains("replaced"), "{r}");
    let key = t.gw.key("takeover");
    let now = t.gw.hub.participant(&key, "robot").expect("the RTMP anchor stays");
    assert_eq!(now.source, roomgate::room::SourceKind::Rtmp);
    pusher.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_map_keys_are_checked_for_robots_when_the_app_requires_them() {
    let Pulling { api, gw: _gw, nginx } = Pulling::start_with(|c| c.apps[0].require_private_map_key = true).await;
    let params = start_params("pmk", "robot", &nginx.url("/sample.mp3"));
    let r = api.call("StartStreamIngest", params.clone()).await;
    assert_eq!(error_code(&r), Some("InvalidParameter.PrivateMapKey"), "{r}");
    let grant = |room: &str| json!({"PrivateMapKey": private_map_key("robot", room, 255)});
    let r = api
        .call("StartStreamIngest", merge(params.clone(), grant("elsewhere")))
        .await;
    assert_eq!(error_code(&r), Some("InvalidParameter.PrivateMapKey"), "{r}");
    let r = api.call("StartStreamIngest", merge(params, grant("pmk"))).await;
    assert!(error_code(&r).is_none(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_second_starts_inside_the_source() {
    let t = Pulling::start().await;
    let (task, anchor) = t.play("seek", "/sample-720p30.mp4", json!({"SeekSecond": 4})).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(10), |r| r["State"] == "playing").await;
    assert!(
        r["PositionMs"].as_i64().unwrap() >= 3500,
        "playing from about 4 s in: {r}"
    );
    let r = describe_until(&t.api, &task, Duration::from_secs(15), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "finished", "{r}");
    // The file has 180 frames; from 4 s (the keyframe there) on, about 60 reach the room.
    let frames = anchor.video.stats().frames;
    assert!(
        (30..=100).contains(&frames),
        "only the last ~2 s were played ({frames} frames)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_stops_sending_ends_the_task_after_idle_timeout() {
    // An HTTP server that sends the first part of an FLV, then nothing (connection held open).
    let flv = std::fs::read(testdata().join("sample-720p30-baseline.flv")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut held = vec![];
        while let Ok((mut s, _)) = listener.accept().await {
            let mut req = [0u8; 2048];
            let _ = s.read(&mut req).await;
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n";
            let _ = s.write_all(head).await;
            let _ = s.write_all(&flv[..flv.len() / 3]).await;
            held.push(s);
        }
    });
    let gw = start_gateway().await;
    let api = CloudClient::new(gw.http_addr);
    let params = start_params("idle", "robot", &format!("http://{addr}/live.flv"));
    let task = start_task(&api, merge(params, json!({"IdleTimeout": 2}))).await;
    describe_until(&api, &task, Duration::from_secs(10), |r| r["State"] == "playing").await;
    let r = describe_until(&api, &task, Duration::from_secs(15), |r| r["Status"] == "NotExist").await;
    assert_eq!(r["State"], "finished", "{r}");
    assert!(r["Reason"].as_str().unwrap().contains("IdleTimeout"), "{r}");
    assert_eq!(r["Restarts"], 0, "an idle source is not retried: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_two_plays_twice_as_fast() {
    let t = Pulling::start().await;
    let (_, anchor) = t.play("fast", "/sample-720p30.mp4", json!({"Tempo": 2.0})).await;
    let (mut video, mut audio) = (anchor.video.subscribe(), anchor.audio.subscribe());
    let (mut vpts, mut apts) = (vec![], vec![]);
    let collect = async {
        while let Some(f) = video.recv().await {
            vpts.push(f.pts);
        }
        while let Some(f) = audio.recv().await {
            apts.push(f.pts);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the task ends");
    // 30 fps source at double speed: a frame every 1/60 s of room time (1500 ticks of 90 kHz).
    let mut deltas: Vec<u64> = vpts.windows(2).map(|w| w[1] - w[0]).collect();
    deltas.sort();
    let median = deltas[deltas.len() / 2];
    assert!(
        (1400..=1600).contains(&median),
        "video pts step {median} (1500 expected)"
    );
    // Audio is resampled to the same speed: Opus packets covering half the source's duration.
    let span = (apts.last().unwrap() - apts.first().unwrap()) as f64 / 48_000.0;
    assert!(
        (2.0..=3.4).contains(&span),
        "audio covers {span} s of room time for a 6 s source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_update_applies_while_the_task_plays() {
    let t = Pulling::start().await;
    let (task, anchor) = t.play("vol", "/sample-720p30.mp4", json!({"RepeatNum": -1})).await;
    let peak_of_next = |n: usize| {
        let mut sub = anchor.audio.subscribe();
        async move {
            let mut frames = vec![];
            while frames.len() < n {
                frames.push(sub.recv().await.expect("audio flows"));
            }
            decode_opus(&frames).1
        }
    };
    let loud = peak_of_next(50).await;
    assert!(loud > 0.05, "audible at Volume 100 (peak {loud})");
    let r = update(&t.api, &task, json!({"Volume": 0})).await;
    assert!(error_code(&r).is_none(), "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await; // what was already encoded drains
    let muted = peak_of_next(50).await;
    assert!(
        muted < 0.01,
        "silent at Volume 0 without restarting the task (peak {muted})"
    );
    assert_eq!(describe(&t.api, &task).await["Restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_key_scopes_and_capacity_are_enforced() {
    let Pulling { api, gw, nginx } = Pulling::start_with(|c| {
        c.pull.max_tasks = 1;
        c.api_keys.push(roomgate::config::ApiKeyConfig {
            secret_id: "AKIDotherapp".into(),
            secret_key: "other".into(),
            sdkappids: vec![1400000099],
        });
    })
    .await;
    let url = nginx.url("/sample.mp3");
    start_task(&api, start_params("cap", "robot1", &url)).await;
    let r = api.call("StartStreamIngest", start_params("cap", "robot2", &url)).await;
    assert_eq!(error_code(&r), Some("FailedOperation.RestrictedConcurrency"), "{r}");

    let scoped = CloudClient::with_key(gw.http_addr, "AKIDotherapp", "other");
    let r = scoped
        .call("StartStreamIngest", start_params("cap", "robot3", &url))
        .await;
    assert_eq!(error_code(&r), Some("UnauthorizedOperation.SdkAppId"), "{r}");

    let body = serde_json::to_vec(&task_params("x")).unwrap();
    let now = roomgate::auth::unix_now();
    let (_, r) = api
        .send("DescribeStreamIngest", "2017-03-12", &body, body.clone(), now)
        .await;
    assert_eq!(error_code(&r), Some("NoSuchVersion"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_source_plays_and_srt_options_that_listen_or_bind_are_refused() {
    let t = Pulling::start().await;
    // ffmpeg serves MPEG-TS over SRT as a listener (a camera or encoder in listener mode); the task calls it.
    let port = support::nginx::free_port();
    let sample = testdata().join("sample-720p30.mp4");
    let mut server = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&sample)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!("srt://127.0.0.1:{port}?mode=listener&latency=120000"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg with libsrt (scripts/install-deps.sh)");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let url = format!("srt://127.0.0.1:{port}?latency=120000");
    let task = start_task(&t.api, start_params("pull-srt", "robot", &url)).await;
    t.gw.wait_anchor("pull-srt", "robot", Duration::from_secs(15))
        .await
        .expect("the SRT source's robot enters the room");
    let got = watch(&t.gw, "pull-srt", 30, 50).await;
    let video = video_of(&got);
    assert!(video.len() >= 30, "{} video frames over SRT", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied()), Some((1280, 720)));
    let (samples, _) = decode_opus_of(audio_of(&got));
    assert!(samples >= 48_000, "audio decodes ({samples} samples)");
    let r = describe(&t.api, &task).await;
    assert_eq!(r["Source"]["Format"], "mpegts", "{r}");
    assert_eq!(r["Source"]["VideoPassthrough"], true, "{r}");
    stop(&t.api, &task).await;
    let _ = server.kill().await;

    // A pull task only calls out: listener mode, a local port or any option but the stream's own is refused.
    for bad in [
        format!("srt://127.0.0.1:{port}?mode=listener"),
        format!("srt://127.0.0.1:{port}?localport=9000"),
        format!("srt://127.0.0.1:{port}?streamid=a#&mode=listener"),
        "srt://127.0.0.1".to_string(),
    ] {
        let r = t
            .api
            .call("StartStreamIngest", start_params("pull-srt", "robot2", &bad))
            .await;
        assert_eq!(error_code(&r), Some("InvalidParameter.StreamUrl"), "{bad}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_source_on_a_private_address_is_refused_under_the_default_policy() {
    let t = Pulling::start_with(|c| c.pull.allow_private_sources = false).await;
    let r = t
        .api
        .call(
            "StartStreamIngest",
            start_params("pull-srt", "robot", "srt://127.0.0.1:9000?streamid=cam"),
        )
        .await;
    let msg = r["Error"]["Message"].as_str().unwrap_or_default();
    assert_eq!(error_code(&r), Some("InvalidParameter.StreamUrl"), "{r}");
    assert!(
        msg.contains("private, loopback"),
        "refused for its address, not its scheme: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_plays_in_a_room_and_its_redirects_are_not_followed() {
    let t = Pulling::start().await;
    // An IP camera: H.264 over RTSP, RTP interleaved on the TCP connection.
    let camera = support::rtsp::RtspServer::serving(&testdata().join("sample-720p30.mp4")).await;
    let url = format!("rtsp://viewer:secret@127.0.0.1:{}/live/main", camera.port);
    let task = start_task(&t.api, start_params("pull-rtsp", "camera", &url)).await;
    t.gw.wait_anchor("pull-rtsp", "camera", Duration::from_secs(15))
        .await
        .expect("the camera's robot enters the room");
    let got = watch(&t.gw, "pull-rtsp", 30, 0).await;
    let video = video_of(&got);
    assert!(video.len() >= 30, "{} video frames over RTSP", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied()), Some((1280, 720)));
    let r = describe(&t.api, &task).await;
    assert_eq!(r["Source"]["Format"], "rtsp", "{r}");
    assert_eq!(r["Source"]["VideoPassthrough"], true, "{r}");
    assert!(!r["StreamUrl"].as_str().unwrap().contains("secret"), "{r}");
    stop(&t.api, &task).await;

    // A camera that redirects elsewhere: the redirect is refused before libav sees it, the target is never
    // contacted, and the task says why.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let location = format!("rtsp://{}/stolen", elsewhere.local_addr().unwrap());
    let redirecting = support::rtsp::RtspServer::redirecting(location.clone(), false).await;
    let url = format!("rtsp://127.0.0.1:{}/live", redirecting.port);
    let task = start_task(&t.api, start_params("pull-rtsp2", "camera", &url)).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(20), |r| r["State"] == "failed").await;
    assert_eq!(r["State"], "failed", "{r}");
    assert!(r["Reason"].as_str().unwrap().contains("redirect"), "{r}");
    // The same redirect cut short (no blank line, then the connection closes), which libav still acts on.
    let cut = support::rtsp::RtspServer::redirecting(location, true).await;
    let url = format!("rtsp://127.0.0.1:{}/live", cut.port);
    let task = start_task(&t.api, start_params("pull-rtsp3", "camera", &url)).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(20), |r| r["State"] == "failed").await;
    assert_eq!(r["State"], "failed", "{r}");
    let contacted = tokio::time::timeout(Duration::from_millis(200), elsewhere.accept()).await;
    assert!(contacted.is_err(), "a redirect's target was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsps_camera_plays_when_its_certificate_is_trusted_and_fails_with_the_reason_when_not() {
    // The camera's certificate, from a CA of its own (as a camera's self-made one would be).
    let dir = tempfile::tempdir().unwrap();
    let made = roomgate::tls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &made.chain_pem).unwrap();
    std::fs::write(&key, &made.key_pem).unwrap();
    std::fs::write(&ca, &made.ca_pem).unwrap();
    let certs = roomgate::tls::Certificates::load(roomgate::tls::TlsFiles { cert, key }).unwrap();
    let camera =
        support::rtsp::RtspServer::serving_with(&testdata().join("sample-720p30.mp4"), Some(certs.acceptor(&[]))).await;
    let url = format!("rtsps://viewer:secret@localhost:{}/live/main", camera.port);

    // Not trusted (only the system's CAs): the task fails and says why.
    let t = Pulling::start().await;
    let task = start_task(&t.api, start_params("pull-rtsps", "camera", &url)).await;
    let r = describe_until(&t.api, &task, Duration::from_secs(30), |r| r["State"] == "failed").await;
    assert_eq!(r["State"], "failed", "{r}");
    let reason = r["Reason"].as_str().unwrap();
    assert!(reason.contains("TLS") && reason.contains("pull.ca_file"), "{r}");
    drop(t);

    // With its CA in pull.ca_file it plays.
    let t = Pulling::start_with(move |c| c.pull.ca_file = ca).await;
    let task = start_task(&t.api, start_params("pull-rtsps", "camera", &url)).await;
    t.gw.wait_anchor("pull-rtsps", "camera", Duration::from_secs(15))
        .await
        .expect("the camera's robot enters the room");
    let got = watch(&t.gw, "pull-rtsps", 30, 0).await;
    let video = video_of(&got);
    assert!(video.len() >= 30, "{} video frames over RTSPS", video.len());
    assert_eq!(decode_h264_size_of(video.iter().copied()), Some((1280, 720)));
    stop(&t.api, &task).await;
    drop(t);

    // A camera's own self-signed certificate, marked CA as `openssl req -x509` makes it and without the name the
    // URL uses (WebPKI refuses such a certificate as a server's): put in pull.ca_file, it is pinned and plays.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["camera.local".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let own = params.self_signed(&key).unwrap();
    let (cert, key_file, pin) = (
        dir.path().join("own.pem"),
        dir.path().join("own.key"),
        dir.path().join("pin.pem"),
    );
    std::fs::write(&cert, own.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&pin, own.pem()).unwrap();
    let certs = roomgate::tls::Certificates::load(roomgate::tls::TlsFiles { cert, key: key_file }).unwrap();
    let camera =
        support::rtsp::RtspServer::serving_with(&testdata().join("sample-720p30.mp4"), Some(certs.acceptor(&[]))).await;
    let url = format!("rtsps://127.0.0.1:{}/live/main", camera.port);
    let t = Pulling::start_with(move |c| c.pull.ca_file = pin).await;
    let task = start_task(&t.api, start_params("pull-rtsps2", "camera", &url)).await;
    t.gw.wait_anchor("pull-rtsps2", "camera", Duration::from_secs(15))
        .await
        .expect("the pinned camera's robot enters the room");
    let got = watch(&t.gw, "pull-rtsps2", 30, 0).await;
    assert!(video_of(&got).len() >= 30, "a pinned certificate plays");
    stop(&t.api, &task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_source_on_a_private_address_is_refused_under_the_default_policy() {
    let t = Pulling::start_with(|c| c.pull.allow_private_sources = false).await;
    let r = t
        .api
        .call(
            "StartStreamIngest",
            start_params("pull-rtsp", "camera", "rtsp://192.168.1.64:554/Streaming/Channels/101"),
        )
        .await;
    assert_eq!(error_code(&r), Some("InvalidParameter.StreamUrl"), "{r}");
    let msg = r["Error"]["Message"].as_str().unwrap_or_default();
    assert!(msg.contains("private, loopback"), "refused for its address: {r}");
}
