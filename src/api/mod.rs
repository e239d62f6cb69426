//! The HTTP surface: the Cloud API 3.0 endpoint (`POST /`), WHIP/WHEP, health, Prometheus metrics and the room
//! and task listings.

pub mod admin;
mod callbacks;
pub mod cloud;
pub mod console;
mod nodes;
pub mod openapi;
pub(crate) mod rooms;
pub mod server;
pub mod webrtc;
pub mod whep;
pub mod whip;

use crate::room::RoomHub;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, options, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The rooms and their anchors, for listings and WHIP/WHEP.
    pub hub: Arc<RoomHub>,
    /// Renders the Prometheus text for `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// The loaded configuration (apps and their keys, admin, limits).
    pub config: Arc<crate::config::Config>,
    /// `None` when the WebRTC engine is disabled.
    pub whep: Option<Arc<crate::egress::whep::WhepService>>,
    /// `None` when the WebRTC engine is disabled.
    pub whip: Option<Arc<crate::ingest::whip::WhipService>>,
    /// Pull tasks; `None`: the console's task actions answer 503 `pull_disabled`, the Cloud API
    /// `UnsupportedOperation`.
    pub pull: Option<Arc<crate::ingest::pull::PullService>>,
    /// Stored callbacks; `None` answers the callback routes with 503 `callbacks_disabled`.
    pub outbox: Option<Arc<crate::events::Outbox>>,
    /// Per-SecretId request budget for the Cloud API (`[api] rate_limit`).
    pub cloud_rate: Arc<cloud::RateLimiter>,
    /// TC3 signatures already used (replay protection for the Cloud API).
    pub cloud_replay: Arc<std::sync::Mutex<crate::auth::tc3::ReplayCache>>,
    /// The RTMP port actually bound (config may say 0), for the URLs the console prints.
    pub rtmp_port: Option<u16>,
    /// The RTMPS port bound, if any: printed RTMP settings use `rtmps://` then.
    pub rtmps_port: Option<u16>,
    /// The SRT listener's port, when SRT is on (for the token tool's SRT URL).
    pub srt_port: Option<u16>,
    /// This node's cluster membership (`GET /v1/nodes`).
    pub registry: Arc<crate::cluster::Registry>,
    /// The cluster's pull tasks (Describe/Stop/Update of tasks on other nodes, placement); `None` on a single node.
    pub cluster_tasks: Option<Arc<crate::cluster::tasks::ClusterTasks>>,
}

/// Every HTTP route. Admin-only handlers take `console::Admin` first: the check runs before their body extractors.
pub fn router(state: ApiState) -> Router {
    let webrtc = Router::new()
        .route("/v2/sub/{sdkappid}/{room}", post(whep::post).options(whep::options))
        .route(
            "/v2/sub/session/{id}",
            options(whep::options).patch(webrtc::patch).delete(webrtc::delete),
        )
        .route("/v2/pub/{sdkappid}/{room}", post(whip::post).options(whep::options))
        .route(
            "/v2/pub/session/{id}",
            options(whep::options).patch(webrtc::patch).delete(webrtc::delete),
        )
        .layer(axum::extract::DefaultBodyLimit::max(webrtc::MAX_SDP_BYTES))
        .layer(axum::middleware::map_response(whep::cors));
    Router::new()
        .merge(webrtc)
        .route("/", post(cloud::handle).get(console::index))
        .route("/play", get(console::play))
        .route("/publish", get(console::publish))
        .route("/tokens", get(console::tokens_page))
        .route("/assets/{name}", get(console::assets))
        .route("/demo/sample.mp4", get(console::demo_media))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/apps", get(console::apps))
        .route("/v1/tasks", get(console::tasks).post(console::start_task))
        .route("/v1/tasks/{id}", axum::routing::delete(console::stop_task))
        .route("/v1/tokens", post(console::tokens))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/rooms", get(rooms::list))
        .route("/v1/rooms/{sdkappid}/{room}", get(rooms::one))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/callbacks", get(callbacks::list))
        .route("/v1/callbacks/{id}", get(callbacks::one))
        .route("/v1/callbacks/{id}/retry", post(callbacks::retry))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn metrics(axum::extract::State(st): axum::extract::State<ApiState>) -> impl IntoResponse {
    // Sessions live on several engine shards: the gauge is read from their shared count when scraped, so no
    // interleaving of the shards' own updates can leave it stale.
    if let Some(w) = &st.whep {
        metrics::gauge!("roomgate_rtc_sessions").set(w.engine.session_count() as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

async fn not_found() -> impl IntoResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The HTTP status and error code of a refused WHIP publish.
pub fn refusal_status(r: &crate::ingest::Refusal) -> (StatusCode, &'static str) {
    match r {
        crate::ingest::Refusal::Denied(d) => denied_status(d),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    }
}

/// The HTTP status and error code of a publisher or viewer who is not let in.
pub fn denied_status(d: &crate::access::Denied) -> (StatusCode, &'static str) {
    use crate::access::Denied;
    match d {
        Denied::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
        Denied::UserSig(_) | Denied::MissingToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Denied::PrivateMapKeyRequired(_) | Denied::PrivateMapKey(_) => (StatusCode::FORBIDDEN, "forbidden"),
        Denied::BadUserId(_) => (StatusCode::BAD_REQUEST, "bad_session_id"),
        Denied::BadRoomId(_) => (StatusCode::BAD_REQUEST, "bad_request"),
    }
}

/// A JSON error: `{"error": {"code": "...", "message": "..."}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Stable snake_case code for `error.code`, e.g. `not_found`.
    pub code: &'static str,
    /// Human-readable detail for `error.message`.
    pub message: String,
    /// Seconds for a `Retry-After` header (503 and 429 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no `Retry-After` (add one with [`ApiError::retry_after`]).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Add `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        resp
    }
}
