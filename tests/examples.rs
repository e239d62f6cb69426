//! The programs in `examples/` work as their doc comments say: each is run as a developer would run it (the built
//! example binary, or `python3 examples/x.py`) against an in-process gateway, and the assertions are about what
//! the user sees: printed lines, anchors in rooms, callbacks printed once, forged ones refused.

mod support;

use roomgate::auth::{unix_now, PrivateMapKey, Privileges, UserSig};
use roomgate::room::RoomRef;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::nginx::{free_port, Nginx};
use support::whep_client::{audio_of, video_of};
use support::*;

/// `target/<profile>/examples/<name>`, as `cargo build --examples` (run by `make test` first) leaves it; the
/// test binary is `target/<profile>/deps/examples-<hash>`. (`cargo test --all-targets` alone builds the examples
/// only as test harnesses, which cannot run as the programs.)
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --examples` (cargo test --all-targets builds it too)",
        bin.display()
    );
    bin
}

fn example_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Run a program to completion (killed after `within`); (success, stdout, stderr).
async fn run(cmd: &mut tokio::process::Command, within: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn the example");
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("the example finishes in time")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of the `Name: value` line of the output.
fn field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .map(str::trim)
}

// ---------------------------------------------------------------------------------------------------------------
// examples/usersig.rs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usersig_example_prints_tickets_that_verify_and_a_stream_key_that_publishes() {
    let gw = start_gateway().await;
    let room = "exroom";
    let rtmp = format!("rtmp://{}", gw.rtmp_addr.unwrap());
    let (ok, out, err) = run(
        tokio::process::Command::new(example_bin("usersig"))
            .args([
                &SDKAPPID.to_string(),
                KEY,
                "exanchor",
                "--room",
                room,
                "--privileges",
                "publish",
            ])
            .args(["--rtmp", &rtmp, "--http", &gw.http("")]),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "usersig example failed: {err}");

    // The UserSig is a ticket of that user and app, and the PrivateMapKey grants publishing in that room.
    let sig = field(&out, "UserSig").expect("a UserSig line");
    UserSig::verify(sig, SDKAPPID, "exanchor", KEY, unix_now()).expect("the printed UserSig verifies");
    let pmk = field(&out, "PrivateMapKey").expect("a PrivateMapKey line");
    let ticket = UserSig::verify(pmk, SDKAPPID, "exanchor", KEY, unix_now()).expect("the PrivateMapKey verifies");
    let grant = PrivateMapKey::parse_userbuf(&ticket.userbuf().expect("a userbuf")).unwrap();
    assert_eq!(grant.room, RoomRef::Str(room.into()));
    assert_eq!(grant.privileges, Privileges(Privileges::PUBLISH));
    let whep = field(&out, "WHEP URL").unwrap();
    assert_eq!(
        whep,
        gw.http(&format!(
            "/v2/sub/{SDKAPPID}/{room}?SessionID=exanchor&privatemapkey={pmk}"
        ))
    );
    assert_eq!(field(&out, "WHEP bearer token"), Some(sig));

    // Without a room: only tickets, no PrivateMapKey.
    let (ok, out2, err) = run(
        tokio::process::Command::new(example_bin("usersig")).args([&SDKAPPID.to_string(), KEY, "viewer9"]),
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "{err}");
    assert!(field(&out2, "PrivateMapKey").is_none(), "{out2}");
    UserSig::verify(field(&out2, "UserSig").unwrap(), SDKAPPID, "viewer9", KEY, unix_now()).unwrap();

    // A bad argument is a clear error, not a panic.
    let (ok, _, err) = run(
        tokio::process::Command::new(example_bin("usersig")).args([&SDKAPPID.to_string(), KEY, "bad user"]),
        Duration::from_secs(30),
    )
    .await;
    assert!(!ok && err.contains("user id"), "{err}");

    // The printed RTMP URL publishes with ffmpeg: the anchor appears in the room.
    let url = field(&out, "RTMP URL").unwrap();
    assert!(url.starts_with(&format!("{rtmp}/push/{room}?")), "{url}");
    let ff = Ffmpeg::push(
        &lavfi("320x240", 20),
        "-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g 30 -c:a aac",
        url,
    );
    let anchor = gw.wait_anchor(room, "exanchor", Duration::from_secs(20)).await;
    assert!(
        anchor.is_some(),
        "the anchor publishing with the printed stream key is in the room"
    );
    ff.kill().await;
}

// ---------------------------------------------------------------------------------------------------------------
// examples/start_pull_task.rs, .py and .js

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The lines of `out` starting with `<action>: `, parsed as JSON.
fn responses(out: &str, action: &str) -> Vec<Value> {
    let prefix = format!("{action}: ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{action} line is not JSON ({e}): {j}")))
        .collect()
}

/// Run a pull-task example (already configured with everything but the room/user/url) against `gw`: while it
/// holds the task, the robot is in the room; when it exits, it printed Start/Describe/Stop and the robot is gone.
async fn check_pull_task_example(gw: &TestGateway, mut cmd: tokio::process::Command, room: &str, robot: &str) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn the example");
    let anchor = gw.wait_anchor(room, robot, Duration::from_secs(30)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the example finishes")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(
        anchor.is_some(),
        "the robot was in the room while the task ran:\n{stdout}\n{stderr}"
    );

    let start = responses(&stdout, "StartStreamIngest");
    assert_eq!(start.len(), 1, "{stdout}");
    let task = start[0]["TaskId"].as_str().expect("a TaskId");
    assert!(
        start[0]["RequestId"].as_str().is_some_and(|r| r.len() == 36),
        "{stdout}"
    );
    let describes = responses(&stdout, "DescribeStreamIngest");
    assert!(
        describes
            .iter()
            .any(|d| d["Status"] == "InProgress" && d["State"] == "playing"),
        "a Describe showed the task playing: {stdout}"
    );
    assert_eq!(describes.last().unwrap()["Status"], "NotExist", "{stdout}");
    assert_eq!(responses(&stdout, "StopStreamIngest").len(), 1, "{stdout}");

    // The task is over and the robot left the room.
    gw.wait_left(room, robot, Duration::from_secs(10)).await;
    let api = support::cloud::CloudClient::new(gw.http_addr);
    assert_eq!(support::cloud::describe(&api, task).await["Status"], "NotExist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_pull_task_examples_start_describe_and_stop_a_robot() {
    let nginx = Nginx::start(&testdata()).await;
    let gw = start_gateway().await;
    let source = nginx.url("/sample-720p30.mp4");
    let endpoint = gw.http("");

    // Rust, with CloudApiClient.
    let mut rust = tokio::process::Command::new(example_bin("start_pull_task"));
    rust.args(["--endpoint", &endpoint])
        .args([
            "--secret-id",
            support::cloud::SECRET_ID,
            "--secret-key",
            support::cloud::SECRET_KEY,
        ])
        .args(["--sdkappid", &SDKAPPID.to_string(), "--app-key", KEY])
        .args([
            "--room",
            "pullrs",
            "--userid",
            "robotrs",
            "--url",
            &source,
            "--hold-seconds",
            "2",
        ]);
    check_pull_task_example(&gw, rust, "pullrs", "robotrs").await;

    // Python, with Tencent's SDK.
    let mut py = tokio::process::Command::new("python3");
    py.arg(example_script("start_pull_task.py"))
        .args(["--endpoint", &gw.http_addr.to_string()])
        .args([
            "--secret-id",
            support::cloud::SECRET_ID,
            "--secret-key",
            support::cloud::SECRET_KEY,
        ])
        .args(["--sdkappid", &SDKAPPID.to_string(), "--usersig", &usersig("robotpy")])
        .args([
            "--room",
            "pullpy",
            "--userid",
            "robotpy",
            "--url",
            &source,
            "--hold-seconds",
            "2",
        ]);
    check_pull_task_example(&gw, py, "pullpy", "robotpy").await;

    // Node.js, with Tencent's SDK (installed under tests/sdk by scripts/install-deps.sh).
    let node_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/node_modules");
    let node = |room: &str, user: &str, key: &str| {
        let mut js = tokio::process::Command::new("node");
        js.arg(example_script("start_pull_task.js"))
            .env("NODE_PATH", &node_path)
            .args(["--endpoint", &gw.http_addr.to_string()])
            .args(["--secret-id", support::cloud::SECRET_ID, "--secret-key", key])
            .args(["--sdkappid", &SDKAPPID.to_string(), "--usersig", &usersig(user)])
            .args([
                "--room",
                room,
                "--userid",
                user,
                "--url",
                &source,
                "--hold-seconds",
                "2",
            ]);
        js
    };
    check_pull_task_example(
        &gw,
        node("pulljs", "robotjs", support::cloud::SECRET_KEY),
        "pulljs",
        "robotjs",
    )
    .await;
    let (ok, _, err) = run(&mut node("pulljs", "robotjs", "wrong"), Duration::from_secs(30)).await;
    assert!(!ok && err.contains("AuthFailure.SignatureFailure"), "{err}");

    // A wrong SecretKey: a clear error with the API's code, no task.
    let (ok, _, err) = run(
        tokio::process::Command::new(example_bin("start_pull_task"))
            .args(["--endpoint", &endpoint])
            .args(["--secret-id", support::cloud::SECRET_ID, "--secret-key", "wrong"])
            .args(["--sdkappid", &SDKAPPID.to_string(), "--app-key", KEY])
            .args(["--room", "pullrs", "--url", &source]),
        Duration::from_secs(30),
    )
    .await;
    assert!(!ok && err.contains("AuthFailure.SignatureFailure"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// examples/callback_receiver.rs and examples/callback_receiver.py

const CB_KEY: &str = "exampleCallbackKey";

/// A receiver example running on `port`, its stdout lines parsed as they come.
struct Receiver {
    _child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    port: u16,
}

impl Receiver {
    async fn start(mut cmd: tokio::process::Command, port: u16) -> Receiver {
        use tokio::io::AsyncBufReadExt;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the receiver");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = reader.next_line().await {
                let v: Value =
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}"));
                sink.lock().unwrap().push(v);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the receiver listens on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Receiver {
            _child: child,
            lines,
            port,
        }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn types(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .map(|l| l["event"]["EventType"].as_u64().unwrap())
            .collect()
    }

    /// POST `body` with these headers; the HTTP status.
    async fn post(&self, body: &[u8], sign: &str, event_id: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/trtc/callback", self.port))
            .header("Content-Type", "application/json")
            .header("SdkAppId", SDKAPPID.to_string())
            .header("Sign", sign)
            .header("X-Roomgate-Event-Id", event_id)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// An RTMP push through a gateway calling the receiver: each room/media event is printed once, in TRTC's
/// order; a re-delivery of an event is not printed again; a forged Sign gets 401 and is not printed.
async fn check_receiver(rx: Receiver) {
    let gw = start_gateway_with(callbacks_to(rx.port, CB_KEY)).await;
    gw.push_briefly("cbroom", "cbanchor", 2).await;
    wait_until("the receiver printed a 102", Duration::from_secs(30), || {
        rx.types().contains(&102)
    })
    .await;

    // What the user sees: 101, 103, 201+203, 104, 102, each once, each verified and with its event id.
    let lines = rx.lines();
    let t = rx.types();
    assert_eq!(&t[..2], &[101, 103], "{t:?}");
    let mut media = t[2..4].to_vec();
    media.sort();
    assert_eq!(media, vec![201, 203], "{t:?}");
    assert_eq!(&t[4..], &[104, 102], "{t:?}");
    for l in &lines {
        assert_eq!(l["sdkappid"], SDKAPPID.to_string());
        assert_eq!(l["event"]["EventInfo"]["RoomId"], "cbroom");
        assert_eq!(
            l["event"]["EventInfo"]["UserId"].as_str().unwrap_or("cbanchor"),
            "cbanchor"
        );
        assert!(l["event_id"].as_str().is_some_and(|id| id.len() >= 8), "{l}");
    }

    // A re-delivery of the 103 (same event id, correctly signed): 200, not printed again.
    let enter = &lines[1];
    let body = serde_json::to_vec(&enter["event"]).unwrap();
    let id = enter["event_id"].as_str().unwrap();
    assert_eq!(rx.post(&body, &roomgate::events::sign(CB_KEY, &body), id).await, 200);
    // A forged Sign (another key) and a missing one: 401, not printed.
    assert_eq!(
        rx.post(&body, &roomgate::events::sign("not-the-key", &body), "forged-1")
            .await,
        401
    );
    assert_eq!(rx.post(&body, "", "forged-2").await, 401);
    // A tampered body under the original Sign: 401.
    let mut tampered = enter["event"].clone();
    tampered["EventInfo"]["UserId"] = "someone_else".into();
    let tampered = serde_json::to_vec(&tampered).unwrap();
    assert_eq!(
        rx.post(&tampered, &roomgate::events::sign(CB_KEY, &body), "forged-3")
            .await,
        401
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.types(), t, "nothing more was printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_callback_receiver_prints_each_event_once_and_refuses_forged_ones() {
    let port = free_port();
    let mut cmd = tokio::process::Command::new(example_bin("callback_receiver"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--key", CB_KEY]);
    check_receiver(Receiver::start(cmd, port).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_callback_receiver_prints_each_event_once_and_refuses_forged_ones() {
    let port = free_port();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(example_script("callback_receiver.py"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--key", CB_KEY]);
    check_receiver(Receiver::start(cmd, port).await).await;
}

// ---------------------------------------------------------------------------------------------------------------
// examples/whep_record.rs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_record_example_writes_a_playable_file_and_prints_its_format() {
    let gw = start_gateway().await;
    let args = "-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g 30 -b:v 300k -c:a aac";
    let ff = gw.push_lavfi("recroom", "recanchor", "320x240", 30, args);
    gw.wait_video("recroom", "recanchor", Duration::from_secs(20)).await;

    let dir = tempfile::tempdir().unwrap();
    for ext in ["mkv", "mp4"] {
        let out = dir.path().join(format!("rec.{ext}"));
        let (ok, stdout, stderr) = run(
            tokio::process::Command::new(example_bin("whep_record"))
                .arg(gw.whep_url("recroom", "recviewer"))
                .args(["--token", &usersig("recviewer"), "--seconds", "3"])
                .arg("--out")
                .arg(&out),
            Duration::from_secs(60),
        )
        .await;
        assert!(ok, "whep_record failed:\n{stdout}\n{stderr}");
        eprintln!("whep_record printed:\n{stdout}");

        // What it prints: the anchor's size, its frame rate and a bitrate.
        let video = field(&stdout, "Video").unwrap_or_else(|| panic!("a Video line: {stdout}"));
        assert!(video.starts_with("H.264 320x240, "), "{video}");
        let fps: f64 = video
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches(" fps")
            .parse()
            .unwrap();
        assert!((25.0..=35.0).contains(&fps), "about 30 fps: {video}");
        let kbps: f64 = video
            .split(", ")
            .nth(2)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(kbps > 20.0, "{video}");
        assert!(
            field(&stdout, "Audio").is_some_and(|a| a.starts_with("Opus 48000 Hz")),
            "{stdout}"
        );
        assert!(field(&stdout, "Wrote").is_some(), "{stdout}");

        // The file plays: libav reads a 320x240 H.264 stream and an Opus stream about 3 s long, and decodes it.
        roomgate::media::transcode::init_libav();
        let mut input = ffmpeg_next::format::input(&out).unwrap_or_else(|e| panic!("{ext} opens: {e}"));
        let v = input
            .streams()
            .best(ffmpeg_next::media::Type::Video)
            .expect("a video stream");
        let a = input
            .streams()
            .best(ffmpeg_next::media::Type::Audio)
            .expect("an audio stream");
        assert_eq!(v.parameters().id(), ffmpeg_next::codec::Id::H264);
        assert_eq!(a.parameters().id(), ffmpeg_next::codec::Id::OPUS);
        let vi = v.index();
        let vtb = v.time_base();
        let mut video_packets = Vec::new();
        let mut pts = Vec::new();
        for (s, p) in input.packets() {
            if s.index() == vi {
                video_packets.push(p.data().unwrap_or_default().to_vec());
                pts.push(p.pts().unwrap_or(0));
            }
        }
        let span = (pts.iter().max().unwrap() - pts.iter().min().unwrap()) as f64 * f64::from(vtb);
        assert!(
            (2.0..=4.5).contains(&span),
            "{ext}: about 3 s of video, got {span:.2} s"
        );
        // MKV/MP4 hold length-prefixed NAL units: decode with the file's own decoder setup.
        let mut dec = ffmpeg_next::codec::Context::from_parameters(input.stream(vi).unwrap().parameters())
            .unwrap()
            .decoder()
            .video()
            .unwrap();
        let mut frame = ffmpeg_next::frame::Video::empty();
        let mut decoded = 0;
        for p in &video_packets {
            dec.send_packet(&ffmpeg_next::Packet::copy(p)).unwrap();
            while dec.receive_frame(&mut frame).is_ok() {
                assert_eq!((frame.width(), frame.height()), (320, 240));
                decoded += 1;
            }
        }
        assert!(
            decoded >= 60,
            "{ext}: most of the {} frames decode, got {decoded}",
            video_packets.len()
        );
    }
    ff.kill().await;
}

// ---------------------------------------------------------------------------------------------------------------
// examples/whip_publish_file.rs

/// Publish `file` with the example for `seconds` as `user` in `room`, and have a WHEP viewer watch it: returns
/// the example's stdout and what the viewer decoded ((width, height), Opus samples per channel).
async fn publish_file_and_watch(
    gw: &TestGateway,
    file: &Path,
    room: &str,
    user: &str,
) -> (String, Option<(u32, u32)>, usize) {
    let mut cmd = tokio::process::Command::new(example_bin("whip_publish_file"));
    cmd.arg(file)
        .arg(gw.whip_url(room, user))
        .args(["--token", &usersig(user), "--seconds", "6", "--loop"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn the example");
    let anchor = gw.wait_anchor(room, user, Duration::from_secs(20)).await;
    let mut watched = (None, 0);
    if anchor.is_some() {
        let frames = gw.watch(room, "fileviewer", Duration::from_secs(5), 30, 50).await;
        watched = (
            decode_h264_size_of(video_of(&frames)),
            decode_opus_of(audio_of(&frames)).0,
        );
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the example stops after --seconds")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(
        anchor.is_some(),
        "the file's publisher was an anchor:\n{stdout}\n{stderr}"
    );
    // It ended its session with a DELETE: the anchor is gone at once, not at the gateway's timeout.
    gw.wait_left(room, user, Duration::from_secs(3)).await;
    (stdout, watched.0, watched.1)
}

/// Run the example once on testdata `file` as cam in room filebad, with a UserSig of `token_user`: (success,
/// stderr).
async fn publish_file_as_cam(gw: &TestGateway, file: &str, token_user: &str) -> (bool, String) {
    let (ok, _, err) = run(
        tokio::process::Command::new(example_bin("whip_publish_file"))
            .arg(testdata().join(file))
            .arg(gw.whip_url("filebad", "cam"))
            .args(["--token", &usersig(token_user)]),
        Duration::from_secs(30),
    )
    .await;
    (ok, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publish_file_sends_baseline_h264_as_is_and_re_encodes_the_rest() {
    let gw = start_gateway().await;

    // Constrained Baseline H.264 + AAC (mp4): the video goes as it is, the audio becomes Opus.
    let (out, size, samples) =
        publish_file_and_watch(&gw, &testdata().join("sample-720p30.mp4"), "filemp4", "filecam").await;
    assert!(out.contains("Video: H.264 (Constrained Baseline) sent as is"), "{out}");
    assert!(out.contains("Audio: aac -> Opus 48000 Hz stereo 64 kb/s"), "{out}");
    assert_eq!(size, Some((1280, 720)), "the viewer decodes the file's picture:\n{out}");
    assert!(
        samples >= 48_000,
        "the viewer decodes a second of Opus or more ({samples}):\n{out}"
    );
    // Six seconds of a 30 fps file, looped past its 6 s end.
    let sent = field(&out, "Sent").expect("a Sent line");
    let frames: u64 = sent.split(' ').next().unwrap().parse().unwrap();
    assert!((150..=200).contains(&frames), "{sent}");

    // VP8 + Opus (webm, as a browser records): the video is re-encoded to H.264, the Opus goes as it is.
    let dir = tempfile::tempdir().unwrap();
    let webm = dir.path().join("clip.webm");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "3", "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"])
        .arg(&webm)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg made the webm");
    let (out, size, samples) = publish_file_and_watch(&gw, &webm, "filewebm", "filecam2").await;
    assert!(
        out.contains("Video: vp8 (profile 0) -> H.264 baseline (libx264"),
        "{out}"
    );
    assert!(out.contains("Audio: Opus sent as is"), "{out}");
    assert_eq!(size, Some((320, 240)), "{out}");
    assert!(samples >= 48_000, "{samples}: {out}");

    // Refused: the gateway's status and message, exit 1, nothing published.
    let (ok, err) = publish_file_as_cam(&gw, "sample-720p30.mp4", "someoneelse").await;
    assert!(!ok && err.contains("HTTP 401"), "{err}");
    assert!(gw.hub.participant(&gw.key("filebad"), "cam").is_none());
    // A file that is not media: said before any session is opened.
    let (ok, err) = publish_file_as_cam(&gw, "usersig.json", "cam").await;
    assert!(!ok && err.contains("cannot open"), "{err}");
}
