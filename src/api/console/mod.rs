//! The web console, served by roomgate itself: plain HTML/JS/CSS embedded in the binary (no build step), and the
//! small JSON API it uses (`/v1/apps`, `/v1/tasks`, `/v1/tokens`). Privileged actions (tokens, starting and stopping
//! tasks, re-sending callbacks, reading callbacks and task failure reasons, rooms of apps without public playback)
//! need the admin credential: `[admin] token` as a Bearer token, or a request from loopback when `admin.loopback`
//! is on (the default) that a browser cannot have been tricked into sending (see `api::admin`).
//!
//! Pages and assets are sent with a Content-Security-Policy (scripts and styles only from `/assets/`, no
//! framing) and `X-Content-Type-Options: nosniff`.

use super::server::OverTls;
use super::{ApiError, ApiState};
use crate::auth::{self, UserSig};
use crate::ingest::pull::{PullError, TaskSpec};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::LazyLock;

/// The console's pages: one layout (head, header, navigation) around each page's own `<main>` (from assets/).
static INDEX: LazyLock<String> = LazyLock::new(|| {
    let live = r#"<span id="live" class="muted" aria-live="polite"></span>"#;
    layout("dashboard", "/", live, include_str!("assets/index.html"))
});
static PLAY: LazyLock<String> = LazyLock::new(|| layout("player", "/play", "", include_str!("assets/play.html")));
static PUBLISH: LazyLock<String> =
    LazyLock::new(|| layout("publisher", "/publish", "", include_str!("assets/publish.html")));
static TOKENS: LazyLock<String> = LazyLock::new(|| layout("tokens", "/tokens", "", include_str!("assets/tokens.html")));

/// A whole page: `title`, the navigation with `current` marked, `header_extra` after it, then `main`.
fn layout(title: &str, current: &str, header_extra: &str, main: &str) -> String {
    let nav: String = [
        ("/", "Dashboard"),
        ("/play", "Player"),
        ("/publish", "Publish"),
        ("/tokens", "Tokens"),
        ("/openapi.json", "API"),
    ]
    .iter()
    .map(|(href, name)| {
        let mark = if *href == current {
            r#" aria-current="page""#
        } else {
            ""
        };
        format!("    <a href=\"{href}\"{mark}>{name}</a>\n")
    })
    .collect();
    let extra = if header_extra.is_empty() {
        String::new()
    } else {
        format!("  {header_extra}\n")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>roomgate {title}</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\n</head>\n<body>\n<header>\n  <h1>roomgate</h1>\n\
         <nav aria-label=\"Console\">\n{nav}  </nav>\n{extra}</header>\n{main}"
    )
}

/// A static asset by name, with its content type.
fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "console.css" => ("text/css; charset=utf-8", include_str!("assets/console.css")),
        "common.js" => ("text/javascript; charset=utf-8", include_str!("assets/common.js")),
        "dashboard.js" => ("text/javascript; charset=utf-8", include_str!("assets/dashboard.js")),
        "play.js" => ("text/javascript; charset=utf-8", include_str!("assets/play.js")),
        "publish.js" => ("text/javascript; charset=utf-8", include_str!("assets/publish.js")),
        "tokens.js" => ("text/javascript; charset=utf-8", include_str!("assets/tokens.js")),
        _ => return None,
    })
}

/// The console's Content-Security-Policy: everything from this origin only (WHIP/WHEP fetches are same-origin,
/// players show `MediaStream`s, which need no `media-src`), no inline script or style, never in a frame.
pub const CSP: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Content-Security-Policy and nosniff on a console response.
fn protect(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn page(html: &'static str) -> Response {
    protect(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html,
        )
            .into_response(),
    )
}

/// `GET /`: the dashboard page (rooms, pull tasks, callbacks, apps).
pub async fn index() -> Response {
    page(&INDEX)
}
/// `GET /play`: the WHEP player page.
pub async fn play() -> Response {
    page(&PLAY)
}
/// `GET /publish`: the page that publishes from the browser over WHIP.
pub async fn publish() -> Response {
    page(&PUBLISH)
}
/// `GET /tokens`: the token tool page (its `POST /v1/tokens` needs admin).
pub async fn tokens_page() -> Response {
    page(&TOKENS)
}

