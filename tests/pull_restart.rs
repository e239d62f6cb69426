//! Pull tasks survive the process: the real `roomgate` binary is killed with SIGKILL mid-task and started again on
//! the same data dir; the running task resumes (position kept) and a stopped one stays ended. Also what the store
//! promises around that: Stop is stored before it answers, a corrupt task row does not stop the gateway from
//! starting, and the data dir is private.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cloud::{error_code, CloudClient, SECRET_ID, SECRET_KEY};
use support::nginx::Nginx;
use support::{usersig, KEY, SDKAPPID};

use support::nginx::free_port;

struct Roomgate(std::process::Child);

impl Roomgate {
    async fn start(config: &Path, http: std::net::SocketAddr) -> Roomgate {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
            .args(["serve", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            assert!(Instant::now() < deadline, "roomgate did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Roomgate(child)
    }

    fn kill9(mut self) {
        self.0.kill().unwrap(); // SIGKILL: no shutdown code runs
        self.0.wait().unwrap();
    }
}

impl Drop for Roomgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn describe(api: &CloudClient, task: &str) -> Value {
    api.call("DescribeStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await
}

async fn anchors(http: std::net::SocketAddr) -> Vec<String> {
    let (_, body) = support::http_get(http, "/v1/rooms").await;
    let rooms: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["anchors"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["userid"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_resume_after_kill_9() {
    let nginx = Nginx::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await;
    let dir = tempfile::tempdir().unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
log = "warn"
[http]
listen = "{http}"
[rtmp]
listen = "127.0.0.1:0"
[rtc]
bind = "127.0.0.1"
udp_port = 0
tcp_port = 0
[pull]
allow_private_sources = true
[[apps]]
sdkappid = {SDKAPPID}
secret_key = "{KEY}"
[[api_keys]]
secret_id = "{SECRET_ID}"
secret_key = "{SECRET_KEY}"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let api = CloudClient::new(http);
    let gw = Roomgate::start(&config, http).await;
    let start = |room: &str, user: &str| {
        json!({"SdkAppId": SDKAPPID, "RoomId": room, "RoomIdType": 0, "UserId": user, "UserSig": usersig(user),
               "StreamUrl": nginx.url("/sample-720p30.mp4"), "RepeatNum": -1})
    };
    let r = api.call("StartStreamIngest", start("resume", "robot")).await;
    let task = r["TaskId"].as_str().expect("TaskId").to_string();
    let r = api.call("StartStreamIngest", start("ended", "robot")).await;
    let stopped = r["TaskId"].as_str().expect("TaskId").to_string();
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": stopped}))
        .await;
    assert!(error_code(&r).is_none(), "{r}");

    // Let it play past a progress save (every 2 s), then kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = describe(&api, &task).await;
        if r["PositionMs"].as_i64().unwrap_or(0) >= 4500 {
            break;
        }
        assert!(Instant::now() < deadline, "the task does not play: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(anchors(http).await, vec!["robot"]);
    gw.kill9();

    let _gw = Roomgate::start(&config, http).await;
    let r = describe(&api, &task).await;
    assert_eq!(r["Status"], "InProgress", "the task is back: {r}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while anchors(http).await != vec!["robot".to_string()] {
        assert!(Instant::now() < deadline, "the robot re-enters its room");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = describe(&api, &task).await;
    let (loops, pos) = (r["LoopsDone"].as_i64().unwrap(), r["PositionMs"].as_i64().unwrap());
    assert!(loops >= 1 || pos >= 2000, "position kept across the restart: {r}");
    let r = describe(&api, &stopped).await;
    assert_eq!(
        (r["Status"].as_str(), r["State"].as_str()),
        (Some("NotExist"), Some("stopped")),
        "{r}"
    );
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await;
    assert!(error_code(&r).is_none(), "{r}");
}

/// A source that accepts connections and never answers: a task on it stays in its connecting phase.
fn hung_source() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(8) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    (addr, t)
}

fn stored_state(gw: &support::TestGateway, task: &str) -> String {
    gw.store.task(task).unwrap().expect("task row").state
}

/// StopStreamIngest answers only once the store says the task is stopped (a crash right after the answer must not
/// resume it), even while the runner is still winding down; an Update that races it does not make it active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_stored_before_it_answers() {
    let (src, _held) = hung_source();
    let gw = support::start_gateway().await;
    let api = CloudClient::new(gw.http_addr);
    let r = api
        .call(
            "StartStreamIngest",
            json!({"SdkAppId": SDKAPPID, "RoomId": "stoproom", "RoomIdType": 0, "UserId": "robot",
                   "UserSig": usersig("robot"), "StreamUrl": format!("http://{src}/live.flv"), "RepeatNum": -1}),
        )
        .await;
    let task = r["TaskId"].as_str().expect("TaskId").to_string();
    assert_eq!(stored_state(&gw, &task), "running");
    tokio::time::sleep(Duration::from_millis(300)).await; // the runner is waiting on the source
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await;
    assert!(error_code(&r).is_none(), "{r}");
    assert_eq!(stored_state(&gw, &task), "stopped", "stored before the answer");
    let r = api
        .call(
            "UpdateStreamIngest",
            json!({"SdkAppId": SDKAPPID, "TaskId": task, "IsPause": false}),
        )
        .await;
    assert_eq!(
        stored_state(&gw, &task),
        "stopped",
        "an Update after Stop does not make the task active in the store: {r}"
    );
}

/// Rows nobody can resume (a spec that is not JSON, an unknown state) are marked failed with a log line; the
/// gateway still starts and resumes the good task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_task_row_is_marked_failed_and_the_others_resume() {
    let nginx = Nginx::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await;
    let gw = support::start_gateway().await;
    let api = CloudClient::new(gw.http_addr);
    let r = api
        .call(
            "StartStreamIngest",
            json!({"SdkAppId": SDKAPPID, "RoomId": "corrupt", "RoomIdType": 0, "UserId": "robot",
                   "UserSig": usersig("robot"), "StreamUrl": nginx.url("/sample-720p30.mp4"), "RepeatNum": -1}),
        )
        .await;
    let good = r["TaskId"].as_str().expect("TaskId").to_string();
    assert!(gw
        .wait_anchor("corrupt", "robot", Duration::from_secs(15))
        .await
        .is_some());
    let dir = gw.stop(); // tasks suspended: still running in the store
    {
        let db = rusqlite::Connection::open(dir.path().join("roomgate.db")).unwrap();
        let spec: String = db
            .query_row("SELECT spec FROM pull_tasks WHERE task_id = ?1", [&good], |r| r.get(0))
            .unwrap();
        let other_user = spec.replace("\"robot\"", "\"robot2\"");
        db.execute(
            "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, created_at_ms, updated_at_ms)
             VALUES ('corrupt-json', ?1, '{\"SdkAppId\": oops', 'running', 1, 1),
                    ('corrupt-state', ?1, ?2, 'zombie', 2, 2)",
            rusqlite::params![SDKAPPID as i64, other_user],
        )
        .unwrap();
    }
    let gw = support::start_gateway_in(dir, |_| {}).await;
    let api = CloudClient::new(gw.http_addr);
    assert!(
        gw.wait_anchor("corrupt", "robot", Duration::from_secs(15))
            .await
            .is_some(),
        "the good task resumes"
    );
    assert_eq!(describe(&api, &good).await["Status"], "InProgress");
    for bad in ["corrupt-json", "corrupt-state"] {
        let r = describe(&api, bad).await;
        assert_eq!(
            (r["Status"].as_str(), r["State"].as_str(), r["Failed"].as_bool()),
            (Some("NotExist"), Some("failed"), Some(true)),
            "{bad}: {r}"
        );
        let row = gw.store.task(bad).unwrap().unwrap();
        assert_eq!(row.state, "failed", "{bad}");
        assert!(row.reason.contains("unreadable"), "{bad}: {}", row.reason);
    }
    assert!(
        gw.wait_anchor("corrupt", "robot2", Duration::from_millis(500))
            .await
            .is_none(),
        "the row with an unknown state is not resumed"
    );
}

/// The data dir is created with mode 0700, the database files are not readable by others.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("state/roomgate");
    let d = data.clone();
    let gw = support::start_gateway_with(move |c| c.data_dir = d).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{:o}", mode(&data)), "700");
    for f in ["roomgate.db", "roomgate.db-wal", "roomgate.db-shm"] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{f}: {:o}", mode(&p));
        }
    }
    assert!(data.join("roomgate.db").exists());
    drop(gw);
}

/// At start the gateway deletes delivered callbacks and ended tasks older than their retention, and keeps pending
/// and failed callbacks and active or recent tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_delivered_callbacks_and_ended_tasks_are_pruned_at_start() {
    let dir = support::start_gateway().await.stop();
    let day: i64 = 86_400_000;
    let now = roomgate::store::now_ms();
    {
        let db = rusqlite::Connection::open(dir.path().join("roomgate.db")).unwrap();
        for (event_id, status, delivered_ago) in [
            ("old-delivered", "delivered", Some(8 * day)),
            ("new-delivered", "delivered", Some(6 * day)),
            ("old-pending", "pending", None),
            ("old-failed", "failed", None),
        ] {
            db.execute(
                "INSERT INTO callbacks (event_id, sdkappid, order_key, event_type, body, status, created_ms,
                                        delivered_ms)
                 VALUES (?1, 7, 'k', 103, x'7b7d', ?2, ?3, ?4)",
                rusqlite::params![event_id, status, now - 9 * day, delivered_ago.map(|a| now - a)],
            )
            .unwrap();
        }
        for (task, state, ago) in [("old-stopped", "stopped", 31 * day), ("new-failed", "failed", 29 * day)] {
            db.execute(
                "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, created_at_ms, updated_at_ms)
                 VALUES (?1, 7, '{}', ?2, ?3, ?3)",
                rusqlite::params![task, state, now - ago],
            )
            .unwrap();
        }
    }
    let gw = support::start_gateway_in(dir, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = |gw: &support::TestGateway| -> Vec<String> {
        let mut ids: Vec<String> = gw
            .store
            .callbacks(None, 100)
            .unwrap()
            .into_iter()
            .map(|c| c.event_id)
            .collect();
        ids.sort();
        ids
    };
    while gw.store.task("old-stopped").unwrap().is_some() || left(&gw).contains(&"old-delivered".to_string()) {
        assert!(Instant::now() < deadline, "not pruned at start: {:?}", left(&gw));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left(&gw), ["new-delivered", "old-failed", "old-pending"]);
    assert!(
        gw.store.task("new-failed").unwrap().is_some(),
        "ended within 30 days: kept"
    );
}
