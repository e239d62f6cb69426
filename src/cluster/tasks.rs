//! Pull tasks across the cluster: each node mirrors its running tasks to Redis (`roomgate:task:{id}`: spec,
//! owner, status with the position) every second and holds a lease on each (`roomgate:task:{id}:lease`, 15 s).
//! Any node answers Describe from the mirror (an ended task's last one is kept an hour) and sends Stop/Update to
//! the owner over pub/sub (updates wait in a list the owner takes at once or at its next sync); a task whose lease
//! expired (its node died) is claimed by one node (a compare-and-set script) and resumed there at its mirrored position, with a
//! 701 Status 2 and then Status 0 as after a restart. StartStreamIngest is placed on the least-loaded accepting
//! node. SQLite stays each node's own store (and the only one on a single node).

use super::RedisLink;
use super::{ClusterError, Registry};
use crate::ingest::pull::{PullError, PullService, TaskSpec, TaskStatus, TaskUpdate};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a task's lease lasts without its owner renewing it: the failover delay is about this plus a sync.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often each node mirrors its tasks, renews its leases and looks for orphaned tasks.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The set of mirrored task ids.
const TASKS_KEY: &str = "roomgate:tasks";
/// A new task goes to another node only when that node's score is lower than this node's by more than this (load
/// readings are noisy; placement should not ping-pong on noise).
const PLACE_MARGIN: f64 = 0.1;
/// How long a placement counts in its node's load: until that node has reported (and measured) it twice.
const PENDING_FOR: Duration = Duration::from_secs(10);
/// How long a node over its `max_load` leaves an orphaned task to the others before it takes it itself.
const BUSY_CLAIM_DELAY: Duration = Duration::from_secs(5);
/// Where Stop/Update/Start reach the node that runs (or is to run) a task.
const CONTROL_CHANNEL: &str = "roomgate:tasks:control";

fn task_key(id: &str) -> String {
    format!("roomgate:task:{id}")
}

fn lease_key(id: &str) -> String {
    format!("roomgate:task:{id}:lease")
}

/// Set for a minute when a task is stopped from another node: its owner stops it at its next sync even if it
/// missed the message, and no node claims it.
fn stop_key(id: &str) -> String {
    debug_assert!(STOP_MARK.as_secs() > 0);
    format!("roomgate:task:{id}:stopped")
}

/// Updates sent from other nodes, oldest first (JSON `TaskUpdate`s), until the node that runs the task takes them:
/// a pub/sub message only says that there are some, so an update its owner missed (or sent while the owner was
/// dying) is applied at the owner's (or the claiming node's) next sync.
fn updates_key(id: &str) -> String {
    format!("roomgate:task:{id}:updates")
}

/// How long an update waits for a node to take it, and how long an ended task's last mirror is kept so that any
/// node describes it (its state, its reason) rather than answering that it never existed.
const UPDATES_KEPT_SECS: u64 = 120;
const ENDED_KEPT_SECS: u64 = 3600;
/// How long a stop mark lasts.
const STOP_MARK: Duration = Duration::from_secs(60);

/// The lease a placing node writes for the node it chose, until that node runs the task.
fn placed_value(node: &str) -> String {
    format!("{node}/placed")
}

/// Renew each lease in `KEYS` for `ARGV[1]` seconds while it is absent, this process's (`ARGV[2i]`, sealed for
/// that key) or placed for this node (`ARGV[2i+1]`): per key, 1 if renewed, 0 if another holds it.
fn renew_script() -> redis::Script {
    redis::Script::new(
        "local held = {}
         for i, key in ipairs(KEYS) do
           local mine, placed = ARGV[2 * i], ARGV[2 * i + 1]
           local v = redis.call('GET', key)
           if v == false or v == mine or v == placed then
             redis.call('SET', key, mine, 'EX', ARGV[1]) held[i] = 1
           else held[i] = 0 end
         end
         return held",
    )
}

/// Take a task that could not start here out of the list, if its lease is still the one placed for this node
/// (`ARGV[1]`): a replayed Start for a task that runs elsewhere must not unlist it.
fn unlist_placed_script() -> redis::Script {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           redis.call('DEL', KEYS[1], KEYS[2]) redis.call('SREM', KEYS[3], ARGV[2])
         end
         return 0",
    )
}