/// `GET /assets/{name}`: an embedded script or stylesheet; 404 `not_found` for any other name.
pub async fn assets(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (ctype, body) =
        asset(&name).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no asset {name}")))?;
    Ok(protect(
        (
            [(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")],
            body,
        )
            .into_response(),
    ))
}

/// Refuse unless the request carries the admin credential (see `api::admin`); a refusal is a 403 naming the rule
/// that failed, counted in `roomgate_refusals_total{source="admin"}`.
pub fn require_admin(
    st: &ApiState,
    peer: Option<SocketAddr>,
    method: &Method,
    headers: &HeaderMap,
    tls: bool,
) -> Result<super::admin::AdminGrant, ApiError> {
    super::admin::check(method, headers, peer, tls, &st.config.admin).map_err(|e| {
        crate::limits::refused("admin", e.code(), &e);
        ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string())
    })
}

/// An admin-only handler's first argument: extracting it is the admin check (a 403 from [`require_admin`] before
/// any later extractor reads the body), so each handler says "admin" in its signature instead of repeating it.
pub struct Admin;

impl axum::extract::FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &ApiState) -> Result<Self, ApiError> {
        let p = parts.extensions.get::<Peer>().map(|ConnectInfo(a)| *a);
        let tls = parts.extensions.get::<super::server::Secure>().is_some();
        require_admin(st, p, &parts.method, &parts.headers, tls).map(|_| Admin)
    }
}

/// Whether a read-only request is admin (to decide what a listing shows; not counted as a refusal).
pub fn is_admin(st: &ApiState, peer: Option<SocketAddr>, headers: &HeaderMap, tls: super::server::OverTls) -> bool {
    super::admin::check(&Method::GET, headers, peer, tls.0, &st.config.admin).is_ok()
}

/// The peer address (the server runs with connect info).
pub type Peer = ConnectInfo<SocketAddr>;

/// The peer address in the form `admin::check` takes (always `Some` here).
pub fn peer(ConnectInfo(a): Peer) -> Option<SocketAddr> {
    Some(a)
}

/// `GET /v1/apps`: the configured apps, without their keys.
pub async fn apps(State(st): State<ApiState>) -> Json<Value> {
    let apps: Vec<Value> = st
        .config
        .apps
        .iter()
        .map(|a| {
            json!({"sdkappid": a.sdkappid, "name": a.name, "public_playback": a.public_playback,
                   "require_private_map_key": a.require_private_map_key, "callbacks": !a.callback_url.is_empty()})
        })
        .collect();
    Json(json!({ "apps": apps }))
}

/// `GET /v1/tasks`: running pull tasks (the Describe fields of each, plus TaskId and SdkAppId). The failure
/// `Reason` (it can name source hosts and errors) is shown to admin only.
pub async fn tasks(State(st): State<ApiState>, p: Peer, tls: OverTls, headers: HeaderMap) -> Json<Value> {
    let admin = is_admin(&st, peer(p), &headers, tls);
    let me = st.registry.node_id().to_string();
    let local = st.pull.as_ref().map(|p| p.list()).unwrap_or_default();
    let mut all: Vec<_> = local
        .iter()
        .map(|t| (t.id.clone(), me.clone(), t.spec(), t.status()))
        .collect();
    // In a cluster, the other nodes' tasks too (as mirrored, at most a second old); this node's alone while
    // Redis does not answer.
    if let Some(cluster) = &st.cluster_tasks {
        match cluster.mirrors().await {
            Ok(others) => all.extend(
                others
                    .into_iter()
                    .filter(|m| !local.iter().any(|t| t.id == m.id))
                    .map(|m| (m.id, m.owner, m.spec, m.status)),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster's tasks; listing this node's"),
        }
    }
    let tasks: Vec<Value> = all
        .into_iter()
        .map(|(id, node, spec, status)| {
            let app = spec.sdk_app_id;
            let mut m = super::cloud::describe_fields(Some((spec, status)));
            m.insert("TaskId".into(), Value::String(id));
            m.insert("SdkAppId".into(), json!(app));
            m.insert("Node".into(), Value::String(node));
            if !admin {
                m.remove("Reason");
            }
            Value::Object(m)
        })
        .collect();
    Json(json!({ "tasks": tasks }))
}

/// What the console's pull-task form sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// App the robot anchor joins; its key signs the robot's UserSig.
    pub sdkappid: u64,
    /// Source to pull: an http, https, rtmp, srt, rtsp or rtsps URL.
    pub stream_url: String,
    /// String room id to join: 1-64 letters, digits, `_` or `-`.
    pub room: String,
    /// The robot anchor's user id: 1-32 letters, digits, `_` or `-`.
    pub userid: String,
    /// Times to play the source, 1-1000, or -1 until stopped; default 1.
    #[serde(default = "one")]
    pub repeat: i64,
}

fn one() -> i64 {
    1
}

