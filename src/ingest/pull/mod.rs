//! Pull tasks (TRTC StartStreamIngest): a robot anchor that plays an online source (HTTP/HTTPS/HLS/RTMP; FLV, MP4,
//! MPEG-TS, MOV, MKV, MP3, M4A) into a room in real time.
//!
//! `PullService` owns the tasks: it validates what the Cloud API cannot (identity collisions, capacity), persists
//! each task in the `Store` before it starts, runs each on its own thread (`runner`: libav blocks) and resumes the
//! active ones after a restart. Everything that happens to a task is reported through one place, `IngestEvent`
//! observers (the callbacks module turns them into 701/702).

mod control;
mod direct;
mod env;
mod open;
mod pacer;
pub mod policy;
pub mod proxy;
mod pump;
pub mod rtsp;
mod runner;
pub mod source;
mod task;

use crate::config::Config;
use crate::room::RoomHub;
use crate::store::{now_ms, Store, StoreError, TaskRecord};
use env::{RunnerEnv, SourceAccess, TaskEvents};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
pub(crate) use task::new_task_id;
use task::{new_task, unreadable_spec};

pub use source::SourceError;
pub use task::{
    AudioEncodeParams, IngestTask, SourceInfo, TaskSpec, TaskState, TaskStatus, TaskUpdate, VideoEncodeParams,
};

/// What happened to a task; the single place the 701/702 callbacks hook into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEventKind {
    /// The source is open and media flows (701, Status 0).
    Started,
    /// The source failed; another attempt follows (701, Status 2).
    Restarting {
        /// Which retry this is, from 1; the count starts over after a source that played a while (runner's schedule).
        attempt: u32,
        /// Why the source failed.
        reason: String,
    },
    /// Every attempt failed; the task ended (701, Status 1).
    Failed {
        /// Why the last attempt failed (or the runner's own failure); also stored as the task's reason.
        reason: String,
    },
    /// The task ended: played out, stopped, idle or replaced (702, Status 0).
    Stopped {
        /// How it ended, e.g. `stopped by StopStreamIngest` or `MaxDuration reached`.
        reason: String,
    },
}

/// Something that happened to one task, when; what the callbacks and the dashboard hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestEvent {
    /// The task's app.
    pub sdkappid: u64,
    /// The task's id.
    pub task_id: String,
    /// What happened.
    pub kind: IngestEventKind,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
}

/// The reason stored for a task ended by StopStreamIngest.
const STOPPED_BY_API: &str = "stopped by StopStreamIngest";

/// Why the API refused an action on tasks.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The task's robot user id already ingests into the room (TRTC's TaskExist); carries the user id.
    #[error("the robot {0} is already ingesting into this room")]
    TaskExist(String),
    /// No such task (for UpdateStreamIngest: no running one).
    #[error("no such task")]
    TaskNotExist,
    /// The task is in the store but has ended: it cannot be stopped or updated.
    #[error("the task has already ended")]
    TaskFinished,
    /// `pull.max_tasks` tasks run already; carries how many.
    #[error("{0} tasks are running, the configured maximum")]
    RestrictedConcurrency(usize),
    /// The source URL is refused (syntax, scheme, address policy) or fails its pre-flight.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The store refused to read or write the task.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Owns every pull task of the gateway.
pub struct PullService {
    /// What runners see of the gateway (shared with every runner thread).
    env: Arc<RunnerEnv>,
    tasks: Mutex<HashMap<String, Arc<IngestTask>>>,
    /// Serializes UpdateStreamIngest (store, then apply).
    updating: tokio::sync::Mutex<()>,
}

impl PullService {
    /// Must be called inside the tokio runtime (runner threads use its handle for network pre-flights).
    pub fn new(hub: Arc<RoomHub>, config: Arc<Config>, store: Arc<Store>) -> Arc<PullService> {
        Arc::new(PullService {
            env: Arc::new(RunnerEnv {
                hub,
                store,
                events: TaskEvents::default(),
                sources: SourceAccess::new(&config),
                config,
            }),
            tasks: Mutex::default(),
            updating: Default::default(),
        })
    }

    /// Receive every task event from now on.
    pub fn observe(&self) -> tokio::sync::mpsc::UnboundedReceiver<IngestEvent> {
        self.env.events.observe()
    }

    /// Start a task (the spec is validated by the caller). Returns its id.
    pub async fn start(self: &Arc<Self>, spec: TaskSpec) -> Result<String, PullError> {
        self.start_as(new_task_id(), spec).await
    }

