//! `UpdateStreamIngest`: change a running task's URL, volume, pause, progress reports or tempo.

use super::params::{Params, TaskRef};
use super::{Caller, CloudError};
use crate::ingest::pull::{PullError, TaskUpdate};
use serde_json::{json, Map, Value};

/// A parsed UpdateStreamIngest.
#[derive(Debug)]
pub(super) struct Update {
    task: TaskRef,
    update: TaskUpdate,
}

impl Update {
    pub fn parse(params: &Map<String, Value>) -> Result<Update, CloudError> {
        let mut p = Params::new(params);
        let task = p.task_ref()?;
        let update = TaskUpdate {
            stream_url: p.str("StreamUrl")?,
            volume: p.int("Volume", 0, 200)?.map(|v| v as u32),
            is_pause: p.bool("IsPause")?,
            enable_progress: p.bool("EnableProgress")?,
            tempo: p.tempo()?,
        };
        p.finish()?;
        if let Some(url) = &update.stream_url {
            crate::ingest::pull::source::parse_source_url(url)
                .map_err(|e| CloudError::invalid("StreamUrl", e.to_string()))?;
        }
        Ok(Update { task, update })
    }

    pub async fn apply(self, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
        let Update { task, update } = self;
        caller.may_act_on(task.sdkappid)?;
        if let Some((cluster, m)) = caller.elsewhere(&task.task_id, task.sdkappid).await {
            if !m.status.state.is_active() {
                // It ended on its node (its last mirror is kept a while): as that node would answer.
                return Err(PullError::TaskNotExist.into());
            }
            cluster
                .update(&task.task_id, update)
                .await
                .map_err(super::cluster_error)?;
            return Ok(super::obj(json!({ "Status": "InProgress" })));
        }
        caller
            .check_task_app(&task.task_id, task.sdkappid)
            .await
            .map_err(|_| CloudError::from(PullError::TaskNotExist))?;
        caller.pull.update(&task.task_id, update).await?;
        Ok(super::obj(json!({ "Status": "InProgress" })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Update, CloudError> {
        Update::parse(v.as_object().unwrap())
    }

    #[test]
    fn each_change_is_checked_and_the_rest_left_alone() {
        let u = parse(json!({"SdkAppId": 7, "TaskId": "t", "Volume": 50, "IsPause": true})).unwrap();
        assert_eq!(u.update.volume, Some(50));
        assert_eq!(u.update.is_pause, Some(true));
        assert_eq!((u.update.stream_url, u.update.tempo), (None, None));
        let code = |v: Value| parse(v).unwrap_err().code;
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "Volume": 201})),
            "InvalidParameter.Volume"
        );
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "Tempo": 3})),
            "InvalidParameter.Tempo"
        );
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "StreamUrl": "file:///etc/passwd"})),
            "InvalidParameter.StreamUrl"
        );
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "RepeatNum": 2})),
            "UnknownParameter"
        );
    }
}
