//! The Python callback receiver (tests/callbacks/receiver.py) an app backend would run: it checks `Sign` with
//! Python's hmac and records every callback, in order, as a JSON line.

use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The Python receiver on a fixed port (so it can be down, then up, at the same URL).
pub struct Receiver {
    child: std::process::Child,
}

impl Receiver {
    pub async fn start(port: u16, key: &str, out: &Path) -> Receiver {
        Self::start_slow(port, key, out, 0.0).await
    }

    /// A receiver that takes `delay` seconds to answer each POST.
    pub async fn start_slow(port: u16, key: &str, out: &Path, delay: f64) -> Receiver {
        Self::spawn(port, key, out, delay, false).await
    }

    /// A receiver that answers HTTP 500 to the first POST of each event (by its `X-Roomgate-Event-Id`).
    pub async fn start_failing_first(port: u16, key: &str, out: &Path) -> Receiver {
        Self::spawn(port, key, out, 0.0, true).await
    }

    async fn spawn(port: u16, key: &str, out: &Path, delay: f64, fail_first: bool) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/callbacks/receiver.py");
        let child = std::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(key)
            .arg(out)
            .arg(delay.to_string())
            .arg(if fail_first { "1" } else { "0" })
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "receiver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Receiver { child }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver recorded so far.
pub fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn types(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["body"]["EventType"].as_u64().unwrap())
        .collect()
}

/// Wait until the receiver has recorded a callback of `event_type` (up to `within`).
pub async fn wait_for(out: &Path, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let r = received(out);
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out; received so far: {:?}", types(&r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
