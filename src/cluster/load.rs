//! A node's load as it reports itself in the registry: what it runs (sessions, anchors, pull tasks) and the CPU
//! share of its process, measured between two refreshes from `/proc/self/stat`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node is doing right now, as it reports itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Load {
    /// CPU used by the process over the last refresh interval, as a share of the node's cores (0-1).
    pub cpu: f64,
    /// WebRTC sessions (WHIP publishers and WHEP viewers).
    pub sessions: usize,
    /// Anchors publishing on this node.
    pub anchors: usize,
    /// Pull tasks running on this node.
    pub pull_tasks: usize,
}

/// This process's CPU use between two readings, as a share of the machine's cores.
pub struct CpuMeter {
    last: std::sync::Mutex<(std::time::Instant, Duration)>,
    cores: f64,
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter {
            last: std::sync::Mutex::new((std::time::Instant::now(), process_cpu().unwrap_or_default())),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }
}

impl CpuMeter {
    /// The share (0-1) of all cores used since the last reading (0 when the clock has not moved).
    pub fn read(&self) -> f64 {
        let now = (std::time::Instant::now(), process_cpu().unwrap_or_default());
        let mut last = self.last.lock().expect("cpu meter lock");
        let wall = now.0.duration_since(last.0).as_secs_f64();
        let used = now.1.saturating_sub(last.1).as_secs_f64();
        *last = now;
        if wall <= 0.0 {
            return 0.0;
        }
        (used / wall / self.cores).clamp(0.0, 1.0)
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat`.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports in USER_HZ, 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_is_read() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu().is_some_and(|t| t > Duration::ZERO));
    }
}
