//! The Cloud API 3.0 endpoint (`POST /`, action in `X-TC-Action`): TRTC's StartStreamIngest, StopStreamIngest,
//! DescribeStreamIngest and UpdateStreamIngest, so Tencent's own SDKs work against roomgate by changing the endpoint.
//!
//! Every reply is HTTP 200 with `{"Response":{...,"RequestId"}}`; failures carry `Response.Error{Code,Message}`
//! with the codes of the reference (§1.3, §1.8). Parameters are validated strictly: unknown fields are
//! `UnknownParameter`, wrong types `InvalidParameter.BodyParamsError`, out-of-range values `InvalidParameter.<Field>`
//! naming the field, so a mistake never passes silently.

mod describe;
mod list;
mod params;
mod start;
mod stop;
mod update;

pub(crate) use describe::describe_fields;

use super::ApiState;
use crate::auth::{self, tc3};
use crate::cluster::tasks::TaskMirror;
use crate::config::{ApiKeyConfig, Config};
use crate::ingest::pull::{PullError, PullService};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use list::List;
use params::TaskRef;
use serde_json::{json, Map, Value};
use start::Start;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use update::Update;

/// The API version roomgate speaks (TRTC's).
pub const VERSION: &str = "2019-07-22";
/// The service name in TC3 credentials.
pub const SERVICE: &str = "trtc";

/// A Cloud API error: the code and message put in `Response.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    /// Cloud API error code, e.g. `UnsupportedOperation` or `InvalidParameter.StreamUrl`.
    pub code: String,
    /// Human-readable detail for `Response.Error.Message`.
    pub message: String,
}

impl CloudError {
    /// An error with this code and message.
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
    st.cloud_replay
        .lock()
        .expect("replay cache lock")
        .check(&verified, Action::idempotent(action), now)
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
    let caller = Caller {
        pull,
        cluster: st.cluster_tasks.as_ref(),
        secret_id: &secret_id,
        key,
    };
    Action::parse(action, &params, &st.config, now)?.apply(&caller).await
}

/// The actions of the API, each parsed from its parameters before it acts.
enum Action {
    Start(Start),
    Stop(TaskRef),
    Describe(TaskRef),
    Update(Update),
    /// Extension (not in TRTC): the running tasks.
    List(List),
}

impl Action {
    fn parse(name: &str, params: &Map<String, Value>, config: &Config, now: u64) -> Result<Action, CloudError> {
        Ok(match name {
            "StartStreamIngest" => Action::Start(Start::parse(params, config, now)?),
            "StopStreamIngest" => Action::Stop(TaskRef::parse(params)?),
            "DescribeStreamIngest" => Action::Describe(TaskRef::parse(params)?),
            "UpdateStreamIngest" => Action::Update(Update::parse(params)?),
            "ListStreamIngests" => Action::List(List::parse(params)?),
            other => return Err(CloudError::new(
                "InvalidAction",
                format!("action {other} is not supported (StartStreamIngest, StopStreamIngest, DescribeStreamIngest, UpdateStreamIngest, ListStreamIngests)"),
            )),
        })
    }

    /// Whether a replayed request may simply be answered again: a repeated Stop ends nothing new
    /// (TaskFinished); a repeated Start or Update would act again.
    fn idempotent(name: &str) -> bool {
        matches!(name, "DescribeStreamIngest" | "ListStreamIngests" | "StopStreamIngest")
    }

    async fn apply(self, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
        match self {
            Action::Start(a) => a.apply(caller).await,
            Action::Stop(task) => stop::apply(task, caller).await,
            Action::Describe(task) => describe::apply(task, caller).await,
            Action::Update(a) => a.apply(caller).await,
            Action::List(a) => a.apply(caller).await,
        }
    }
}

/// Who is calling (a verified SecretId and its key) and the tasks they act on.
struct Caller<'a> {
    pull: &'a std::sync::Arc<PullService>,
    /// The cluster's tasks (on other nodes); `None` on a single node.
    cluster: Option<&'a std::sync::Arc<crate::cluster::tasks::ClusterTasks>>,
    secret_id: &'a str,
    key: &'a ApiKeyConfig,
}

impl Caller<'_> {
    /// A key limited to some apps may act on those only.
    fn may_act_on(&self, sdkappid: u64) -> Result<(), CloudError> {
        if self.key.sdkappids.is_empty() || self.key.sdkappids.contains(&sdkappid) {
            Ok(())
        } else {
            Err(CloudError::new(
                "UnauthorizedOperation.SdkAppId",
                format!("SecretId {} may not act on SdkAppId {sdkappid}", self.secret_id),
            ))
        }
    }

    /// A task must belong to the app the caller names; otherwise it does not exist for them.
    /// The task of `sdkappid` as the cluster mirrors it, when it runs on another node (not here); a Redis failure
    /// reads as "not elsewhere" (the local answer stands).
    async fn elsewhere(
        &self,
        task_id: &str,
        sdkappid: u64,
    ) -> Option<(&crate::cluster::tasks::ClusterTasks, TaskMirror)> {
        let cluster = self.cluster?;
        if self.pull.running(task_id) {
            return None;
        }
        match cluster.mirror(task_id).await {
            Ok(m) => Some((cluster.as_ref(), m.filter(|m| m.spec.sdk_app_id == sdkappid)?)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's tasks; answering from this node");
                None
            }
        }
    }

    async fn check_task_app(&self, task_id: &str, sdkappid: u64) -> Result<(), CloudError> {
        match self.pull.describe(task_id).await? {
            Some((spec, _)) if spec.sdk_app_id == sdkappid => Ok(()),
            _ => Err(CloudError::invalid("TaskId", "no such task for this SdkAppId")),
        }
    }
}

/// A Redis failure while acting on another node's task: `FailedOperation` (nothing was done).
fn cluster_error(e: crate::cluster::ClusterError) -> CloudError {
    CloudError::new("FailedOperation", format!("the cluster is unavailable: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
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
mod tests;