fn pull_error(e: PullError) -> ApiError {
    let (status, code) = match &e {
        PullError::TaskExist(_) => (StatusCode::CONFLICT, "task_exist"),
        PullError::TaskNotExist => (StatusCode::NOT_FOUND, "task_not_found"),
        PullError::TaskFinished => (StatusCode::CONFLICT, "task_finished"),
        PullError::RestrictedConcurrency(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_tasks"),
        PullError::Source(_) => (StatusCode::BAD_REQUEST, "bad_stream_url"),
        PullError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    };
    ApiError::new(status, code, e.to_string())
}

/// A string room id and a user id as TRTC accepts them.
fn check_identity(room: &str, userid: &str) -> Result<(), ApiError> {
    if !auth::is_valid_str_room_id(room) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_room_id",
            "room: 1-64 letters, digits, '_' or '-'",
        ));
    }
    if !auth::is_valid_user_id(userid) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_userid",
            "userid: 1-32 letters, digits, '_' or '-'",
        ));
    }
    Ok(())
}

fn pull_service(st: &ApiState) -> Result<&std::sync::Arc<crate::ingest::pull::PullService>, ApiError> {
    st.pull
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pull_disabled", "pull tasks are off"))
}

/// `POST /v1/tasks` (admin): start a pull task; the robot's UserSig is made here with the app key.
pub async fn start_task(State(st): State<ApiState>, _: Admin, Json(t): Json<NewTask>) -> Result<Json<Value>, ApiError> {
    let pull = pull_service(&st)?;
    let app = st
        .config
        .app(t.sdkappid)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_app", format!("no app {}", t.sdkappid)))?;
    check_identity(&t.room, &t.userid)?;
    if t.repeat == 0 || !(-1..=1000).contains(&t.repeat) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_repeat",
            "repeat: -1 (forever) or 1-1000",
        ));
    }
    crate::ingest::pull::source::parse_source_url(&t.stream_url)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_stream_url", e.to_string()))?;
    let spec = TaskSpec::with_defaults(app.sdkappid, &t.room, &t.userid, &t.stream_url, t.repeat, false);
    let id = crate::cluster::tasks::ClusterTasks::start(st.cluster_tasks.as_ref(), pull, spec)
        .await
        .map_err(pull_error)?;
    Ok(Json(json!({ "task_id": id })))
}

/// `DELETE /v1/tasks/{id}` (admin).
pub async fn stop_task(State(st): State<ApiState>, _: Admin, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let pull = pull_service(&st)?;
    if let (false, Some(cluster)) = (pull.running(&id), &st.cluster_tasks) {
        // A task of another node: stopped through the cluster.
        if let Ok(Some(m)) = cluster.mirror(&id).await {
            if !m.status.state.is_active() {
                return Err(pull_error(PullError::TaskFinished));
            }
            cluster
                .stop(&id)
                .await
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", e.to_string()))?;
            return Ok(Json(json!({ "task_id": id, "stopped": true })));
        }
    }
    pull.stop(&id).await.map_err(pull_error)?;
    Ok(Json(json!({ "task_id": id, "stopped": true })))
}

/// What the token tool sends: the app, user and room to make tokens for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// App whose key signs the UserSig.
    pub sdkappid: u64,
    /// The anchor's user id: 1-32 letters, digits, `_` or `-`.
    pub userid: String,
    /// String room id: 1-64 letters, digits, `_` or `-`.
    pub room: String,
    /// UserSig lifetime, seconds: 60 to 15552000 (180 days); default 86400 (a day).
    #[serde(default = "day")]
    pub expire: u64,
}

fn day() -> u64 {
    86400
}

/// What the token tool shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    /// The UserSig for `userid`, signed with the app key, valid for `expire` seconds.
    pub usersig: String,
    /// OBS's Server setting: `rtmp://host[:port]/push/` (`rtmps://host:port/push/` when RTMPS is on), with the
    /// host the browser used.
    pub rtmp_server: String,
    /// OBS's Stream Key: `room?sdkappid=...&userid=...&usersig=...`.
    pub stream_key: String,
    /// WHIP endpoint to publish to as `userid` in `room`.
    pub whip_url: String,
    /// SRT URL to publish to as `userid` in `room` (OBS's Server with an empty Stream Key, or ffmpeg's output
    /// with `-f mpegts`): `srt://host:port?streamid=#!::r=..,u=..,m=publish,sdkappid=..,usersig=..`. `None` when
    /// SRT is off.
    pub srt_url: Option<String>,
    /// A ready-to-run ffmpeg command that pushes a test pattern and tone over RTMP.
    pub ffmpeg: String,
    /// Console player link for this anchor, with no viewer token of its own.
    pub play_path: String,
    /// A player link for someone who is not admin: it carries its own viewer id and that viewer's UserSig (and
    /// a PrivateMapKey granting enter room + receive, when the app requires one), valid as long as the anchor's
    /// token but at most one day.
    pub share_path: String,
}

