//! A pull task as the API and the runner share it: what it was asked to do (`TaskSpec`, stored), where it is
//! (`TaskStatus`, live) and what the API wants of it now (`Control`).

use super::control::Control;
use crate::room::RoomRef;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

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

    pub(crate) fn identity(&self) -> (u64, RoomRef, String) {
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
    pub(crate) fn stored(self) -> &'static str {
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

/// One pull task: its spec, controls and live status.
pub struct IngestTask {
    pub id: String,
    pub created_at_ms: i64,
    pub(super) spec: Mutex<TaskSpec>,
    pub(crate) control: Control,
    status: Mutex<TaskStatus>,
}

impl IngestTask {
    pub fn spec(&self) -> TaskSpec {
        self.spec.lock().expect("spec lock").clone()
    }
    pub fn status(&self) -> TaskStatus {
        self.status.lock().expect("status lock").clone()
    }
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut TaskStatus)) {
        f(&mut self.status.lock().expect("status lock"));
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

pub(crate) fn new_task(
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
        control: Control::new(spec.is_pause, spec.volume, spec.tempo),
        spec: Mutex::new(spec),
        status: Mutex::new(TaskStatus {
            state: TaskState::Connecting,
            reason: String::new(),
            loops_done,
            position_ms,
            restarts,
            source: None,
        }),
    }
}

/// The spec shown for a stored task whose own spec cannot be read: only its app is known.
pub(crate) fn unreadable_spec(sdkappid: u64) -> TaskSpec {
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
pub(crate) fn new_task_id() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
