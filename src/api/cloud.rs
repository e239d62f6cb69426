//! The Cloud API 3.0 endpoint (`POST /`, action in `X-TC-Action`): TRTC's StartStreamIngest, StopStreamIngest,
//! DescribeStreamIngest and UpdateStreamIngest, so Tencent's own SDKs work against roomgate by changing the endpoint.
//!
//! Every reply is HTTP 200 with `{"Response":{...,"RequestId"}}`; failures carry `Response.Error{Code,Message}`
//! with the codes of the reference (§1.3, §1.8). Parameters are validated strictly: unknown fields are
//! `UnknownParameter`, wrong types `InvalidParameter.BodyParamsError`, out-of-range values `InvalidParameter.<Field>`
//! naming the field, so a mistake never passes silently.

use super::ApiState;
use crate::auth::{self, tc3, RoomRef};
use crate::ingest::pull::{AudioEncodeParams, PullError, TaskSpec, TaskState, TaskUpdate, VideoEncodeParams};
use crate::ingest::{authorize_publish, Refusal};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The API version roomgate speaks (TRTC's).
pub const VERSION: &str = "2019-07-22";
/// The service name in TC3 credentials.
pub const SERVICE: &str = "trtc";
const TEMPOS: [f64; 7] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0];

/// A Cloud API error: the code and message put in `Response.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    pub code: String,
    pub message: String,
}

impl CloudError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        CloudError {
            code: code.into(),
            message: message.into(),
        }
    }
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(format!("InvalidParameter.{field}"), message)
    }
    fn missing(field: &str) -> Self {
        Self::new(
            format!("MissingParameter.{field}"),
            format!("the required parameter {field} is missing"),
        )
    }
    fn body(message: impl Into<String>) -> Self {
        Self::new("InvalidParameter.BodyParamsError", message)
    }
}

impl From<PullError> for CloudError {
    fn from(e: PullError) -> Self {
        let code = match &e {
            PullError::TaskExist(_) => "FailedOperation.TaskExist",
            PullError::TaskNotExist => "FailedOperation.TaskNotExist",
            PullError::TaskFinished => "FailedOperation.TaskFinished",
            PullError::RestrictedConcurrency(_) => "FailedOperation.RestrictedConcurrency",
            PullError::Source(_) => "InvalidParameter.StreamUrl",
            PullError::Store(_) => "InternalError.DBError",
        };
        CloudError::new(code, e.to_string())
    }
}

