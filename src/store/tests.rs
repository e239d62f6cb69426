use super::*;

fn record(id: &str) -> TaskRecord {
    TaskRecord {
        task_id: id.into(),
        sdkappid: 7,
        spec: serde_json::json!({"StreamUrl": "http://x/a.mp4"}),
        state: "running".into(),
        reason: String::new(),
        loops_done: 0,
        position_ms: 0,
        restarts: 0,
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    }
}

#[test]
fn tasks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.insert_task(&record("a")).unwrap();
        s.insert_task(&record("b")).unwrap();
        s.update_progress("a", 2, 1500, 1).unwrap();
        s.update_state("b", "failed", "connection refused").unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let active = s.active_tasks().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].loops_done, active[0].position_ms, active[0].restarts),
        (2, 1500, 1)
    );
    let b = s.task("b").unwrap().unwrap();
    assert_eq!((b.state.as_str(), b.reason.as_str()), ("failed", "connection refused"));
    assert!(!b.is_active());
    assert!(s.task("nope").unwrap().is_none());
    assert_eq!(s.recent_tasks(10).unwrap().len(), 2);
    assert!(s.insert_task(&record("a")).is_err(), "task ids are unique");
}

#[test]
fn callbacks_keep_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let event_id;
    {
        let s = Store::open(dir.path()).unwrap();
        let mut a = s.insert_callback(7, "k1", 103, b"{\"a\":1}").unwrap();
        let mut b = s.insert_callback(7, "k1", 104, b"{}").unwrap();
        assert!(b.id > a.id);
        assert_ne!(a.event_id, b.event_id);
        event_id = a.event_id.clone();
        (a.attempts, a.first_try_ms, a.last_error) = (2, Some(1000), "connection refused".into());
        assert_eq!(s.save_callback(&a).unwrap(), a.id, "an update keeps the row");
        (b.status, b.attempts, b.first_try_ms, b.delivered_ms) = ("delivered".into(), 1, Some(2000), Some(2001));
        s.save_callback(&b).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let pending = s.pending_callbacks().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].attempts, pending[0].first_try_ms), (2, Some(1000)));
    assert_eq!(pending[0].body, b"{\"a\":1}");
    assert_eq!(pending[0].event_id, event_id, "the event id survives a restart");
    let mut expired = pending[0].clone();
    expired.status = "failed".into();
    s.save_callback(&expired).unwrap();
    let failed = s.callbacks(Some("failed"), 10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error, "connection refused");
    let again = s.callback_retry(failed[0].id).unwrap().unwrap();
    assert_eq!((again.status.as_str(), again.first_try_ms), ("pending", None));
    assert_eq!(again.event_id, event_id, "a re-send is the same event");
    assert!(
        s.callback_retry(failed[0].id).unwrap().is_none(),
        "only failed ones are retried"
    );
    assert_eq!(s.callbacks(None, 10).unwrap().len(), 2);
}

#[test]
fn a_callback_first_stored_late_keeps_its_final_state() {
    let s = Store::in_memory().unwrap();
    let mut rec = CallbackRecord::pending(7, "k", 103, b"{}", 5);
    (rec.status, rec.attempts, rec.delivered_ms) = ("delivered".into(), 1, Some(9));
    let id = s.save_callback(&rec).unwrap();
    let stored = s.callback(id).unwrap().unwrap();
    assert_eq!(stored, CallbackRecord { id, ..rec });
    assert!(s.pending_callbacks().unwrap().is_empty());
}

#[test]
fn event_ids_are_uuids() {
    let id = new_event_id();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_ne!(id, new_event_id());
}

