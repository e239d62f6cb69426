//! Pull tasks survive the process: the real `roomgate` binary is killed with SIGKILL mid-task and started again on
//! the same data dir; the running task resumes (position kept) and a stopped one stays ended. Also what the store
//! promises around that: Stop is stored before it answers, a corrupt task row does not stop the gateway from
//! starting, and the data dir is private.

mod support;

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::cloud::{describe, merge, start_params, start_task, stop, update, CloudClient};
use support::nginx::{free_port, Nginx};
use support::process::{roomgate_config, serve};
use support::SDKAPPID;

/// The userids of the anchors `/v1/rooms` on `http` lists.
async fn anchors(http: std::net::SocketAddr) -> Vec<String> {
    let (_, rooms) = support::get_json(http, "/v1/rooms").await;
    rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["anchors"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["userid"].as_str().map(String::from))
        .collect()
}

/// Start robot `userid`'s task looping `url` in `room` (RepeatNum -1); its TaskId.
async fn start_looping(api: &CloudClient, room: &str, userid: &str, url: &str) -> String {
    start_task(api, merge(start_params(room, userid, url), json!({"RepeatNum": -1}))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_resume_after_kill_9() {
    let nginx = Nginx::testdata().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let config = roomgate_config(dir.path(), port, 0, 0, 0, "[pull]\nallow_private_sources = true\n");
    let api = CloudClient::new(http);
    let gw = serve(&config, http).await;
    let url = nginx.url("/sample-720p30.mp4");
    let task = start_looping(&api, "resume", "robot", &url).await;
    let stopped = start_looping(&api, "ended", "robot", &url).await;
    stop(&api, &stopped).await;

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

    let _gw = serve(&config, http).await;
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
    stop(&api, &task).await;
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
    let task = start_looping(&api, "stoproom", "robot", &format!("http://{src}/live.flv")).await;
    assert_eq!(stored_state(&gw, &task), "running");
    tokio::time::sleep(Duration::from_millis(300)).await; // the runner is waiting on the source
    stop(&api, &task).await;
    assert_eq!(stored_state(&gw, &task), "stopped", "stored before the answer");
    let r = update(&api, &task, json!({"IsPause": false})).await;
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
    let nginx = Nginx::testdata().await;
    let gw = support::start_gateway().await;
    let api = CloudClient::new(gw.http_addr);
    let good = start_looping(&api, "corrupt", "robot", &nginx.url("/sample-720p30.mp4")).await;
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
