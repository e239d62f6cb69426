//! `StopStreamIngest`: end a task; its robot leaves the room at once.

use super::params::TaskRef;
use super::{Caller, CloudError};
use serde_json::{Map, Value};

/// StopStreamIngest (its parameters are a [`TaskRef`] and nothing else).
pub(super) async fn apply(task: TaskRef, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
    caller.may_act_on(task.sdkappid)?;
    if let Some((cluster, m)) = caller.elsewhere(&task.task_id, task.sdkappid).await {
        if !m.status.state.is_active() {
            // It ended on its node (its last mirror is kept a while): as that node would answer.
            return Err(crate::ingest::pull::PullError::TaskFinished.into());
        }
        cluster.stop(&task.task_id).await.map_err(super::cluster_error)?;
        return Ok(Map::new());
    }
    caller.check_task_app(&task.task_id, task.sdkappid).await?;
    caller.pull.stop(&task.task_id).await?;
    Ok(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_takes_an_app_and_a_task_and_nothing_else() {
        let ok = json!({"SdkAppId": 7, "TaskId": "t"});
        assert_eq!(TaskRef::parse(ok.as_object().unwrap()).unwrap(), TaskRef::new(7, "t"));
        let code = |v: Value| TaskRef::parse(v.as_object().unwrap()).unwrap_err().code;
        assert_eq!(code(json!({"TaskId": "t"})), "MissingParameter.SdkAppId");
        assert_eq!(code(json!({"SdkAppId": 7})), "MissingParameter.TaskId");
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "Force": true})),
            "UnknownParameter"
        );
    }
}
