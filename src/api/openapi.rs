//! `GET /openapi.json`: the OpenAPI 3.1 document (utoipa) of roomgate's HTTP API: the `/v1` routes, WHIP and
//! WHEP, the Cloud API endpoint, health and metrics.
//!
//! Each route is described by a `#[utoipa::path]` item here, next to the others, so the document reads as one
//! reference; `tests/console_api.rs` checks it lists every route the router serves.

use super::console::{NewTask, TokenRequest, Tokens};
use crate::cluster::{Load, NodeInfo};
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

/// A JSON error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`]: a stable snake_case `code` and a human-readable `message`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    code: String,
    message: String,
}

/// The OpenAPI document: the `#[utoipa::path]` items below and the console's schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "roomgate",
        description = "Self-hosted media ingest gateway (TRTC-compatible): rooms, WHIP/WHEP, pull tasks, callbacks."
    ),
    paths(
        cloud_api, healthz, metrics, rooms, room, apps, tasks, start_task, stop_task, tokens, callbacks, callback,
        retry_callback, nodes, whip_post, whip_patch, whip_delete, whep_post, whep_patch, whep_delete
    ),
    components(schemas(NewTask, TokenRequest, Tokens, ErrorBody, ErrorDetail, NodeInfo, Load)),
    tags(
        (name = "cloud", description = "TRTC Cloud API 3.0 (TC3-HMAC-SHA256 signed)"),
        (name = "console", description = "JSON API of the web console"),
        (name = "webrtc", description = "WHIP publishing and WHEP playback"),
        (name = "ops", description = "Health and metrics")
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`: the document, built on each request.
pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// TRTC Cloud API: StartStreamIngest, StopStreamIngest, DescribeStreamIngest, UpdateStreamIngest (and the
/// ListStreamIngests extension). Always HTTP 200 with `{"Response":{...,"RequestId"}}`; errors in
/// `Response.Error{Code,Message}`.
#[utoipa::path(post, path = "/", tag = "cloud",
    params(
        ("X-TC-Action" = String, Header, description = "e.g. StartStreamIngest"),
        ("X-TC-Version" = String, Header, description = "2019-07-22"),
        ("X-TC-Timestamp" = i64, Header, description = "Unix seconds (±5 min)"),
        ("Authorization" = String, Header, description = "TC3-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..")
    ),
    request_body(content = Object, content_type = "application/json", description = "the action's parameters"),
    responses((status = 200, description = "`{\"Response\":{...}}`", body = Object)))]
#[allow(dead_code)]
fn cloud_api() {}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn healthz() {}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// Every room and its anchors (source kind, codec, resolution, fps, bitrate, viewers, start time). Rooms of apps
/// without `public_playback` are listed for admin only.
#[utoipa::path(get, path = "/v1/rooms", tag = "console", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn rooms() {}

/// One room (string room ids unless `type=number`); admin unless the app has `public_playback`.
#[utoipa::path(get, path = "/v1/rooms/{sdkappid}/{room}", tag = "console",
    params(("sdkappid" = u64, Path), ("room" = String, Path), ("type" = Option<String>, Query, description = "number")),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn room() {}

/// Configured apps (without their keys).
#[utoipa::path(get, path = "/v1/apps", tag = "console", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn apps() {}

/// Running pull tasks, each with the DescribeStreamIngest fields plus TaskId, SdkAppId and Node (the node that runs
/// it; every node's in a cluster) (`Reason` for admin only).
#[utoipa::path(get, path = "/v1/tasks", tag = "console", responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn tasks() {}

