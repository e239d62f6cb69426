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
        let tasks: Vec<Value> = caller
            .pull
            .list()
            .into_iter()
            .filter(|t| {
                let app = t.spec().sdk_app_id;
                self.sdkappid.is_none_or(|f| f == app) && caller.may_act_on(app).is_ok()
            })
            .map(|t| {
                let mut m = describe_fields(Some((t.spec(), t.status())));
                m.insert("TaskId".into(), Value::String(t.id.clone()));
                m.insert("SdkAppId".into(), json!(t.spec().sdk_app_id));
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
