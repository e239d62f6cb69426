//! HTTPS and RTMPS: ffmpeg publishes over `rtmps://` and a WHEP player decodes it over `https://` (trusting the
//! development CA `roomgate tls selfsigned` makes), a WHIP publisher over HTTPS is played back, the certificate is
//! replaced on disk while a viewer plays (new handshakes get the new one, the viewer goes on), and the CLI writes
//! a usable pair.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// A development CA and server certificate for localhost, written into `dir`: (cert, key, CA PEM).
fn write_pair(dir: &Path, prefix: &str) -> (PathBuf, PathBuf, String) {
    let made = roomgate::tls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{prefix}cert.pem"));
    let key = dir.join(format!("{prefix}key.pem"));
    std::fs::write(&cert, &made.chain_pem).unwrap();
    std::fs::write(&key, &made.key_pem).unwrap();
    (cert, key, made.ca_pem)
}

/// A gateway with HTTPS and RTMPS on free loopback ports, presenting `cert`/`key` (checked every second).
async fn tls_gateway(cert: PathBuf, key: PathBuf) -> TestGateway {
    start_gateway_with(move |c| {
        c.tls.cert_file = cert;
        c.tls.key_file = key;
        c.tls.check_every_secs = 1;
        c.tls.hsts_max_age_secs = 600;
        c.http.tls_listen = "127.0.0.1:0".into();
        c.rtmp.tls_listen = "127.0.0.1:0".into();
    })
    .await
}

fn https(gw: &TestGateway, path: &str) -> String {
    format!("https://localhost:{}{path}", gw.https_addr.unwrap().port())
}