/// Requests per second per SecretId (a token bucket refilled continuously).
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Take one token for `who`; false when the bucket is empty. `rate` 0 means unlimited.
    pub fn allow(&self, who: &str, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate lock");
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((rate as f64, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate as f64).min(rate as f64);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `POST /` (and the GET form is refused with UnsupportedOperation).
pub async fn handle(State(st): State<ApiState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let request_id = request_id();
    let action = header(&headers, "x-tc-action").unwrap_or_default();
    let result = dispatch(&st, &method, &uri, &headers, body, &action).await;
    let response = match result {
        Ok(mut fields) => {
            fields.insert("RequestId".into(), Value::String(request_id.clone()));
            json!({ "Response": fields })
        }
        Err(e) => {
            tracing::info!(action = %action, code = %e.code, message = %e.message, request_id = %request_id, "Cloud API error");
            metrics::counter!("roomgate_cloud_api_errors_total", "code" => e.code.clone()).increment(1);
            json!({"Response": {"Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id}})
        }
    };
    metrics::counter!("roomgate_cloud_api_requests_total", "action" => action_label(&action)).increment(1);
    Json(response).into_response()
}

fn action_label(a: &str) -> &'static str {
    match a {
        "StartStreamIngest" => "StartStreamIngest",
        "StopStreamIngest" => "StopStreamIngest",
        "DescribeStreamIngest" => "DescribeStreamIngest",
        "UpdateStreamIngest" => "UpdateStreamIngest",
        "ListStreamIngests" => "ListStreamIngests",
        _ => "other",
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn dispatch(
    st: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    action: &str,
) -> Result<Map<String, Value>, CloudError> {
    let limit = st.config.api.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        CloudError::new(
            "RequestSizeLimitExceeded",
            format!("the request body is larger than {limit} bytes"),
        )
    })?;
    if method == Method::GET {
        return Err(CloudError::new(
            "UnsupportedProtocol",
            "use POST with a JSON body (the GET form is not supported)",
        ));
    }
    if action.is_empty() {
        return Err(CloudError::new("MissingParameter", "the X-TC-Action header is missing"));
    }
    match header(headers, "x-tc-version") {
        None => {
            return Err(CloudError::new(
                "MissingParameter",
                "the X-TC-Version header is missing",
            ))
        }
        Some(v) if v != VERSION => {
            return Err(CloudError::new(
                "NoSuchVersion",
                format!("version {v} is not supported; use {VERSION}"),
            ))
        }
        _ => {}
    }
    let now = auth::unix_now();
    let verified = tc3::verify(
        &tc3::Tc3Request {
            method: method.as_str(),
            query: uri.query().unwrap_or(""),
            header: |n: &str| header(headers, n),
            body: &body,
        },
        |id| st.config.api_key(id).map(|k| k.secret_key.clone()),
        now,
    )
    .map_err(|e| CloudError::new(e.code(), e.to_string()))?;
    if !st.cloud_rate.allow(&verified.secret_id, st.config.api.rate_limit) {
        return Err(CloudError::new(
            "RequestLimitExceeded",
            format!("more than {} requests per second", st.config.api.rate_limit),
        ));
    }
    // A repeated Stop ends nothing new (TaskFinished); a repeated Start or Update would act again.
    let idempotent = matches!(
        action,
        "DescribeStreamIngest" | "ListStreamIngests" | "StopStreamIngest"
    );
    st.cloud_replay
        .lock()
        .expect("replay cache lock")
        .check(&verified, idempotent, now)
        .map_err(|e| CloudError::new(e.code(), e.to_string()))?;
    let secret_id = verified.secret_id;
    let params: Map<String, Value> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(CloudError::body("the body must be a JSON object")),
        Err(e) => return Err(CloudError::body(format!("the body is not valid JSON: {e}"))),
    };
    let pull = st
        .pull
        .as_ref()
        .ok_or_else(|| CloudError::new("UnsupportedOperation", "pull tasks are disabled on this gateway"))?;
    let key = st.config.api_key(&secret_id).expect("verified above");
    let allowed_app = |sdkappid: u64| -> Result<(), CloudError> {
        if key.sdkappids.is_empty() || key.sdkappids.contains(&sdkappid) {
            Ok(())
        } else {
            Err(CloudError::new(
                "UnauthorizedOperation.SdkAppId",
                format!("SecretId {secret_id} may not act on SdkAppId {sdkappid}"),
            ))
        }
    };
    match action {
        "StartStreamIngest" => {
            let spec = parse_start(&params, st, auth::unix_now())?;
            allowed_app(spec.sdk_app_id)?;
            let task_id = pull.start(spec).await?;
            Ok(obj(json!({ "TaskId": task_id })))
        }
        "StopStreamIngest" => {
            let (sdkappid, task_id) = parse_task_ref(&params, &["SdkAppId", "TaskId"])?;
            allowed_app(sdkappid)?;
            check_task_app(pull, &task_id, sdkappid).await?;
            pull.stop(&task_id).await?;
            Ok(Map::new())
        }
        "DescribeStreamIngest" => {
            let (sdkappid, task_id) = parse_task_ref(&params, &["SdkAppId", "TaskId"])?;
            allowed_app(sdkappid)?;
            let found = pull.describe(&task_id).await?.filter(|(spec, _)| spec.sdk_app_id == sdkappid);
            Ok(describe_fields(found))
        }
        "UpdateStreamIngest" => {
            let fields = ["SdkAppId", "TaskId", "StreamUrl", "Volume", "IsPause", "EnableProgress", "Tempo"];
            let (sdkappid, task_id) = parse_task_ref(&params, &fields)?;
            allowed_app(sdkappid)?;
            let update = TaskUpdate {
                stream_url: opt_str(&params, "StreamUrl")?,
                volume: opt_int(&params, "Volume", 0, 200)?.map(|v| v as u32),
                is_pause: opt_bool(&params, "IsPause")?,
                enable_progress: opt_bool(&params, "EnableProgress")?,
                tempo: opt_tempo(&params)?,
            };
            if let Some(url) = &update.stream_url {
                crate::ingest::pull::source::parse_source_url(url)
                    .map_err(|e| CloudError::invalid("StreamUrl", e.to_string()))?;
            }
            check_task_app(pull, &task_id, sdkappid)
                .await
                .map_err(|_| CloudError::from(PullError::TaskNotExist))?;
            pull.update(&task_id, update).await?;
            Ok(obj(json!({ "Status": "InProgress" })))
        }
        // Extension (not in TRTC): the running tasks, for `roomgate ingest list` and the console.
        "ListStreamIngests" => {
            reject_unknown(&params, &["SdkAppId"])?;
            let filter = match params.get("SdkAppId") {
                None | Some(Value::Null) => None,
                Some(_) => Some(req_u64(&params, "SdkAppId")?),
            };
            let tasks: Vec<Value> = pull
                .list()
                .into_iter()
                .filter(|t| {
                    let app = t.spec().sdk_app_id;
                    filter.is_none_or(|f| f == app) && allowed_app(app).is_ok()
                })
                .map(|t| {
                    let mut m = describe_fields(Some((t.spec(), t.status())));
                    m.insert("TaskId".into(), Value::String(t.id.clone()));
                    m.insert("SdkAppId".into(), json!(t.spec().sdk_app_id));
                    Value::Object(m)
                })
                .collect();
            Ok(obj(json!({ "Tasks": tasks })))
        }
        other => Err(CloudError::new(
            "InvalidAction",
            format!("action {other} is not supported (StartStreamIngest, StopStreamIngest, DescribeStreamIngest, UpdateStreamIngest, ListStreamIngests)"),
        )),
    }
}

/// A task must belong to the app the caller names; otherwise it does not exist for them.
async fn check_task_app(
    pull: &crate::ingest::pull::PullService,
    task_id: &str,
    sdkappid: u64,
) -> Result<(), CloudError> {
    match pull.describe(task_id).await? {
        Some((spec, _)) if spec.sdk_app_id == sdkappid => Ok(()),
        _ => Err(CloudError::invalid("TaskId", "no such task for this SdkAppId")),
    }
}

pub(crate) fn describe_fields(found: Option<(TaskSpec, crate::ingest::pull::TaskStatus)>) -> Map<String, Value> {
    let Some((spec, status)) = found else {
        return obj(json!({ "Status": "NotExist" }));
    };
    let in_progress = status.state.is_active();
    let mut m = obj(json!({
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

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn reject_unknown(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), CloudError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(CloudError::new(
            "UnknownParameter",
            format!("the parameter {k} is not recognized"),
        )),
        None => Ok(()),
    }
}

fn parse_task_ref(params: &Map<String, Value>, allowed: &[&str]) -> Result<(u64, String), CloudError> {
    reject_unknown(params, allowed)?;
    let sdkappid = req_u64(params, "SdkAppId")?;
    let task_id = opt_str(params, "TaskId")?.ok_or_else(|| CloudError::missing("TaskId"))?;
    if task_id.is_empty() || task_id.len() > 256 {
        return Err(CloudError::invalid("TaskId", "TaskId must be 1-256 characters"));
    }
    Ok((sdkappid, task_id))
}

fn req_u64(params: &Map<String, Value>, name: &str) -> Result<u64, CloudError> {
    match params.get(name) {
        None | Some(Value::Null) => Err(CloudError::missing(name)),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| CloudError::invalid(name, format!("{name} must be a non-negative integer"))),
        Some(_) => Err(CloudError::body(format!("{name} must be an integer"))),
    }
}

fn opt_int(params: &Map<String, Value>, name: &str, min: i64, max: i64) -> Result<Option<i64>, CloudError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
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

fn opt_str(params: &Map<String, Value>, name: &str) -> Result<Option<String>, CloudError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CloudError::body(format!("{name} must be a string"))),
    }
}

fn opt_bool(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, CloudError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(CloudError::body(format!("{name} must be a boolean"))),
    }
}

