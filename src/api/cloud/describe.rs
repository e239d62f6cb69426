//! `DescribeStreamIngest`: a task's status (TRTC's `InProgress`/`NotExist`) and, as extensions, what it is doing:
//! state, reason, position, loops, the source's format.

use super::params::TaskRef;
use super::{Caller, CloudError};
use crate::ingest::pull::{TaskSpec, TaskState, TaskStatus};
use serde_json::{json, Map, Value};

/// DescribeStreamIngest (its parameters are a [`TaskRef`] and nothing else): a task of another app is `NotExist`.
pub(super) async fn apply(task: TaskRef, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
    caller.may_act_on(task.sdkappid)?;
    if let Some((_, m)) = caller.elsewhere(&task.task_id, task.sdkappid).await {
        return Ok(describe_fields(Some((m.spec, m.status))));
    }
    let found = caller
        .pull
        .describe(&task.task_id)
        .await?
        .filter(|(spec, _)| spec.sdk_app_id == task.sdkappid);
    Ok(describe_fields(found))
}

/// The reply fields for a task (or `NotExist`), shared with ListStreamIngests and the console.
pub(crate) fn describe_fields(found: Option<(TaskSpec, TaskStatus)>) -> Map<String, Value> {
    let Some((spec, status)) = found else {
        return super::obj(json!({ "Status": "NotExist" }));
    };
    let in_progress = status.state.is_active();
    let mut m = super::obj(json!({
        "Status": if in_progress { "InProgress" } else { "NotExist" },
        // Extensions (not in TRTC): what the task is doing and why it ended.
        "State": status.state,
        "Reason": status.reason,
        "StreamUrl": crate::ingest::pull::redact(&spec.stream_url),
        "RoomId": spec.room_id,
        "RoomIdType": spec.room_id_type,
        "UserId": spec.user_id,
        "PositionMs": status.position_ms,
        "LoopsDone": status.loops_done,
        "RepeatNum": spec.repeat_num,
        "Restarts": status.restarts,
        "Volume": spec.volume,
        "Tempo": spec.tempo,
        "IsPause": spec.is_pause,
    }));
    if let Some(src) = status.source {
        m.insert(
            "Source".into(),
            serde_json::to_value(src).expect("source info serializes"),
        );
    }
    if status.state == TaskState::Failed {
        m.insert("Failed".into(), Value::Bool(true));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_task_is_not_exist_and_a_failed_one_says_so() {
        assert_eq!(describe_fields(None)["Status"], "NotExist");
        let spec = TaskSpec::with_defaults(7, "r", "u", "http://example.com/a.mp4?token=secret", 1, false);
        let status = TaskStatus {
            state: TaskState::Failed,
            reason: "the server answered HTTP 404 Not Found".into(),
            loops_done: 0,
            position_ms: 0,
            restarts: 3,
            source: None,
        };
        let m = describe_fields(Some((spec, status)));
        assert_eq!(m["Status"], "NotExist");
        assert_eq!(m["Failed"], true);
        assert_eq!(m["Restarts"], 3);
        assert!(
            !m["StreamUrl"].as_str().unwrap().contains("secret"),
            "credentials in URLs are not echoed"
        );
    }

    #[test]
    fn describe_needs_a_task_id() {
        let v = json!({"SdkAppId": 7});
        assert_eq!(
            TaskRef::parse(v.as_object().unwrap()).unwrap_err().code,
            "MissingParameter.TaskId"
        );
    }
}
