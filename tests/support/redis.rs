//! A throwaway `redis-server` (Debian's, installed by scripts/install-deps.sh) on a free loopback port, with no
//! persistence; killed when dropped.

use roomgate::config::Config;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments (a replica's `--replicaof`).
    extra: Vec<String>,
    /// Its working directory (a replica writes the master's snapshot there).
    dir: tempfile::TempDir,
}

impl Redis {
    /// Start one on a free port and wait until it answers PING.
    pub fn start() -> Redis {
        let port = super::nginx::free_port();
        let mut r = Redis {
            port,
            child: None,
            extra: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart();
        r
    }

    /// Start a replica of `master` on a free port.
    pub fn replica_of(master: &Redis) -> Redis {
        let mut r = Redis {
            port: super::nginx::free_port(),
            child: None,
            extra: vec!["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()],
            dir: tempfile::tempdir().unwrap(),
        };
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
            .args(&self.extra)
            .current_dir(self.dir.path())
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
        command(self.port, &["PING"]).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Send one command; its reply as text (RESP, as read in one go), `None` if nothing answers.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        command(self.port, args)
    }
}

/// Send one command to the server on `port`; its reply as text (RESP), `None` if nothing answers.
fn command(port: u16, args: &[&str]) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A Redis Sentinel (Debian's `redis-server --sentinel`) on a free port watching `master` as `mymaster`, quick
/// to act: the master is down after 1 s without answers, one Sentinel is a quorum.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start(master: &Redis) -> Sentinel {
        let port = super::nginx::free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                dir.path().display(),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel (scripts/install-deps.sh installs redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !command(port, &["PING"]).is_some_and(|r| r.starts_with("+PONG")) {
            assert!(Instant::now() < deadline, "the Sentinel answers PING");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sentinel { port, child, _dir: dir }
    }

    /// `redis+sentinel://127.0.0.1:<port>/mymaster/0`
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster/0", self.port)
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let r = command(self.port, &["SENTINEL", "get-master-addr-by-name", "mymaster"])?;
        r.lines().nth(4)?.trim().parse().ok()
    }

    /// Ask for a failover now (no agreement needed), again until the Sentinel takes it (it refuses while it has
    /// not yet seen the replica answer: `-NOGOODSLAVE`) or 15 s have passed; its last reply.
    pub fn failover(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = command(self.port, &["SENTINEL", "FAILOVER", "mymaster"]).unwrap_or_default();
            if r.starts_with("+OK") || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether the Sentinel knows a replica of the master (a failover needs one).
    pub fn knows_a_replica(&self) -> bool {
        command(self.port, &["SENTINEL", "replicas", "mymaster"]).is_some_and(|r| !r.starts_with("*0"))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
