//! A node's load as it reports itself in the registry: what it runs (sessions, anchors, pull tasks), the CPU
//! share of its process (measured between two refreshes from `/proc/self/stat`), and the score new work is placed
//! by: the larger of the CPU share and each configured budget's use. Pure, so placement is unit-tested.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node is doing right now, as it reports itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Load {
    /// CPU used by the process over the last refresh interval, as a share of the node's cores (0-1).
    pub cpu: f64,
    /// WebRTC sessions (WHIP publishers and WHEP viewers).
    pub sessions: usize,
    /// Anchors publishing on this node.
    pub anchors: usize,
    /// Pull tasks running on this node.
    pub pull_tasks: usize,
    /// What placement compares (0-1): the largest of `cpu`, `sessions / rtc.max_sessions` and
    /// `pull_tasks / pull.max_tasks`.
    #[serde(default)]
    pub score: f64,
    /// Whether the node takes new publishers and tasks: not draining and `score` not over its `cluster.max_load`.
    #[serde(default = "yes")]
    pub accepting: bool,
}

fn yes() -> bool {
    true
}

impl Default for Load {
    /// Nothing running, accepting work.
    fn default() -> Self {
        Load {
            cpu: 0.0,
            sessions: 0,
            anchors: 0,
            pull_tasks: 0,
            score: 0.0,
            accepting: true,
        }
    }
}

impl Load {
    /// The placement score of a node using `cpu` of its cores, `sessions` of `max_sessions` WebRTC sessions and
    /// `tasks` of `max_tasks` pull tasks (a budget of 0 counts as full when used at all).
    pub fn score(cpu: f64, sessions: usize, max_sessions: usize, tasks: usize, max_tasks: usize) -> f64 {
        let share = |used: usize, budget: usize| match (used, budget) {
            (0, _) => 0.0,
            (_, 0) => 1.0,
            (u, b) => (u as f64 / b as f64).min(1.0),
        };
        cpu.clamp(0.0, 1.0)
            .max(share(sessions, max_sessions))
            .max(share(tasks, max_tasks))
    }
}

/// Of `nodes`, the one new work goes to: accepting, not `except` (the node asking), lowest score first (ties: the
/// first listed). `None`: every other node is full or draining.
pub fn least_loaded<'a>(nodes: &'a [super::NodeInfo], except: &str) -> Option<&'a super::NodeInfo> {
    nodes
        .iter()
        .filter(|n| n.id != except && n.load.accepting)
        .min_by(|a, b| a.load.score.total_cmp(&b.load.score))
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
    fn the_score_is_the_fullest_budget() {
        assert_eq!(Load::score(0.2, 0, 100, 0, 10), 0.2);
        assert_eq!(Load::score(0.2, 50, 100, 0, 10), 0.5);
        assert_eq!(Load::score(0.2, 50, 100, 9, 10), 0.9);
        assert_eq!(Load::score(1.7, 0, 100, 0, 10), 1.0, "clamped");
        assert_eq!(Load::score(0.0, 1, 0, 0, 0), 1.0, "a budget of 0 is full once used");
        assert_eq!(Load::score(0.0, 0, 0, 0, 0), 0.0);
    }

    #[test]
    fn work_goes_to_the_least_loaded_accepting_other_node() {
        let node = |id: &str, score: f64, accepting: bool| super::super::NodeInfo {
            id: id.into(),
            http: format!("http://{id}:8080"),
            relay: String::new(),
            cores: 2,
            version: "0".into(),
            started_at_ms: 0,
            load: Load {
                score,
                accepting,
                ..Load::default()
            },
        };
        let nodes = [
            node("a", 0.1, true),
            node("b", 0.5, true),
            node("c", 0.05, false),
            node("d", 0.3, true),
        ];
        assert_eq!(least_loaded(&nodes, "x").unwrap().id, "a");
        assert_eq!(
            least_loaded(&nodes, "a").unwrap().id,
            "d",
            "not the asking node, not a full one"
        );
        assert!(least_loaded(&nodes[2..3], "x").is_none(), "only full nodes");
        assert!(least_loaded(&nodes[..1], "a").is_none(), "only itself");
    }

    #[test]
    fn process_cpu_time_is_read() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu().is_some_and(|t| t > Duration::ZERO));
    }
}
