//! Pull tasks (TRTC StartStreamIngest): a robot anchor that plays an online source (HTTP/HTTPS/HLS/RTMP; FLV, MP4,
//! MPEG-TS, MOV, MKV, MP3, M4A) into a room in real time.
//!
//! `PullService` owns the tasks: it validates what the Cloud API cannot (identity collisions, capacity), persists
//! each task in the `Store` before it starts, runs each on its own thread (`runner`: libav blocks) and resumes the
//! active ones after a restart. Everything that happens to a task is reported through one place, `IngestEvent`
//! observers (the callbacks module turns them into 701/702).

pub mod policy;
pub mod proxy;
mod runner;
pub mod source;

use crate::auth::RoomRef;
use crate::config::Config;
use crate::room::RoomHub;
use crate::store::{now_ms, Store, StoreError, TaskRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use source::SourceError;

/// What a task was asked to do: the StartStreamIngest parameters after validation (stored as the task's spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    pub sdk_app_id: u64,
    pub room_id: String,
    /// 0: string room id, 1: numeric room id.
    pub room_id_type: u8,
    pub user_id: String,
    pub stream_url: String,
    #[serde(default)]
    pub seek_second: i64,
    /// Loops to play; -1 plays until stopped (or MaxDuration).
    pub repeat_num: i64,
    /// Minutes; applies when `repeat_num == -1`.
    #[serde(default)]
    pub max_duration: Option<i64>,
    /// Gain in percent.
    pub volume: u32,
    pub tempo: f64,
    /// Seconds without data before the task ends by itself; `None`: a stall counts as a break (retried).
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    #[serde(default)]
    pub is_pause: bool,
    #[serde(default)]
    pub enable_progress: bool,
    #[serde(default)]
    pub video_encode_params: Option<VideoEncodeParams>,
    #[serde(default)]
    pub audio_encode_params: Option<AudioEncodeParams>,
    /// A source the gateway itself chose (the demo task): exempt from the private-address policy. Never set
    /// from the API, and cleared when UpdateStreamIngest gives the task another URL.
    #[serde(default)]
    pub trusted_source: bool,
}

/// Deprecated TRTC output settings for video, still honoured: set any and the video is re-encoded with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct VideoEncodeParams {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// kbit/s
    pub bit_rate: u32,
    /// seconds
    pub gop: u32,
}

/// Deprecated TRTC output settings for audio, still honoured (output is always Opus at 48 kHz).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AudioEncodeParams {
    pub sample_rate: u32,
    pub channel: u32,
    /// kbit/s
    pub bit_rate: u32,
    /// percent, when the task sets no Volume
    #[serde(default)]
    pub volume: Option<u32>,
}

impl TaskSpec {
    pub fn room(&self) -> RoomRef {
        if self.room_id_type == 1 {
            RoomRef::Num(self.room_id.parse().unwrap_or(0))
        } else {
            RoomRef::Str(self.room_id.clone())
        }
    }

    fn identity(&self) -> (u64, RoomRef, String) {
        (self.sdk_app_id, self.room(), self.user_id.clone())
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Opening the source.
    Connecting,
    Playing,
    Paused,
    /// The source broke; waiting for the next attempt.
    Restarting,
    /// Played everything it was asked to (or ended by IdleTimeout / MaxDuration).
    Finished,
    /// The source could not be (re)opened after the retries.
    Failed,
    /// Stopped by StopStreamIngest or replaced by another publisher of the same identity.
    Stopped,
}

impl TaskState {
    pub fn is_active(self) -> bool {
        !matches!(self, TaskState::Finished | TaskState::Failed | TaskState::Stopped)
    }
    fn stored(self) -> &'static str {
        match self {
            TaskState::Paused => "paused",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Stopped => "stopped",
            _ => "running",
        }
    }
}

/// What the source turned out to be, for Describe and the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceInfo {
    pub format: String,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    /// Length of the source (ms), when it has one (files).
    pub duration_ms: Option<u64>,
    /// The video goes to the room as it came (H.264 without B-frames); otherwise it is re-encoded.
    pub video_passthrough: bool,
    pub audio_passthrough: bool,
}

/// A live snapshot of a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub state: TaskState,
    /// Why the task ended or is restarting (empty while all is well).
    pub reason: String,
    pub loops_done: i64,
    pub position_ms: i64,
    pub restarts: i64,
    pub source: Option<SourceInfo>,
}

