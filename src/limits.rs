//! Caps on what peers may hold (connections, sessions, request rates) and how a refusal is reported: every
//! listener faces the internet, so each resource has a total cap and a per-IP share, and each refusal is counted
//! in `roomgate_refusals_total{source,reason}` and logged at most once per [`LOG_EVERY`] per reason.
//!
//! Sans-IO where it can be: the counters and the rate limiter take the time as an argument and are unit-tested.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A refusal of one (source, reason) is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a limit refused something (the `reason` label and the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The total cap is reached; carries it.
    #[error("too many connections ({0} at most)")]
    TooManyConnections(usize),
    /// This client address holds its share already; carries the share.
    #[error("too many connections from one address ({0} at most)")]
    TooManyConnectionsPerIp(usize),
    /// This client address made its allowed number of requests this minute; carries it.
    #[error("too many requests from one address ({0} per minute at most)")]
    RateLimited(u32),
}

impl LimitError {
    /// The `reason` label of `roomgate_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitError::TooManyConnections(_) => "max_connections",
            LimitError::TooManyConnectionsPerIp(_) => "max_connections_per_ip",
            LimitError::RateLimited(_) => "rate_limited",
        }
    }
}

/// Per (source, reason): when it was last logged, and how many were not logged since.
type RefusalLog = HashMap<(&'static str, &'static str), (Instant, u64)>;

/// Count a refusal in `/metrics` and log it, at most once per [`LOG_EVERY`] for each (source, reason).
pub fn refused(source: &'static str, reason: &'static str, detail: &dyn std::fmt::Display) {
    metrics::counter!("roomgate_refusals_total", "source" => source, "reason" => reason).increment(1);
    static LAST: Mutex<Option<RefusalLog>> = Mutex::new(None);
    let now = Instant::now();
    let mut last = LAST.lock().expect("refusal log lock");
    if let Some(suppressed) = log_due(last.get_or_insert_with(HashMap::new), (source, reason), now) {
        tracing::warn!(source, reason, suppressed, "refused: {detail}");
    }
}

/// Whether a refusal of `key` at `now` is logged: `Some(refusals not logged since the last line)`, or None
/// within [`LOG_EVERY`] of the last line (then it is counted as suppressed).
fn log_due(log: &mut RefusalLog, key: (&'static str, &'static str), now: Instant) -> Option<u64> {
    match log.get_mut(&key) {
        Some((at, suppressed)) if now.saturating_duration_since(*at) < LOG_EVERY => {
            *suppressed += 1;
            None
        }
        Some(e) => {
            let n = e.1;
            *e = (now, 0);
            Some(n)
        }
        None => {
            log.insert(key, (now, 0));
            Some(0)
        }
    }
}

