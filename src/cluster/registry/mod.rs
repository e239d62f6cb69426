//! The node registry: every node writes `roomgate:node:{id}` (its `NodeInfo` as JSON) with a TTL of `NODE_TTL`,
//! refreshed every `REFRESH_EVERY`, and adds its id to the set `roomgate:nodes`. A node that stops refreshing
//! (killed, cut off) is gone for everyone once its entry expires; each node's refresh loop prunes such ids (and
//! takes them out of their rooms). A Redis
//! outage is logged and retried; the node goes on serving what is local.

mod remote;

use super::link::RedisLink;
use super::load::Load;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a node's entry lives without a refresh.
pub const NODE_TTL: Duration = Duration::from_secs(15);
/// How often a node refreshes its entry.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Other nodes' rooms: (node id, its `/v1/rooms` JSON).
pub type NodesRooms = Vec<(String, serde_json::Value)>;
/// The other nodes and their rooms as last read from Redis, or why the read failed (kept as text).
type RemoteRead = Result<Vec<(NodeInfo, serde_json::Value)>, String>;

/// How long the other nodes' rooms, once read, answer `/v1/rooms`.
const REMOTE_ROOMS_FRESH: Duration = Duration::from_secs(1);
/// The set of node ids that may have an entry.
const NODES_KEY: &str = "roomgate:nodes";