/// What happened to a task; the single place the 701/702 callbacks hook into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEventKind {
    /// The source is open and media flows (701, Status 0).
    Started,
    /// The source failed; another attempt follows (701, Status 2).
    Restarting { attempt: u32, reason: String },
    /// Every attempt failed; the task ended (701, Status 1).
    Failed { reason: String },
    /// The task ended: played out, stopped, idle or replaced (702, Status 0).
    Stopped { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestEvent {
    pub sdkappid: u64,
    pub task_id: String,
    pub kind: IngestEventKind,
    pub at_ms: i64,
}

/// The reason stored for a task ended by StopStreamIngest.
const STOPPED_BY_API: &str = "stopped by StopStreamIngest";

/// Why the API refused an action on tasks.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the robot {0} is already ingesting into this room")]
    TaskExist(String),
    #[error("no such task")]
    TaskNotExist,
    #[error("the task has already ended")]
    TaskFinished,
    #[error("{0} tasks are running, the configured maximum")]
    RestrictedConcurrency(usize),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Controls a runner reads while it plays; the API writes them.
#[derive(Debug)]
struct TaskControl {
    stop: AtomicBool,
    /// Set with `stop` at process shutdown: the task ends here but stays active in the store, to resume.
    suspended: AtomicBool,
    paused: AtomicBool,
    /// Volume and Tempo, shared with the task's audio transcoder so an update applies at once.
    tuning: Arc<crate::media::transcode::AudioTuning>,
    /// Bumped when the source URL changes, so the runner reopens.
    url_generation: AtomicU64,
}

/// One pull task: its spec, controls and live status.
pub struct IngestTask {
    pub id: String,
    pub created_at_ms: i64,
    spec: Mutex<TaskSpec>,
    control: TaskControl,
    status: Mutex<TaskStatus>,
    /// Wakes the runner's sleeps early (stop, pause, update).
    wake: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl IngestTask {
    pub fn spec(&self) -> TaskSpec {
        self.spec.lock().expect("spec lock").clone()
    }
    pub fn status(&self) -> TaskStatus {
        self.status.lock().expect("status lock").clone()
    }
    fn set_status(&self, f: impl FnOnce(&mut TaskStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }
    fn wake(&self) {
        let _guard = self.wake.0.lock().expect("wake lock");
        self.wake.1.notify_all();
    }
    fn stop_requested(&self) -> bool {
        self.control.stop.load(Ordering::Relaxed)
    }
}

/// The changes UpdateStreamIngest can make.
#[derive(Debug, Clone, Default)]
pub struct TaskUpdate {
    pub stream_url: Option<String>,
    pub volume: Option<u32>,
    pub is_pause: Option<bool>,
    pub enable_progress: Option<bool>,
    pub tempo: Option<f64>,
}

/// Owns every pull task of the gateway.
pub struct PullService {
    hub: Arc<RoomHub>,
    config: Arc<Config>,
    store: Arc<Store>,
    runtime: tokio::runtime::Handle,
    /// Pre-flight clients: under the configured policy, and for trusted sources.
    http: reqwest::Client,
    http_trusted: reqwest::Client,
    /// Every http(s) connection libav makes goes through it (`None` only when loopback cannot be bound).
    proxy: Option<proxy::SourceProxy>,
    tasks: Mutex<HashMap<String, Arc<IngestTask>>>,
    observers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<IngestEvent>>>,
    /// Serializes UpdateStreamIngest (store, then apply).
    updating: tokio::sync::Mutex<()>,
}

impl PullService {
    /// Must be called inside the tokio runtime (runner threads use its handle for network pre-flights).
    pub fn new(hub: Arc<RoomHub>, config: Arc<Config>, store: Arc<Store>) -> Arc<PullService> {
        let timeout = std::time::Duration::from_secs(config.pull.open_timeout_secs.max(1));
        let http = source::preflight_client(timeout, policy::AddressPolicy::from_config(&config.pull, false));
        let http_trusted = source::preflight_client(timeout, policy::AddressPolicy::from_config(&config.pull, true));
        let proxy = match proxy::SourceProxy::start(timeout) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the source proxy on loopback; http(s) pull tasks will fail");
                None
            }
        };
        Arc::new(PullService {
            hub,
            config,
            store,
            runtime: tokio::runtime::Handle::current(),
            http,
            http_trusted,
            proxy,
            tasks: Mutex::default(),
            observers: Mutex::default(),
            updating: Default::default(),
        })
    }

    /// The address policy of a task's source.
    fn policy(&self, trusted: bool) -> policy::AddressPolicy {
        policy::AddressPolicy::from_config(&self.config.pull, trusted)
    }

    /// The pre-flight client for that policy.
    fn preflight_client(&self, trusted: bool) -> &reqwest::Client {
        if trusted {
            &self.http_trusted
        } else {
            &self.http
        }
    }

    /// A proxy session for one opening of an http(s) source under `policy`; `Err` (logged) when libav's
    /// traffic cannot be held to the proxy.
    fn proxy_session(&self, policy: policy::AddressPolicy, label: &str) -> Result<proxy::ProxySession, ()> {
        if std::env::var_os("no_proxy").is_some_and(|v| !v.is_empty()) {
            // libav connects directly to the hosts `no_proxy` names, around the proxy and its checks.
            tracing::error!("the no_proxy environment variable is set: http(s) sources are refused (unset it, or start roomgate with `serve`, which moves it to NO_PROXY)");
            return Err(());
        }
        match &self.proxy {
            Some(p) => Ok(p.session(policy, label)),
            None => {
                tracing::error!("the source proxy is not running: http(s) sources are refused");
                Err(())
            }
        }
    }

    /// Receive every task event from now on.
    pub fn observe(&self) -> tokio::sync::mpsc::UnboundedReceiver<IngestEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.observers.lock().expect("observers lock").push(tx);
        rx
    }

    fn emit(&self, task: &IngestTask, kind: IngestEventKind) {
        let ev = IngestEvent {
            sdkappid: task.spec.lock().expect("spec lock").sdk_app_id,
            task_id: task.id.clone(),
            kind,
            at_ms: now_ms(),
        };
        self.observers
            .lock()
            .expect("observers lock")
            .retain(|tx| tx.send(ev.clone()).is_ok());
    }

    /// Start a task (the spec is validated by the caller). Returns its id.
    pub async fn start(self: &Arc<Self>, spec: TaskSpec) -> Result<String, PullError> {
        let url = source::parse_source_url(&spec.stream_url)?;
        source::check_destination(&url, &self.policy(spec.trusted_source)).await?;
        let id = new_task_id();
        let task = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            if tasks.len() >= self.config.pull.max_tasks {
                return Err(PullError::RestrictedConcurrency(tasks.len()));
            }
            if tasks.values().any(|t| t.spec().identity() == spec.identity()) {
                return Err(PullError::TaskExist(spec.user_id.clone()));
            }
            let task = Arc::new(new_task(id.clone(), spec.clone(), now_ms(), 0, 0, 0));
            tasks.insert(id.clone(), task.clone());
            task
        };
        let record = TaskRecord {
            task_id: id.clone(),
            sdkappid: spec.sdk_app_id,
            spec: serde_json::to_value(&spec).expect("spec serializes"),
            state: if spec.is_pause { "paused" } else { "running" }.into(),
            reason: String::new(),
            loops_done: 0,
            position_ms: spec.seek_second.max(0) * 1000,
            restarts: 0,
            created_at_ms: task.created_at_ms,
            updated_at_ms: task.created_at_ms,
        };
        let store = self.store.clone();
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
        std::thread::Builder::new()
            .name(format!("pull-{}", &task.id[..8]))
            .spawn(move || {
                // A bug in a runner (ours, or a library's panic) ends its task as failed, so the task frees its
                // slot and its TaskExist entry instead of lingering as a zombie; the anchor left on unwind.
                let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runner::run(&service, &task, start_position_ms)
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
        if task.control.suspended.load(Ordering::Relaxed) {
            tracing::info!(task = %task.id, "pull task suspended for shutdown; it resumes on the next start");
            self.tasks.lock().expect("tasks lock").remove(&task.id);
            return;
        }
        task.set_status(|s| {
            s.state = state;
            s.reason = reason.clone();
        });
        if let Err(e) = self.store.update_state(&task.id, state.stored(), &reason) {
            tracing::error!(task = %task.id, error = %e, "cannot record the end of a task");
        }
        let kind = match state {
            TaskState::Failed => IngestEventKind::Failed { reason: reason.clone() },
            _ => IngestEventKind::Stopped { reason: reason.clone() },
        };
        tracing::info!(task = %task.id, state = ?state, reason = %reason, "pull task ended");
        self.emit(task, kind);
        self.tasks.lock().expect("tasks lock").remove(&task.id);
        metrics::counter!("roomgate_pull_tasks_ended_total", "state" => state.stored()).increment(1);
    }

    /// Stop a running task. It leaves its room at once (a hung source is interrupted). The store says `stopped`
    /// before this returns, so a crash right after the answer does not resume the task; if that write fails, the
    /// task goes on and the error is returned.
    pub async fn stop(&self, task_id: &str) -> Result<(), PullError> {
        let task = self.tasks.lock().expect("tasks lock").get(task_id).cloned();
        match task {
            Some(t) => {
                let store = self.store.clone();
                let id = t.id.clone();
                tokio::task::spawn_blocking(move || store.stop_task(&id, STOPPED_BY_API))
                    .await
                    .expect("store task")?;
                t.control.stop.store(true, Ordering::Relaxed);
                t.wake();
                Ok(())
            }
            None => match self.stored(task_id).await? {
                Some(_) => Err(PullError::TaskFinished),
                None => Err(PullError::TaskNotExist),
            },
        }
    }

    async fn stored(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let store = self.store.clone();
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
            source::check_destination(&parsed, &self.policy(false)).await?;
        }
        // One update at a time, so two cannot store specs in one order and apply them in the other.
        let _one_at_a_time = self.updating.lock().await;
        let spec = {
            let mut spec = task.spec();
            if let Some(url) = &update.stream_url {
                spec.stream_url = url.clone();
                // The trust was in the URL the gateway chose, not in whatever replaces it.
                spec.trusted_source = false;
            }
            if let Some(v) = update.volume {
                spec.volume = v;
            }
            if let Some(p) = update.is_pause {
                spec.is_pause = p;
            }
            if let Some(e) = update.enable_progress {
                spec.enable_progress = e;
            }
            if let Some(t) = update.tempo {
                spec.tempo = t;
            }
            spec
        };
        let store = self.store.clone();
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
            if update.stream_url.is_some() {
                running.stream_url = spec.stream_url.clone();
                running.trusted_source = false;
                task.control.url_generation.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(v) = update.volume {
                running.volume = v;
                task.control.tuning.set_volume(v);
            }
            if let Some(p) = update.is_pause {
                running.is_pause = p;
                task.control.paused.store(p, Ordering::Relaxed);
            }
            if let Some(e) = update.enable_progress {
                running.enable_progress = e;
            }
            if let Some(t) = update.tempo {
                running.tempo = t;
                task.control.tuning.set_tempo(t);
            }
        }
        task.wake();
        Ok(spec)
    }

    /// Running tasks, oldest first.
    pub fn list(&self) -> Vec<Arc<IngestTask>> {
        let mut v: Vec<_> = self.tasks.lock().expect("tasks lock").values().cloned().collect();
        v.sort_by_key(|t| t.created_at_ms);
        v
    }

    /// Resume every task the store says was running or paused (after a restart or crash). A row that cannot be
    /// resumed (unreadable spec, unknown state) is marked failed with a log line; it never stops the others.
    pub fn resume_all(self: &Arc<Self>) -> Result<usize, PullError> {
        let rows = self.store.resumable_tasks()?;
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
            .store
            .update_state(task_id, "failed", &format!("unreadable after restart: {why}"))
        {
            tracing::error!(task = %task_id, error = %e, "cannot mark an unreadable task failed");
        }
    }

    /// Stop every task without recording it as stopped (process shutdown: they resume on the next start).
    pub fn shutdown(&self) {
        for t in self.tasks.lock().expect("tasks lock").values() {
            t.control.suspended.store(true, Ordering::Relaxed);
            t.control.stop.store(true, Ordering::Relaxed);
            t.wake();
        }
    }
}