/// Start a pull task (admin); the robot's UserSig is made by the server. In a cluster it runs on the node with the
/// lowest predicted load.
#[utoipa::path(post, path = "/v1/tasks", tag = "console", request_body = NewTask,
    responses((status = 200, description = "`{\"task_id\": ...}`", body = Object),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[allow(dead_code)]
fn start_task() {}

/// Stop a pull task (admin), on whichever node of the cluster runs it.
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "console", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
#[allow(dead_code)]
fn stop_task() {}

/// UserSig and OBS/ffmpeg settings for a user of a room (admin).
#[utoipa::path(post, path = "/v1/tokens", tag = "console", request_body = TokenRequest,
    responses((status = 200, body = Tokens), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[allow(dead_code)]
fn tokens() {}

/// The callback outbox, newest first (admin).
#[utoipa::path(get, path = "/v1/callbacks", tag = "console",
    params(("status" = Option<String>, Query, description = "pending, delivered or failed"),
           ("limit" = Option<usize>, Query, description = "1..=1000, default 100")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[allow(dead_code)]
fn callbacks() {}

/// One callback (admin).
#[utoipa::path(get, path = "/v1/callbacks/{id}", tag = "console", params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn callback() {}

/// Re-send a failed callback (admin).
#[utoipa::path(post, path = "/v1/callbacks/{id}/retry", tag = "console", params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
#[allow(dead_code)]
fn retry_callback() {}

/// The nodes of the cluster, each with its address and load (admin). `{"cluster": bool, "node": "<this node>",
/// "nodes": [NodeInfo]}`; a single node lists itself. 503 `cluster_unavailable` while Redis does not answer.
#[utoipa::path(get, path = "/v1/nodes", tag = "ops",
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[allow(dead_code)]
fn nodes() {}

/// WHIP: publish into `room` as anchor `SessionID`, `Authorization: Bearer <UserSig>`.
#[utoipa::path(post, path = "/v2/pub/{sdkappid}/{room}", tag = "webrtc",
    params(("sdkappid" = u64, Path), ("room" = String, Path), ("SessionID" = String, Query, description = "the anchor's user id"),
           ("privatemapkey" = Option<String>, Query)),
    request_body(content = String, content_type = "application/sdp"),
    responses((status = 201, description = "SDP answer; Location, ETag and Link headers", content_type = "application/sdp"),
              (status = 307, description = "cluster mode: this node takes no new work; re-send the offer to the least-loaded node in Location"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 406, body = ErrorBody),
              (status = 413, description = "offer over 64 KiB", body = ErrorBody),
              (status = 503, description = "rtc.max_sessions reached, or (cluster_full) no node takes new publishers; Retry-After", body = ErrorBody)))]
#[allow(dead_code)]
fn whip_post() {}

/// WHIP session: trickle ICE and ICE restart (`application/trickle-ice-sdpfrag`).
#[utoipa::path(patch, path = "/v2/pub/session/{id}", tag = "webrtc", params(("id" = String, Path)),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    responses((status = 204), (status = 200, content_type = "application/trickle-ice-sdpfrag"), (status = 404, body = ErrorBody),
              (status = 413, description = "fragment over 64 KiB", body = ErrorBody),
              (status = 422, description = "more than 20 trickled candidates in the session", body = ErrorBody)))]
#[allow(dead_code)]
fn whip_patch() {}

/// End a WHIP session: the anchor leaves the room.
#[utoipa::path(delete, path = "/v2/pub/session/{id}", tag = "webrtc", params(("id" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn whip_delete() {}

/// WHEP: watch an anchor of `room` (`anchor` or the first), as viewer `SessionID` with `Authorization: Bearer
/// <UserSig>` unless the app has public playback.
#[utoipa::path(post, path = "/v2/sub/{sdkappid}/{room}", tag = "webrtc",
    params(("sdkappid" = u64, Path), ("room" = String, Path), ("SessionID" = Option<String>, Query),
           ("anchor" = Option<String>, Query), ("roomtype" = Option<String>, Query, description = "number")),
    request_body(content = String, content_type = "application/sdp"),
    responses((status = 201, description = "SDP answer; Location, ETag and Link headers", content_type = "application/sdp"),
              (status = 307, description = "cluster mode with whep = redirect: the anchor is on the node in Location; re-send the offer there"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 406, body = ErrorBody), (status = 413, description = "offer over 64 KiB", body = ErrorBody),
              (status = 429, description = "rtc.whep_per_ip_per_minute reached; Retry-After", body = ErrorBody),
              (status = 503, description = "rtc.max_sessions reached; Retry-After", body = ErrorBody)))]
#[allow(dead_code)]
fn whep_post() {}

#[utoipa::path(patch, path = "/v2/sub/session/{id}", tag = "webrtc", params(("id" = String, Path)),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    responses((status = 204), (status = 200, content_type = "application/trickle-ice-sdpfrag"), (status = 404, body = ErrorBody),
              (status = 413, description = "fragment over 64 KiB", body = ErrorBody),
              (status = 422, description = "more than 20 trickled candidates in the session", body = ErrorBody)))]
#[allow(dead_code)]
fn whep_patch() {}

#[utoipa::path(delete, path = "/v2/sub/session/{id}", tag = "webrtc", params(("id" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn whep_delete() {}
