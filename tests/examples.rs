//! The programs in `examples/` work as their doc comments say: each is run as a developer would run it (the built
//! example binary, or `python3 examples/x.py`) against an in-process gateway, and the assertions are about what
//! the user sees: printed lines, anchors in rooms, callbacks printed once, forged ones refused.

mod support;

use roomgate::auth::{unix_now, PrivateMapKey, Privileges, RoomRef, UserSig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::nginx::{free_port, Nginx};
use support::*;

/// `target/<profile>/examples/<name>`: the test binary is `target/<profile>/deps/examples-<hash>`.
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

fn example_py(name: &str) -> PathBuf {
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
            .args([&SDKAPPID.to_string(), KEY, "exanchor", "--room", room, "--privileges", "publish"])
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
        gw.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID=exanchor&privatemapkey={pmk}"))
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
        tokio::process::Command::new(example_bin("usersig"))
            .args([&SDKAPPID.to_string(), KEY, "bad user"]),
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
    assert!(anchor.is_some(), "the anchor publishing with the printed stream key is in the room");
    ff.kill().await;
}

// ---------------------------------------------------------------------------------------------------------------
// examples/start_pull_task.rs and examples/start_pull_task.py

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
    assert!(anchor.is_some(), "the robot was in the room while the task ran:\n{stdout}\n{stderr}");

    let start = responses(&stdout, "StartStreamIngest");
    assert_eq!(start.len(), 1, "{stdout}");
    let task = start[0]["TaskId"].as_str().expect("a TaskId");
    assert!(start[0]["RequestId"].as_str().is_some_and(|r| r.len() == 36), "{stdout}");
    let describes = responses(&stdout, "DescribeStreamIngest");
    assert!(
        describes.iter().any(|d| d["Status"] == "InProgress" && d["State"] == "playing"),
        "a Describe showed the task playing: {stdout}"
    );
    assert_eq!(describes.last().unwrap()["Status"], "NotExist", "{stdout}");
    assert_eq!(responses(&stdout, "StopStreamIngest").len(), 1, "{stdout}");

    // The task is over and the robot left the room.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.hub.participant(&gw.key(room), robot).is_some() {
        assert!(Instant::now() < deadline, "the robot left the room after Stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        .args(["--secret-id", support::cloud::SECRET_ID, "--secret-key", support::cloud::SECRET_KEY])
        .args(["--sdkappid", &SDKAPPID.to_string(), "--app-key", KEY])
        .args(["--room", "pullrs", "--userid", "robotrs", "--url", &source, "--hold-seconds", "2"]);
    check_pull_task_example(&gw, rust, "pullrs", "robotrs").await;

    // Python, with Tencent's SDK.
    let mut py = tokio::process::Command::new("python3");
    py.arg(example_py("start_pull_task.py"))
        .args(["--endpoint", &gw.http_addr.to_string()])
        .args(["--secret-id", support::cloud::SECRET_ID, "--secret-key", support::cloud::SECRET_KEY])
        .args(["--sdkappid", &SDKAPPID.to_string(), "--usersig", &usersig("robotpy")])
        .args(["--room", "pullpy", "--userid", "robotpy", "--url", &source, "--hold-seconds", "2"]);
    check_pull_task_example(&gw, py, "pullpy", "robotpy").await;

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