/// The certificate `gw`'s HTTPS listener presents now (DER), and the response's HSTS header.
async fn served_certificate(gw: &TestGateway) -> (Vec<u8>, String) {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap();
    let r = client.get(https(gw, "/healthz")).send().await.unwrap();
    let hsts = r
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info");
    (info.peer_certificate().unwrap().to_vec(), hsts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps_and_a_whep_player_plays_it_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_pair(dir.path(), "");
    whep_client::trust(&ca);
    let gw = tls_gateway(cert, key).await;
    assert!(
        gw.http_addr.port() != gw.https_addr.unwrap().port(),
        "plain HTTP stays on by default"
    );

    let url = format!(
        "rtmps://127.0.0.1:{}/push/secure?sdkappid={SDKAPPID}&userid=cam&usersig={}",
        gw.rtmps_addr.unwrap().port(),
        usersig("cam")
    );
    let mut args = lavfi("640x360", 60);
    args.extend(["-tls_verify".to_string(), "0".to_string()]);
    let ff = Ffmpeg::push(&args, LIVE_X264, &url);
    let anchor = gw.wait_anchor("secure", "cam", Duration::from_secs(20)).await;
    assert!(anchor.is_some(), "the RTMPS publisher is an anchor");

    // A WHEP player over HTTPS that trusts only the development CA (and the system's).
    let whep = https(&gw, &format!("/v2/sub/{SDKAPPID}/secure?SessionID=v1"));
    let player = whep_client::play(&whep, Some(&usersig("v1")), whep_client::Transport::Udp)
        .await
        .unwrap_or_else(|r| panic!("plays over HTTPS: {} {}", r.status, r.body));
    let frames = player
        .gather(Duration::from_secs(15), |f| whep_client::at_least(f, 30, 50))
        .await;
    assert!(
        whep_client::at_least(&frames, 30, 50),
        "decoded over HTTPS from an RTMPS push: {} frames",
        frames.len()
    );
    let (_, hsts) = served_certificate(&gw).await;
    assert_eq!(hsts, "max-age=600", "HSTS as configured");
    // The console's token tool, used over HTTPS, prints HTTPS and RTMPS settings.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let tokens: serde_json::Value = client
        .post(https(&gw, "/v1/tokens"))
        .json(&serde_json::json!({"sdkappid": SDKAPPID, "userid": "obs", "room": "secure"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let port = gw.rtmps_addr.unwrap().port();
    assert_eq!(
        tokens["rtmp_server"],
        format!("rtmps://localhost:{port}/push/"),
        "{tokens}"
    );
    assert!(
        tokens["whip_url"].as_str().unwrap().starts_with("https://localhost:"),
        "{tokens}"
    );
    ff.kill().await;

    // Without the CA the server cannot be verified: the client refuses before any WHIP/WHEP request.
    let err = reqwest::Client::new()
        .get(https(&gw, "/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_over_https_plays_and_a_renewed_certificate_is_served_without_dropping_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_pair(dir.path(), "");
    whep_client::trust(&ca);
    let gw = tls_gateway(cert.clone(), key.clone()).await;
    let (before, _) = served_certificate(&gw).await;

    let whip = https(&gw, &format!("/v2/pub/{SDKAPPID}/renew?SessionID=cam"));
    let publisher = whip_client::publish(&whip, Some(&usersig("cam")), whip_client::MediaSpec::default())
        .await
        .unwrap_or_else(|r| panic!("publishes over HTTPS: {} {}", r.status, r.body));
    let whep = https(&gw, &format!("/v2/sub/{SDKAPPID}/renew?SessionID=v1"));
    let player = whep_client::play(&whep, Some(&usersig("v1")), whep_client::Transport::Udp)
        .await
        .unwrap_or_else(|r| panic!("plays over HTTPS: {} {}", r.status, r.body));
    let (frames, player) = player
        .gather_keep(Duration::from_secs(10), |f| whep_client::at_least(f, 20, 0))
        .await;
    assert!(
        whep_client::at_least(&frames, 20, 0),
        "{} frames before the renewal",
        frames.len()
    );

    // A renewal (as certbot writes it): the next handshake gets the new certificate...
    let (new_cert, new_key, _) = write_pair(dir.path(), "new-");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = before.clone();
    while after == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        after = served_certificate(&gw).await.0;
    }
    assert_ne!(after, before, "the renewed certificate is served");
    assert_eq!(
        after,
        std::fs::read(&new_cert)
            .map(|pem| {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                    .next()
                    .unwrap()
                    .unwrap()
                    .to_vec()
            })
            .unwrap()
    );
    // ...and the viewer that connected before it goes on playing.
    let (more, _player) = player
        .gather_keep(Duration::from_secs(10), |f| whep_client::at_least(f, 30, 0))
        .await;
    assert!(
        whep_client::at_least(&more, 30, 0),
        "{} frames after the renewal",
        more.len()
    );
    drop(publisher);
}

#[test]
fn tls_selfsigned_writes_a_pair_the_gateway_loads_and_says_how_to_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .args(["tls", "selfsigned", "--host", "media.example.test", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    for want in [
        "cert_file",
        "key_file",
        "tls_listen",
        "update-ca-certificates",
        "certutil",
    ] {
        assert!(printed.contains(want), "prints {want}: {printed}");
    }
    let files = roomgate::tls::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let loaded = roomgate::tls::load(&files).expect("the pair loads");
    assert_eq!(loaded.cert.len(), 2, "server certificate and CA");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is private");
    assert!(dir.path().join("ca.pem").is_file());
    // A second run does not replace a pair in use unless told to.
    let again = |force: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"));
        cmd.args(["tls", "selfsigned", "--host", "media.example.test", "--out"])
            .arg(dir.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = again(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--force"),
        "{refused:?}"
    );
    assert_eq!(
        roomgate::tls::load(&files).unwrap().cert,
        loaded.cert,
        "the pair is unchanged"
    );
    assert!(again(true).status.success());
    assert_ne!(
        roomgate::tls::load(&files).unwrap().cert,
        loaded.cert,
        "replaced with --force"
    );
    let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the replaced key is private too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_tls_clients_are_dropped_and_the_listeners_go_on_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_pair(dir.path(), "");
    whep_client::trust(&ca);
    let gw = start_gateway_with(move |c| {
        c.tls.cert_file = cert;
        c.tls.key_file = key;
        c.http.tls_listen = "127.0.0.1:0".into();
        c.rtmp.tls_listen = "127.0.0.1:0".into();
        c.http.header_timeout_secs = 1;
        c.rtmp.handshake_timeout_secs = 1;
    })
    .await;
    for addr in [gw.https_addr.unwrap(), gw.rtmps_addr.unwrap()] {
        // Says nothing: closed after the handshake timeout.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "{addr}: a silent client is dropped"
        );
        // Plain RTMP/HTTP bytes on a TLS port: refused at once.
        let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x03")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await;
        assert!(answer.is_ok(), "{addr}: garbage gets an answer or a close, not a hang");
    }
    // Still serving: an RTMPS publisher and an HTTPS viewer.
    let url = format!(
        "rtmps://127.0.0.1:{}/push/after?sdkappid={SDKAPPID}&userid=cam&usersig={}",
        gw.rtmps_addr.unwrap().port(),
        usersig("cam")
    );
    let mut args = lavfi("320x240", 30);
    args.extend(["-tls_verify".to_string(), "0".to_string()]);
    let ff = Ffmpeg::push(&args, QUICK_X264, &url);
    assert!(gw.wait_anchor("after", "cam", Duration::from_secs(20)).await.is_some());
    let whep = https(&gw, &format!("/v2/sub/{SDKAPPID}/after?SessionID=v1"));
    let player = whep_client::play(&whep, Some(&usersig("v1")), whep_client::Transport::Udp)
        .await
        .unwrap_or_else(|r| panic!("plays over HTTPS: {} {}", r.status, r.body));
    let frames = player
        .gather(Duration::from_secs(10), |f| whep_client::at_least(f, 10, 0))
        .await;
    assert!(whep_client::at_least(&frames, 10, 0), "{} frames", frames.len());
    ff.kill().await;
}