/// `POST /v1/tokens` (admin): a UserSig and the OBS/ffmpeg settings for `userid` in `room`.
pub async fn tokens(
    State(st): State<ApiState>,
    _: Admin,
    headers: HeaderMap,
    tls: OverTls,
    Json(req): Json<TokenRequest>,
) -> Result<Json<Tokens>, ApiError> {
    let app = st
        .config
        .app(req.sdkappid)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_app", format!("no app {}", req.sdkappid)))?;
    check_identity(&req.room, &req.userid)?;
    if !(60..=180 * 86400).contains(&req.expire) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_expire",
            "expire: 60 s to 180 days",
        ));
    }
    let sig = UserSig::generate(
        app.sdkappid,
        &app.secret_key,
        &req.userid,
        auth::unix_now(),
        req.expire,
        None,
    );
    // The address the browser used (so the settings work from where the user is), else public_host.
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", st.config.public_host, st.config.http.listen.port()));
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => authority.clone(),
    };
    let rtmp_server = match st.rtmps_port {
        Some(port) => crate::serve::rtmp_server(&host, port, true),
        None => crate::serve::rtmp_server(&host, st.rtmp_port.unwrap_or(st.config.rtmp.listen.port()), false),
    };
    let srt_url = st
        .srt_port
        .map(|port| crate::serve::srt_url(&host, port, app.sdkappid, &sig, &req.userid, &req.room));
    let scheme = if tls.0 { "https" } else { "http" };
    let stream_key = format!(
        "{}?sdkappid={}&userid={}&usersig={sig}",
        req.room, app.sdkappid, req.userid
    );
    let whip_url = format!(
        "{scheme}://{authority}/v2/pub/{}/{}?SessionID={}",
        app.sdkappid, req.room, req.userid
    );
    let ffmpeg = format!(
        "ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 60 -c:a aac -ar 48000 -f flv '{rtmp_server}{stream_key}'"
    );
    // The viewer's token carries a play-only grant for this room: whoever holds the link can watch this room and
    // do nothing else (authorize_publish and authorize_play hold a UserSig to the grant it carries). It lasts
    // at most a day, whatever the anchor's expiry.
    let viewer = format!("viewer_{}", crate::rtc::random_token(8).to_ascii_lowercase());
    let share_expire = req.expire.min(86_400);
    let grant = auth::PrivateMapKey {
        userid: viewer.clone(),
        sdkappid: app.sdkappid as u32,
        room: crate::room::RoomRef::Str(req.room.clone()),
        expires_at: (auth::unix_now() + share_expire).min(u32::MAX as u64) as u32,
        privileges: auth::Privileges(auth::Privileges::PLAY),
    };
    let viewer_sig = UserSig::generate(
        app.sdkappid,
        &app.secret_key,
        &viewer,
        auth::unix_now(),
        share_expire,
        Some(&grant.to_userbuf()),
    );
    let play_path = format!(
        "/play?sdkappid={}&room={}&anchor={}",
        app.sdkappid, req.room, req.userid
    );
    let mut share_path = format!("{play_path}&viewer={viewer}&token={viewer_sig}");
    if app.require_private_map_key {
        // The same ticket is the PrivateMapKey the app asks for.
        share_path.push_str(&format!("&privatemapkey={viewer_sig}"));
    }
    Ok(Json(Tokens {
        play_path,
        share_path,
        usersig: sig,
        rtmp_server,
        stream_key,
        whip_url,
        srt_url,
        ffmpeg,
    }))
}

/// `GET /demo/sample.mp4`: the demo task's source (only with `serve --demo-task`), streamed from the file, to
/// loopback peers only (the demo task pulls it from there).
pub async fn demo_media(
    State(st): State<ApiState>,
    p: Peer,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no demo media");
    if !peer(p).is_some_and(|a| a.ip().to_canonical().is_loopback()) {
        return Err(not_found());
    }
    let path = st.config.demo_media.clone().ok_or_else(not_found)?;
    // Streamed from disk with Range support (libav seeks in MP4s with ranges), never read whole.
    let resp = tower::ServiceExt::oneshot(tower_http::services::ServeFile::new(path), req)
        .await
        .unwrap_or_else(|never| match never {});
    Ok(resp.map(axum::body::Body::new))
}
