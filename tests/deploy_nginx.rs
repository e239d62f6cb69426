//! The TLS-front deployment of examples/deploy/nginx/roomgate.conf, run as shipped (only ports, paths and the
//! certificate swapped for test ones): Debian's nginx routes one TLS port by server name, ends TLS for a
//! publisher's RTMPS and a WHEP player's HTTPS on it, passes plain RTMP through, and the player that trusts only
//! our throwaway certificate plays over `https://`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::nginx::free_port;
use support::*;

struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for localhost and 127.0.0.1 (its own CA): (cert, key).
fn throwaway_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed")
        .success();
    assert!(ok, "openssl made a certificate");
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_over_https_and_rtmps_through_the_nginx_front() {
    let gw = start_gateway_with(|c| {
        c.rtmp.max_connections_per_ip = 1000;
        c.http.max_connections_per_ip = 4096;
        c.rtc.whep_per_ip_per_minute = 0;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = throwaway_cert(dir.path());
    let (https, rtmp, inner_https, inner_rtmps) = (free_port(), free_port(), free_port(), free_port());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/deploy/nginx/roomgate.conf"
    ))
    .expect("the shipped config");
    let p = dir.path().display();
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
            &format!(
                "\ndaemon off;\nmaster_process off;\nuser root;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{"
            ),
        )
        .replace(
            "\nhttp {",
            &format!(
                "\nhttp {{\n    access_log {p}/access.log;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n    fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;"
            ),
        );
    assert_ne!(conf, shipped);
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = Nginx(
        std::process::Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx is installed (scripts/install-deps.sh)"),
    );
    for port in [https, rtmp] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx listens on {port}");
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
