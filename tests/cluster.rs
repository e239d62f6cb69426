//! Cluster mode on Redis: the node registry. Two gateways on one Redis list each other in `/v1/nodes`; a node
//! that dies is gone for the others once its entry expires; a Redis outage is a clear error, not a crash, and the
//! nodes register again when Redis is back. A single node lists itself.

mod support;

use roomgate::cluster::{tasks, NODE_TTL};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::receiver::{types, wait_for, Receiver};
use support::redis::{join_cluster, Redis, SECRET};
use support::*;

async fn nodes(gw: &TestGateway) -> (u16, Value) {
    get_json(gw.http_addr, "/v1/nodes").await
}

/// How many callbacks of `event_type` are among `records`.
fn count(records: &[Value], event_type: u64) -> usize {
    types(records).iter().filter(|x| **x == event_type).count()
}

fn ids(v: &Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Poll `/v1/nodes` on `gw` until `want` holds, for at most `within`; the last answer.
async fn wait_nodes(gw: &TestGateway, within: Duration, want: impl Fn(&Value) -> bool) -> (u16, Value, Duration) {
    let start = Instant::now();
    loop {
        let (status, v) = nodes(gw).await;
        if want(&v) || start.elapsed() > within {
            return (status, v, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Node `id` that takes work however busy this test process is (`max_load` 1: other tests run beside it).
async fn unhurried_node(redis: &Redis, id: &str) -> TestGateway {
    let (url, id) = (redis.url(), id.to_string());
    start_gateway_with(move |c| {
        join_cluster(c, url, &id);
        c.cluster.max_load = 1.0;
    })
    .await
}

async fn node(redis: &Redis, id: &str) -> TestGateway {
    let (url, id) = (redis.url(), id.to_string());
    start_gateway_with(move |c| {
        join_cluster(c, url, &id);
        c.cluster.advertise_http = format!("http://{id}.example:8080");
    })
    .await
}

/// One Redis and one callback receiver (tests/callbacks/receiver.py) that every node of a test posts to.
struct WithCallbacks {
    redis: Redis,
    port: u16,
    out: std::path::PathBuf,
    _receiver: Receiver,
    _dir: tempfile::TempDir,
}

impl WithCallbacks {
    async fn start() -> WithCallbacks {
        let port = support::nginx::free_port();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("callbacks.jsonl");
        let receiver = Receiver::start(port, "cbKey", &out).await;
        WithCallbacks {
            redis: Redis::start(),
            port,
            out,
            _receiver: receiver,
            _dir: dir,
        }
    }

    /// Node `id` on the shared Redis, sending its app's callbacks to the receiver.
    async fn node(&self, id: &str) -> TestGateway {
        let (url, id, port) = (self.redis.url(), id.to_string(), self.port);
        start_gateway_with(move |c| {
            join_cluster(c, url, &id);
            c.apps[0].callback_url = format!("http://127.0.0.1:{port}/cb");
            c.apps[0].callback_key = "cbKey".into();
        })
        .await
    }

    /// Nodes A and B (see `node`).
    async fn two_nodes(&self) -> (TestGateway, TestGateway) {
        (self.node("node-a").await, self.node("node-b").await)
    }

    /// What the receiver recorded, once `done` holds (up to `within`).
    async fn wait(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_for(&self.out, within, done).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_redis_list_each_other_and_a_dead_node_expires() {
    let redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let both = |v: &Value| ids(v) == ["node-a", "node-b"];
    let (status, v, _) = wait_nodes(&a, Duration::from_secs(10), both).await;
    assert_eq!(status, 200, "{v}");
    assert!(both(&v), "node A lists both: {v}");
    assert_eq!(
        (v["cluster"].as_bool(), v["node"].as_str()),
        (Some(true), Some("node-a"))
    );
    let nb = &v["nodes"][1];
    assert_eq!(nb["http"], "http://node-b.example:8080", "{nb}");
    assert!(
        nb["cores"].as_u64().unwrap() >= 1 && nb["load"]["cpu"].is_number(),
        "{nb}"
    );
    let (_, v, _) = wait_nodes(&b, Duration::from_secs(10), both).await;
    assert!(both(&v), "node B lists both: {v}");

    // C stops as `serve` does on Ctrl-C: it takes its entry out at once.
    let c = node(&redis, "node-c").await;
    let (_, v, _) = wait_nodes(&a, Duration::from_secs(10), |v| ids(v).len() == 3).await;
    assert_eq!(ids(&v), ["node-a", "node-b", "node-c"], "{v}");
    let TestGateway { gw, dir: _dir } = c;
    gw.stop().await;
    let (status, v) = nodes(&a).await;
    assert_eq!(
        (status, ids(&v)),
        (200, vec!["node-a".to_string(), "node-b".to_string()]),
        "at once: {v}"
    );

    // B dies without a word (its tasks stop; it never takes its entry out): gone for A once the entry expires.
    drop(b);
    let (_, v, took) = wait_nodes(&a, Duration::from_secs(25), |v| ids(v) == ["node-a"]).await;
    assert_eq!(ids(&v), ["node-a"], "the dead node expired: {v}");
    assert!(
        took <= Duration::from_secs(21),
        "within the 15 s TTL and a refresh ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_a_clear_error_and_nodes_register_again_when_it_is_back() {
    let mut redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let (_, v, _) = wait_nodes(&a, Duration::from_secs(10), |v| ids(v) == ["node-a"]).await;
    assert_eq!(ids(&v), ["node-a"], "{v}");

    // A local anchor and its viewer, playing when Redis goes away.
    let (ff, _) = a.push_anchor("local", "cam", "320x240", 60, LIVE_X264).await;
    let player = whep_client::play(
        &a.whep_url("local", "v1"),
        Some(&usersig("v1")),
        whep_client::Transport::Udp,
    )
    .await
    .unwrap_or_else(|r| panic!("plays: {} {}", r.status, r.body));

    redis.stop();
    let (status, body) = http_get(a.http_addr, "/v1/nodes").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cluster_unavailable"), "{body}");
    // The node itself goes on: it answers, and its media keeps flowing through the outage.
    let (status, _) = http_get(a.http_addr, "/v1/rooms").await;
    assert_eq!(status, 200);
    let outage = Instant::now();
    // 5 s of 30 fps video and of audio in packets of `audio.opus_frame_ms`.
    let audio = 5_000 / usize::from(roomgate::config::DEFAULT_OPUS_FRAME_MS);
    let (frames, player) = player
        .gather_keep(Duration::from_secs(8), move |f| whep_client::at_least(f, 150, audio))
        .await;
    assert!(
        whep_client::at_least(&frames, 150, audio),
        "5 s of media during the outage: {} frames in {:?}",
        frames.len(),
        outage.elapsed()
    );
    // Redis comes back empty: the node's next refresh registers it again.
    redis.restart();
    let (_, v, _) = wait_nodes(&a, Duration::from_secs(15), |v| ids(v) == ["node-a"]).await;
    assert_eq!(ids(&v), ["node-a"], "registered again after the outage: {v}");
    drop(player);
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_sentinels_follows_a_failover_to_the_new_master() {
    use support::redis::Sentinel;
    let mut master = Redis::start();
    let replica = Redis::replica_of(&master);
    let sentinel = Sentinel::start(&master);
    let url = sentinel.url();
    let a = start_gateway_with(move |c| join_cluster(c, url, "node-a")).await;
    let (_, v, _) = wait_nodes(&a, Duration::from_secs(10), |v| ids(v) == ["node-a"]).await;
    assert_eq!(ids(&v), ["node-a"], "registered through the Sentinel: {v}");
    assert!(
        master
            .command(&["EXISTS", "roomgate:node:node-a"])
            .is_some_and(|r| r.starts_with(":1")),
        "on the master the Sentinel named"
    );
    wait_until("the Sentinel knows the replica", Duration::from_secs(15), || {
        sentinel.knows_a_replica()
    })
    .await;

    // A planned failover: the replica is promoted and the old master, still up, becomes its replica (it answers
    // writes with READONLY, and its pub/sub connections stay open).
    let r = sentinel.failover();
    assert!(r.starts_with("+OK"), "SENTINEL FAILOVER: {r:?}");
    let switched = Instant::now();
    wait_until("the Sentinel names the replica", Duration::from_secs(30), || {
        sentinel.master_port() == Some(replica.port)
    })
    .await;
    // The node follows by itself: its entry (15 s TTL, copied to the replica before the switch) is still there
    // well past its TTL, because the node refreshes it on the new master.
    let refreshed_on = |server: &Redis| {
        let ttl = server.command(&["TTL", "roomgate:node:node-a"]).unwrap_or_default();
        ttl.trim_start_matches(':').trim().parse::<i64>().unwrap_or(-2) > 0
    };
    tokio::time::sleep((switched + NODE_TTL + Duration::from_secs(2)).saturating_duration_since(Instant::now())).await;
    let (status, v, _) = wait_nodes(&a, Duration::from_secs(10), |v| ids(v) == ["node-a"]).await;
    assert_eq!((status, ids(&v)), (200, vec!["node-a".to_string()]), "{v}");
    assert!(refreshed_on(&replica), "node-a's entry refreshed on the new master");

    // Then the new master dies: the Sentinel promotes the first one back, and the node follows again.
    wait_until(
        "the Sentinel knows the old master as a replica",
        Duration::from_secs(20),
        || sentinel.knows_a_replica(),
    )
    .await;
    let mut replica = replica;
    replica.stop();
    let died = Instant::now();
    wait_until(
        "the Sentinel names the first master again",
        Duration::from_secs(40),
        || sentinel.master_port() == Some(master.port),
    )
    .await;
    tokio::time::sleep((died + NODE_TTL + Duration::from_secs(2)).saturating_duration_since(Instant::now())).await;
    let (status, v, _) = wait_nodes(&a, Duration::from_secs(10), |v| ids(v) == ["node-a"]).await;
    assert_eq!((status, ids(&v)), (200, vec!["node-a".to_string()]), "{v}");
    assert!(
        refreshed_on(&master),
        "node-a's entry refreshed on the master after the second failover"
    );
    master.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_lists_itself_and_needs_no_redis() {
    let gw = start_gateway().await;
    let (status, v) = nodes(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cluster"], false);
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["nodes"][0]["id"], v["node"]);
    assert!(v["nodes"][0]["http"].as_str().unwrap().starts_with("http://"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redis_url_is_refused_by_the_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = roomgate::Config {
        data_dir: dir.path().to_path_buf(),
        ..roomgate::Config::default()
    };
    c.cluster.redis_url = "http://127.0.0.1:6379".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("cluster.redis_url") && e.contains("not a Redis URL"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_the_anchors_of_every_node() {
    let redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let (ff, _) = a.push_anchor("span", "cam", "320x240", 30, LIVE_X264).await;
    let anchors_on_b = |v: &Value| -> Vec<(String, String)> {
        v["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["room_id"] == "span")
            .flat_map(|r| r["anchors"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["userid"].as_str().unwrap_or("").into(),
                    a["node"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    };
    let rooms_on_b = || async {
        let (status, rooms) = get_json(b.http_addr, "/v1/rooms").await;
        assert_eq!(status, 200, "{rooms}");
        rooms
    };
    let start = Instant::now();
    let mut v = rooms_on_b().await;
    while anchors_on_b(&v).is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        v = rooms_on_b().await;
    }
    assert_eq!(anchors_on_b(&v), [("cam".to_string(), "node-a".to_string())], "{v}");
    // Published at once on the join, not at the next periodic refresh.
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());

    ff.kill().await;
    let start = Instant::now();
    while !anchors_on_b(&v).is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        v = rooms_on_b().await;
    }
    assert!(anchors_on_b(&v).is_empty(), "the anchor left everywhere: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_on_one_node_replaces_its_identity_on_another() {
    let redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    // Both nodes listen to joins once registered.
    wait_nodes(&a, Duration::from_secs(10), |v| ids(v).len() == 2).await;
    let (first, _) = a.push_anchor("tk", "cam", "320x240", 60, LIVE_X264).await;
    let (second, _) = b.push_anchor("tk", "cam", "320x240", 60, LIVE_X264).await;
    // The anchor on A leaves: the same identity now publishes on B.
    let start = Instant::now();
    while a.wait_anchor("tk", "cam", Duration::from_millis(100)).await.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the anchor on node A was replaced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.wait_anchor("tk", "cam", Duration::from_secs(1)).await.is_some(),
        "the new one stays on node B"
    );
    first.kill().await;
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_anchors_on_two_nodes_gives_one_101_and_one_102() {
    let cb = WithCallbacks::start().await;
    let (a, b) = cb.two_nodes().await;
    let (on_a, _) = a.push_anchor("both", "ua", "320x240", 60, QUICK_X264).await;
    let (on_b, _) = b.push_anchor("both", "ub", "320x240", 60, QUICK_X264).await;
    let r = cb.wait(Duration::from_secs(15), |r| count(r, 103) == 2).await;
    assert_eq!(
        count(&r, 101),
        1,
        "one 101 for the room, whichever node: {:?}",
        types(&r)
    );
    on_a.kill().await;
    cb.wait(Duration::from_secs(15), |r| count(r, 104) == 1).await;
    on_b.kill().await;
    let r = cb
        .wait(Duration::from_secs(15), |r| count(r, 104) == 2 && count(r, 102) == 1)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r2 = support::receiver::received(&cb.out);
    assert_eq!((count(&r2, 101), count(&r2, 102)), (1, 1), "{:?}", types(&r2));
    let last = types(&r).last().copied();
    assert_eq!(
        last,
        Some(102),
        "the room is dismissed after its last anchor left: {:?}",
        types(&r)
    );
}

/// A node's registry alone (no gateway around it) on `redis`, as node `id`.
fn bare_registry(redis: &Redis, id: &str) -> std::sync::Arc<roomgate::cluster::Registry> {
    use roomgate::cluster::{Load, Registry, Seal};
    Registry::new(
        &redis.url(),
        Seal::new(SECRET),
        id.into(),
        format!("http://{id}.example:8080"),
        Load::default,
    )
    .expect("registry")
}

/// Make `redis` refuse writes (`min-replicas-to-write` with no replica: a MULTI fails as in an outage, and the
/// data stays), or take them again.
fn refuse_writes(redis: &Redis, on: bool) {
    let n = if on { "1" } else { "0" };
    assert!(redis
        .command(&["CONFIG", "SET", "min-replicas-to-write", n])
        .is_some_and(|r| r.starts_with("+OK")));
}

/// A node's refresh loop puts its room memberships in Redis right (after an outage, a restart, a prune). Under
/// load it once ran between a node deciding it was in a room and its hub's room list showing that room, took the
/// node out of the room, and the room was dismissed (102) while that node's anchor was still publishing. The
/// memberships a refresh restores and keeps are the decided ones, whatever the hub's list says at that moment
/// (here it has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_a_node_in_the_rooms_it_decided_to_be_in() {
    use roomgate::room::{RoomKey, RoomRef};
    let redis = Redis::start();
    let (a, b) = (bare_registry(&redis, "node-a"), bare_registry(&redis, "node-b"));
    let (decided, mut b_dismissed) = tokio::sync::mpsc::unbounded_channel();
    b.decide_rooms_into(decided);
    let room = RoomKey {
        sdkappid: 1400000001,
        room: RoomRef::Str("both".into()),
    };
    assert!(
        a.enter_room(&room).await.expect("Redis"),
        "A is the room's first node: 101"
    );
    assert!(!b.enter_room(&room).await.expect("Redis"), "B is not: no second 101");
    // B taken out behind its back (as a prune during a stall does): its refresh must put it back, which also
    // shows that the refresh ran.
    let b_in_room = || {
        redis
            .command(&["SISMEMBER", "roomgate:room:1400000001:s:both", "node-b"])
            .is_some_and(|r| r.starts_with(":1"))
    };
    redis.command(&["SREM", "roomgate:room:1400000001:s:both", "node-b"]);
    redis.command(&["SREM", "roomgate:node:node-b:in", "1400000001:s:both"]);
    assert!(!b_in_room());
    let refresh = tokio::spawn(b.clone().run());
    let start = Instant::now();
    while !b_in_room() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B's refresh put it back in the room it decided to be in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More refreshes keep it there.
    b.poke();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a.leave_room(&room).await.expect("Redis"),
        "B's anchor is still in the room: no 102 when A's last anchor leaves"
    );
    assert!(b_dismissed.try_recv().is_err(), "B's refresh dismissed no room");
    assert!(b.leave_room(&room).await.expect("Redis"), "B's was the last: 102");
    refresh.abort();
}

/// A node that left the cluster (a graceful stop) sent the 102 of each room it emptied: its last anchor leaving
/// afterwards sends no second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_sends_no_second_102_when_its_last_anchor_leaves() {
    use roomgate::room::{RoomEvent, RoomKey, RoomRef};
    let redis = Redis::start();
    let a = bare_registry(&redis, "node-a");
    let (decided, mut dismissed) = tokio::sync::mpsc::unbounded_channel();
    a.decide_rooms_into(decided);
    let room = RoomKey {
        sdkappid: 1400000001,
        room: RoomRef::Num(7),
    };
    assert!(a.enter_room(&room).await.expect("Redis"));
    a.leave().await.expect("Redis");
    assert!(
        matches!(dismissed.try_recv(), Ok(RoomEvent::RoomDismissed { key, .. }) if key == room),
        "leaving dismissed the room it was alone in"
    );
    assert!(
        !a.leave_room(&room).await.expect("Redis"),
        "no second 102 from the anchor leaving after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_of_a_node_that_dies_is_dismissed_by_another() {
    let cb = WithCallbacks::start().await;
    let (a, b) = cb.two_nodes().await;
    let ff = a.push_lavfi("lonely", "ua", "320x240", 60, QUICK_X264);
    cb.wait(Duration::from_secs(15), |r| count(r, 103) == 1).await;
    // Node A dies without a word: its tasks (registry, outbox) stop; B prunes it once its entry expires and
    // dismisses the room A was alone in.
    drop(a);
    let r = cb.wait(Duration::from_secs(30), |r| count(r, 102) == 1).await;
    assert_eq!(count(&r, 101), 1, "{:?}", types(&r));
    ff.kill().await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_leaves_its_rooms_so_they_are_announced_again() {
    let cb = WithCallbacks::start().await;
    let (a, b) = cb.two_nodes().await;
    let push = |gw: &TestGateway| gw.push_lavfi("again", "u", "320x240", 60, QUICK_X264);
    let on_a = push(&a);
    cb.wait(Duration::from_secs(15), |r| count(r, 101) == 1).await;
    // A stops as `serve` does: it leaves its rooms in Redis, so the room is new when an anchor enters on B.
    let TestGateway { gw, dir: _dir } = a;
    gw.stop().await;
    on_a.kill().await;
    let on_b = push(&b);
    let r = cb.wait(Duration::from_secs(15), |r| count(r, 101) == 2).await;
    assert_eq!(count(&r, 101), 2, "{:?}", types(&r));
    on_b.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stopped_with_sigterm_leaves_the_cluster_at_once() {
    let redis = Redis::start();
    let b = node(&redis, "node-b").await;
    let dir = tempfile::tempdir().unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", support::nginx::free_port()).parse().unwrap();
    let config = dir.path().join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlog = \"warn\"\n[http]\nlisten = \"{http}\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\
             [srt]\nlisten = \"127.0.0.1:0\"\n[rtc]\nbind = \"127.0.0.1\"\nudp_port = 0\ntcp_port = 0\n\
             [cluster]\nredis_url = \"{}\"\nnode_id = \"node-bin\"\nsecret = \"{SECRET}\"\n\
             relay_listen = \"127.0.0.1:0\"\n",
            dir.path().join("data").display(),
            redis.url()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .args(["serve", "-c"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, v, _) = wait_nodes(&b, Duration::from_secs(20), |v| ids(v) == ["node-b", "node-bin"]).await;
    assert_eq!(ids(&v), ["node-b", "node-bin"], "{v}");
    // SIGTERM, as systemd, docker stop and Kubernetes send: an orderly stop, out of the cluster at once (not
    // after the 15 s TTL), and a clean exit.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("roomgate did not exit within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "exit status {exited:?}");
    let (status, v) = nodes(&b).await;
    assert_eq!((status, ids(&v)), (200, vec!["node-b".to_string()]), "{v}");
}

/// Node `id` on `redis`, reachable by the others at its real address (`advertise_http` left empty), answering
/// viewers of remote anchors as `whep` says.
async fn reachable_node(redis: &Redis, id: &str, whep: roomgate::config::RemoteViewers) -> TestGateway {
    let (url, id) = (redis.url(), id.to_string());
    start_gateway_with(move |c| {
        join_cluster(c, url, &id);
        c.cluster.whep = whep;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_a_node_without_the_anchor_is_redirected_to_it_and_plays() {
    use roomgate::config::RemoteViewers;
    let redis = Redis::start();
    let a = reachable_node(&redis, "node-a", RemoteViewers::Redirect).await;
    let b = reachable_node(&redis, "node-b", RemoteViewers::Redirect).await;
    let c = reachable_node(&redis, "node-c", RemoteViewers::Local).await;
    let _ff = a.push_lavfi("far", "cam", "320x240", 60, LIVE_X264);
    a.wait_video("far", "cam", Duration::from_secs(20)).await;

    // B learns of A's anchor from the rooms A publishes (at once on the join, read at most a second old).
    let player = play_when_known(&b, "far", "viewer1").await;
    let a_base = format!("http://127.0.0.1:{}/", a.http_addr.port());
    assert!(
        player.answered_by.starts_with(&a_base),
        "answered by node A ({a_base}), not {}",
        player.answered_by
    );
    let frames = player
        .gather(Duration::from_secs(15), |f| whep_client::at_least(f, 10, 10))
        .await;
    assert!(
        whep_client::at_least(&frames, 10, 10),
        "frames decoded through the redirect: {}",
        frames.len()
    );

    // A node with `cluster.whep = "local"` answers as a single node would.
    let refused = whep_client::refusal(&c.whep_url("far", "viewer2"), Some(&usersig("viewer2"))).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert!(refused.body.contains("anchor_not_found"), "{}", refused.body);
    // And a node with nothing to send a viewer to still says 404.
    let refused = whep_client::refusal(&b.whep_url("nowhere", "viewer3"), Some(&usersig("viewer3"))).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_another_node_play_the_anchor_through_one_relay_link() {
    use roomgate::config::RemoteViewers;
    let redis = Redis::start();
    let a = reachable_node(&redis, "node-a", RemoteViewers::Relay).await;
    let b = reachable_node(&redis, "node-b", RemoteViewers::Relay).await;
    let ff = a.push_lavfi("wide", "cam", "320x240", 60, LIVE_X264);
    a.wait_video("wide", "cam", Duration::from_secs(20)).await;

    // B learns of A's anchor from the rooms A publishes, then relays it: B answers the offer itself.
    let first = play_when_known(&b, "wide", "viewer1").await;
    let second = play_when_known(&b, "wide", "viewer2").await;
    let b_base = format!("http://127.0.0.1:{}/", b.http_addr.port());
    for p in [&first, &second] {
        assert!(
            p.answered_by.starts_with(&b_base),
            "node B answers, not {}",
            p.answered_by
        );
    }
    let (first, second) = tokio::join!(
        first.gather(Duration::from_secs(15), |f| whep_client::at_least(f, 10, 10)),
        second.gather(Duration::from_secs(15), |f| whep_client::at_least(f, 10, 10)),
    );
    for frames in [&first, &second] {
        assert!(
            whep_client::at_least(frames, 10, 10),
            "frames through the relay: {}",
            frames.len()
        );
    }
    // Node A served no WebRTC viewer: its anchor reports none (they are node B's).
    let (_, rooms) = get_json(a.http_addr, "/v1/rooms").await;
    let anchor = &rooms["rooms"][0]["anchors"][0];
    assert_eq!(
        (anchor["userid"].as_str(), anchor["viewers"].as_u64()),
        (Some("cam"), Some(0)),
        "{rooms}"
    );

    // A node that does not have the cluster's secret gets no media from A: its relay link is refused.
    let url = redis.url();
    let c = start_gateway_with(move |c| {
        join_cluster(c, url, "node-c");
        c.cluster.secret = "not-the-cluster-secret-0123456789abcdef".into();
    })
    .await;
    wait_nodes(&a, Duration::from_secs(10), |v| ids(v).len() == 3).await;
    let refused = whep_client::refusal(&c.whep_url("wide", "viewer3"), Some(&usersig("viewer3"))).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    // And A still relays to B.
    let again = play_when_known(&b, "wide", "viewer4").await;
    let frames = again
        .gather(Duration::from_secs(15), |f| whep_client::at_least(f, 5, 5))
        .await;
    assert!(whep_client::at_least(&frames, 5, 5), "A still relays: {}", frames.len());
    ff.kill().await;
}

/// Play `room` on `gw` as `viewer`, retrying while the anchor is not known there yet (up to 15 s).
async fn play_when_known(gw: &TestGateway, room: &str, viewer: &str) -> whep_client::WhepPlayer {
    let (url, token) = (gw.whep_url(room, viewer), usersig(viewer));
    let start = Instant::now();
    loop {
        match whep_client::play(&url, Some(&token), whep_client::Transport::Udp).await {
            Ok(p) => return p,
            Err(r) if r.status == 404 && start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(r) => panic!("{viewer} plays {room}: {} {}", r.status, r.body),
        }
    }
}

/// Node A as a real `roomgate serve` process on `redis` (so it can be killed or signalled), with ports of its own
/// that stay the same across restarts: its config, HTTP address and the RTMP URL at which `cam` publishes in
/// `room`. `extra` goes into its `[cluster]` table.
struct ProcessNode {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    http: std::net::SocketAddr,
    rtmp_url: String,
    /// `ROOMGATE_*` settings over the config file (e.g. the app's callback).
    env: Vec<(String, String)>,
}

impl ProcessNode {
    fn new(redis: &Redis, room: &str, extra: &str) -> ProcessNode {
        let dir = tempfile::tempdir().unwrap();
        let (http, rtmp) = (support::nginx::free_port(), support::nginx::free_port());
        let cluster = format!(
            "[cluster]\nredis_url = \"{}\"\nnode_id = \"node-a\"\nsecret = \"{SECRET}\"\n\
             relay_listen = \"127.0.0.1:0\"\n{extra}",
            redis.url()
        );
        let config = support::process::roomgate_config(dir.path(), http, rtmp, 0, 0, &cluster);
        let rtmp_url = format!(
            "rtmp://127.0.0.1:{rtmp}/push/{room}?sdkappid={SDKAPPID}&userid=cam&usersig={}",
            usersig("cam")
        );
        ProcessNode {
            _dir: dir,
            config,
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            rtmp_url,
            env: Vec::new(),
        }
    }

    /// Start it (again), once it answers.
    async fn start(&self) -> support::process::KillOnDrop {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"));
        cmd.args(["serve", "-c"])
            .arg(&self.config)
            .envs(self.env.iter().cloned());
        support::process::start_roomgate(cmd, self.http).await
    }

    /// ffmpeg publishing two minutes of 320x240 as `cam` to it.
    fn push(&self) -> Ffmpeg {
        Ffmpeg::push(&lavfi("320x240", 120), LIVE_X264, &self.rtmp_url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_link_is_opened_again_when_the_anchors_node_restarts() {
    let redis = Redis::start();
    let b = reachable_node(&redis, "node-b", roomgate::config::RemoteViewers::Relay).await;
    // Node A is a real process, so it can die without a word (kill -9) and come back with the same id.
    let node_a = ProcessNode::new(&redis, "again", "");
    let a = node_a.start().await;
    let ff = node_a.push();
    let player = play_when_known(&b, "again", "viewer1").await;
    let (frames, player) = player
        .gather_keep(Duration::from_secs(15), |f| whep_client::at_least(f, 10, 10))
        .await;
    assert!(
        whep_client::at_least(&frames, 10, 10),
        "relayed before the restart: {}",
        frames.len()
    );

    a.kill9();
    ff.kill().await;
    let _a = node_a.start().await;
    let ff = node_a.push();
    // The viewer on B stays and plays on: B opens the link again to the node that has the anchor now. (A few
    // frames queued before the kill may come first; 90 of each is three seconds of new media.)
    let frames = player
        .gather(Duration::from_secs(30), |f| whep_client::at_least(f, 90, 90))
        .await;
    assert!(
        whep_client::at_least(&frames, 90, 90),
        "frames after node A came back: {} video, {} audio",
        whep_client::video_of(&frames).len(),
        whep_client::audio_of(&frames).len()
    );
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_new_whip_publishers_go_elsewhere_and_it_stops_when_its_publisher_leaves() {
    let redis = Redis::start();
    let b = unhurried_node(&redis, "node-b").await;
    let node_a = ProcessNode::new(&redis, "busy", "drain_timeout_secs = 60\n");
    let mut a = node_a.start().await;
    let ff = node_a.push();
    let accepting = |v: &Value| {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"] == "node-a")
            .map(|n| n["load"]["accepting"].as_bool())
    };
    wait_nodes(&b, Duration::from_secs(10), |v| accepting(v) == Some(Some(true))).await;
    play_when_known(&b, "busy", "viewer1").await; // the publisher is on A

    // SIGTERM: A drains. It says so in its entry at once and stays up while its RTMP publisher is there.
    unsafe { libc::kill(a.0.id() as i32, libc::SIGTERM) };
    let (_, v, took) = wait_nodes(&b, Duration::from_secs(5), |v| accepting(v) == Some(Some(false))).await;
    assert_eq!(accepting(&v), Some(Some(false)), "node A is draining: {v}");
    assert!(
        took < Duration::from_secs(3),
        "announced at once, not at the next refresh: {took:?}"
    );
    // A WHIP publisher that comes to A is sent to B (307) and publishes there.
    let whip = format!("http://{}/v2/pub/{SDKAPPID}/moved?SessionID=pub1", node_a.http);
    let publisher = whip_client::publish(&whip, Some(&usersig("pub1")), whip_client::MediaSpec::default())
        .await
        .unwrap_or_else(|r| panic!("the WHIP publisher is placed on B: {} {}", r.status, r.body));
    assert!(
        b.wait_anchor("moved", "pub1", Duration::from_secs(10)).await.is_some(),
        "the WHIP publisher is an anchor on node B"
    );
    assert!(a.0.try_wait().unwrap().is_none(), "A waits for its RTMP publisher");

    // The RTMP publisher leaves: A stops by itself, cleanly, and leaves the cluster.
    ff.kill().await;
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = a.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "node A stops once drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exited.success(), "{exited:?}");
    let (_, v) = nodes(&b).await;
    assert_eq!(ids(&v), ["node-b"], "{v}");
    drop(publisher);
}

/// Cloud API calls on `gw`.
fn cloud(gw: &TestGateway) -> support::cloud::CloudClient {
    support::cloud::CloudClient::new(gw.http_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_on_a_busy_node_runs_on_another_and_any_node_describes_and_stops_it() {
    use support::cloud::{describe, describe_until, start_params, start_task, stop};
    let nginx = support::nginx::Nginx::testdata().await;
    let redis = Redis::start();
    let a = unhurried_node(&redis, "node-a").await;
    let (b, c) = (node(&redis, "node-b").await, node(&redis, "node-c").await);
    // B and C take no new work: a task started on B goes to A, the only node that does.
    b.registry.drain();
    c.registry.drain();
    let accepting = |v: &Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["load"]["accepting"] == true)
            .filter_map(|n| n["id"].as_str().map(String::from))
            .collect()
    };
    wait_nodes(&b, Duration::from_secs(10), |v| accepting(v) == ["node-a"]).await;
    let task = start_task(
        &cloud(&b),
        start_params("placed", "robot", &nginx.url("/sample-720p30.mp4")),
    )
    .await;
    wait_until("the task runs on node A", Duration::from_secs(10), || {
        a.pull.running(&task)
    })
    .await;
    assert!(!b.pull.running(&task) && !c.pull.running(&task));

    // Node C, which does not run it, describes it from the cluster's mirror...
    let r = describe_until(&cloud(&c), &task, Duration::from_secs(15), |r| {
        r["State"] == "playing" && r["PositionMs"].as_i64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(r["Status"], "InProgress", "{r}");
    // ...lists it among the cluster's tasks...
    let list = cloud(&c).call("ListStreamIngests", json!({})).await;
    let listed: Vec<&str> = list["Tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["TaskId"].as_str())
        .collect();
    assert_eq!(listed, [task.as_str()], "{list}");

    // Whoever can write to Redis but lacks the cluster's secret steers nothing: an unsigned Stop is ignored, a
    // copy of the task's mirror under another id is not run, a node entry is not listed.
    let forged_stop = format!(r#"{{"op":"stop","id":"{task}"}}"#);
    assert!(redis
        .command(&["PUBLISH", "roomgate:tasks:control", &forged_stop])
        .is_some());
    // A value as a node wrote it (a RESP bulk string), without its seal if it has one.
    let unsealed = |resp: Option<String>| {
        let resp = resp.unwrap_or_default();
        let v = resp.split_once("\r\n").map_or("", |(_, v)| v).trim_end().to_string();
        match v.strip_prefix("rg1.") {
            Some(rest) => rest
                .split_once('.')
                .map(|(_, body)| body.to_string())
                .unwrap_or_default(),
            None => v,
        }
    };
    let sealed = redis.command(&["GET", &format!("roomgate:task:{task}")]);
    let json = unsealed(sealed.clone());
    let forged_id = format!("forged{}", "A".repeat(37));
    let forged = json
        .replace(&task, &forged_id)
        .replace(r#""UserId":"robot""#, r#""UserId":"forger""#);
    assert!(forged.contains(&forged_id) && forged.contains("forger"), "{sealed:?}");
    redis.command(&["SET", &format!("roomgate:task:{forged_id}"), &forged]);
    redis.command(&["SADD", "roomgate:tasks", &forged_id]);
    let entry = unsealed(redis.command(&["GET", "roomgate:node:node-b"])).replace("node-b", "evil");
    assert!(entry.contains(r#""id":"evil""#), "{entry}");
    redis.command(&["SET", "roomgate:node:evil", &entry, "EX", "60"]);
    redis.command(&["SADD", "roomgate:nodes", "evil"]);
    // A stop mark and a lease without the seal (the lease with no expiry, naming node B).
    redis.command(&["SET", &format!("roomgate:task:{task}:stopped"), "node-c"]);
    redis.command(&["SET", &format!("roomgate:task:{task}:lease"), "node-b/0000000000000000"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        a.pull.running(&task),
        "an unsigned Stop, stop mark or lease stopped the task"
    );
    assert!(!b.pull.running(&task) && !c.pull.running(&task));
    for gw in [&a, &b, &c] {
        assert!(!gw.pull.running(&forged_id), "a node ran a forged task");
    }
    let (_, v) = nodes(&c).await;
    assert_eq!(ids(&v), ["node-a", "node-b", "node-c"], "{v}");
    // ...and stops it: node A's robot leaves, and every node says the task is gone, and how it ended (its last
    // mirror is kept), as node A, which ran it, says.
    stop(&cloud(&c), &task).await;
    wait_until("node A stops the task", Duration::from_secs(10), || {
        !a.pull.running(&task)
    })
    .await;
    for gw in [&a, &b, &c] {
        let r = describe_until(&cloud(gw), &task, Duration::from_secs(5), |r| r["State"] == "stopped").await;
        assert_eq!(r["Status"], "NotExist", "{r}");
        assert_eq!(r["State"], "stopped", "{r}");
    }
    // An ended task is not stopped twice from another node either...
    let again = cloud(&b)
        .call("StopStreamIngest", support::cloud::task_params(&task))
        .await;
    assert!(support::cloud::error_code(&again).is_some(), "{again}");
    // ...nor run again when its id is put back in the list (its mirror says it ended).
    redis.command(&["SADD", "roomgate:tasks", &task]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for gw in [&a, &b, &c] {
        assert!(!gw.pull.running(&task), "an ended task ran again");
    }
    let _ = describe(&cloud(&a), &task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_costly_tasks_started_on_one_node_spreads_over_the_nodes() {
    use support::cloud::{start_params, start_task};
    let nginx = support::nginx::Nginx::testdata().await;
    let redis = Redis::start();
    // Node A expects each task to take most of a node (1.6 of 2 cores here), so the second of two Starts in a
    // row goes to B even though neither node's reported load has moved yet.
    let url = redis.url();
    let a = start_gateway_with(move |c| {
        join_cluster(c, url, "node-a");
        c.cluster.max_load = 1.0;
        c.cluster.task_cost_passthrough = 1.6;
    })
    .await;
    let b = unhurried_node(&redis, "node-b").await;
    wait_nodes(&a, Duration::from_secs(10), |v| ids(v) == ["node-a", "node-b"]).await;
    let mut tasks = Vec::new();
    for robot in ["robot1", "robot2"] {
        tasks.push(
            start_task(
                &cloud(&a),
                start_params("burst", robot, &nginx.url("/sample-720p30.mp4")),
            )
            .await,
        );
    }
    wait_until("both tasks run", Duration::from_secs(10), || {
        tasks.iter().all(|t| a.pull.running(t) || b.pull.running(t))
    })
    .await;
    let on_a = tasks.iter().filter(|t| a.pull.running(t)).count();
    assert_eq!(on_a, 1, "one task on each node; the nodes: {}", nodes(&a).await.1);
    // The console lists both, each with its node, on either node (the other's once mirrored, within a second).
    let listed = || async {
        let (_, v) = get_json(b.http_addr, "/v1/tasks").await;
        let mut nodes: Vec<String> = v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["Node"].as_str().map(String::from))
            .collect();
        nodes.sort();
        (nodes, v)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut nodes, mut v) = listed().await;
    while nodes != ["node-a", "node-b"] && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (nodes, v) = listed().await;
    }
    assert_eq!(nodes, ["node-a", "node-b"], "{v}");

    // A task placed on B (A drains) and stopped there before B first mirrored it leaves the list: when its
    // placed lease expires, no node runs it again.
    a.registry.drain();
    wait_nodes(&a, Duration::from_secs(10), |v| {
        v["nodes"][0]["load"]["accepting"] == false
    })
    .await;
    let placed = start_task(
        &cloud(&a),
        start_params("burst", "robot3", &nginx.url("/sample-720p30.mp4")),
    )
    .await;
    wait_until("the third task runs on B", Duration::from_secs(10), || {
        b.pull.running(&placed)
    })
    .await;
    support::cloud::stop(&cloud(&b), &placed).await;
    tokio::time::sleep(tasks::LEASE + Duration::from_secs(3)).await;
    assert!(
        !a.pull.running(&placed) && !b.pull.running(&placed),
        "a task stopped where it was placed ran again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_node_killed_with_sigkill_resumes_on_another_at_its_position() {
    use support::cloud::{describe_until, merge, start_params, start_task, CloudClient};
    let nginx = support::nginx::Nginx::testdata().await;
    let cb = WithCallbacks::start().await;
    let (url, port) = (cb.redis.url(), cb.port);
    // Node B accepts work however busy this test process is (other tests run beside it).
    let b = start_gateway_with(move |c| {
        join_cluster(c, url, "node-b");
        c.cluster.max_load = 1.0;
        c.apps[0].callback_url = format!("http://127.0.0.1:{port}/cb");
        c.apps[0].callback_key = "cbKey".into();
    })
    .await;
    // Node A is a real process (so it can be killed), with the same callbacks.
    let mut node_a = ProcessNode::new(&cb.redis, "unused", "[pull]\nallow_private_sources = true\n");
    node_a.env = vec![
        (
            "ROOMGATE_APPS_0_CALLBACK_URL".into(),
            format!("http://127.0.0.1:{}/cb", cb.port),
        ),
        ("ROOMGATE_APPS_0_CALLBACK_KEY".into(), "cbKey".into()),
    ];
    let a = node_a.start().await;
    let api_a = CloudClient::new(node_a.http);
    // Started on A once A's load (high just after its start) has settled, the task stays on A.
    let settled = |v: &Value| {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["id"] == "node-a" && n["load"]["score"].as_f64() < Some(0.05))
    };
    wait_nodes(&b, Duration::from_secs(15), settled).await;
    let params = merge(
        start_params("moving", "robot", &nginx.url("/sample-720p30.mp4")),
        json!({"RepeatNum": -1}),
    );
    let task = start_task(&api_a, params).await;
    let r = describe_until(&api_a, &task, Duration::from_secs(20), |r| {
        r["PositionMs"].as_i64().unwrap_or(0) >= 4000
    })
    .await;
    let before = r["PositionMs"].as_i64().unwrap();
    assert!(!b.pull.running(&task), "it runs on node A");

    a.kill9();
    let killed = Instant::now();
    // An update sent while its node is dead waits in Redis and is applied where the task resumes.
    let r = support::cloud::update(&cloud(&b), &task, json!({"Volume": 40})).await;
    assert!(support::cloud::error_code(&r).is_none(), "{r}");
    wait_until("node B takes the task over", Duration::from_secs(25), || {
        b.pull.running(&task)
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "within 20 s: {:?}",
        killed.elapsed()
    );
    // It resumes where it was (the mirror is at most a second old), not at the start.
    let r = describe_until(&cloud(&b), &task, Duration::from_secs(15), |r| r["State"] == "playing").await;
    let after = r["PositionMs"].as_i64().unwrap_or(0);
    assert!(
        after >= before - 1500,
        "position kept: {before} ms before, {after} ms after"
    );
    let r = describe_until(&cloud(&b), &task, Duration::from_secs(5), |r| r["Volume"] == 40).await;
    assert_eq!(r["Volume"], 40, "the update sent while node A was dead: {r}");
    // 701: Status 0 from A, then 2 (taken over) and 0 (playing again) from B.
    let statuses = |recs: &[Value]| -> Vec<u64> {
        recs.iter()
            .filter(|r| r["body"]["EventInfo"]["TaskId"] == task.as_str() && r["body"]["EventType"] == 701)
            .filter_map(|r| r["body"]["EventInfo"]["Status"].as_u64())
            .collect()
    };
    let recs = cb.wait(Duration::from_secs(15), |r| statuses(r) == [0, 2, 0]).await;
    assert_eq!(statuses(&recs), [0, 2, 0], "701 statuses of the task");
}

/// Redis refusing writes (here `min-replicas-to-write` with no replica; an outage does the same) while a node's
/// last anchor leaves: the node dismisses the room on its own word (102). Its next anchor there creates the room
/// again (101) although Redis still counted the node in it, and the refresh that puts Redis right sends no second 102.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_dismissed_while_redis_refused_writes_is_created_again_and_dismissed_once() {
    use roomgate::room::{RoomKey, RoomRef};
    let redis = Redis::start();
    let room = RoomKey {
        sdkappid: 1400000001,
        room: RoomRef::Str("flaky".into()),
    };
    // Entered again before any refresh.
    let a = bare_registry(&redis, "node-a");
    assert!(a.enter_room(&room).await.expect("Redis"), "101");
    refuse_writes(&redis, true);
    assert!(
        a.leave_room(&room).await.is_err(),
        "Redis refused the leave: this node's own 102 goes out"
    );
    refuse_writes(&redis, false);
    assert!(
        a.enter_room(&room).await.expect("Redis"),
        "the room announced as gone is created again: 101"
    );
    assert!(a.leave_room(&room).await.expect("Redis"), "and dismissed again: 102");

    // Not entered again: the refresh takes the node out of the room in Redis, without a second 102.
    let b = bare_registry(&redis, "node-b");
    let (decided, mut dismissed) = tokio::sync::mpsc::unbounded_channel();
    b.decide_rooms_into(decided);
    assert!(b.enter_room(&room).await.expect("Redis"), "101");
    refuse_writes(&redis, true);
    assert!(b.leave_room(&room).await.is_err(), "this node's own 102 goes out");
    refuse_writes(&redis, false);
    let recorded = || {
        redis
            .command(&["SISMEMBER", "roomgate:room:1400000001:s:flaky", "node-b"])
            .is_some_and(|r| r.starts_with(":1"))
    };
    assert!(recorded(), "Redis still counts B in the room");
    let refresh = tokio::spawn(b.clone().run());
    let start = Instant::now();
    while recorded() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B's refresh took it out of the room in Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the refresh decides comes just after Redis changed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        dismissed.try_recv().is_err(),
        "no second 102 for the room B dismissed alone"
    );
    refresh.abort();

    // A graceful stop before any refresh: no second 102 either.
    let c = bare_registry(&redis, "node-c");
    let (decided, mut dismissed) = tokio::sync::mpsc::unbounded_channel();
    c.decide_rooms_into(decided);
    assert!(c.enter_room(&room).await.expect("Redis"), "101");
    refuse_writes(&redis, true);
    assert!(c.leave_room(&room).await.is_err(), "this node's own 102 goes out");
    refuse_writes(&redis, false);
    c.leave().await.expect("Redis");
    assert!(
        dismissed.try_recv().is_err(),
        "no second 102 when the node leaves the cluster"
    );
}

/// A node dismissed a room on its own word (Redis refused the write) while another node still had an anchor in
/// it: when its refresh finds that out, the room is announced again (101), so the 102 that follows when the other
/// node's anchor leaves closes a room the receiver knows about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_dismissed_alone_that_another_node_still_has_is_created_again() {
    use roomgate::room::{RoomEvent, RoomKey, RoomRef};
    let redis = Redis::start();
    let room = RoomKey {
        sdkappid: 1400000001,
        room: RoomRef::Num(42),
    };
    let (a, b) = (bare_registry(&redis, "node-a"), bare_registry(&redis, "node-b"));
    let (decided, mut announced) = tokio::sync::mpsc::unbounded_channel();
    a.decide_rooms_into(decided);
    assert!(a.enter_room(&room).await.expect("Redis"), "101");
    assert!(!b.enter_room(&room).await.expect("Redis"), "B joins the room");
    refuse_writes(&redis, true);
    assert!(a.leave_room(&room).await.is_err(), "A's own 102 goes out");
    refuse_writes(&redis, false);
    let refresh = tokio::spawn(a.clone().run());
    let event = tokio::time::timeout(Duration::from_secs(10), announced.recv()).await;
    assert!(
        matches!(event, Ok(Some(RoomEvent::RoomCreated { ref key, .. })) if *key == room),
        "A's refresh announces the room B still has again: {event:?}"
    );
    assert!(
        b.leave_room(&room).await.expect("Redis"),
        "B's leaving dismisses it: 102"
    );
    refresh.abort();
}