fn opt_tempo(params: &Map<String, Value>) -> Result<Option<f64>, CloudError> {
    match params.get("Tempo") {
        None | Some(Value::Null) => Ok(None),
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

fn nested<'a>(params: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Map<String, Value>>, CloudError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CloudError::body(format!("{name} must be an object"))),
    }
}

const START_FIELDS: &[&str] = &[
    "SdkAppId",
    "RoomId",
    "RoomIdType",
    "UserId",
    "UserSig",
    "StreamUrl",
    "PrivateMapKey",
    "VideoEncodeParams",
    "AudioEncodeParams",
    "SourceUrl",
    "SeekSecond",
    "AutoPush",
    "RepeatNum",
    "MaxDuration",
    "Volume",
    "EnableProgress",
    "Tempo",
    "IdleTimeout",
];

/// Validate StartStreamIngest's parameters into a task spec (robot identity and UserSig included).
fn parse_start(params: &Map<String, Value>, st: &ApiState, now: u64) -> Result<TaskSpec, CloudError> {
    reject_unknown(params, START_FIELDS)?;
    let sdkappid = req_u64(params, "SdkAppId")?;
    st.config.app(sdkappid).ok_or_else(|| {
        CloudError::invalid(
            "SdkAppId",
            format!("SdkAppId {sdkappid} is not configured on this gateway"),
        )
    })?;
    let room_id = match params.get("RoomId") {
        None | Some(Value::Null) => return Err(CloudError::missing("RoomId")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(CloudError::body("RoomId must be a string")),
    };
    let room_id_type = opt_int(params, "RoomIdType", 0, 1)?.unwrap_or(1) as u8;
    let room = if room_id_type == 1 {
        match room_id.parse::<u64>() {
            Ok(n) if (1..=u32::MAX as u64).contains(&n) && !room_id.starts_with('0') => RoomRef::Num(n as u32),
            _ => {
                return Err(CloudError::invalid(
                    "RoomId",
                    format!("RoomIdType 1 needs a numeric RoomId in 1..4294967295 (got {room_id:?}); use RoomIdType 0 for string rooms"),
                ))
            }
        }
    } else {
        RoomRef::Str(room_id.clone())
    };
    let user_id = opt_str(params, "UserId")?.ok_or_else(|| CloudError::missing("UserId"))?;
    let user_sig = opt_str(params, "UserSig")?.ok_or_else(|| CloudError::missing("UserSig"))?;
    let pmk = opt_str(params, "PrivateMapKey")?.filter(|s| !s.is_empty());
    // The robot is authorized exactly as an RTMP or WHIP publisher with these credentials would be.
    authorize_publish(
        &st.config.apps,
        sdkappid,
        &room,
        &user_id,
        &user_sig,
        pmk.as_deref(),
        now,
    )
    .map_err(|r| {
        let field = match &r {
            Refusal::BadRoomId(_) => "StrRoomId",
            Refusal::BadUserId(_) => "UserId",
            Refusal::PrivateMapKeyRequired(_) | Refusal::PrivateMapKey(_) => "PrivateMapKey",
            _ => "UserSig",
        };
        let why = match &r {
            Refusal::UserSig(e) => format!("UserSig of {user_id} rejected: {e}"),
            r => r.to_string(),
        };
        CloudError::invalid(field, why)
    })?;
    let source_url = match params.get("SourceUrl") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => match list.as_slice() {
            [Value::String(u)] => Some(u.clone()),
            _ => {
                return Err(CloudError::invalid(
                    "SourceUrl",
                    "SourceUrl must hold exactly one URL string (it is deprecated: use StreamUrl)",
                ))
            }
        },
        Some(_) => return Err(CloudError::body("SourceUrl must be an array of strings")),
    };
    let stream_url = opt_str(params, "StreamUrl")?
        .or(source_url)
        .ok_or_else(|| CloudError::missing("StreamUrl"))?;
    crate::ingest::pull::source::parse_source_url(&stream_url)
        .map_err(|e| CloudError::invalid("StreamUrl", e.to_string()))?;
    let repeat_num = opt_int(params, "RepeatNum", -1, 1000)?.unwrap_or(1);
    if repeat_num == 0 {
        return Err(CloudError::invalid(
            "RepeatNum",
            "RepeatNum must be -1 (forever) or within [1, 1000] (got 0)",
        ));
    }
    let max_duration = opt_int(params, "MaxDuration", 1, 10080)?;
    let mut volume = opt_int(params, "Volume", 0, 200)?.map(|v| v as u32);
    let seek_second = opt_int(params, "SeekSecond", 0, i64::MAX / 1000)?.unwrap_or(0);
    let idle_timeout = opt_int(params, "IdleTimeout", 0, 600)?.map(|v| v as u64);
    let tempo = opt_tempo(params)?.unwrap_or(1.0);
    let enable_progress = opt_bool(params, "EnableProgress")?.unwrap_or(false);
    opt_bool(params, "AutoPush")?;

    let video_encode_params = match nested(params, "VideoEncodeParams")? {
        None => None,
        Some(v) => {
            reject_unknown(v, &["Width", "Height", "Fps", "BitRate", "Gop"])?;
            Some(VideoEncodeParams {
                width: opt_int(v, "Width", 0, 1920)?.unwrap_or(0) as u32,
                height: opt_int(v, "Height", 0, 1080)?.unwrap_or(0) as u32,
                fps: opt_int(v, "Fps", 1, 60)?.unwrap_or(0) as u32,
                bit_rate: opt_int(v, "BitRate", 1, 10000)?.unwrap_or(0) as u32,
                gop: opt_int(v, "Gop", 1, 2)?.unwrap_or(0) as u32,
            })
        }
    };
    let audio_encode_params = match nested(params, "AudioEncodeParams")? {
        None => None,
        Some(a) => {
            reject_unknown(a, &["SampleRate", "Channel", "BitRate", "Volume"])?;
            let sample_rate = opt_int(a, "SampleRate", 0, 48000)?.unwrap_or(48000) as u32;
            if ![44100, 48000].contains(&sample_rate) {
                return Err(CloudError::invalid(
                    "SampleRate",
                    "AudioEncodeParams.SampleRate must be 48000 or 44100",
                ));
            }
            let channel = opt_int(a, "Channel", 1, 2)?.unwrap_or(2) as u32;
            let bit_rate = opt_int(a, "BitRate", 8, 500)?.unwrap_or(0) as u32;
            let a_volume = opt_int(a, "Volume", 0, 300)?.map(|v| v as u32);
            volume = volume.or(a_volume);
            Some(AudioEncodeParams {
                sample_rate,
                channel,
                bit_rate,
                volume: a_volume,
            })
        }
    };
    Ok(TaskSpec {
        sdk_app_id: sdkappid,
        room_id,
        room_id_type,
        user_id,
        stream_url,
        seek_second,
        repeat_num,
        max_duration,
        volume: volume.unwrap_or(100),
        tempo,
        idle_timeout,
        is_pause: false,
        enable_progress,
        video_encode_params,
        audio_encode_params,
        trusted_source: false,
    })
}

