//! `ListStreamIngests` (an extension, not in TRTC): the running tasks the caller's key may see, for
//! `roomgate ingest list` and the console.

use super::describe::describe_fields;
use super::params::Params;
use super::{Caller, CloudError};
use serde_json::{json, Map, Value};

/// A parsed ListStreamIngests.
#[derive(Debug, PartialEq)]
pub(super) struct List {
    /// Only this app's tasks.
    sdkappid: Option<u64>,
}

impl List {
    pub fn parse(params: &Map<String, Value>) -> Result<List, CloudError> {
        let mut p = Params::new(params);
        let sdkappid = match p.value("SdkAppId") {
            None => None,
            Some(_) => Some(p.u64("SdkAppId")?),
        };
        p.finish()?;
        Ok(List { sdkappid })
    }

    pub async fn apply(self, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
        let mut all: Vec<_> = caller
            .pull
            .list()
            .iter()
            .map(|t| (t.id.clone(), t.spec(), t.status()))
            .collect();
        // In a cluster, the other nodes' tasks too (as mirrored, at most a second old); this node's alone while
        // Redis does not answer.
        if let Some(read) = caller.cluster.map(|c| c.mirrors()) {
            match read.await {
                Ok(others) => all.extend(
                    others
                        .into_iter()
                        .filter(|m| !caller.pull.running(&m.id))
                        .map(|m| (m.id, m.spec, m.status)),
                ),
                Err(e) => tracing::warn!(error = %e, "cannot read the cluster's tasks; listing this node's"),
            }
        }
        let tasks: Vec<Value> = all
            .into_iter()
            .filter(|(_, spec, _)| {
                let app = spec.sdk_app_id;
                self.sdkappid.is_none_or(|f| f == app) && caller.may_act_on(app).is_ok()
            })
            .map(|(id, spec, status)| {
                let app = spec.sdk_app_id;
                let mut m = describe_fields(Some((spec, status)));
                m.insert("TaskId".into(), Value::String(id));
                m.insert("SdkAppId".into(), json!(app));
                Value::Object(m)
            })
            .collect();
        Ok(super::obj(json!({ "Tasks": tasks })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_filter_is_optional() {
        let parse = |v: Value| List::parse(v.as_object().unwrap());
        assert_eq!(parse(json!({})).unwrap(), List { sdkappid: None });
        assert_eq!(parse(json!({"SdkAppId": null})).unwrap(), List { sdkappid: None });
        assert_eq!(parse(json!({"SdkAppId": 7})).unwrap(), List { sdkappid: Some(7) });
        assert_eq!(
            parse(json!({"SdkAppId": "7"})).unwrap_err().code,
            "InvalidParameter.BodyParamsError"
        );
        assert_eq!(parse(json!({"RoomId": "r"})).unwrap_err().code, "UnknownParameter");
    }
}