fn new_task(
    id: String,
    spec: TaskSpec,
    created_at_ms: i64,
    loops_done: i64,
    position_ms: i64,
    restarts: i64,
) -> IngestTask {
    IngestTask {
        id,
        created_at_ms,
        control: TaskControl {
            stop: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            paused: AtomicBool::new(spec.is_pause),
            tuning: Arc::new(crate::media::transcode::AudioTuning::new(spec.volume, spec.tempo)),
            url_generation: AtomicU64::new(0),
        },
        spec: Mutex::new(spec),
        status: Mutex::new(TaskStatus {
            state: TaskState::Connecting,
            reason: String::new(),
            loops_done,
            position_ms,
            restarts,
            source: None,
        }),
        wake: Default::default(),
    }
}

/// The spec shown for a stored task whose own spec cannot be read: only its app is known.
fn unreadable_spec(sdkappid: u64) -> TaskSpec {
    TaskSpec::with_defaults(sdkappid, "", "", "", 0, false)
}

impl TaskSpec {
    /// A spec with TRTC's defaults for everything StartStreamIngest leaves out.
    pub fn with_defaults(sdkappid: u64, room: &str, userid: &str, url: &str, repeat: i64, trusted: bool) -> TaskSpec {
        TaskSpec {
            sdk_app_id: sdkappid,
            room_id: room.to_string(),
            room_id_type: 0,
            user_id: userid.to_string(),
            stream_url: url.to_string(),
            seek_second: 0,
            repeat_num: repeat,
            max_duration: None,
            volume: 100,
            tempo: 1.0,
            idle_timeout: None,
            is_pause: false,
            enable_progress: false,
            video_encode_params: None,
            audio_encode_params: None,
            trusted_source: trusted,
        }
    }
}

/// An opaque, unguessable task id: 32 random bytes, URL-safe base64 (43 characters).
fn new_task_id() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A URL for the log and for callers without its userinfo, query or fragment (signed URLs carry credentials
/// there).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => source::redact(&u),
        Err(_) => "<invalid url>".into(),
    }
}
