//! `Store`: roomgate's durable state in one SQLite file in the data dir (`roomgate.db`).
//!
//! It holds what must survive a restart, even a `kill -9`: pull tasks (so running ones resume) and, later, the
//! callback outbox. SQLite runs in WAL mode with `synchronous=NORMAL`: a committed write survives a process crash.
//! Every call blocks for a short write; async callers go through `spawn_blocking`.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The persisted part of a pull task: what it was asked to do (`spec`, JSON of the task's parameters) and how far
/// it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub sdkappid: u64,
    pub spec: serde_json::Value,
    /// `running`, `paused`, `finished`, `failed` or `stopped`.
    pub state: String,
    pub reason: String,
    /// Loops completed (RepeatNum counts them).
    pub loops_done: i64,
    /// Position in the source of the current loop, ms.
    pub position_ms: i64,
    pub restarts: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl TaskRecord {
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused")
    }
}

/// The SQLite database. Cheap to share (`Arc<Store>`); one connection behind a mutex is plenty for the write rate
/// here (a few rows per second).
pub struct Store {
    conn: Mutex<rusqlite::Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pull_tasks (
    task_id       TEXT PRIMARY KEY,
    sdkappid      INTEGER NOT NULL,
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    loops_done    INTEGER NOT NULL DEFAULT 0,
    position_ms   INTEGER NOT NULL DEFAULT 0,
    restarts      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pull_tasks_state ON pull_tasks(state);
";

impl Store {
    /// Open (creating if needed) `roomgate.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open_file(&data_dir.join("roomgate.db"))
    }

    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, reason, loops_done, position_ms, restarts,
                                     created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                t.task_id,
                t.sdkappid as i64,
                serde_json::to_string(&t.spec)?,
                t.state,
                t.reason,
                t.loops_done,
                t.position_ms,
                t.restarts,
                t.created_at_ms,
                t.updated_at_ms
            ],
        )?;
        Ok(())
    }

    /// Save progress of a running task.
    pub fn update_progress(
        &self,
        task_id: &str,
        loops_done: i64,
        position_ms: i64,
        restarts: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pull_tasks SET loops_done = ?2, position_ms = ?3, restarts = ?4, updated_at_ms = ?5
             WHERE task_id = ?1",
            rusqlite::params![task_id, loops_done, position_ms, restarts, now_ms()],
        )?;
        Ok(())
    }

    pub fn update_state(&self, task_id: &str, state: &str, reason: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pull_tasks SET state = ?2, reason = ?3, updated_at_ms = ?4 WHERE task_id = ?1",
            rusqlite::params![task_id, state, reason, now_ms()],
        )?;
        Ok(())
    }

    pub fn update_spec(&self, task_id: &str, spec: &serde_json::Value) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pull_tasks SET spec = ?2, updated_at_ms = ?3 WHERE task_id = ?1",
            rusqlite::params![task_id, serde_json::to_string(spec)?, now_ms()],
        )?;
        Ok(())
    }

    pub fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_TASK} WHERE task_id = ?1"))?;
        let mut rows = stmt.query_map([task_id], row_to_task)?;
        rows.next().transpose()?.map(finish_task).transpose()
    }

    /// Tasks that were running or paused (to resume after a restart), oldest first.
    pub fn active_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_TASK} WHERE state IN ('running', 'paused') ORDER BY created_at_ms"
        ))?;
        let rows = stmt.query_map([], row_to_task)?;
        rows.map(|r| finish_task(r?)).collect()
    }

    /// The most recent tasks, newest first.
    pub fn recent_tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_TASK} ORDER BY created_at_ms DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], row_to_task)?;
        rows.map(|r| finish_task(r?)).collect()
    }
}

const SELECT_TASK: &str = "SELECT task_id, sdkappid, spec, state, reason, loops_done, position_ms, restarts,
                                  created_at_ms, updated_at_ms FROM pull_tasks";

/// A row with the spec still as text (parsed outside rusqlite so a bad spec is a `Corrupt` error).
type RawTask = (TaskRecord, String);

fn row_to_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawTask> {
    Ok((
        TaskRecord {
            task_id: row.get(0)?,
            sdkappid: row.get::<_, i64>(1)? as u64,
            spec: serde_json::Value::Null,
            state: row.get(3)?,
            reason: row.get(4)?,
            loops_done: row.get(5)?,
            position_ms: row.get(6)?,
            restarts: row.get(7)?,
            created_at_ms: row.get(8)?,
            updated_at_ms: row.get(9)?,
        },
        row.get(2)?,
    ))
}

fn finish_task((mut t, spec): RawTask) -> Result<TaskRecord, StoreError> {
    t.spec = serde_json::from_str(&spec)?;
    Ok(t)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
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
}