/// Take the lease `KEYS[1]` for this process (`ARGV[1]`, for `ARGV[2]` seconds) if it is still what was read
/// (`ARGV[3]`, empty for absent): 1 if taken, 0 if someone else was first. Checking and setting in one step is
/// what keeps two nodes from both believing they hold a task.
fn claim_script() -> redis::Script {
    redis::Script::new(
        "local v = redis.call('GET', KEYS[1])
         if (v == false and ARGV[3] == '') or v == ARGV[3] then
           redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1
         end
         return 0",
    )
}

/// Take a task out of the cluster: its mirror, its lease and its place in the list.
async fn unlist(c: &mut RedisLink, id: &str) -> Result<(), ClusterError> {
    redis::pipe()
        .cmd("DEL")
        .arg(task_key(id))
        .arg(lease_key(id))
        .ignore()
        .cmd("SREM")
        .arg(TASKS_KEY)
        .arg(id)
        .ignore()
        .query_async::<()>(c)
        .await?;
    Ok(())
}

/// Take a task that ended here out of the cluster's list, unless another node holds its lease now (it is absent,
/// this process's, `ARGV[1]`, or placed for this node, `ARGV[5]`); its last mirror (`ARGV[3]`, the ended state)
/// stays readable for `ARGV[4]` seconds.
fn forget_script() -> redis::Script {
    redis::Script::new(
        r"local v = redis.call('GET', KEYS[1])
          if v == false or v == ARGV[1] or v == ARGV[5] then
            redis.call('DEL', KEYS[1], KEYS[4]) redis.call('SREM', KEYS[3], ARGV[2])
            if ARGV[3] == '' then redis.call('DEL', KEYS[2])
            else redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
          end
          return 0",
    )
}

/// A task as Redis holds it: enough for any node to describe it and for another node to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskMirror {
    /// The task id.
    pub id: String,
    /// The node that runs it.
    pub owner: String,
    /// When it was started (Unix ms).
    pub created_at_ms: i64,
    /// What it was asked to do (after every update).
    pub spec: TaskSpec,
    /// Where it was at the last sync (state, position, loops, restarts, source).
    pub status: TaskStatus,
}

/// A request to the node that runs a task (or is to run it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Control {
    Stop {
        id: String,
    },
    /// Updates wait in [`updates_key`].
    Updated {
        id: String,
    },
    Start {
        node: String,
        id: String,
        spec: Box<TaskSpec>,
    },
}

/// This node's part in running the cluster's pull tasks.
pub struct ClusterTasks {
    registry: Arc<Registry>,
    redis: RedisLink,
    pull: Arc<PullService>,
    /// What this process writes in the leases it holds: `{node}/{random}`, so a restarted node can tell the
    /// leases of its previous life (which it takes back at once) from its own.
    lease_value: String,
    /// Set by `release`: the sync loop renews no lease any more.
    released: std::sync::atomic::AtomicBool,
    /// Orphaned tasks this node saw while it was over its `max_load`, and since when.
    orphans_seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Held while updates are taken from Redis and applied, so two takes (a message and a sync) apply in order.
    updating: tokio::sync::Mutex<()>,
    /// Tasks another node placed here and this node started, until the next sync counts them as mirrored: one that
    /// ends before that sync is still taken out of the cluster's list (else its placed lease would expire and
    /// another node would run it again).
    placed_here: std::sync::Mutex<HashSet<String>>,
    /// Expected cost of a new task in cores: (passthrough, transcode).
    cost: (f64, f64),
    /// Tasks this node placed (node, when, share of the node's cores), counted in that node's load for
    /// [`PENDING_FOR`].
    placed: std::sync::Mutex<Vec<(String, std::time::Instant, f64)>>,
}

impl ClusterTasks {
    /// The cluster's tasks as `registry`'s node sees them, run by `pull`; `None` on a single node.
    pub fn new(
        registry: &Arc<Registry>,
        pull: Arc<PullService>,
        config: &crate::config::ClusterConfig,
    ) -> Option<Arc<ClusterTasks>> {
        let redis = registry.connection()?;
        Some(Arc::new(ClusterTasks {
            lease_value: format!("{}/{:016x}", registry.node_id(), rand::random::<u64>()),
            registry: registry.clone(),
            redis,
            pull,
            released: Default::default(),
            orphans_seen: Default::default(),
            updating: Default::default(),
            placed_here: Default::default(),
            cost: (config.task_cost_passthrough, config.task_cost_transcode),
            placed: Default::default(),
        }))
    }

