//! The TLS-front deployment of examples/deploy/nginx/roomgate.conf, run as shipped (only ports, paths and the
//! certificate swapped for test ones): Debian's nginx routes one TLS port by server name, ends TLS for a
//! publisher's RTMPS and a WHEP player's HTTPS on it, passes plain RTMP through, and the player that trusts only
//! our throwaway certificate plays over `https://`.

mod support;

use std::time::Duration;
use support::nginx::free_port;
use support::process::{throwaway_cert, KillOnDrop};
use support::*;

/// Every client reaches the gateway from nginx's address, so the per-address limits are lifted.
fn behind_nginx(c: &mut roomgate::Config) {
    c.rtmp.max_connections_per_ip = 1000;
    c.http.max_connections_per_ip = 4096;
    c.rtc.whep_per_ip_per_minute = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_over_https_and_rtmps_through_the_nginx_front() {
    let gw = start_gateway_with(behind_nginx).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = throwaway_cert(dir.path());
    let (https, rtmp, inner_https, inner_rtmps) = (free_port(), free_port(), free_port(), free_port());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/deploy/nginx/roomgate.conf"
    ))
    .expect("the shipped config");
    let conf = shipped
        .replace("127.0.0.1:8080", &gw.http_addr.to_string())
        .replace("127.0.0.1:1935", &gw.rtmp_addr.unwrap().to_string())
        .replace("listen 443;", &format!("listen 127.0.0.1:{https};"))
        .replace("listen 1935;", &format!("listen 127.0.0.1:{rtmp};"))
        .replace("127.0.0.1:4430", &format!("127.0.0.1:{inner_https}"))
        .replace("127.0.0.1:4431", &format!("127.0.0.1:{inner_rtmps}"))
        // The RTMPS host name: "localhost" here, while the HTTPS clients dial 127.0.0.1 (no server name).
        .replace("rtmp.media.example.com", "localhost")
        .replace("/etc/letsencrypt/live/media.example.com/fullchain.pem", &cert)
        .replace("/etc/letsencrypt/live/media.example.com/privkey.pem", &key)
        .replace(
            "\nevents {",
            &format!("\n{}events {{", nginx::foreground_directives(dir.path())),
        )
        .replace(
            "\nhttp {",
            &format!("\nhttp {{\n{}", nginx::http_directives(dir.path())),
        );
    assert_ne!(conf, shipped);
    let _nginx = KillOnDrop(nginx::spawn(dir.path(), &conf));
    for port in [https, rtmp] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx listens on {port}; its error log: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A publisher over RTMPS on the HTTPS port (routed by its server name, TLS ended by nginx), and one over
    // plain RTMP passed through.
    let args = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac";
    let key_of = |room: &str, user: &str| format!("{room}?sdkappid={SDKAPPID}&userid={user}&usersig={}", usersig(user));
    let secure = Ffmpeg::push(
        &lavfi("640x360", 40),
        args,
        &format!("rtmps://localhost:{https}/push/{}", key_of("tls", "cam")),
    );
    let plain = Ffmpeg::push(
        &lavfi("320x240", 40),
        args,
        &format!("rtmp://127.0.0.1:{rtmp}/push/{}", key_of("plain", "cam")),
    );
    gw.wait_anchor("tls", "cam", Duration::from_secs(15))
        .await
        .expect("the RTMPS publisher is an anchor");
    gw.wait_anchor("plain", "cam", Duration::from_secs(15))
        .await
        .expect("the RTMP publisher is an anchor");

    // An independent player (aiortc) that trusts only our certificate plays over https on the same port.
    let url = format!("https://127.0.0.1:{https}/v2/sub/{SDKAPPID}/tls?SessionID=tlsviewer");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc/whep_play.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("tlsviewer"), "15"])
        .env("SSL_CERT_FILE", &cert)
        .output()
        .await
        .expect("python3 runs");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(r["status"], 201, "{r}");
    assert!(r["video_frames"].as_u64().unwrap_or(0) >= 30, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    // Without our certificate, the same player refuses the server (the TLS is real).
    let out = tokio::process::Command::new("python3")
        .args([script, &url, &usersig("tlsviewer2"), "3"])
        .env("SSL_CERT_FILE", "/nonexistent")
        .output()
        .await
        .expect("python3 runs");
    assert!(!out.status.success(), "an untrusted certificate is refused");
    secure.kill().await;
    plain.kill().await;
}
