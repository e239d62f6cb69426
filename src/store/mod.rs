//! `Store`: roomgate's durable state in one SQLite file in the data dir (`roomgate.db`).
//!
//! It holds what must survive a restart, even a `kill -9`: pull tasks (so running ones resume) and, later, the
//! callback outbox. SQLite runs in WAL mode with `synchronous=NORMAL`: a committed write survives a process crash.
//! Every call blocks for a short write; async callers go through `spawn_blocking`.
//!
//! The data dir is created with mode 0700 and the database files with 0600: they hold callback bodies and task
//! source URLs (which may carry credentials). `retention` prunes what is no longer needed.

pub mod retention;

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

/// Why the store cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused the statement (busy, disk full, read-only, corrupt file...).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data dir or a database file (`path`) cannot be created or made private.
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        /// The data dir (`Store::open`) or the database file (`Store::open_file`), as displayed.
        path: String,
        /// The I/O error from creating it or setting its private mode.
        source: std::io::Error,
    },
    /// A stored task spec is not valid JSON.
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The persisted part of a pull task: what it was asked to do (`spec`, JSON of the task's parameters) and how far
/// it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task id (TRTC's TaskId).
    pub task_id: String,
    /// The app the task publishes in.
    pub sdkappid: u64,
    /// The task's `TaskSpec` as JSON (PascalCase, as StartStreamIngest names the fields).
    pub spec: serde_json::Value,
    /// `running`, `paused`, `finished`, `failed` or `stopped`.
    pub state: String,
    /// Why the task ended; empty while it runs.
    pub reason: String,
    /// Loops completed (RepeatNum counts them).
    pub loops_done: i64,
    /// Position in the source of the current loop, ms.
    pub position_ms: i64,
    /// Times the source broke and was opened again.
    pub restarts: i64,
    /// When the task was started, Unix ms.
    pub created_at_ms: i64,
    /// When the row last changed, Unix ms (ended-task retention counts from it).
    pub updated_at_ms: i64,
}

impl TaskRecord {
    /// True while the task is `running` or `paused`.
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
CREATE TABLE IF NOT EXISTS callbacks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sdkappid      INTEGER NOT NULL,
    order_key     TEXT NOT NULL,
    event_type    INTEGER NOT NULL,
    body          BLOB NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_try_ms  INTEGER,
    last_error    TEXT NOT NULL DEFAULT '',
    created_ms    INTEGER NOT NULL,
    delivered_ms  INTEGER,
    event_id      TEXT
);
CREATE INDEX IF NOT EXISTS callbacks_status ON callbacks(status, id);
";

/// Brings a database made by an older roomgate up to `SCHEMA` (columns added later), idempotently.
fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let has_event_id = conn
        .prepare("SELECT 1 FROM pragma_table_info('callbacks') WHERE name = 'event_id'")?
        .exists([])?;
    if !has_event_id {
        conn.execute_batch("ALTER TABLE callbacks ADD COLUMN event_id TEXT;")?;
    }
    // Rows from before event ids get one now; it stays theirs from then on.
    conn.execute_batch(
        "UPDATE callbacks SET event_id = lower(hex(randomblob(16))) WHERE event_id IS NULL;
         CREATE UNIQUE INDEX IF NOT EXISTS callbacks_event_id ON callbacks(event_id);
         CREATE INDEX IF NOT EXISTS pull_tasks_updated ON pull_tasks(state, updated_at_ms);",
    )?;
    Ok(())
}