    fn me(&self) -> &str {
        self.registry.node_id()
    }

    /// Every task the cluster lists, as last mirrored (ListStreamIngests on any node).
    pub async fn mirrors(&self) -> Result<Vec<TaskMirror>, ClusterError> {
        let mut c = self.redis.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(TASKS_KEY).query_async(&mut c).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| task_key(id)).collect();
        let raw: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(raw
            .into_iter()
            .zip(&ids)
            .filter_map(|(r, id)| self.open_mirror(id, &r?))
            .collect())
    }

    /// The task as the cluster last mirrored it (it runs, or ended, on another node), or `None`.
    pub async fn mirror(&self, id: &str) -> Result<Option<TaskMirror>, ClusterError> {
        let mut c = self.redis.clone();
        let raw: Option<String> = redis::cmd("GET").arg(task_key(id)).query_async(&mut c).await?;
        Ok(raw.and_then(|r| self.open_mirror(id, &r)))
    }

    /// A mirror as written to Redis (sealed under the cluster's secret, for its key).
    fn sealed_mirror(&self, m: &TaskMirror) -> String {
        let json = serde_json::to_string(m).expect("mirror serializes");
        self.seal().seal(&task_key(&m.id), &json)
    }

    /// A mirror read from Redis: `None` unless sealed for `id`'s key and about task `id`.
    fn open_mirror(&self, id: &str, raw: &str) -> Option<TaskMirror> {
        let m: TaskMirror = serde_json::from_str(self.seal().open(&task_key(id), raw)?).ok()?;
        (m.id == id).then_some(m)
    }

    fn seal(&self) -> &super::Seal {
        self.registry.seal()
    }

    /// This process's lease on task `id`, as written to Redis (sealed at a fixed time, so it compares equal).
    fn my_lease(&self, id: &str) -> String {
        self.seal().seal_at(&lease_key(id), &self.lease_value, 0)
    }

    /// The lease a placing node writes on task `id` for `node`, until that node runs it.
    fn placed_lease(&self, node: &str, id: &str) -> String {
        self.seal().seal_at(&lease_key(id), &placed_value(node), 0)
    }

    /// Whether `raw`, read from task `id`'s stop mark, is a valid (recent) stop.
    fn stop_marked(&self, id: &str, raw: &str) -> bool {
        self.seal().open_fresh(&stop_key(id), raw, STOP_MARK).is_some()
    }

    /// Stop a task that runs on another node: it is out of the cluster's list at once (no node claims it), and
    /// its node is told to stop it.
    pub async fn stop(&self, id: &str) -> Result<(), ClusterError> {
        let mut c = self.redis.clone();
        redis::pipe()
            .cmd("SET")
            .arg(stop_key(id))
            .arg(self.seal().seal(&stop_key(id), self.me()))
            .arg("EX")
            .arg(STOP_MARK.as_secs())
            .ignore()
            .cmd("DEL")
            .arg(task_key(id))
            .ignore()
            .cmd("SREM")
            .arg(TASKS_KEY)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        self.send(&Control::Stop { id: id.into() }).await
    }

    /// Change a task that runs on another node: the change waits in Redis until the node that runs the task takes
    /// it (at once when it hears the message, else at its next sync, or the claiming node's if it died).
    pub async fn update(&self, id: &str, update: TaskUpdate) -> Result<(), ClusterError> {
        let mut c = self.redis.clone();
        redis::pipe()
            .cmd("RPUSH")
            .arg(updates_key(id))
            .arg(self.seal().seal(
                &updates_key(id),
                &serde_json::to_string(&update).expect("update serializes"),
            ))
            .ignore()
            .cmd("EXPIRE")
            .arg(updates_key(id))
            .arg(UPDATES_KEPT_SECS)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        self.send(&Control::Updated { id: id.into() }).await
    }

    /// Take the waiting updates of `ids` (tasks that run here) from Redis and apply them, oldest first.
    async fn take_updates(&self, ids: &[String]) -> Result<(), ClusterError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _one = self.updating.lock().await;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            pipe.cmd("LRANGE").arg(updates_key(id)).arg(0).arg(-1);
            pipe.cmd("DEL").arg(updates_key(id)).ignore();
        }
        let mut c = self.redis.clone();
        let waiting: Vec<Vec<String>> = pipe.query_async(&mut c).await?;
        let mut mirrors = redis::pipe();
        for (id, updates) in ids.iter().zip(waiting) {
            let kept = Duration::from_secs(UPDATES_KEPT_SECS);
            let mut applied = false;
            for raw in updates {
                let opened = self.seal().open_fresh(&updates_key(id), &raw, kept);
                let Some(Ok(update)) = opened.map(serde_json::from_str::<TaskUpdate>) else {
                    tracing::debug!(task = %id, "an unreadable, unsealed or stale task update in Redis was dropped");
                    continue;
                };
                match self.pull.update(id, update).await {
                    Ok(_) => applied = true,
                    Err(e) => tracing::warn!(task = %id, error = %e, "a task update from another node failed here"),
                }
            }
            // Mirrored at once, so a node that resumes the task after this one dies resumes it changed.
            if let Some(t) = applied
                .then(|| self.pull.list().into_iter().find(|t| t.id == *id))
                .flatten()
            {
                mirrors
                    .cmd("SET")
                    .arg(task_key(id))
                    .arg(self.sealed_mirror(&self.mirror_of(&t)))
                    .ignore();
            }
        }
        if mirrors.cmd_iter().next().is_some() {
            mirrors.query_async::<()>(&mut c).await?;
        }
        Ok(())
    }

    /// What Redis holds of a task that runs here.
    fn mirror_of(&self, t: &crate::ingest::pull::IngestTask) -> TaskMirror {
        TaskMirror {
            id: t.id.clone(),
            owner: self.me().into(),
            created_at_ms: t.created_at_ms,
            spec: t.spec(),
            status: t.status(),
        }
    }

    /// Whether task `id`'s lease, held by someone else, is a forgery (not sealed by a node of this cluster); if so
    /// this process takes it back.
    async fn lease_forged(&self, c: &mut RedisLink, id: &str) -> Result<bool, ClusterError> {
        let raw: Option<String> = redis::cmd("GET").arg(lease_key(id)).query_async(c).await?;
        if raw.is_none_or(|r| self.seal().open(&lease_key(id), &r).is_some()) {
            return Ok(false);
        }
        tracing::warn!(task = %id, "a task lease without this cluster's seal was overwritten");
        redis::cmd("SET")
            .arg(lease_key(id))
            .arg(self.my_lease(id))
            .arg("EX")
            .arg(LEASE.as_secs())
            .query_async::<()>(c)
            .await?;
        Ok(true)
    }

    /// Start `spec` where it should run: on the node `place` chooses, else (this node is the best place, there is
    /// no cluster, or Redis does not answer) here. Its source is checked here first, so a refused one gets no
    /// TaskId anywhere.
    pub async fn start(
        cluster: Option<&Arc<ClusterTasks>>,
        pull: &Arc<PullService>,
        spec: TaskSpec,
    ) -> Result<String, PullError> {
        if let Some(cluster) = cluster {
            pull.check_source(&spec).await?;
            match cluster.place(&spec).await {
                Ok(Some(task_id)) => return Ok(task_id),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot place the task in the cluster; starting it here"),
            }
        }
        pull.start(spec).await
    }

    /// Where a new task should run: `None` here, else the id it got on the accepting node with the lowest
    /// predicted load (`load::place`: its score, what was placed there since it reported, and the task's
    /// expected cost), which was told to start it (and holds its lease until it does, so no other node claims it
    /// meanwhile).
    pub async fn place(&self, spec: &TaskSpec) -> Result<Option<String>, ClusterError> {
        let nodes = self.registry.nodes().await?;
        let cores = self.cost_of(spec);
        let pending = |id: &str| self.pending_on(id);
        let Some((node, there)) = super::load::place(&nodes, "", cores, pending, rand::random::<u32>() as usize) else {
            return Ok(None);
        };
        let me = nodes.iter().find(|n| n.id == self.me());
        let my_cores = me.map_or_else(|| self.registry.me().cores, |n| n.cores);
        let here = me.map_or_else(
            || self.registry.score() + self.pending_on(self.me()) + cores / my_cores.max(1) as f64,
            |n| super::load::predict(n, cores, pending),
        );
        if node.id == self.me() || self.registry.accepting() && there + PLACE_MARGIN >= here {
            self.note_placed(self.me(), cores, my_cores);
            return Ok(None);
        }
        let node = node.clone();
        self.note_placed(&node.id, cores, node.cores);
        let id = crate::ingest::pull::new_task_id();
        // Listed at once (Describe works from any node) and leased for the chosen node until it runs the task.
        let mirror = TaskMirror {
            id: id.clone(),
            owner: node.id.clone(),
            created_at_ms: crate::store::now_ms(),
            spec: spec.clone(),
            status: TaskStatus {
                state: crate::ingest::pull::TaskState::Connecting,
                reason: String::new(),
                loops_done: 0,
                position_ms: spec.seek_second.max(0) * 1000,
                restarts: 0,
                source: None,
            },
        };
        let mut c = self.redis.clone();
        redis::pipe()
            .cmd("SET")
            .arg(lease_key(&id))
            .arg(self.placed_lease(&node.id, &id))
            .arg("EX")
            .arg(LEASE.as_secs())
            .ignore()
            .cmd("SET")
            .arg(task_key(&id))
            .arg(self.sealed_mirror(&mirror))
            .ignore()
            .cmd("SADD")
            .arg(TASKS_KEY)
            .arg(&id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        self.send(&Control::Start {
            node: node.id.clone(),
            id: id.clone(),
            spec: Box::new(spec.clone()),
        })
        .await?;
        tracing::info!(task = %id, node = %node.id, "pull task placed on the least-loaded node");
        Ok(Some(id))
    }

    /// What `spec` is expected to cost, in cores (`cluster.task_cost_*`): a transcode when it asks for video
    /// encoding; otherwise passthrough is assumed (whether the source needs a transcode is known only once open).
    fn cost_of(&self, spec: &TaskSpec) -> f64 {
        if spec.video_encode_params.is_some() {
            self.cost.1
        } else {
            self.cost.0
        }
    }

    /// The share of `node`'s load placed there by this node recently (not yet in what it reports).
    fn pending_on(&self, node: &str) -> f64 {
        let placed = self.placed.lock().expect("placed lock");
        placed
            .iter()
            .filter(|(n, at, _)| n == node && at.elapsed() < PENDING_FOR)
            .map(|(_, _, share)| share)
            .sum()
    }

    /// Count work of `cores` just placed on `node` (of `node_cores` cores) in its load for a while.
    fn note_placed(&self, node: &str, cores: f64, node_cores: usize) {
        let mut placed = self.placed.lock().expect("placed lock");
        placed.retain(|(_, at, _)| at.elapsed() < PENDING_FOR);
        placed.push((
            node.to_string(),
            std::time::Instant::now(),
            cores / node_cores.max(1) as f64,
        ));
    }

    async fn send(&self, control: &Control) -> Result<(), ClusterError> {
        let mut c = self.redis.clone();
        let payload = self.seal().seal(
            CONTROL_CHANNEL,
            &serde_json::to_string(control).expect("control serializes"),
        );
        redis::cmd("PUBLISH")
            .arg(CONTROL_CHANNEL)
            .arg(payload)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Let go of this node's tasks at a graceful stop: their leases end now, so other nodes resume them at their
    /// next sync instead of after [`LEASE`].
    pub async fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut c = self.redis.clone();
        let ids: Vec<String> = self.pull.list().iter().map(|t| lease_key(&t.id)).collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = redis::cmd("DEL").arg(&ids).query_async::<()>(&mut c).await {
            tracing::warn!(error = %e, "cannot release this node's task leases; they expire on their own");
        }
    }

    /// Mirror, renew and claim every [`SYNC_EVERY`] until aborted; an outage is logged once and retried.
    pub async fn run(self: Arc<Self>) {
        let mut mirrored = HashSet::new();
        let mut failing = false;
        let mut tick = tokio::time::interval(SYNC_EVERY);
        loop {
            tick.tick().await;
            match self.sync(&mut mirrored).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot sync pull tasks with the cluster; retrying");
                }
                Err(_) => {}
            }
        }
    }

    async fn sync(&self, mirrored: &mut HashSet<String>) -> Result<(), ClusterError> {
        if self.released.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let mut c = self.redis.clone();
        mirrored.extend(self.placed_here.lock().expect("placed lock").drain());
        let local: Vec<_> = self
            .pull
            .list()
            .into_iter()
            .filter(|t| t.status().state.is_active())
            .collect();
        // Stopped from another node while its message may have been missed: stop it here (with its 702).
        if !local.is_empty() {
            let keys: Vec<String> = local.iter().map(|t| stop_key(&t.id)).collect();
            let stops: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
            for (t, mark) in local.iter().zip(stops) {
                if mark.is_some_and(|m| self.stop_marked(&t.id, &m)) {
                    let _ = self.pull.stop(&t.id).await;
                }
            }
        }
        let mut pipe = redis::pipe();
        let mut now = HashSet::new();
        let running: Vec<_> = local
            .iter()
            .filter(|t| self.pull.running(&t.id) && t.status().state.is_active())
            .collect();
        // Renewed only while this process holds the lease (or it was placed here); a node that lost it (it
        // stalled past the lease and another node took the task over) stops its copy. One call for all.
        let held: Vec<i32> = if running.is_empty() {
            Vec::new()
        } else {
            let script = renew_script();
            let mut renew = script.prepare_invoke();
            renew.arg(LEASE.as_secs());
            for t in &running {
                renew
                    .key(lease_key(&t.id))
                    .arg(self.my_lease(&t.id))
                    .arg(self.placed_lease(self.me(), &t.id));
            }
            renew.invoke_async(&mut c).await?
        };
        for (t, held) in running.into_iter().zip(held) {
            if held == 0 && !self.lease_forged(&mut c, &t.id).await? {
                self.pull.hand_over(&t.id);
                continue;
            }
            let mirror = self.mirror_of(t);
            pipe.cmd("SET")
                .arg(task_key(&t.id))
                .arg(self.sealed_mirror(&mirror))
                .ignore();
            pipe.cmd("SADD").arg(TASKS_KEY).arg(&t.id).ignore();
            now.insert(t.id.clone());
        }
        if !now.is_empty() {
            pipe.query_async::<()>(&mut c).await?;
        }
        let running: Vec<String> = now.iter().cloned().collect();
        self.take_updates(&running).await?;
        // Tasks that ended here since the last sync leave the cluster's list, unless another node holds them now;
        // what they ended as stays readable for an hour.
        for gone in mirrored.difference(&now) {
            let ended = match self.pull.describe(gone).await {
                Ok(Some((spec, status))) if !self.pull.running(gone) => self.sealed_mirror(&TaskMirror {
                    id: gone.clone(),
                    owner: self.me().into(),
                    created_at_ms: 0,
                    spec,
                    status,
                }),
                _ => String::new(),
            };
            forget_script()
                .key(lease_key(gone))
                .key(task_key(gone))
                .key(TASKS_KEY)
                .key(updates_key(gone))
                .arg(self.my_lease(gone))
                .arg(gone)
                .arg(ended)
                .arg(ENDED_KEPT_SECS)
                .arg(self.placed_lease(self.me(), gone))
                .invoke_async::<()>(&mut c)
                .await?;
        }
        *mirrored = now;
        if !self.registry.draining() {
            self.claim_orphans(&mut c, mirrored).await?;
        }
        Ok(())
    }

    /// Take over every listed task whose lease has expired (its node died or let it go) or that this node held
    /// before it restarted, one node per task. A node over its `max_load` leaves an orphan to the nodes with
    /// headroom for [`BUSY_CLAIM_DELAY`] first: a task is better run on a busy node than not at all.
    async fn claim_orphans(&self, c: &mut RedisLink, mirrored: &mut HashSet<String>) -> Result<(), ClusterError> {
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(TASKS_KEY).query_async(c).await?;
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.pull.running(id) && !mirrored.contains(id))
            .collect();
        self.orphans_seen
            .lock()
            .expect("orphans lock")
            .retain(|id, _| ids.contains(id));
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(|id| lease_key(id)).collect();
        let holders: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
        let accepting = self.registry.accepting();
        let (mine_prefix, placed_here) = (format!("{}/", self.me()), placed_value(self.me()));
        let before_restart =
            |h: &str| h.starts_with(&mine_prefix) && h != self.lease_value.as_str() && h != placed_here.as_str();
        for (id, raw_holder) in ids.into_iter().zip(holders) {
            // A lease without this cluster's seal was not written by a node: as good as none.
            let holder = raw_holder.as_deref().and_then(|h| self.seal().open(&lease_key(&id), h));
            let mine = holder.is_some_and(before_restart);
            let waited = {
                let mut seen = self.orphans_seen.lock().expect("orphans lock");
                if holder.is_some() && !mine {
                    seen.remove(&id);
                    continue;
                }
                let since = *seen.entry(id.clone()).or_insert_with(std::time::Instant::now);
                mine || accepting || since.elapsed() >= BUSY_CLAIM_DELAY
            };
            if !waited {
                continue;
            }
            self.orphans_seen.lock().expect("orphans lock").remove(&id);
            // What it was, before taking it: a task that ended or was stopped leaves the list (its last mirror
            // stays), one whose mirror this node cannot read is left alone (another node may).
            let (raw, mark): (Option<String>, Option<String>) = redis::pipe()
                .cmd("GET")
                .arg(task_key(&id))
                .cmd("GET")
                .arg(stop_key(&id))
                .query_async(c)
                .await?;
            let Some(raw) = raw else {
                unlist(c, &id).await?;
                continue;
            };
            let Some(m) = self.open_mirror(&id, &raw) else {
                tracing::debug!(task = %id, "a listed task's mirror cannot be read here; left to other nodes");
                continue;
            };
            if !m.status.state.is_active() || mark.is_some_and(|mk| self.stop_marked(&id, &mk)) {
                let _ = redis::pipe()
                    .cmd("SREM")
                    .arg(TASKS_KEY)
                    .arg(&id)
                    .cmd("DEL")
                    .arg(lease_key(&id))
                    .query_async::<()>(c)
                    .await;
                continue;
            }
            let claimed: i32 = claim_script()
                .key(lease_key(&id))
                .arg(self.my_lease(&id))
                .arg(LEASE.as_secs())
                .arg(raw_holder.as_deref().unwrap_or(""))
                .invoke_async(c)
                .await?;
            if claimed == 0 {
                continue;
            }
            let why = if m.owner == self.me() {
                "this node restarted; the task resumes here".to_string()
            } else {
                format!(
                    "node {} stopped answering; the task resumes on node {}",
                    m.owner,
                    self.me()
                )
            };
            let mut spec = m.spec;
            // Trust in a source is the starting node's to give, not something Redis may hand out.
            spec.trusted_source = false;
            match self
                .pull
                .adopt(m.id.clone(), spec, m.created_at_ms, m.status, why)
                .await
            {
                Ok(()) => {
                    metrics::counter!("roomgate_cluster_tasks_claimed_total").increment(1);
                    mirrored.insert(m.id);
                }
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "cannot take over a task; another node may");
                    let _ = redis::cmd("DEL").arg(lease_key(&id)).query_async::<()>(c).await;
                }
            }
        }
        Ok(())
    }

    /// Apply the other nodes' Stop/Update/Start to this node's tasks until aborted; resubscribes after an outage.
    pub async fn listen(self: Arc<Self>) {
        loop {
            let client = self.redis.client().await;
            match async { client?.get_async_pubsub().await }.await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(CONTROL_CHANNEL).await.is_ok() {
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            let payload = msg.get_payload::<String>().unwrap_or_default();
                            let Some(Ok(control)) = self
                                .seal()
                                .open_fresh(CONTROL_CHANNEL, &payload, super::MESSAGE_FRESH)
                                .map(serde_json::from_str::<Control>)
                            else {
                                continue;
                            };
                            self.apply(control).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot listen to cluster task control; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn apply(&self, control: Control) {
        let result: Result<(), PullError> = match control {
            Control::Stop { id } if self.pull.running(&id) => self.pull.stop(&id).await,
            Control::Updated { id } if self.pull.running(&id) => {
                if let Err(e) = self.take_updates(&[id]).await {
                    tracing::warn!(error = %e, "cannot take a task's updates now; the next sync takes them");
                }
                Ok(())
            }
            Control::Start { node, id, mut spec } if node == self.me() => {
                // Trust in a source is the starting node's to give, not something Redis may hand out.
                spec.trusted_source = false;
                let started = self.pull.start_as(id.clone(), *spec).await.map(|_| ());
                if started.is_ok() {
                    self.placed_here.lock().expect("placed lock").insert(id.clone());
                } else {
                    // Out of the cluster's list, so no node resumes a task that could not start (unless it runs
                    // somewhere already: its lease is no longer the placed one).
                    let _ = unlist_placed_script()
                        .key(lease_key(&id))
                        .key(task_key(&id))
                        .key(TASKS_KEY)
                        .arg(self.placed_lease(self.me(), &id))
                        .arg(&id)
                        .invoke_async::<()>(&mut self.redis.clone())
                        .await;
                }
                started
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "a task request from another node failed here");
        }
    }
}