/// A signed client of this API (what `roomgate ingest` uses): TC3-HMAC-SHA256 over `content-type;host`, as the
/// official SDKs sign.
pub struct CloudApiClient {
    pub endpoint: url::Url,
    pub secret_id: String,
    pub secret_key: String,
    http: reqwest::Client,
}

impl CloudApiClient {
    pub fn new(endpoint: url::Url, secret_id: String, secret_key: String) -> Self {
        CloudApiClient {
            endpoint,
            secret_id,
            secret_key,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("static client settings"),
        }
    }

    /// Call `action`; the `Response` object, or its error as `CloudError` (transport failures as `ClientError`).
    pub async fn call(&self, action: &str, params: &Value) -> Result<Map<String, Value>, CloudError> {
        let body = serde_json::to_vec(params).expect("JSON serializes");
        let host = match (self.endpoint.host_str(), self.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(CloudError::new("ClientError", "the endpoint has no host")),
        };
        let now = auth::unix_now();
        let authorization =
            tc3::sign_post_action(&self.secret_id, &self.secret_key, SERVICE, &host, action, now, &body);
        let resp = self
            .http
            .post(self.endpoint.clone())
            .header("Content-Type", "application/json")
            .header("Host", &host)
            .header("X-TC-Action", action)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", now.to_string())
            .header("Authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| CloudError::new("ClientError", format!("cannot reach {}: {e}", self.endpoint)))?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| CloudError::new("ClientError", format!("the reply is not JSON: {e}")))?;
        let response = match v.get("Response") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(CloudError::new("ClientError", format!("unexpected reply: {v}"))),
        };
        if let Some(err) = response.get("Error") {
            return Err(CloudError::new(
                err["Code"].as_str().unwrap_or("Unknown"),
                err["Message"].as_str().unwrap_or(""),
            ));
        }
        Ok(response)
    }
}

