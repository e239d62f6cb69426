//! The pull runner: one OS thread per task (libav blocks). It keeps a task's lifecycle: each attempt opens the
//! source (`open`) and plays it (`pump`); the runner loops RepeatNum times, retries a broken source at 0, 1 and
//! 3 s before the task fails, reports events and saves progress.
//!
//! Output timeline: a frame's room timestamp is the wall-clock time (since the task began) it is due, so loops,
//! reopenings, pauses and tempo changes all stay monotonic and in step with real time.

use super::env::RunnerEnv;
use super::{open, pump, IngestEventKind, IngestTask, TaskState};
use crate::room::{AnchorHandle, LeaveReason, RoomKey};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delays before the retries of a broken source: at 0, 1 and 3 s after the failure (TRTC's schedule).
const RETRY_DELAYS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2)];
/// How often progress is written to the store.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A source that played this long before breaking gets a fresh retry schedule.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// How one attempt (one opening of the source) ended.
pub(super) enum Ended {
    /// The source ended (a loop is done).
    Eof,
    /// StopStreamIngest or shutdown.
    Stopped,
    /// Another publisher took over the identity.
    Replaced,
    /// MaxDuration elapsed (RepeatNum -1).
    MaxDuration,
    /// No data for IdleTimeout seconds.
    Idle(u64),
    /// UpdateStreamIngest changed the URL.
    UrlChanged,
    /// Volume or Tempo changed on audio that was passing through: reopen where we are, transcoding.
    Reconfigure,
    /// The source could not be opened or broke.
    Failed { reason: String, played_for: Duration },
}

/// What lives across the attempts of one task.
pub(super) struct TaskRun<'a> {
    pub env: &'a RunnerEnv,
    pub task: &'a Arc<IngestTask>,
    pub key: RoomKey,
    /// The task's anchor: joined at the first opening, kept through loops and retries.
    pub anchor: Option<AnchorHandle>,
    /// Start of the output timeline.
    pub epoch: Instant,
    pub max_end: Option<Instant>,
    loops_done: i64,
    restarts: i64,
    last_saved: Instant,
}

impl TaskRun<'_> {
    /// Save progress when the last save is `PROGRESS_EVERY` old.
    pub fn progress(&mut self, position_ms: i64) {
        if self.last_saved.elapsed() >= PROGRESS_EVERY {
            self.last_saved = Instant::now();
            self.save_progress(position_ms);
        }
    }

    fn save_progress(&self, position_ms: i64) {
        if self.task.control.snapshot().suspended {
            return;
        }
        if let Err(e) = self
            .env
            .store
            .update_progress(&self.task.id, self.loops_done, position_ms, self.restarts)
        {
            tracing::warn!(task = %self.task.id, error = %e, "cannot save task progress");
        }
    }
}

/// Run a task to its end; returns the final state and reason.
pub(super) fn run(env: &RunnerEnv, task: &Arc<IngestTask>, start_position_ms: i64) -> (TaskState, String) {
    crate::media::transcode::init_libav();
    let spec = task.spec();
    let status = task.status();
    let epoch = Instant::now();
    let mut s = TaskRun {
        env,
        task,
        key: RoomKey {
            sdkappid: spec.sdk_app_id,
            room: spec.room(),
        },
        anchor: None,
        epoch,
        max_end: match (spec.repeat_num, spec.max_duration) {
            (-1, Some(min)) => Some(epoch + Duration::from_secs(min.max(1) as u64 * 60)),
            _ => None,
        },
        loops_done: status.loops_done,
        restarts: status.restarts,
        last_saved: Instant::now(),
    };
    let mut position_ms = start_position_ms;
    let mut failures = 0usize;
    let result = loop {
        if task.control.stop_requested() {
            break (TaskState::Stopped, "stopped by StopStreamIngest".to_string());
        }
        match attempt(&mut s, position_ms) {
            Ended::Eof => {
                s.loops_done += 1;
                position_ms = 0;
                failures = 0;
                task.set_status(|st| {
                    st.loops_done = s.loops_done;
                    st.position_ms = 0;
                });
                s.save_progress(0);
                let repeat = task.spec().repeat_num;
                if repeat != -1 && s.loops_done >= repeat {
                    break (TaskState::Finished, format!("played {} time(s)", s.loops_done));
                }
            }
            Ended::Stopped => break (TaskState::Stopped, "stopped by StopStreamIngest".to_string()),
            Ended::Replaced => {
                break (
                    TaskState::Stopped,
                    "replaced by another publisher with the same sdkappid, room and userid".to_string(),
                )
            }
            Ended::MaxDuration => break (TaskState::Finished, "MaxDuration reached".to_string()),
            Ended::Idle(secs) => {
                break (
                    TaskState::Finished,
                    format!("no data from the source for {secs} s (IdleTimeout)"),
                )
            }
            Ended::UrlChanged => {
                position_ms = 0;
                failures = 0;
            }
            Ended::Reconfigure => position_ms = task.status().position_ms,
            Ended::Failed { reason, played_for } => {
                position_ms = task.status().position_ms;
                if played_for >= HEALTHY_AFTER {
                    failures = 0;
                }
                if failures >= RETRY_DELAYS.len() {
                    break (TaskState::Failed, reason);
                }
                let delay = RETRY_DELAYS[failures];
                failures += 1;
                s.restarts += 1;
                tracing::warn!(task = %task.id, attempt = failures, error = %reason, "pull source failed; retrying");
                task.set_status(|st| {
                    st.state = TaskState::Restarting;
                    st.reason = reason.clone();
                    st.restarts = s.restarts;
                });
                s.save_progress(position_ms);
                metrics::counter!("roomgate_pull_restarts_total").increment(1);
                env.events.emit(
                    task,
                    IngestEventKind::Restarting {
                        attempt: failures as u32,
                        reason,
                    },
                );
                task.control.sleep(delay);
            }
        }
    };
    s.save_progress(task.status().position_ms);
    if let Some(anchor) = s.anchor.take() {
        let reason = match result.0 {
            TaskState::Failed => LeaveReason::Ended(result.1.clone()),
            _ => LeaveReason::Normal,
        };
        anchor.leave(reason);
    }
    result
}

/// One attempt: open the source, then play it until it ends.
fn attempt(run: &mut TaskRun<'_>, position_ms: i64) -> Ended {
    match open::open(run, position_ms) {
        Ok(source) => pump::pump(run, source),
        Err(ended) => ended,
    }
}
