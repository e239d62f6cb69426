//! Child processes a test runs beside the in-process gateway: the real `roomgate` binary (with a config file
//! written for it), and `openssl` for a throwaway certificate.

use super::cloud::{SECRET_ID, SECRET_KEY};
use super::{KEY, SDKAPPID};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped, also when the test panics, so it never outlives the test.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGKILL now (no shutdown code runs) and reap.
    pub fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write `dir/roomgate.toml` for `roomgate serve` and return its path: data in `dir/data`, HTTP, RTMP, WebRTC
/// (UDP and TCP alike) and SRT on these loopback ports (0: any free one), the test app and API key, then `extra`
/// (more TOML tables).
pub fn roomgate_config(dir: &Path, http: u16, rtmp: u16, rtc: u16, srt: u16, extra: &str) -> PathBuf {
    let path = dir.join("roomgate.toml");
    let toml = format!(
        "data_dir = \"{data}\"\nlog = \"warn\"\n\
         http = {{ listen = \"127.0.0.1:{http}\" }}\n\
         rtmp = {{ listen = \"127.0.0.1:{rtmp}\" }}\n\
         srt = {{ listen = \"127.0.0.1:{srt}\" }}\n\
         rtc = {{ bind = \"127.0.0.1\", udp_port = {rtc}, tcp_port = {rtc} }}\n\
         apps = [{{ sdkappid = {SDKAPPID}, secret_key = \"{KEY}\" }}]\n\
         api_keys = [{{ secret_id = \"{SECRET_ID}\", secret_key = \"{SECRET_KEY}\" }}]\n\
         {extra}",
        data = dir.join("data").display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// `roomgate serve -c <config>`, once it answers on `http`.
pub async fn serve(config: &Path, http: SocketAddr) -> KillOnDrop {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomgate"));
    cmd.args(["serve", "-c"]).arg(config);
    start_roomgate(cmd, http).await
}

/// Spawn `cmd` (a `roomgate serve`, perhaps wrapped) with its output discarded; once its `/healthz` answers on
/// `http` (up to 20 s).
pub async fn start_roomgate(mut cmd: Command, http: SocketAddr) -> KillOnDrop {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(http).await.is_err() || super::http_get(http, "/healthz").await.0 != 200 {
        assert!(Instant::now() < deadline, "roomgate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw
}

/// A self-signed certificate (its own CA) for localhost and 127.0.0.1, written to `dir`: (cert, key) paths.
pub fn throwaway_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
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
