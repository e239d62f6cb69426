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

/// Placements within this much of the lowest predicted score are equally good: one of them is picked at random,
/// so a burst of placements (from one node or several, each reading loads up to a refresh old) spreads out.
pub const PLACE_TIE: f64 = 0.05;

/// Of `nodes`, the one new work costing `cores` goes to: accepting, not `except`, lowest predicted score —
/// its reported score, plus `pending(id)` (what was placed there since it last reported), plus the work's share of
/// its cores — and among those within [`PLACE_TIE`] of the lowest, the one `pick` (a random number) chooses.
/// With the prediction, for the caller to compare with its own. `None`: every other node is full or draining.
pub fn place<'a>(
    nodes: &'a [super::NodeInfo],
    except: &str,
    cores: f64,
    pending: impl Fn(&str) -> f64,
    pick: usize,
) -> Option<(&'a super::NodeInfo, f64)> {
    let predicted: Vec<(&super::NodeInfo, f64)> = nodes
        .iter()
        .filter(|n| n.id != except && n.load.accepting)
        .map(|n| (n, predict(n, cores, &pending)))
        .collect();
    let lowest = predicted.iter().map(|(_, p)| *p).min_by(f64::total_cmp)?;
    let ties: Vec<_> = predicted
        .into_iter()
        .filter(|(_, p)| *p <= lowest + PLACE_TIE)
        .collect();
    Some(ties[pick % ties.len()])
}

/// `node`'s score once work of `cores` (and what `pending` says was already placed there) runs on it.
pub fn predict(node: &super::NodeInfo, cores: f64, pending: impl Fn(&str) -> f64) -> f64 {
    node.load.score + pending(&node.id) + cores / node.cores.max(1) as f64
}

/// This process's CPU use between two readings, as a share of the machine's cores.
pub struct CpuMeter {
    /// The reading the next share is measured from, and the last share measured.
    last: std::sync::Mutex<((std::time::Instant, Duration), f64)>,
    cores: f64,
}

/// Shares are measured over at least this long: `/proc` counts CPU in 10 ms ticks, so a shorter window (the
/// refresh right at start) reads one tick as a full core.
const CPU_WINDOW: Duration = Duration::from_secs(1);

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter {
            last: std::sync::Mutex::new(((std::time::Instant::now(), process_cpu().unwrap_or_default()), 0.0)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }
}

impl CpuMeter {
    /// The share (0-1) of all cores used since the last reading; the previous share (0 at first) when less than
    /// [`CPU_WINDOW`] has passed since.
    pub fn read(&self) -> f64 {
        self.read_at(std::time::Instant::now(), process_cpu().unwrap_or_default())
    }

    fn read_at(&self, at: std::time::Instant, cpu: Duration) -> f64 {
        let mut last = self.last.lock().expect("cpu meter lock");
        let ((since, cpu_then), share) = *last;
        let wall = at.saturating_duration_since(since);
        if wall < CPU_WINDOW {
            return share;
        }
        let share = (cpu.saturating_sub(cpu_then).as_secs_f64() / wall.as_secs_f64() / self.cores).clamp(0.0, 1.0);
        *last = ((at, cpu), share);
        share
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

    #[test]
    fn placement_adds_the_new_work_and_what_is_pending_and_spreads_ties() {
        let node = |id: &str, cores: usize, score: f64| crate::cluster::NodeInfo {
            id: id.into(),
            http: String::new(),
            relay: String::new(),
            cores,
            version: String::new(),
            started_at_ms: 0,
            load: Load {
                score,
                ..Load::default()
            },
        };
        let none = |_: &str| 0.0;
        // A transcode (0.6 cores) fits better on the 8-core node at 0.2 than on the idle 1-core one.
        let nodes = [node("small", 1, 0.0), node("big", 8, 0.2)];
        let (n, p) = place(&nodes, "", 0.6, none, 0).unwrap();
        assert_eq!((n.id.as_str(), (p * 1000.0).round()), ("big", 275.0));
        // Cheap work goes to the idle node.
        assert_eq!(place(&nodes, "", 0.03, none, 0).unwrap().0.id, "small");
        // Equal nodes: the pick decides; a burst placed by one node alternates as its pending work adds up.
        let twins = [node("a", 2, 0.1), node("b", 2, 0.1)];
        assert_eq!(place(&twins, "", 0.03, none, 0).unwrap().0.id, "a");
        assert_eq!(place(&twins, "", 0.03, none, 1).unwrap().0.id, "b");
        let mut pending = std::collections::HashMap::<String, f64>::new();
        for _ in 0..10 {
            let id = place(&twins, "", 0.3, |id| pending.get(id).copied().unwrap_or(0.0), 0)
                .unwrap()
                .0
                .id
                .clone();
            *pending.entry(id).or_default() += 0.15;
        }
        assert_eq!((pending["a"], pending["b"]), (0.75, 0.75), "{pending:?}");
        assert!(place(&twins, "a", 0.0, none, 0).is_some_and(|(n, _)| n.id == "b"));
        assert!(place(&twins[..1], "a", 0.0, none, 0).is_none());
    }

    #[test]
    fn cpu_is_measured_over_a_second_at_least() {
        let meter = CpuMeter {
            last: std::sync::Mutex::new(((std::time::Instant::now(), Duration::ZERO), 0.0)),
            cores: 2.0,
        };
        let t0 = meter.last.lock().unwrap().0 .0;
        // One 10 ms tick 5 ms after start is not a full core: too short a window, the share stays 0.
        assert_eq!(
            meter.read_at(t0 + Duration::from_millis(5), Duration::from_millis(10)),
            0.0
        );
        // 1 s of CPU over 2 s on 2 cores: a quarter.
        assert_eq!(meter.read_at(t0 + Duration::from_secs(2), Duration::from_secs(1)), 0.25);
        assert_eq!(
            meter.read_at(t0 + Duration::from_millis(2500), Duration::from_secs(2)),
            0.25,
            "kept"
        );
        assert_eq!(meter.read_at(t0 + Duration::from_secs(4), Duration::from_secs(3)), 0.5);
    }
}
