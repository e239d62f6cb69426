//! `StopStreamIngest`: end a task; its robot leaves the room at once.

use super::params::Params;
use super::{Caller, CloudError};
use serde_json::{Map, Value};

/// A parsed StopStreamIngest.
#[derive(Debug, PartialEq)]
pub(super) struct Stop {
    sdkappid: u64,
    task_id: String,
}

impl Stop {
    pub fn parse(params: &Map<String, Value>) -> Result<Stop, CloudError> {
        let mut p = Params::new(params);
        let (sdkappid, task_id) = p.task_ref()?;
        p.finish()?;
        Ok(Stop { sdkappid, task_id })
    }

    pub async fn apply(self, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
        caller.may_act_on(self.sdkappid)?;
        caller.check_task_app(&self.task_id, self.sdkappid).await?;
        caller.pull.stop(&self.task_id).await?;
        Ok(Map::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_takes_an_app_and_a_task_and_nothing_else() {
        let ok = json!({"SdkAppId": 7, "TaskId": "t"});
        assert_eq!(
            Stop::parse(ok.as_object().unwrap()).unwrap(),
            Stop {
                sdkappid: 7,
                task_id: "t".into()
            }
        );
        let code = |v: Value| Stop::parse(v.as_object().unwrap()).unwrap_err().code;
        assert_eq!(code(json!({"TaskId": "t"})), "MissingParameter.SdkAppId");
        assert_eq!(code(json!({"SdkAppId": 7})), "MissingParameter.TaskId");
        assert_eq!(
            code(json!({"SdkAppId": 7, "TaskId": "t", "Force": true})),
            "UnknownParameter"
        );
    }
}