/// `::ffff:a.b.c.d` (what a `[::]` listener sees for IPv4 peers) as `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Open connections, in total and per client address. `try_open` hands out a guard that gives the slot back
/// when dropped, so a connection task cannot forget it.
#[derive(Debug)]
pub struct ConnectionCounter {
    max: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection's slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionCounter {
    /// A counter allowing `max` connections in all and `per_ip` per client address (each at least 1).
    pub fn new(max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionCounter {
            max: max.max(1),
            per_ip: per_ip.max(1),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Take a slot for a connection from `ip` (IPv4-mapped addresses count as IPv4), or say which cap refuses it.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, LimitError> {
        let ip = canonical(ip);
        let mut g = self.open.lock().expect("connection counter lock");
        if g.0 >= self.max {
            return Err(LimitError::TooManyConnections(self.max));
        }
        let n = g.1.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(LimitError::TooManyConnectionsPerIp(self.per_ip));
        }
        *n += 1;
        g.0 += 1;
        Ok(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }

    /// Connections open now (total).
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection counter lock").0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut g = self.counter.open.lock().expect("connection counter lock");
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

/// At most `per_minute` events per client address in any sliding minute (a token bucket refilled continuously).
#[derive(Debug)]
pub struct PerIpRate {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PerIpRate {
    /// `per_minute` 0 disables the limit.
    pub fn new(per_minute: u32) -> Self {
        PerIpRate {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `ip` at `now`; when none is left, the seconds until one is.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), (LimitError, u64)> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = self.per_minute as f64;
        let per_sec = cap / 60.0;
        let mut b = self.buckets.lock().expect("rate lock");
        if b.len() > 10_000 {
            // Forget full buckets (addresses idle for a minute) so the map stays small.
            b.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < cap);
        }
        let (tokens, at) = b.entry(canonical(ip)).or_insert((cap, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_sec).ceil().max(1.0) as u64;
            Err((LimitError::RateLimited(self.per_minute), wait))
        }
    }
}

/// Raise the soft open-file limit to the hard limit; returns the limit in force afterwards (None where unknown).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// File descriptors kept for everything that is not a client connection (database, logs, libav, sockets).
pub const FD_RESERVE: u64 = 256;

/// Clamp each connection/session cap so that, together, they stay below the open-file limit `nofile`.
/// Returns one warning per cap lowered. Caps are `(name, value)`; the budget is shared in proportion.
pub fn clamp_caps(nofile: u64, caps: &mut [(&'static str, &mut usize)]) -> Vec<String> {
    let budget = nofile.saturating_sub(FD_RESERVE).max(caps.len() as u64) as f64;
    let total: f64 = caps.iter().map(|(_, v)| **v as f64).sum();
    let mut warnings = Vec::new();
    if total <= budget {
        return warnings;
    }
    for (name, v) in caps.iter_mut() {
        let share = ((**v as f64) * budget / total).floor().max(1.0) as usize;
        if share < **v {
            warnings.push(format!(
                "{name} = {} exceeds the open-file limit {nofile} (with the other caps); using {share}",
                **v
            ));
            **v = share;
        }
    }
    warnings
}

/// The next connection on `listener`. An accept that fails (out of file descriptors and the like) is logged as a
/// failure of `what` and retried after 50 ms, so a listener under pressure waits instead of spinning.
pub async fn accept(listener: &tokio::net::TcpListener, what: &str) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_have_a_total_and_a_per_ip_cap() {
        let c = ConnectionCounter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.try_open(a).unwrap();
        let _s2 = c.try_open(a).unwrap();
        assert_eq!(c.try_open(a).unwrap_err(), LimitError::TooManyConnectionsPerIp(2));
        let _s3 = c.try_open(b).unwrap();
        assert_eq!(c.try_open(b).unwrap_err(), LimitError::TooManyConnections(3));
        drop(s1);
        assert_eq!(c.open(), 2);
        c.try_open(a).expect("a slot came back");
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval() {
        let mut log = RefusalLog::new();
        let t = Instant::now();
        let k = ("http", "max_connections");
        assert_eq!(log_due(&mut log, k, t), Some(0));
        assert_eq!(log_due(&mut log, k, t + Duration::from_secs(1)), None);
        assert_eq!(log_due(&mut log, k, t + Duration::from_secs(2)), None);
        assert_eq!(
            log_due(&mut log, ("http", "other"), t),
            Some(0),
            "each reason has its own interval"
        );
        assert_eq!(
            log_due(&mut log, k, t + LOG_EVERY),
            Some(2),
            "the next line says how many were not logged"
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let c = ConnectionCounter::new(10, 1);
        let _s = c.try_open("127.0.0.1".parse().unwrap()).unwrap();
        assert!(c.try_open("::ffff:127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn rate_refills_over_the_minute() {
        let r = PerIpRate::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        r.check(ip, t).unwrap();
        r.check(ip, t).unwrap();
        let (e, wait) = r.check(ip, t).unwrap_err();
        assert_eq!(e, LimitError::RateLimited(2));
        assert!((1..=30).contains(&wait), "{wait}");
        r.check("10.0.0.2".parse().unwrap(), t)
            .expect("other addresses are not affected");
        r.check(ip, t + Duration::from_secs(31)).expect("a token came back");
        assert!(PerIpRate::new(0).check(ip, t).is_ok(), "0 disables");
    }

    #[test]
    fn caps_are_clamped_below_the_file_limit() {
        let (mut a, mut b) = (4096usize, 1000usize);
        let w = clamp_caps(1024, &mut [("http.max_connections", &mut a), ("rtc.tcp", &mut b)]);
        assert_eq!(w.len(), 2);
        assert!(a + b <= 1024 - FD_RESERVE as usize);
        let (mut a, mut b) = (100usize, 100usize);
        assert!(clamp_caps(1 << 20, &mut [("a", &mut a), ("b", &mut b)]).is_empty());
        assert_eq!((a, b), (100, 100));
    }

    #[test]
    fn raising_the_file_limit_reports_it() {
        if let Some(n) = raise_nofile_limit() {
            assert!(n >= 256);
        }
    }
}