/// One event callback in the outbox: stored before its first delivery attempt, kept after it ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallbackRecord {
    /// Row id; 0 while the callback is only in memory (the store refused it, see `events::outbox`).
    pub id: i64,
    /// Sent as `X-Roomgate-Event-Id` on every attempt, so receivers can drop duplicates. Made before the first
    /// write and stored with the row: the same across retries and restarts.
    pub event_id: String,
    /// The app whose callback URL receives it.
    pub sdkappid: u64,
    /// Events with the same key are delivered in order (one anchor's, one task's).
    pub order_key: String,
    /// TRTC event type (101-104, 201-204, 701/702).
    pub event_type: u32,
    /// The exact bytes sent (and signed).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// `pending`, `delivered` or `failed` (retry window over).
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the first attempt was made, Unix ms; `None` before it (the retry window counts from it).
    pub first_try_ms: Option<i64>,
    /// Error of the latest failed attempt; empty when none failed.
    pub last_error: String,
    /// When the event was made, Unix ms.
    pub created_ms: i64,
    /// When a receiver answered HTTP 200, Unix ms; `None` until then.
    pub delivered_ms: Option<i64>,
}

impl CallbackRecord {
    /// A new pending callback (not stored yet) with a fresh event id.
    pub fn pending(sdkappid: u64, order_key: &str, event_type: u32, body: &[u8], created_ms: i64) -> CallbackRecord {
        CallbackRecord {
            id: 0,
            event_id: new_event_id(),
            sdkappid,
            order_key: order_key.to_string(),
            event_type,
            body: body.to_vec(),
            status: "pending".into(),
            attempts: 0,
            first_try_ms: None,
            last_error: String::new(),
            created_ms,
            delivered_ms: None,
        }
    }
}

/// A random (version 4) UUID, lower-case hyphenated.
pub fn new_event_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

const SELECT_CALLBACK: &str = "SELECT id, sdkappid, order_key, event_type, body, status, attempts, first_try_ms,
                                      last_error, created_ms, delivered_ms, event_id FROM callbacks";

