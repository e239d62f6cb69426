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