#[test]
fn old_databases_get_event_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomgate.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE callbacks (id INTEGER PRIMARY KEY AUTOINCREMENT, sdkappid INTEGER NOT NULL,
                order_key TEXT NOT NULL, event_type INTEGER NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, first_try_ms INTEGER, last_error TEXT NOT NULL DEFAULT '',
                created_ms INTEGER NOT NULL, delivered_ms INTEGER);
             INSERT INTO callbacks (sdkappid, order_key, event_type, body, status, created_ms)
                VALUES (7, 'k', 103, x'7b7d', 'pending', 1);",
        )
        .unwrap();
    }
    let first = Store::open_file(&path).unwrap().pending_callbacks().unwrap();
    assert_eq!(first.len(), 1);
    assert!(!first[0].event_id.is_empty());
    let again = Store::open_file(&path).unwrap().pending_callbacks().unwrap();
    assert_eq!(again[0].event_id, first[0].event_id, "given once, kept");
}

#[test]
fn one_unreadable_task_row_does_not_hide_the_others() {
    let s = Store::in_memory().unwrap();
    s.insert_task(&record("good")).unwrap();
    s.insert_task(&record("ended")).unwrap();
    s.update_state("ended", "stopped", "").unwrap();
    let raw = |id: &str, spec: &str, state: &str| {
        s.conn()
            .execute(
                "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, created_at_ms, updated_at_ms)
                 VALUES (?1, 7, ?2, ?3, 1, 1)",
                rusqlite::params![id, spec, state],
            )
            .unwrap();
    };
    raw("badjson", "{not json", "running");
    raw("badstate", "{}", "zombie");
    s.conn()
        .execute(
            "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, loops_done, created_at_ms, updated_at_ms)
             VALUES ('badtype', 7, '{}', 'running', 'lots', 1, 1)",
            [],
        )
        .unwrap();
    let rows = s.resumable_tasks().unwrap();
    let mut bad: Vec<String> = rows
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|u| u.task_id.clone())
        .collect();
    bad.sort();
    assert_eq!(bad, ["badjson", "badstate", "badtype"]);
    let good: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(good, ["good"]);
    assert!(rows
        .iter()
        .any(|r| matches!(r, Err(u) if u.why.contains("unknown state \"zombie\""))));
    assert_eq!(s.active_tasks().unwrap().len(), 1);
    assert_eq!(s.task("badjson").unwrap().unwrap().spec, serde_json::Value::Null);
}

#[test]
fn stop_and_update_change_only_active_tasks() {
    let s = Store::in_memory().unwrap();
    s.insert_task(&record("a")).unwrap();
    let spec = serde_json::json!({"StreamUrl": "http://x/b.mp4"});
    assert!(s.update_active_task("a", &spec, "paused").unwrap());
    assert_eq!(s.task("a").unwrap().unwrap().state, "paused");
    assert!(s.stop_task("a", "stopped by StopStreamIngest").unwrap());
    assert_eq!(s.task("a").unwrap().unwrap().state, "stopped");
    assert!(!s.stop_task("a", "again").unwrap(), "already stopped");
    assert!(
        !s.update_active_task("a", &spec, "running").unwrap(),
        "an update after Stop does not bring it back"
    );
    let a = s.task("a").unwrap().unwrap();
    assert_eq!(
        (a.state.as_str(), a.reason.as_str()),
        ("stopped", "stopped by StopStreamIngest")
    );
    s.update_state("a", "finished", "").unwrap();
    assert!(!s.stop_task("a", "late").unwrap(), "an ended task keeps how it ended");
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a/data");
    let s = Store::open(&data).unwrap();
    s.insert_task(&record("x")).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["roomgate.db", "roomgate.db-wal", "roomgate.db-shm"] {
        assert_eq!(mode(&data.join(f)) & 0o077, 0, "{f} is not readable by others");
    }
    drop(s);
    std::fs::set_permissions(data.join("roomgate.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(&data).unwrap());
    assert_eq!(mode(&data.join("roomgate.db")), 0o600, "tightened on open");
    std::fs::set_permissions(data.join("roomgate.db"), std::fs::Permissions::from_mode(0o444)).unwrap();
    drop(Store::open(&data));
    assert_eq!(mode(&data.join("roomgate.db")), 0o400, "access is only taken away");
}