fn row_to_callback(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallbackRecord> {
    Ok(CallbackRecord {
        id: row.get(0)?,
        sdkappid: row.get::<_, i64>(1)? as u64,
        order_key: row.get(2)?,
        event_type: row.get::<_, i64>(3)? as u32,
        body: row.get(4)?,
        status: row.get(5)?,
        attempts: row.get::<_, i64>(6)? as u32,
        first_try_ms: row.get(7)?,
        last_error: row.get(8)?,
        created_ms: row.get(9)?,
        delivered_ms: row.get(10)?,
        event_id: row.get(11)?,
    })
}

impl Store {
    /// Store a new pending callback; returns it with its id.
    pub fn insert_callback(
        &self,
        sdkappid: u64,
        order_key: &str,
        event_type: u32,
        body: &[u8],
    ) -> Result<CallbackRecord, StoreError> {
        let mut rec = CallbackRecord::pending(sdkappid, order_key, event_type, body, now_ms());
        rec.id = self.save_callback(&rec)?;
        Ok(rec)
    }

    /// Write `rec` as it is now: insert it (the first time its event id is seen) or update its delivery state
    /// (status, attempts, first try, last error, delivered time). Returns its row id.
    pub fn save_callback(&self, rec: &CallbackRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "INSERT INTO callbacks (event_id, sdkappid, order_key, event_type, body, status, attempts, first_try_ms,
                                    last_error, created_ms, delivered_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(event_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                 first_try_ms = excluded.first_try_ms, last_error = excluded.last_error,
                 delivered_ms = excluded.delivered_ms
             RETURNING id",
        )?;
        let id = stmt.query_row(
            rusqlite::params![
                rec.event_id,
                rec.sdkappid as i64,
                rec.order_key,
                rec.event_type as i64,
                rec.body,
                rec.status,
                rec.attempts as i64,
                rec.first_try_ms,
                rec.last_error,
                rec.created_ms,
                rec.delivered_ms
            ],
            |row| row.get(0),
        )?;
        Ok(id)
    }

    /// Delete delivered callbacks delivered before `before_ms`; pending and failed ones are never deleted.
    /// Returns how many.
    pub fn prune_callbacks(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM callbacks WHERE status = 'delivered' AND delivered_ms < ?1",
            [before_ms],
        )?)
    }

    /// Make a failed callback pending again with a fresh retry window; `None` unless it was failed.
    pub fn callback_retry(&self, id: i64) -> Result<Option<CallbackRecord>, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE callbacks SET status = 'pending', first_try_ms = NULL, attempts = 0
             WHERE id = ?1 AND status = 'failed'",
            [id],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let mut stmt = conn.prepare_cached(&format!("{SELECT_CALLBACK} WHERE id = ?1"))?;
        let mut rows = stmt.query_map([id], row_to_callback)?;
        Ok(rows.next().transpose()?)
    }

    /// One callback by row id; `None` when there is none.
    pub fn callback(&self, id: i64) -> Result<Option<CallbackRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_CALLBACK} WHERE id = ?1"))?;
        let mut rows = stmt.query_map([id], row_to_callback)?;
        Ok(rows.next().transpose()?)
    }

    /// Callbacks with `status` (all when `None`), newest first.
    pub fn callbacks(&self, status: Option<&str>, limit: usize) -> Result<Vec<CallbackRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_CALLBACK} WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(rusqlite::params![status, limit as i64], row_to_callback)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pending callbacks, oldest first (to resume delivery after a restart).
    pub fn pending_callbacks(&self) -> Result<Vec<CallbackRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_CALLBACK} WHERE status = 'pending' ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_callback)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Open (creating if needed) `roomgate.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open_file(&data_dir.join("roomgate.db"))
    }

    /// Open (creating if needed, mode 0600) the database file `path`.
    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        private_db_files(path).map_err(|source| StoreError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// A database in memory, with the schema; nothing survives it (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Insert a new task row; fails when its id exists.
    pub fn insert_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        self.write_task(t, "")
    }

    /// Store a task as this node's running one, whether or not a row with its id exists (a task taken over from
    /// another node that once ran here too).
    pub fn put_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        self.write_task(
            t,
            "ON CONFLICT(task_id) DO UPDATE SET spec = excluded.spec, state = excluded.state, reason = excluded.reason,
             loops_done = excluded.loops_done, position_ms = excluded.position_ms, restarts = excluded.restarts,
             updated_at_ms = excluded.updated_at_ms",
        )
    }

    fn write_task(&self, t: &TaskRecord, on_conflict: &str) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, reason, loops_done, position_ms, restarts,
                                     created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) {on_conflict}"
        );
        let spec = serde_json::to_string(&t.spec)?;
        let (id, app, state, why) = (&t.task_id, t.sdkappid as i64, &t.state, &t.reason);
        let (loops, pos, restarts, created, updated) = (
            t.loops_done,
            t.position_ms,
            t.restarts,
            t.created_at_ms,
            t.updated_at_ms,
        );
        let row = (id, app, spec, state, why, loops, pos, restarts, created, updated);
        self.conn().execute(&sql, row)?;
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

    /// Set a task's stored state and reason.
    pub fn update_state(&self, task_id: &str, state: &str, reason: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pull_tasks SET state = ?2, reason = ?3, updated_at_ms = ?4 WHERE task_id = ?1",
            rusqlite::params![task_id, state, reason, now_ms()],
        )?;
        Ok(())
    }

    /// Replace a task's stored spec; its state is left as it is.
    pub fn update_spec(&self, task_id: &str, spec: &serde_json::Value) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pull_tasks SET spec = ?2, updated_at_ms = ?3 WHERE task_id = ?1",
            rusqlite::params![task_id, serde_json::to_string(spec)?, now_ms()],
        )?;
        Ok(())
    }

    /// Record that StopStreamIngest ended a task (before the runner has wound down), so a crash right after the
    /// answer does not resume it. Only an active task changes; returns whether this one did.
    pub fn stop_task(&self, task_id: &str, reason: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE pull_tasks SET state = 'stopped', reason = ?2, updated_at_ms = ?3
             WHERE task_id = ?1 AND state IN ('running', 'paused')",
            rusqlite::params![task_id, reason, now_ms()],
        )?;
        Ok(n > 0)
    }

    /// Save an updated spec and its state (`running` or `paused`) together, only while the task is active (an
    /// update racing a Stop must not bring a stopped task back). Returns whether the task was active.
    pub fn update_active_task(&self, task_id: &str, spec: &serde_json::Value, state: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE pull_tasks SET spec = ?2, state = ?3, reason = '', updated_at_ms = ?4
             WHERE task_id = ?1 AND state IN ('running', 'paused')",
            rusqlite::params![task_id, serde_json::to_string(spec)?, state, now_ms()],
        )?;
        Ok(n > 0)
    }

    /// Delete finished, failed and stopped tasks last changed before `before_ms`. Returns how many.
    pub fn prune_tasks(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM pull_tasks WHERE state IN ('finished', 'failed', 'stopped') AND updated_at_ms < ?1",
            [before_ms],
        )?)
    }

    /// One task. A spec that is not JSON reads as `null` (the caller reports the task as unreadable) rather than
    /// failing the read.
    pub fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_TASK} WHERE task_id = ?1"))?;
        let mut rows = stmt.query_map([task_id], row_to_task)?;
        Ok(rows.next().transpose()?.map(|(mut t, spec)| {
            t.spec = serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null);
            t
        }))
    }

    /// Tasks that have not ended (to resume after a restart), oldest first. Each row is read on its own: one that
    /// cannot be (a spec that is not JSON, an unknown state, a wrong column type) is an `Err` with its task id, for
    /// the caller to mark failed, and never hides the others.
    pub fn resumable_tasks(&self) -> Result<Vec<Result<TaskRecord, UnreadableTask>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_TASK} WHERE state IS NOT 'finished' AND state IS NOT 'failed' AND state IS NOT 'stopped'
             ORDER BY created_at_ms"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let task_id = match row.get_ref(0)? {
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            let unreadable = |why: String| UnreadableTask {
                task_id: task_id.clone(),
                why,
            };
            let read = row_to_task(row)
                .map_err(|e| unreadable(e.to_string()))
                .and_then(|raw| finish_task(raw).map_err(|e| unreadable(e.to_string())))
                .and_then(|t| match t.state.as_str() {
                    "running" | "paused" => Ok(t),
                    other => Err(unreadable(format!("unknown state {other:?}"))),
                });
            out.push(read);
        }
        Ok(out)
    }

    /// Tasks that were running or paused, oldest first (unreadable rows left out; see `resumable_tasks`).
    pub fn active_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(self.resumable_tasks()?.into_iter().filter_map(Result::ok).collect())
    }

    /// The most recent tasks, newest first.
    pub fn recent_tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_TASK} ORDER BY created_at_ms DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], row_to_task)?;
        rows.map(|r| finish_task(r?)).collect()
    }
}

/// A stored task row that cannot be resumed as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableTask {
    /// The row's task id (as text, whatever its column type).
    pub task_id: String,
    /// Why it cannot be read (column type, spec JSON, unknown state).
    pub why: String,
}

/// Create `dir` (and missing parents) with mode 0700. A dir that already exists is left as it is (it may be
/// shared on purpose); a warning says when others can read it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777),
                "the data dir is readable by other users; it holds keys and callback bodies (chmod 700 it)");
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Create the database file with mode 0600 if it is missing, and take group/other access away from an existing
/// one and its `-wal`/`-shm` files (SQLite gives new `-wal`/`-shm` files the database file's mode). A file
/// we may not chmod (another owner) is left as it is, with a warning: SQLite decides whether it can be used.
#[cfg(unix)]
fn private_db_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for f in [path.as_os_str(), &wal, &shm] {
        let Ok(meta) = std::fs::metadata(f) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            // Only take access away (a file made read-only on purpose stays read-only).
            if let Err(e) = std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode & 0o700)) {
                tracing::warn!(file = %Path::new(f).display(), error = %e,
                    "the database file is readable by other users and cannot be made private");
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_db_files(_path: &Path) -> std::io::Result<()> {
    Ok(())
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
mod tests;
