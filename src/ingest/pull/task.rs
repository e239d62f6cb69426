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
    /// TRTC's SdkAppId: the app the robot anchor publishes in.
    pub sdk_app_id: u64,
    /// TRTC's RoomId (or StrRoomId) as given; decimal when `room_id_type` is 1.
    pub room_id: String,
    /// 0: string room id, 1: numeric room id.
    pub room_id_type: u8,
    /// TRTC's UserId: the robot anchor's user id in the room.
    pub user_id: String,
    /// TRTC's StreamUrl: the source (http, https, rtmp, srt, rtsp or rtsps).
    pub stream_url: String,
    /// TRTC's SeekSecond: where the first loop starts in the source, seconds (0: the start).
    #[serde(default)]
    pub seek_second: i64,
    /// Loops to play; -1 plays until stopped (or MaxDuration).
    pub repeat_num: i64,
    /// Minutes; applies when `repeat_num == -1`.
    #[serde(default)]
    pub max_duration: Option<i64>,
    /// Gain in percent.
    pub volume: u32,
    /// TRTC's Tempo: playback speed, one of 0.5, 0.75, ... 2.0 (1.0: normal).
    pub tempo: f64,
    /// Seconds without data before the task ends by itself; `None`: a stall counts as a break (retried).
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// TRTC's IsPause: the anchor stays in the room but sends nothing until resumed.
    #[serde(default)]
    pub is_pause: bool,
    /// TRTC's EnableProgress: stored and updatable, not acted on (Describe always reports progress).
    #[serde(default)]
    pub enable_progress: bool,
    /// TRTC's VideoEncodeParams; `None`: video passes through when it can.
    #[serde(default)]
    pub video_encode_params: Option<VideoEncodeParams>,
    /// TRTC's AudioEncodeParams; `None`: the configured Opus settings.
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
    /// Output width in pixels (0: the source's); applies only with `height`.
    pub width: u32,
    /// Output height in pixels (0: the source's); applies only with `width`.
    pub height: u32,
    /// Output frame rate (0: the source's).
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
    /// 44100 or 48000; accepted for compatibility (output is 48 kHz).
    pub sample_rate: u32,
    /// 1 or 2; accepted for compatibility, not applied.
    pub channel: u32,
    /// kbit/s
    pub bit_rate: u32,
    /// percent, when the task sets no Volume
    #[serde(default)]
    pub volume: Option<u32>,
}

impl TaskSpec {
    /// The room `room_id` names under `room_id_type` (a numeric id that does not parse is room 0).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Opening the source.
    Connecting,
    /// Sending the source's media into the room.
    Playing,
    /// Paused by UpdateStreamIngest (IsPause): still in the room, sending nothing.
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
    /// True until the task has finished, failed or been stopped.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SourceInfo {
    /// The container format libav detected, by its demuxer name (e.g. `flv`, `hls`).
    pub format: String,
    /// Codec of the source's video, as libav names it; `None`: no video.
    pub video_codec: Option<String>,
    /// Codec of the source's audio, as libav names it; `None`: no audio.
    pub audio_codec: Option<String>,
    /// Picture width in pixels, when the source has video.
    pub width: Option<u32>,
    /// Picture height in pixels, when the source has video.
    pub height: Option<u32>,
    /// Frame rate the source declares, when known.
    pub fps: Option<f64>,
    /// Length of the source (ms), when it has one (files).
    pub duration_ms: Option<u64>,
    /// The video goes to the room as it came (H.264 without B-frames); otherwise it is re-encoded.
    pub video_passthrough: bool,
    /// The audio goes to the room as it came (Opus without tuning); otherwise it is transcoded to Opus.
    pub audio_passthrough: bool,
}

/// A live snapshot of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    /// Where the task is in its life.
    pub state: TaskState,
    /// Why the task ended or is restarting (empty while all is well).
    pub reason: String,
    /// Loops played to the end so far.
    pub loops_done: i64,
    /// Position in the current loop, ms from the start of the source.
    pub position_ms: i64,
    /// Times the source broke and was opened again.
    pub restarts: i64,
    /// What the source turned out to be; `None` until it is open.
    pub source: Option<SourceInfo>,
}

/// One pull task: its spec, controls and live status.
pub struct IngestTask {
    /// The task id (TRTC's TaskId): 43 URL-safe base64 characters.
    pub id: String,
    /// When the task was started, Unix milliseconds.
    pub created_at_ms: i64,
    pub(super) spec: Mutex<TaskSpec>,
    pub(crate) control: Control,
    status: Mutex<TaskStatus>,
}

impl IngestTask {
    /// A copy of the current spec (UpdateStreamIngest may change it).
    pub fn spec(&self) -> TaskSpec {
        self.spec.lock().expect("spec lock").clone()
    }
    /// A copy of the live status.
    pub fn status(&self) -> TaskStatus {
        self.status.lock().expect("status lock").clone()
    }
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut TaskStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }
}

/// The changes UpdateStreamIngest can make.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// New source URL; the task reopens on it.
    pub stream_url: Option<String>,
    /// New gain in percent.
    pub volume: Option<u32>,
    /// Pause (`true`) or resume (`false`).
    pub is_pause: Option<bool>,
    /// New EnableProgress.
    pub enable_progress: Option<bool>,
    /// New playback speed.
    pub tempo: Option<f64>,
}

impl TaskUpdate {
    /// Write the changes into `spec` (the stored one, then the running one: both must end up the same).
    pub fn apply_to(&self, spec: &mut TaskSpec) {
        if let Some(url) = &self.stream_url {
            spec.stream_url = url.clone();
            // The trust was in the URL the gateway chose, not in whatever replaces it.
            spec.trusted_source = false;
        }
        if let Some(v) = self.volume {
            spec.volume = v;
        }
        if let Some(p) = self.is_pause {
            spec.is_pause = p;
        }
        if let Some(e) = self.enable_progress {
            spec.enable_progress = e;
        }
        if let Some(t) = self.tempo {
            spec.tempo = t;
        }
    }
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
/// Whether `id` has the form of the ids `new_task_id` makes (what arrives from another node is checked).
pub(crate) fn is_task_id(id: &str) -> bool {
    id.len() == 43 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn new_task_id() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