    /// `start`, with an id chosen elsewhere (a cluster node that placed the task here).
    pub async fn start_as(self: &Arc<Self>, id: String, spec: TaskSpec) -> Result<String, PullError> {
        if !task::is_task_id(&id) {
            return Err(PullError::TaskNotExist);
        }
        self.check_source(&spec).await?;
        let task = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            if tasks.len() >= self.env.config.pull.max_tasks {
                return Err(PullError::RestrictedConcurrency(tasks.len()));
            }
            if tasks.values().any(|t| t.spec().identity() == spec.identity()) {
                return Err(PullError::TaskExist(spec.user_id.clone()));
            }
            let task = Arc::new(new_task(id.clone(), spec.clone(), now_ms(), 0, 0, 0));
            tasks.insert(id.clone(), task.clone());
            task
        };
        let record = stored_record(&task, spec.seek_second.max(0) * 1000);
        let store = self.env.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.insert_task(&record))
            .await
            .expect("store task");
        if let Err(e) = stored {
            self.tasks.lock().expect("tasks lock").remove(&id);
            return Err(e.into());
        }
        tracing::info!(task = %id, sdkappid = spec.sdk_app_id, room = %spec.room_id, userid = %spec.user_id,
            url = %redact(&spec.stream_url), "pull task started");
        self.spawn_runner(task, spec.seek_second.max(0) * 1000);
        Ok(id)
    }

    fn spawn_runner(self: &Arc<Self>, task: Arc<IngestTask>, start_position_ms: i64) {
        let service = self.clone();
        let env = self.env.clone();
        std::thread::Builder::new()
            .name(format!("pull-{}", &task.id[..8]))
            .spawn(move || {
                // A bug in a runner (ours, or a library's panic) ends its task as failed, so the task frees its
                // slot and its TaskExist entry instead of lingering as a zombie; the anchor left on unwind.
                let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runner::run(&env, &task, start_position_ms)
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(task = %task.id, panic = %what, "pull runner panicked; the task ends as failed");
                    metrics::counter!("roomgate_pull_runner_panics_total").increment(1);
                    (TaskState::Failed, "internal error in the pull runner".to_string())
                });
                service.finish(&task, end);
            })
            .expect("spawning a thread");
    }

    /// Record how a task ended, tell observers, forget it.
    fn finish(&self, task: &Arc<IngestTask>, (state, reason): (TaskState, String)) {
        if task.control.snapshot().suspended {
            tracing::info!(task = %task.id, "pull task suspended for shutdown; it resumes on the next start");
            self.tasks.lock().expect("tasks lock").remove(&task.id);
            return;
        }
        task.set_status(|s| {
            s.state = state;
            s.reason = reason.clone();
        });
        if let Err(e) = self.env.store.update_state(&task.id, state.stored(), &reason) {
            tracing::error!(task = %task.id, error = %e, "cannot record the end of a task");
        }
        let kind = match state {
            TaskState::Failed => IngestEventKind::Failed { reason: reason.clone() },
            _ => IngestEventKind::Stopped { reason: reason.clone() },
        };
        tracing::info!(task = %task.id, state = ?state, reason = %reason, "pull task ended");
        self.env.events.emit(task, kind);
        self.tasks.lock().expect("tasks lock").remove(&task.id);
        metrics::counter!("roomgate_pull_tasks_ended_total", "state" => state.stored()).increment(1);
    }

    /// Stop a running task. It leaves its room at once (a hung source is interrupted). The store says `stopped`
    /// before this returns, so a crash right after the answer does not resume the task; if that write fails, the
    /// task goes on and the error is returned. A task already stopped is finished (`TaskFinished`), even while its
    /// runner is still winding down.
    pub async fn stop(&self, task_id: &str) -> Result<(), PullError> {
        let task = self.tasks.lock().expect("tasks lock").get(task_id).cloned();
        match task {
            Some(t) if t.control.snapshot().stopped_by_api() => Err(PullError::TaskFinished),
            Some(t) => {
                let store = self.env.store.clone();
                let id = t.id.clone();
                tokio::task::spawn_blocking(move || store.stop_task(&id, STOPPED_BY_API))
                    .await
                    .expect("store task")?;
                t.control.update(|d| d.stop = true);
                Ok(())
            }
            None => match self.stored(task_id).await? {
                Some(_) => Err(PullError::TaskFinished),
                None => Err(PullError::TaskNotExist),
            },
        }
    }

    async fn stored(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let store = self.env.store.clone();
        let id = task_id.to_string();
        tokio::task::spawn_blocking(move || store.task(&id))
            .await
            .expect("store task")
    }

    /// A running task's spec and status, or the stored record of an ended one.
    pub async fn describe(&self, task_id: &str) -> Result<Option<(TaskSpec, TaskStatus)>, PullError> {
        if let Some(t) = self.tasks.lock().expect("tasks lock").get(task_id).cloned() {
            return Ok(Some((t.spec(), t.status())));
        }
        let Some(rec) = self.stored(task_id).await? else {
            return Ok(None);
        };
        let Ok(spec) = serde_json::from_value::<TaskSpec>(rec.spec) else {
            // An unreadable row (marked failed at start): what the store still knows.
            return Ok(Some((
                unreadable_spec(rec.sdkappid),
                TaskStatus {
                    state: TaskState::Failed,
                    reason: rec.reason,
                    loops_done: rec.loops_done,
                    position_ms: rec.position_ms,
                    restarts: rec.restarts,
                    source: None,
                },
            )));
        };
        let state = match rec.state.as_str() {
            "failed" => TaskState::Failed,
            "stopped" => TaskState::Stopped,
            "finished" => TaskState::Finished,
            // Active in the store but not running here: it is about to resume (or resuming failed).
            _ => TaskState::Connecting,
        };
        Ok(Some((
            spec,
            TaskStatus {
                state,
                reason: rec.reason,
                loops_done: rec.loops_done,
                position_ms: rec.position_ms,
                restarts: rec.restarts,
                source: None,
            },
        )))
    }

    /// Change a running task (UpdateStreamIngest). The new spec is stored first and applied to the running task
    /// only once the store has it (so what runs is never ahead of what a restart resumes); a task that the store
    /// says has ended (a Stop raced this) is not changed.
    pub async fn update(&self, task_id: &str, update: TaskUpdate) -> Result<TaskSpec, PullError> {
        let task = self
            .tasks
            .lock()
            .expect("tasks lock")
            .get(task_id)
            .cloned()
            .ok_or(PullError::TaskNotExist)?;
        if let Some(url) = &update.stream_url {
            let parsed = source::parse_source_url(url)?;
            source::check_destination(&parsed, &self.env.sources.policy(false)).await?;
        }
        // One update at a time, so two cannot store specs in one order and apply them in the other.
        let _one_at_a_time = self.updating.lock().await;
        let mut spec = task.spec();
        update.apply_to(&mut spec);
        let store = self.env.store.clone();
        let (id, value) = (task.id.clone(), serde_json::to_value(&spec).expect("spec serializes"));
        let state = if spec.is_pause { "paused" } else { "running" };
        let active = tokio::task::spawn_blocking(move || store.update_active_task(&id, &value, state))
            .await
            .expect("store task")?;
        if !active {
            return Err(PullError::TaskFinished);
        }
        {
            let mut running = task.spec.lock().expect("spec lock");
            update.apply_to(&mut running);
            task.control.update(|d| {
                if update.stream_url.is_some() {
                    d.url_generation += 1;
                }
                d.volume = running.volume;
                d.tempo = running.tempo;
                d.paused = running.is_pause;
            });
        }
        Ok(spec)
    }

    /// Running tasks, oldest first.
    pub fn list(&self) -> Vec<Arc<IngestTask>> {
        let mut v: Vec<_> = self.tasks.lock().expect("tasks lock").values().cloned().collect();
        v.sort_by_key(|t| t.created_at_ms);
        v
    }

    /// Whether the task runs here now.
    pub fn running(&self, task_id: &str) -> bool {
        self.tasks.lock().expect("tasks lock").contains_key(task_id)
    }

    /// Run here a task that ran on another node (cluster failover): stored as this node's, announced with a 701
    /// Status 2 carrying `why` (then Status 0 once its source plays again, as after a restart), resumed at
    /// `status.position_ms` with its loops and restarts counted on.
    pub async fn adopt(
        self: &Arc<Self>,
        id: String,
        spec: TaskSpec,
        created_at_ms: i64,
        status: TaskStatus,
        why: String,
    ) -> Result<(), PullError> {
        if !task::is_task_id(&id) {
            return Err(PullError::TaskNotExist);
        }
        let task = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            if tasks.contains_key(&id) {
                return Ok(());
            }
            if tasks.len() >= self.env.config.pull.max_tasks {
                return Err(PullError::RestrictedConcurrency(tasks.len()));
            }
            if tasks.values().any(|t| t.spec().identity() == spec.identity()) {
                return Err(PullError::TaskExist(spec.user_id.clone()));
            }
            let (loops, position, restarts) = (status.loops_done, status.position_ms, status.restarts + 1);
            let task = Arc::new(new_task(
                id.clone(),
                spec.clone(),
                created_at_ms,
                loops,
                position,
                restarts,
            ));
            tasks.insert(id.clone(), task.clone());
            task
        };
        let record = stored_record(&task, status.position_ms);
        let store = self.env.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.put_task(&record))
            .await
            .expect("store task");
        if let Err(e) = stored {
            self.tasks.lock().expect("tasks lock").remove(&id);
            return Err(e.into());
        }
        tracing::info!(task = %id, position_ms = status.position_ms, reason = %why, "pull task taken over from another node");
        self.env.events.emit(
            &task,
            IngestEventKind::Restarting {
                attempt: 1,
                reason: why,
            },
        );
        self.spawn_runner(task, status.position_ms);
        Ok(())
    }

    /// Resume every task the store says was running or paused (after a restart or crash). A row that cannot be
    /// resumed (unreadable spec, unknown state) is marked failed with a log line; it never stops the others.
    pub fn resume_all(self: &Arc<Self>) -> Result<usize, PullError> {
        let rows = self.env.store.resumable_tasks()?;
        let mut n = 0;
        for row in rows {
            let rec = match row {
                Ok(rec) => rec,
                Err(bad) => {
                    self.mark_unreadable(&bad.task_id, &bad.why);
                    continue;
                }
            };
            let spec: TaskSpec = match serde_json::from_value(rec.spec.clone()) {
                Ok(s) => s,
                Err(e) => {
                    self.mark_unreadable(&rec.task_id, &e.to_string());
                    continue;
                }
            };
            let task = Arc::new(new_task(
                rec.task_id.clone(),
                spec,
                rec.created_at_ms,
                rec.loops_done,
                rec.position_ms,
                rec.restarts,
            ));
            self.tasks
                .lock()
                .expect("tasks lock")
                .insert(rec.task_id.clone(), task.clone());
            tracing::info!(task = %rec.task_id, loops_done = rec.loops_done, position_ms = rec.position_ms,
                "resuming pull task after restart");
            self.spawn_runner(task, rec.position_ms);
            n += 1;
        }
        Ok(n)
    }

    fn mark_unreadable(&self, task_id: &str, why: &str) {
        tracing::error!(task = %task_id, error = %why, "stored task is unreadable; marking it failed");
        if let Err(e) = self
            .env
            .store
            .update_state(task_id, "failed", &format!("unreadable after restart: {why}"))
        {
            tracing::error!(task = %task_id, error = %e, "cannot mark an unreadable task failed");
        }
    }

    /// Stop running `task_id` here without ending it (no 702, the store untouched): another node of the cluster
    /// runs it now.
    pub fn hand_over(&self, task_id: &str) {
        if let Some(t) = self.tasks.lock().expect("tasks lock").get(task_id) {
            tracing::warn!(task = %task_id, "another node holds this task now; it stops here");
            t.control.update(|d| {
                d.suspended = true;
                d.stop = true;
            });
        }
    }

    /// Whether the task's source URL passes the address policy (what `start` checks first), without starting it.
    pub async fn check_source(&self, spec: &TaskSpec) -> Result<(), PullError> {
        let url = source::parse_source_url(&spec.stream_url)?;
        source::check_destination(&url, &self.env.sources.policy(spec.trusted_source)).await?;
        Ok(())
    }

    /// Stop every task without recording it as stopped (process shutdown: they resume on the next start).
    pub fn shutdown(&self) {
        for t in self.tasks.lock().expect("tasks lock").values() {
            t.control.update(|d| {
                d.suspended = true;
                d.stop = true;
            });
        }
    }
}

/// The store's row for a task that runs from now on, at `position_ms`.
fn stored_record(task: &IngestTask, position_ms: i64) -> TaskRecord {
    let (spec, status) = (task.spec(), task.status());
    TaskRecord {
        task_id: task.id.clone(),
        sdkappid: spec.sdk_app_id,
        spec: serde_json::to_value(&spec).expect("spec serializes"),
        state: if spec.is_pause { "paused" } else { "running" }.into(),
        reason: String::new(),
        loops_done: status.loops_done,
        position_ms,
        restarts: status.restarts,
        created_at_ms: task.created_at_ms,
        updated_at_ms: now_ms(),
    }
}

/// A URL for the log and for callers without its userinfo, query or fragment (signed URLs carry credentials
/// there).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => source::redact(&u),
        Err(_) => "<invalid url>".into(),
    }
}