/// A random UUID (v4) for `RequestId`.
fn request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_refills() {
        let r = RateLimiter::default();
        let allowed = (0..25).filter(|_| r.allow("a", 20)).count();
        assert_eq!(allowed, 20, "a burst is capped at the per-second rate");
        assert!(r.allow("b", 20), "buckets are per SecretId");
        assert!(r.allow("a", 0), "0 disables the limit");
    }

    #[test]
    fn request_ids_are_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, request_id());
    }

    #[test]
    fn field_checks_name_the_field() {
        let p = obj(json!({"Volume": 300, "Tempo": 3.0, "X": 1}));
        assert_eq!(
            opt_int(&p, "Volume", 0, 200).unwrap_err().code,
            "InvalidParameter.Volume"
        );
        assert_eq!(opt_tempo(&p).unwrap_err().code, "InvalidParameter.Tempo");
        assert_eq!(
            reject_unknown(&p, &["Volume", "Tempo"]).unwrap_err().code,
            "UnknownParameter"
        );
        let p = obj(json!({"Volume": "loud"}));
        assert_eq!(
            opt_int(&p, "Volume", 0, 200).unwrap_err().code,
            "InvalidParameter.BodyParamsError"
        );
        assert_eq!(
            req_u64(&obj(json!({})), "SdkAppId").unwrap_err().code,
            "MissingParameter.SdkAppId"
        );
    }
}
