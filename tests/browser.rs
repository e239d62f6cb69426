//! The web console in a real browser: Debian's chromium driven by playwright-core (tests/browser/run.mjs) with a
//! fake camera. Screenshots of each page are saved under target/ (CARGO_TARGET_TMPDIR/browser-artifacts).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::whep_client::video_of;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts")
}

/// A running browser scenario; its JSON lines arrive one by one.
struct Browser {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Browser {
    /// Run `scenario` against the pages of `gw`, with `args` as `key=value` arguments.
    fn start(scenario: &str, gw: &TestGateway, args: &[(&str, String)]) -> Browser {
        Self::start_at(scenario, &gw.http(""), args)
    }

    /// `start` against the pages at `base` (e.g. an `https://` URL).
    fn start_at(scenario: &str, base: &str, args: &[(&str, String)]) -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg("run.mjs")
            .arg(scenario)
            .arg(base)
            .arg(artifacts())
            .args(args.iter().map(|(k, v)| format!("{k}={v}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (scripts/install-deps.sh installs playwright-core and chromium)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, lines }
    }

    /// The next result line (skipping page errors, which are printed).
    async fn next(&mut self, within: Duration) -> Value {
        loop {
            let line = tokio::time::timeout(within, self.lines.next_line())
                .await
                .expect("the browser answers in time")
                .unwrap()
                .expect("the browser script ended without a result");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v.get("pageerror").is_some() {
                eprintln!("page error: {v}");
                continue;
            }
            assert_eq!(
                v["ok"],
                true,
                "browser scenario failed: {v} (screenshot in {})",
                artifacts().display()
            );
            return v;
        }
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the browser exits")
            .unwrap();
        assert!(status.success());
    }
}

fn rtmp_push(gw: &TestGateway, room: &str, user: &str, size: &str, seconds: u32) -> Ffmpeg {
    let args = "-c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g 30 -c:a aac -ar 48000";
    gw.push_lavfi(room, user, size, seconds, args)
}

/// `rtmp_push`, once the anchor is in the room.
async fn pushed(gw: &TestGateway, room: &str, user: &str, size: &str, seconds: u32) -> Ffmpeg {
    let push = rtmp_push(gw, room, user, size, seconds);
    gw.wait_anchor(room, user, Duration::from_secs(10)).await.unwrap();
    push
}

/// A gateway with an anchor pushing (see `pushed`).
async fn gateway_with_anchor(room: &str, user: &str, size: &str, seconds: u32) -> (TestGateway, Ffmpeg) {
    let gw = start_gateway().await;
    let push = pushed(&gw, room, user, size, seconds).await;
    (gw, push)
}

/// The page arguments naming the test app, `room`, and `who` (`anchor` to play, `userid` to publish) as `user`.
fn in_room(room: &str, who: &'static str, user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("sdkappid", SDKAPPID.to_string()),
        ("room", room.into()),
        (who, user.into()),
    ]
}

/// The player page's report: more than 30 frames played, of `size`.
fn assert_played(v: &Value, size: (u64, u64)) {
    assert!(v["frames"].as_u64().unwrap_or(0) > 30, "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(size.0), Some(size.1)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_page_plays_an_rtmp_push() {
    let (gw, push) = gateway_with_anchor("webroom", "cam1", "640x360", 60).await;
    let mut b = Browser::start("play", &gw, &in_room("webroom", "anchor", "cam1"));
    let report = b.next(Duration::from_secs(60)).await;
    assert_played(&report, (640, 360));
    // The transcoded audio decodes in the browser: seconds of it, nearly none made up by the decoder's
    // concealment, in packets of `audio.opus_frame_ms` (40 ms, 1920 samples, by default).
    let samples = report["audio_samples"].as_u64().unwrap_or(0);
    let packets = report["audio_packets"].as_u64().unwrap_or(0).max(1);
    let concealed = report["audio_concealed"].as_u64().unwrap_or(u64::MAX);
    assert!(samples > 2 * 48_000, "{report}");
    assert!(concealed < samples / 10, "{report}");
    let per_packet = u64::from(roomgate::config::DEFAULT_OPUS_FRAME_MS) * 48;
    assert!(
        (per_packet * 3 / 4..per_packet * 5 / 4).contains(&(samples / packets)),
        "{} samples per packet: {report}",
        samples / packets
    );
    b.finish().await;
    push.kill().await;
}

/// The token tool's share link, opened by a remote viewer (no admin role: loopback admin off), plays with the
/// viewer id and token the link carries, PrivateMapKey included when the app requires one. Before, the page
/// played as a random viewer id and the gateway refused the link's token (401) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_player_link_plays_for_a_viewer_who_is_not_admin() {
    let gw = start_gateway_with(|c| {
        c.admin.loopback = false;
        c.admin.token = "admin-secret".into();
        c.apps[0].require_private_map_key = true;
    })
    .await;
    let anchor_pmk = private_map_key("cam1", "shared", roomgate::auth::Privileges::PUBLISH);
    let push = Ffmpeg::push(
        &lavfi("640x360", 60),
        LIVE_X264,
        &format!(
            "{}&privatemapkey={anchor_pmk}",
            gw.push_url("shared", "cam1", &usersig("cam1"))
        ),
    );
    gw.wait_anchor("shared", "cam1", Duration::from_secs(10)).await.unwrap();
    let request = serde_json::json!({"sdkappid": SDKAPPID, "room": "shared", "userid": "cam1", "expire": 3600});
    let (_, tokens) = post_json(&gw.http("/v1/tokens"), Some("admin-secret"), &request).await;
    let path = tokens["share_path"].as_str().expect("a share link").to_string();
    assert!(
        path.contains("&viewer=") && path.contains("&token=") && path.contains("&privatemapkey="),
        "{path}"
    );
    // The link's token is play-only: publishing with it is refused, whatever the room.
    let param = |k: &str| {
        path.split(&format!("&{k}="))
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string()
    };
    let (viewer, token) = (param("viewer"), param("token"));
    let (ok, stderr) = Ffmpeg::push(
        &lavfi("320x240", 3),
        "-c:v libx264 -profile:v baseline -c:a aac",
        &format!("{}&privatemapkey={token}", gw.push_url("shared", &viewer, &token)),
    )
    .finish(Duration::from_secs(20))
    .await;
    assert!(
        !ok && stderr.contains("PrivateMapKey"),
        "a share link cannot publish: {stderr}"
    );
    let mut b = Browser::start("share", &gw, &[("path", path)]);
    assert_played(&b.next(Duration::from_secs(60)).await, (640, 360));
    b.finish().await;
    push.kill().await;
}

/// coturn as examples/deploy/coturn sets it up (use-auth-secret), on loopback ports, logging to `dir`.
struct Coturn(std::process::Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Clients may reach it over `transport` only ("udp" or "tcp"): the other listener is off.
fn coturn(dir: &Path, port: u16, secret: &str, transport: &str) -> Coturn {
    let base = 40000 + (port % 20000);
    Coturn(
        std::process::Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--realm=roomgate.test",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={base}"))
            .arg(format!("--max-port={}", base + 200))
            .args(["--use-auth-secret", &format!("--static-auth-secret={secret}")])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--simple-log",
                "--verbose",
            ])
            .arg(if transport == "tcp" { "--no-udp" } else { "--no-tcp" })
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
            .arg(format!("--db={}", dir.join("turndb").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn is installed (scripts/install-deps.sh)"),
    )
}

/// A player on a network that allows nothing but the TURN relay (`iceTransportPolicy: "relay"`) plays an anchor
/// only through coturn, over UDP and then over TCP to the relay (coturn's other listener off each time), with the short-lived credentials roomgate makes
/// from `rtc.turn_secret` (coturn's use-auth-secret); coturn's log shows the allocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_player_plays_through_coturn_over_udp_and_tcp() {
    for transport in ["udp", "tcp"] {
        let dir = tempfile::tempdir().unwrap();
        let port = support::nginx::free_port();
        let _turn = coturn(dir.path(), port, "north-secret", transport);
        let gw = start_gateway_with(|c| {
            c.rtc.turn_secret = "north-secret".into();
            c.rtc.ice_servers = vec![roomgate::config::IceServer {
                urls: vec![format!("turn:127.0.0.1:{port}?transport={transport}")],
                username: String::new(),
                credential: String::new(),
            }];
        })
        .await;
        let push = pushed(&gw, "relayed", "cam1", "640x360", 60).await;
        let path = format!("/play?sdkappid={SDKAPPID}&room=relayed&anchor=cam1&relay=1");
        let shot = format!("relay-only-{transport}");
        let mut b = Browser::start("share", &gw, &[("path", path), ("shot", shot)]);
        let v = b.next(Duration::from_secs(60)).await;
        assert!(v["frames"].as_u64().unwrap_or(0) > 30, "{transport}: {v}");
        b.finish().await;
        push.kill().await;
        let log = std::fs::read_to_string(dir.path().join("turn.log")).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains("ALLOCATE") && l.contains("success")),
            "{transport}: coturn allocated a relay:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_reconnects_when_the_anchor_comes_back() {
    let (gw, push) = gateway_with_anchor("backroom", "cam2", "320x240", 60).await;
    let mut b = Browser::start("reconnect", &gw, &in_room("backroom", "anchor", "cam2"));
    b.next(Duration::from_secs(60)).await;
    push.kill().await;
    gw.wait_left("backroom", "cam2", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let push = rtmp_push(&gw, "backroom", "cam2", "320x240", 60);
    let v = b.next(Duration::from_secs(90)).await;
    assert_eq!(v["recovered"], true, "{v}");
    assert!(v["reconnects"].as_u64().unwrap() >= 1, "{v}");
    b.finish().await;
    push.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_page_goes_out_over_whip_and_decodes_over_whep() {
    let gw = start_gateway().await;
    let mut args = in_room("camroom", "userid", "browser1");
    args.push(("hold", "20".into()));
    let mut b = Browser::start("publish", &gw, &args);
    b.next(Duration::from_secs(60)).await;
    let anchor = gw
        .wait_anchor("camroom", "browser1", Duration::from_secs(10))
        .await
        .expect("the browser is an anchor");
    assert_eq!(anchor.source, roomgate::room::SourceKind::Whip);
    let got = gw.watch("camroom", "v1", Duration::from_secs(15), 30, 0).await;
    let video = video_of(&got);
    assert!(video.len() >= 30, "{} frames from the browser", video.len());
    let size = decode_h264_size_of(video.iter().copied()).expect("the browser's video decodes");
    // Chromium starts small and ramps up with its bandwidth estimate; any real picture will do.
    assert!(size.0 >= 160 && size.1 >= 90, "{size:?}");
    let info = anchor.video_info();
    eprintln!(
        "browser published {} ({:?}x{:?})",
        info.source_codec, info.width, info.height
    );
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_page_on_a_remote_host_name_publishes_over_https_with_the_development_certificate() {
    // A host name that is not loopback, as another machine reaches the gateway: over plain HTTP the page is no
    // secure context and cannot open the camera; over HTTPS with the development certificate trusted it can.
    let dir = tempfile::tempdir().unwrap();
    let made = roomgate::tls::self_signed(&["media.test".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &made.chain_pem).unwrap();
    std::fs::write(&key, &made.key_pem).unwrap();
    let spki = {
        use base64::Engine;
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let der = rcgen::KeyPair::from_pem(&made.key_pem)
            .unwrap()
            .subject_public_key_info();
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(der))
    };
    let gw = start_gateway_with(move |c| {
        c.tls.cert_file = cert;
        c.tls.key_file = key;
        c.http.tls_listen = "127.0.0.1:0".into();
        c.admin.allowed_hosts = vec!["media.test".into()];
    })
    .await;
    let base = format!("https://media.test:{}", gw.https_addr.unwrap().port());
    let mut args = in_room("tlsroom", "userid", "remote1");
    args.extend([
        ("hold", "20".into()),
        ("resolve", "media.test 127.0.0.1".into()),
        ("spki", spki),
    ]);
    let mut b = Browser::start_at("publish", &base, &args);
    b.next(Duration::from_secs(60)).await;
    let anchor = gw
        .wait_anchor("tlsroom", "remote1", Duration::from_secs(10))
        .await
        .expect("the browser is an anchor");
    assert_eq!(anchor.source, roomgate::room::SourceKind::Whip);
    let got = gw.watch("tlsroom", "v1", Duration::from_secs(15), 30, 0).await;
    assert!(video_of(&got).len() >= 30, "frames from the browser over HTTPS");
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_an_anchor_and_removes_it_when_it_stops() {
    let (gw, push) = gateway_with_anchor("dashroom", "cam9", "320x240", 60).await;
    let mut b = Browser::start(
        "dashboard",
        &gw,
        &[("room", "dashroom".into()), ("anchor", "cam9".into())],
    );
    let v = b.next(Duration::from_secs(60)).await;
    let row = v["row"].as_str().unwrap();
    assert!(row.contains("rtmp") && row.contains("320×240"), "{row}");
    push.kill().await;
    let v = b.next(Duration::from_secs(40)).await;
    assert_eq!(v["removed"], true);
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_tools_ffmpeg_line_publishes() {
    let gw = start_gateway().await;
    let mut b = Browser::start("tokens", &gw, &in_room("tokroom", "userid", "pasted"));
    let v = b.next(Duration::from_secs(60)).await;
    b.finish().await;
    let line = v["ffmpeg"].as_str().unwrap().to_string();
    assert!(
        line.starts_with("ffmpeg ") && line.contains("rtmp://127.0.0.1:"),
        "{line}"
    );
    // Paste it into a shell as a user would.
    let mut ffmpeg = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {}",
            line.replacen("ffmpeg ", "ffmpeg -hide_banner -loglevel error -nostdin ", 1)
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The pasted ffmpeg line publishes, and its video flows.
    gw.wait_video("tokroom", "pasted", Duration::from_secs(15)).await;
    let _ = ffmpeg.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_and_labels_its_controls() {
    let (gw, push) = gateway_with_anchor("phoneroom", "cam3", "320x240", 30).await;
    let mut b = Browser::start("phone", &gw, &[]);
    let v = b.next(Duration::from_secs(60)).await;
    for (page, r) in v["report"].as_object().unwrap() {
        assert!(
            r["overflow"].as_i64().unwrap() <= 0,
            "{page} is wider than a phone: {r}"
        );
        assert_eq!(r["unlabelled"], 0, "{page} has form controls without a label: {r}");
        assert_eq!(r["hiddenActions"], 0, "{page} hides its actions off screen: {r}");
    }
    b.finish().await;
    push.kill().await;
}
