//! Reading an action's parameters strictly: each getter names the field in its error (`MissingParameter.<Field>`,
//! `InvalidParameter.<Field>` for a value out of range, `InvalidParameter.BodyParamsError` for a wrong type), and
//! `finish` refuses whatever the action never asked for (`UnknownParameter`), so no field list is kept by hand.

use super::CloudError;
use serde_json::{Map, Value};

/// The task an action is about: its app and id (`SdkAppId`, `TaskId`). Stop and Describe take nothing else.
#[derive(Debug, PartialEq)]
pub(super) struct TaskRef {
    /// The app the caller names; the task must belong to it.
    pub sdkappid: u64,
    /// The task's id (1-256 characters).
    pub task_id: String,
}

impl TaskRef {
    /// A reference made in code (tests).
    #[cfg(test)]
    pub fn new(sdkappid: u64, task_id: &str) -> TaskRef {
        TaskRef {
            sdkappid,
            task_id: task_id.into(),
        }
    }

    /// Parameters that are a task reference and nothing more.
    pub fn parse(params: &Map<String, Value>) -> Result<TaskRef, CloudError> {
        let mut p = Params::new(params);
        let task = p.task_ref()?;
        p.finish()?;
        Ok(task)
    }
}

/// Tempos TRTC accepts.
const TEMPOS: [f64; 7] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0];

/// A cursor over one JSON object of parameters that remembers which fields were read.
pub(super) struct Params<'a> {
    map: &'a Map<String, Value>,
    read: Vec<&'a str>,
}

impl<'a> Params<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Params<'a> {
        Params { map, read: Vec::new() }
    }

    /// The raw value of `name` (`None` when absent or null); the field counts as known.
    pub fn value(&mut self, name: &'a str) -> Option<&'a Value> {
        self.read.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub fn u64(&mut self, name: &'a str) -> Result<u64, CloudError> {
        match self.value(name) {
            None => Err(CloudError::missing(name)),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| CloudError::invalid(name, format!("{name} must be a non-negative integer"))),
            Some(_) => Err(CloudError::body(format!("{name} must be an integer"))),
        }
    }

    /// An optional integer within `[min, max]`.
    pub fn int(&mut self, name: &'a str, min: i64, max: i64) -> Result<Option<i64>, CloudError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let v = n
                    .as_i64()
                    .ok_or_else(|| CloudError::invalid(name, format!("{name} must be an integer")))?;
                if v < min || v > max {
                    return Err(CloudError::invalid(
                        name,
                        format!("{name} must be within [{min}, {max}] (got {v})"),
                    ));
                }
                Ok(Some(v))
            }
            Some(_) => Err(CloudError::body(format!("{name} must be an integer"))),
        }
    }

    /// An optional string.
    pub fn str(&mut self, name: &'a str) -> Result<Option<String>, CloudError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CloudError::body(format!("{name} must be a string"))),
        }
    }

    /// A required string.
    pub fn required_str(&mut self, name: &'a str) -> Result<String, CloudError> {
        self.str(name)?.ok_or_else(|| CloudError::missing(name))
    }

    /// An optional boolean.
    pub fn bool(&mut self, name: &'a str) -> Result<Option<bool>, CloudError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(CloudError::body(format!("{name} must be a boolean"))),
        }
    }

    /// An optional `Tempo`, one of TRTC's steps.
    pub fn tempo(&mut self) -> Result<Option<f64>, CloudError> {
        match self.value("Tempo") {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let t = n.as_f64().unwrap_or(f64::NAN);
                if TEMPOS.iter().any(|x| (x - t).abs() < 1e-9) {
                    Ok(Some(t))
                } else {
                    Err(CloudError::invalid(
                        "Tempo",
                        format!("Tempo must be one of 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0 (got {t})"),
                    ))
                }
            }
            Some(_) => Err(CloudError::body("Tempo must be a number")),
        }
    }

    /// An optional object, read with a cursor of its own (which the caller finishes).
    pub fn nested(&mut self, name: &'a str) -> Result<Option<Params<'a>>, CloudError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Params::new(m))),
            Some(_) => Err(CloudError::body(format!("{name} must be an object"))),
        }
    }

    /// `SdkAppId` and `TaskId`, the reference every task action takes.
    pub fn task_ref(&mut self) -> Result<TaskRef, CloudError> {
        let sdkappid = self.u64("SdkAppId")?;
        let task_id = self.required_str("TaskId")?;
        if task_id.is_empty() || task_id.len() > 256 {
            return Err(CloudError::invalid("TaskId", "TaskId must be 1-256 characters"));
        }
        Ok(TaskRef { sdkappid, task_id })
    }

    /// Every field was asked for; otherwise the first one that was not is `UnknownParameter`.
    pub fn finish(self) -> Result<(), CloudError> {
        match self.map.keys().find(|k| !self.read.contains(&k.as_str())) {
            Some(k) => Err(CloudError::new(
                "UnknownParameter",
                format!("the parameter {k} is not recognized"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn field_checks_name_the_field() {
        let m = map(json!({"Volume": 300, "Tempo": 3.0, "X": 1}));
        let mut p = Params::new(&m);
        assert_eq!(p.int("Volume", 0, 200).unwrap_err().code, "InvalidParameter.Volume");
        assert_eq!(p.tempo().unwrap_err().code, "InvalidParameter.Tempo");
        assert_eq!(p.finish().unwrap_err().code, "UnknownParameter");
        let m = map(json!({"Volume": "loud"}));
        assert_eq!(
            Params::new(&m).int("Volume", 0, 200).unwrap_err().code,
            "InvalidParameter.BodyParamsError"
        );
        let m = map(json!({}));
        assert_eq!(
            Params::new(&m).u64("SdkAppId").unwrap_err().code,
            "MissingParameter.SdkAppId"
        );
    }

    #[test]
    fn finish_accepts_exactly_what_was_read_and_null_counts_as_absent() {
        let m = map(json!({"SdkAppId": 7, "TaskId": "t", "Volume": null}));
        let mut p = Params::new(&m);
        assert_eq!(p.task_ref().unwrap(), TaskRef::new(7, "t"));
        assert_eq!(p.int("Volume", 0, 200).unwrap(), None);
        assert!(p.finish().is_ok());
        let mut p = Params::new(&m);
        p.task_ref().unwrap();
        let e = p.finish().unwrap_err();
        assert_eq!(e.code, "UnknownParameter");
        assert!(e.message.contains("Volume"), "{e:?}");
    }

    #[test]
    fn nested_objects_have_their_own_cursor() {
        let m = map(json!({"VideoEncodeParams": {"Width": 640, "Extra": 1}}));
        let mut p = Params::new(&m);
        let mut v = p.nested("VideoEncodeParams").unwrap().unwrap();
        assert_eq!(v.int("Width", 0, 1920).unwrap(), Some(640));
        assert_eq!(v.finish().unwrap_err().code, "UnknownParameter");
        assert!(p.finish().is_ok());
        let m = map(json!({"VideoEncodeParams": 5}));
        assert!(Params::new(&m).nested("VideoEncodeParams").is_err());
    }

    #[test]
    fn task_ids_are_bounded() {
        let long = "x".repeat(257);
        for id in ["", long.as_str()] {
            let m = map(json!({"SdkAppId": 7, "TaskId": id}));
            assert_eq!(Params::new(&m).task_ref().unwrap_err().code, "InvalidParameter.TaskId");
        }
    }
}