/// What a node's rooms look like to the others: the JSON `/v1/rooms` would answer on it alone.
pub type RoomsSnapshot = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Why the registry cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis_url` is not a Redis URL.
    #[error("cluster.redis_url: {0}")]
    BadUrl(String),
    /// Redis did not answer (down, unreachable, refused the command).
    #[error("Redis is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// A read failed less than a second ago and is not retried yet; holds why it failed.
    #[error("Redis is unavailable: {0}")]
    Stale(String),
}

/// One node's registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// The node's id (`cluster.node_id`).
    pub id: String,
    /// How other nodes and redirected clients reach its HTTP (`cluster.advertise_http`).
    pub http: String,
    /// Where other nodes open relay links to it (`host:port`); empty: it serves none (no `cluster.secret`).
    #[serde(default)]
    pub relay: String,
    /// CPU cores the node has.
    pub cores: usize,
    /// The roomgate version it runs.
    pub version: String,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// Its load at its last refresh.
    pub load: Load,
}

/// This node's membership in the cluster: it keeps the node's entry fresh and lists the nodes. A single node
/// (no `cluster.redis_url`) has one too, with no Redis: it lists itself alone.
pub struct Registry {
    me: NodeInfo,
    /// `None` on a single node.
    redis: Option<RedisLink>,
    /// Signs what this node writes for the others and checks what it reads (`cluster.secret`).
    seal: super::Seal,
    /// Measures this node's load at each refresh.
    load: Box<dyn Fn() -> Load + Send + Sync>,
    /// This node's rooms, written beside its entry (set once by the gateway).
    rooms: std::sync::OnceLock<RoomsSnapshot>,
    /// Wakes the refresh loop early (an anchor joined or left).
    changed: tokio::sync::Notify,
    /// What this node decided about its rooms. Held across each decision's Redis round trip and across a whole
    /// sync, so a sync never sees a decision half made (it would take the node out of a room it just entered, or
    /// give a room a second 102).
    decisions: tokio::sync::Mutex<Decisions>,
    /// The other nodes' rooms as last read, and when.
    remote_cache: std::sync::Mutex<Option<(std::time::Instant, RemoteRead)>>,
    /// Held by the one request reading the other nodes' rooms from Redis.
    remote_read: tokio::sync::Mutex<()>,
    /// Set by a draining stop: no new work.
    draining: std::sync::atomic::AtomicBool,
    /// The load as of the last refresh (what the other nodes see).
    last_load: std::sync::Mutex<Load>,
    /// Set by `leave`: the node is stopping and writes nothing more to Redis.
    left: std::sync::atomic::AtomicBool,
    /// Set by `leave` once it took the node out of all its rooms (and sent the 102s that emptied them): a later
    /// last anchor out has nothing left to decide.
    rooms_left: std::sync::atomic::AtomicBool,
    /// Held by the refresh loop while it writes, and by `leave`: a refresh in flight cannot write the entry back
    /// after the node left.
    refreshing: tokio::sync::Mutex<()>,
    /// Where room events this node decides for dead nodes go (the outbox's room events).
    decided: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::room::RoomEvent>>,
}

/// What a node decided about its rooms, which `sync_rooms` makes its memberships in Redis match.
#[derive(Default)]
struct Decisions {
    /// The rooms it is in: `enter_room` ran for them and `leave_room` not yet (in Redis or, during an outage, alone).
    entered: std::collections::HashSet<String>,
    /// Rooms it left while Redis refused the write: their 102 went out on this node's word alone, and Redis may
    /// still count the node in them. Entering one again is announced again (101), and the sync that takes the node
    /// out of it in Redis sends no second 102.
    left_alone: std::collections::HashSet<String>,
}

fn node_key(id: &str) -> String {
    format!("roomgate:node:{id}")
}

fn rooms_key(id: &str) -> String {
    format!("roomgate:node:{id}:rooms")
}

impl Registry {
    /// A registry for node `id` reachable at `http`, on the Redis at `url` (connected lazily: a Redis that is
    /// down at start is retried, not fatal).
    pub fn new(
        url: &str,
        seal: super::Seal,
        id: String,
        http: String,
        load: impl Fn() -> Load + Send + Sync + 'static,
    ) -> Result<Arc<Registry>, ClusterError> {
        let redis = RedisLink::open(url).map_err(|e| ClusterError::BadUrl(e.to_string()))?;
        let mut registry = Self::with(Some(redis), id, http, load);
        Arc::get_mut(&mut registry).expect("not shared yet").seal = seal;
        Ok(registry)
    }

    /// The registry of a single node: no Redis, the node lists itself.
    pub fn local(id: String, http: String, load: impl Fn() -> Load + Send + Sync + 'static) -> Arc<Registry> {
        Self::with(None, id, http, load)
    }

    fn with(
        redis: Option<RedisLink>,
        id: String,
        http: String,
        load: impl Fn() -> Load + Send + Sync + 'static,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            me: NodeInfo {
                id,
                http,
                relay: String::new(),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at_ms: crate::store::now_ms(),
                load: Load::default(),
            },
            redis,
            seal: super::Seal::default(),
            load: Box::new(load),
            rooms: std::sync::OnceLock::new(),
            changed: tokio::sync::Notify::new(),
            decided: std::sync::OnceLock::new(),
            decisions: Default::default(),
            left: Default::default(),
            rooms_left: Default::default(),
            refreshing: Default::default(),
            remote_cache: Default::default(),
            remote_read: Default::default(),
            draining: Default::default(),
            last_load: Default::default(),
        })
    }

    /// The registry with this node's relay address (`host:port`) in its entry; before it is shared.
    pub fn with_relay(mut self: Arc<Self>, relay: String) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the registry is shared")
            .me
            .relay = relay;
        self
    }

    /// Publish this node's rooms with its entry, as `snapshot` sees them at each refresh.
    pub fn share_rooms(&self, snapshot: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        let _ = self.rooms.set(Box::new(snapshot));
    }

    /// Tell the other nodes that `userid` entered `key` here (they apply the takeover rule to their anchors).
    pub async fn announce_join(&self, key: &crate::room::RoomKey, userid: &str) {
        let Some(mut c) = self.redis.clone() else {
            return;
        };
        let join = super::takeover::Join::now(&self.me.id, key, userid);
        if let Err(e) = super::takeover::announce(&mut c, &self.seal, &join).await {
            tracing::warn!(error = %e, userid, "cannot announce a join to the other nodes (takeover across nodes)");
        }
    }

    /// Apply the other nodes' joins to `hub`'s anchors until aborted (nothing on a single node).
    pub async fn listen_for_takeovers(self: Arc<Self>, hub: Arc<crate::room::RoomHub>) {
        if let Some(redis) = self.redis.clone() {
            super::takeover::listen(redis, self.seal.clone(), self.me.id.clone(), hub).await;
        }
    }

    /// Send the room events this node decides for others (a dead node's rooms it empties) to `out`.
    pub fn decide_rooms_into(&self, out: tokio::sync::mpsc::UnboundedSender<crate::room::RoomEvent>) {
        let _ = self.decided.set(out);
    }

    /// This node's first anchor entered `key`: whether it is the room's first node (then the room is created for
    /// the cluster: 101). Always true on a single node.
    pub async fn enter_room(&self, key: &crate::room::RoomKey) -> Result<bool, ClusterError> {
        let code = super::rooms::room_code(key);
        let mut d = self.decisions.lock().await;
        let first = self.enter_room_code(&code).await;
        // A room this node dismissed on its own word was announced as gone: it is created again.
        let again = d.left_alone.remove(&code);
        d.entered.insert(code);
        first.map(|first| first || again)
    }

    async fn enter_room_code(&self, code: &str) -> Result<bool, ClusterError> {
        let Some(mut c) = self.redis.clone() else {
            return Ok(true);
        };
        if self.left.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        let (added, nodes): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(super::rooms::room_key(code))
            .arg(&self.me.id)
            .cmd("SCARD")
            .arg(super::rooms::room_key(code))
            .cmd("SADD")
            .arg(super::rooms::node_in_key(&self.me.id))
            .arg(code)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(added == 1 && nodes == 1)
    }

    /// This node's last anchor left `key`: whether no node has anchors there any more (then the room is
    /// dismissed for the cluster: 102). Always true on a single node.
    pub async fn leave_room(&self, key: &crate::room::RoomKey) -> Result<bool, ClusterError> {
        let code = super::rooms::room_code(key);
        let mut d = self.decisions.lock().await;
        d.entered.remove(&code);
        let Some(mut c) = self.redis.clone() else {
            return Ok(true);
        };
        if self.rooms_left.load(std::sync::atomic::Ordering::SeqCst) {
            // `leave` took this node out of its rooms and sent the 102 of each it emptied.
            return Ok(false);
        }
        let left: Result<(i64,), _> = redis::pipe()
            .atomic()
            .cmd("SREM")
            .arg(super::rooms::room_key(&code))
            .arg(&self.me.id)
            .ignore()
            .cmd("SCARD")
            .arg(super::rooms::room_key(&code))
            .cmd("SREM")
            .arg(super::rooms::node_in_key(&self.me.id))
            .arg(&code)
            .ignore()
            .query_async(&mut c)
            .await;
        // The caller sends this node's own 102 when Redis does not answer (`rooms::decide`).
        let nodes = match left {
            Ok((nodes,)) => nodes,
            Err(e) => {
                d.left_alone.insert(code);
                return Err(e.into());
            }
        };
        Ok(nodes == 0)
    }

    /// Take node `node` out of every room it was in, sending the 102 of each room this empties (see
    /// `leave_room_code` for the rooms in `dismissed_alone`).
    async fn leave_rooms_of(
        &self,
        c: &mut RedisLink,
        node: &str,
        dismissed_alone: &std::collections::HashSet<String>,
    ) -> Result<(), ClusterError> {
        let codes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(super::rooms::node_in_key(node))
            .query_async(c)
            .await?;
        for code in codes {
            let alone = dismissed_alone.contains(&code);
            self.leave_room_code(c, node, &code, alone).await?;
        }
        Ok(())
    }

    /// Take `node` out of room `code`; when that removed it and emptied the room, send its 102 (so a room is
    /// dismissed once, however many nodes do this). `dismissed_alone`: this node already sent the room's 102 on its
    /// own word (Redis refused its leave); then an emptied room needs no second one, and a room that other nodes
    /// still have anchors in was dismissed wrongly and is announced again (101).
    async fn leave_room_code(
        &self,
        c: &mut RedisLink,
        node: &str,
        code: &str,
        dismissed_alone: bool,
    ) -> Result<(), ClusterError> {
        let (removed, nodes): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("SREM")
            .arg(super::rooms::room_key(code))
            .arg(node)
            .cmd("SCARD")
            .arg(super::rooms::room_key(code))
            .cmd("SREM")
            .arg(super::rooms::node_in_key(node))
            .arg(code)
            .ignore()
            .query_async(c)
            .await?;
        let (Some(key), Some(out)) = (super::rooms::room_of(code), self.decided.get()) else {
            return Ok(());
        };
        let userid = String::new();
        let event = match (removed == 1, nodes == 0, dismissed_alone) {
            (true, true, false) => {
                tracing::info!(node, room = %code, "a room left by a node that is gone is empty: dismissed");
                crate::room::RoomEvent::RoomDismissed { key, userid }
            }
            (true, false, true) => {
                tracing::info!(room = %code, "a room dismissed during a Redis outage still has anchors: created again");
                crate::room::RoomEvent::RoomCreated { key, userid }
            }
            _ => return Ok(()),
        };
        let _ = out.send(event);
        Ok(())
    }

    /// Refresh soon (something others should see changed: an anchor joined or left).
    pub fn poke(&self) {
        self.changed.notify_one();
    }

    /// Whether this node is part of a cluster (has a Redis).
    pub fn clustered(&self) -> bool {
        self.redis.is_some()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.me.id
    }

    /// This node's entry with its current load.
    pub fn me(&self) -> NodeInfo {
        let mut load = (self.load)();
        load.accepting &= !self.draining();
        *self.last_load.lock().expect("load lock") = load.clone();
        NodeInfo {
            load,
            ..self.me.clone()
        }
    }

    /// Take no new work from now on (a draining stop): other nodes stop placing work here at the next refresh,
    /// which this starts at once.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        self.poke();
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's load score as of its last refresh.
    pub fn score(&self) -> f64 {
        self.last_load.lock().expect("load lock").score
    }

    /// The Redis link of a cluster node, for the parts of the cluster that keep their own keys.
    pub(crate) fn connection(&self) -> Option<RedisLink> {
        self.redis.clone()
    }

    /// How this node signs and checks what nodes exchange through Redis.
    pub(crate) fn seal(&self) -> &super::Seal {
        &self.seal
    }

    /// Whether this node takes new publishers and tasks now (not draining, load as of its last refresh).
    pub fn accepting(&self) -> bool {
        !self.draining() && self.last_load.lock().expect("load lock").accepting
    }

    /// The live node new work should go to instead of this one (`load::least_loaded`); `None`: all are full.
    pub async fn place(&self) -> Result<Option<NodeInfo>, ClusterError> {
        let nodes = self.nodes().await?;
        Ok(super::load::least_loaded(&nodes, &self.me.id).cloned())
    }

    /// Write this node's entry (TTL `NODE_TTL`) and its id in the node set.
    pub async fn refresh(&self) -> Result<(), ClusterError> {
        let Some(mut c) = self.redis.clone() else {
            return Ok(());
        };
        let entry = serde_json::to_string(&self.me()).expect("node info serializes");
        let entry = self.seal.seal(&node_key(&self.me.id), &entry);
        let rooms = self.rooms.get().map_or(serde_json::Value::Null, |r| r());
        let rooms = self.seal.seal(&rooms_key(&self.me.id), &rooms.to_string());
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(node_key(&self.me.id))
            .arg(entry)
            .arg("EX")
            .arg(NODE_TTL.as_secs())
            .ignore()
            .cmd("SET")
            .arg(rooms_key(&self.me.id))
            .arg(rooms)
            .arg("EX")
            .arg(NODE_TTL.as_secs())
            .ignore()
            .cmd("SADD")
            .arg(NODES_KEY)
            .arg(&self.me.id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Every live node (those whose entry has not expired), by id. Read-only: pruning the dead is `run`'s.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let Some(mut c) = self.redis.clone() else {
            return Ok(vec![self.me()]);
        };
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(NODES_KEY).query_async(&mut c).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let entries: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        let mut nodes: Vec<NodeInfo> = ids
            .iter()
            .zip(entries)
            .filter_map(|(id, e)| {
                // Refreshed every 5 s: an entry sealed longer ago than its TTL is a replay.
                let e = e?;
                let opened = self.seal.open_fresh(&node_key(id), &e, NODE_TTL + REFRESH_EVERY)?;
                let n = serde_json::from_str::<NodeInfo>(opened).ok()?;
                (n.id == *id).then_some(n)
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        metrics::gauge!("roomgate_cluster_nodes").set(nodes.len() as f64);
        Ok(nodes)
    }

    /// Take the nodes whose entry expired out of the node set and out of their rooms, sending the 102 of each
    /// room that empties. A node is claimed atomically (only while its entry is absent, by one pruner), so a node
    /// that refreshed meanwhile stays, and two pruners never both dismiss its rooms.
    async fn prune(&self, c: &mut RedisLink) -> Result<(), ClusterError> {
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(NODES_KEY).query_async(c).await?;
        for id in ids.into_iter().filter(|id| *id != self.me.id) {
            let claimed: i64 = redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end return 0",
            )
            .key(node_key(&id))
            .key(NODES_KEY)
            .arg(&id)
            .invoke_async(c)
            .await?;
            if claimed == 1 {
                tracing::info!(node = %id, "a node stopped refreshing its entry: taken out of the cluster");
                if let Err(e) = self.leave_rooms_of(c, &id, &Default::default()).await {
                    tracing::warn!(node = %id, error = %e, "cannot take a dead node out of its rooms");
                }
            }
        }
        Ok(())
    }

    /// Make this node's room memberships in Redis match the rooms it decided it is in (`Decisions`): after a Redis
    /// outage, a restart with the same id, or a prune during a stall. Rooms it is no longer in are left (a 102 when
    /// that empties them); rooms missing are joined (no 101: the room was already announced). The decisions are
    /// the truth, not the hub's room list: that list runs ahead of them (a room is in it before `enter_room` ran,
    /// out of it before `leave_room` ran), and acting on it took nodes out of rooms they had just entered.
    async fn sync_rooms(&self, c: &mut RedisLink) -> Result<(), ClusterError> {
        let mut d = self.decisions.lock().await;
        let recorded: std::collections::HashSet<String> = redis::cmd("SMEMBERS")
            .arg(super::rooms::node_in_key(&self.me.id))
            .query_async(c)
            .await?;
        let Decisions { entered, left_alone } = &mut *d;
        for code in recorded.iter().filter(|code| !entered.contains(*code)) {
            let alone = left_alone.contains(code);
            self.leave_room_code(c, &self.me.id, code, alone).await?;
            left_alone.remove(code);
        }
        // Rooms that Redis no longer counts this node in need nothing more.
        left_alone.retain(|code| recorded.contains(code));
        // Every missing membership back in one round trip (after Redis lost its data, that is all of them).
        let mut rejoin = redis::pipe();
        rejoin.atomic();
        for code in entered.iter().filter(|code| !recorded.contains(*code)) {
            rejoin
                .cmd("SADD")
                .arg(super::rooms::room_key(code))
                .arg(&self.me.id)
                .ignore()
                .cmd("SADD")
                .arg(super::rooms::node_in_key(&self.me.id))
                .arg(code)
                .ignore();
        }
        if !rejoin.is_empty() {
            rejoin.query_async::<()>(c).await?;
        }
        Ok(())
    }

    /// Take this node out at once (graceful stop), instead of waiting for its entry to expire: out of the node set
    /// and out of its rooms (the 102 of each room it was the last in goes to its outbox).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let _no_refresh = self.refreshing.lock().await;
        let mut d = self.decisions.lock().await;
        self.left.store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(mut c) = self.redis.clone() else {
            return Ok(());
        };
        // Rooms first: if this fails, the entry is still there, so the node is pruned (and its rooms left by
        // another node) once it expires, and this node's own decisions still send the 102s meanwhile.
        self.leave_rooms_of(&mut c, &self.me.id, &d.left_alone).await?;
        d.left_alone.clear();
        self.rooms_left.store(true, std::sync::atomic::Ordering::SeqCst);
        redis::pipe()
            .cmd("DEL")
            .arg(node_key(&self.me.id))
            .arg(rooms_key(&self.me.id))
            .ignore()
            .cmd("SREM")
            .arg(NODES_KEY)
            .arg(&self.me.id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Keep the entry fresh until the task is aborted. A failure is logged once per outage and retried at the
    /// next refresh; the node goes on serving what is local meanwhile.
    pub async fn run(self: Arc<Self>) {
        if self.redis.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
            }
            let _writing = self.refreshing.lock().await;
            if self.left.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            // Refresh, put this node's room memberships right, then prune the dead.
            let refreshed = async {
                self.refresh().await?;
                let mut c = self.redis.clone().expect("clustered");
                self.sync_rooms(&mut c).await?;
                self.prune(&mut c).await
            }
            .await;
            match refreshed {
                Ok(()) => {
                    if down {
                        tracing::info!(node = %self.me.id, "Redis is back; this node is registered again");
                        down = false;
                    }
                }
                Err(e) => {
                    if !down {
                        tracing::warn!(node = %self.me.id, error = %e, "cannot refresh this node's cluster entry; retrying every 5 s");
                        down = true;
                    }
                    metrics::counter!("roomgate_cluster_refresh_errors_total").increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_name_their_key() {
        let n = NodeInfo {
            id: "node-a".into(),
            http: "http://10.0.0.5:8080".into(),
            relay: "10.0.0.5:7935".into(),
            cores: 2,
            version: "0.1.0".into(),
            started_at_ms: 1,
            load: Load {
                cpu: 0.25,
                sessions: 3,
                anchors: 1,
                pull_tasks: 0,
                score: 0.25,
                accepting: true,
            },
        };
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), n);
        assert_eq!(node_key("node-a"), "roomgate:node:node-a");
    }
}
