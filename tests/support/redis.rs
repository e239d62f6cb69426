//! A throwaway `redis-server` (Debian's, installed by scripts/install-deps.sh) on a free loopback port, with no
//! persistence; killed when dropped.

use roomgate::config::Config;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Start one on a free port and wait until it answers PING.
    pub fn start() -> Redis {
        let port = super::nginx::free_port();
        let mut r = Redis { port, child: None };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill it (an outage); `restart` brings it back on the same port, empty.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server answers PING");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it answers PING.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The secret the test nodes share (relay links).
pub const SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// `c` as node `id` of the cluster on `redis_url`: relay links on a free loopback port with the shared secret.
pub fn join_cluster(c: &mut Config, redis_url: String, id: &str) {
    c.cluster.redis_url = redis_url;
    c.cluster.node_id = id.to_string();
    c.cluster.secret = SECRET.into();
    c.cluster.relay_listen = "127.0.0.1:0".parse().unwrap();
}
