//! The `roomgate` binary as an operator runs it.

use roomgate::auth::{unix_now, UserSig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The one app of the configs below.
const APP: &str = "[[apps]]\nsdkappid = 1400000009\nsecret_key = \"s3cret\"\n";

/// `roomgate.toml` with `text`, in `dir`.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    let cfg = dir.join("roomgate.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `roomgate --config <cfg> <args>`, run to its end.
fn roomgate(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

/// The trimmed value of the first `label` line of `text`.
fn labelled<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(label)).unwrap().trim()
}

#[test]
fn usersig_command_prints_a_ticket_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), APP);
    let out = roomgate(&cfg, &["usersig", "--userid", "obs_1", "--expire", "600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let sig = UserSig::verify(token.trim(), 1400000009, "obs_1", "s3cret", unix_now()).unwrap();
    assert_eq!(sig.expire, 600);

    let bad = roomgate(&cfg, &["usersig", "--sdkappid", "5", "--userid", "obs_1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sdkappid 5 is not configured"));
}

#[test]
fn without_apps_a_demo_app_is_created_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_roomgate"))
            .args(["--data-dir", dir.path().to_str().unwrap(), "usersig", "--userid", "u1"])
            .env_remove("ROOMGATE_CONFIG")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let app: toml::Value = toml::from_str(&std::fs::read_to_string(dir.path().join("demo-app.toml")).unwrap()).unwrap();
    let sdkappid = app["sdkappid"].as_integer().unwrap() as u64;
    let key = app["secret_key"].as_str().unwrap();
    let token = String::from_utf8(first.stdout).unwrap();
    UserSig::verify(token.trim(), sdkappid, "u1", key, unix_now()).unwrap();
    assert!(run().status.success(), "the stored demo app is reused");
}

#[test]
fn obs_command_prints_working_rtmp_and_whip_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &format!("public_host = \"gw.example\"\n{APP}"));
    let out = roomgate(&cfg, &["obs", "--userid", "obs_1", "--room", "stage"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Server:       rtmp://gw.example/push/"), "{text}");
    assert!(
        text.contains("Server:       http://gw.example:8080/v2/pub/1400000009/stage?SessionID=obs_1"),
        "{text}"
    );
    let key = labelled(&text, "Stream Key:");
    let (room, query) = key.split_once('?').unwrap();
    assert_eq!(room, "stage");
    let sig = query.split('&').find_map(|kv| kv.strip_prefix("usersig=")).unwrap();
    UserSig::verify(sig, 1400000009, "obs_1", "s3cret", unix_now()).unwrap();
    let bearer = labelled(&text, "Bearer Token:");
    UserSig::verify(bearer, 1400000009, "obs_1", "s3cret", unix_now()).unwrap();
}
