//! What the WHIP and WHEP routes share over HTTP: bounded SDP bodies, `Bearer` tokens, the 201 answer with its
//! `Location`, `ETag` and ICE server `Link`s, PATCH (trickle ICE, ICE restart) and the status of each refusal.

use super::ApiError;
use super::ApiState;
use crate::config::RtcConfig;
use crate::egress::whep::{WhepError, WhepService};
use crate::ingest::whip::{WhipError, WhipService};
use crate::rtc::{PatchResult, ResourceError, SessionAnswer};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

/// Largest SDP offer (WHIP/WHEP POST) or trickle fragment (PATCH) accepted; larger ones get 413.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Seconds a client is told to wait when the gateway has no room for another WebRTC session.
const FULL_RETRY_AFTER: u64 = 5;

/// The request body of an SDP or trickle request, or a JSON 413 when it exceeds [`MAX_SDP_BYTES`].
pub fn sdp_body(source: &'static str, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::limits::refused(
                source,
                "body_too_large",
                &format_args!("a body over {MAX_SDP_BYTES} bytes"),
            );
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("SDP and trickle ICE bodies are at most {MAX_SDP_BYTES} bytes"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
        }
    })
}

/// 503 + Retry-After when `rtc.max_sessions` is reached (counted as a refusal of `source`).
pub fn full(source: &'static str, e: &crate::rtc::EngineFull) -> ApiError {
    crate::limits::refused(source, "max_sessions", e);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions", e.to_string()).retry_after(FULL_RETRY_AFTER)
}

/// The HTTP status and error code of a failed PATCH or DELETE on a session resource.
pub fn resource_status(e: &ResourceError) -> (StatusCode, &'static str) {
    match e {
        ResourceError::NoSession => (StatusCode::NOT_FOUND, "session_not_found"),
        ResourceError::EtagMismatch => (StatusCode::PRECONDITION_FAILED, "etag_mismatch"),
        ResourceError::BadFragment(_) => (StatusCode::BAD_REQUEST, "bad_fragment"),
        ResourceError::TooManyCandidates(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_candidates"),
    }
}

/// `Link: <url>; rel="ice-server"[; username=..; credential=..; credential-type="password"]`, one per URL.
/// Credentials go only to `user`, an authenticated publisher or viewer (a 201 answer): a configured
/// username/credential, or TURN REST credentials made for `user` when `rtc.turn_secret` is set. Without a user
/// (OPTIONS, which anyone may send) only the URLs are listed.
pub fn ice_server_links(rtc: &RtcConfig, user: Option<&str>, now: u64) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    for s in &rtc.ice_servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            let is_turn = url.starts_with("turn:") || url.starts_with("turns:");
            let creds = match user {
                None => None,
                Some(_) if !s.username.is_empty() => Some((s.username.clone(), s.credential.clone())),
                Some(user) if is_turn && !rtc.turn_secret.is_empty() => Some(crate::auth::turn::rest_credential(
                    &rtc.turn_secret,
                    user,
                    now.saturating_add(rtc.turn_ttl_secs),
                )),
                Some(_) => None,
            };
            if let Some((username, credential)) = creds {
                v.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            if let Ok(h) = HeaderValue::from_str(&v) {
                out.push(h);
            }
        }
    }
    out
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// A query parameter, its name matched without regard to case (players write `sessionid`, `SessionID`...).
pub fn query<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Which WebRTC endpoint a request is for: publishing (WHIP, `/v2/pub/...`) or playing (WHEP, `/v2/sub/...`).
/// Extracted from the path, so the session routes of both share one PATCH and one DELETE handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// WHIP: a publisher's session.
    Publish,
    /// WHEP: a viewer's session.
    Play,
}

impl Side {
    /// The name refusals are counted and logged under.
    pub fn source(self) -> &'static str {
        match self {
            Side::Publish => "whip",
            Side::Play => "whep",
        }
    }

    /// Where this side's session resources live (`Location` is `{base}/{resource}`).
    fn sessions(self) -> &'static str {
        match self {
            Side::Publish => "/v2/pub/session",
            Side::Play => "/v2/sub/session",
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Side {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        if path.starts_with("/v2/pub/") {
            Ok(Side::Publish)
        } else if path.starts_with("/v2/sub/") {
            Ok(Side::Play)
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "not a WHIP or WHEP route",
            ))
        }
    }
}

/// `201 Created` with the SDP answer, the session's `Location` and `ETag`, and `links`.
pub fn created(side: Side, answer: SessionAnswer, links: Vec<HeaderValue>) -> Response {
    let SessionAnswer { resource, etag, sdp } = answer;
    let mut resp = (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], sdp).into_response();
    let h = resp.headers_mut();
    let location = format!("{}/{resource}", side.sessions());
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("token is ASCII"),
    );
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("token is ASCII"));
    for l in links {
        h.append(header::LINK, l);
    }
    resp
}

/// A PATCH's trickle fragment and its `If-Match`, or why the request is not one.
pub fn trickle(
    source: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Option<String>), ApiError> {
    let body = sdp_body(source, body)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "PATCH takes application/trickle-ice-sdpfrag",
        ));
    }
    let fragment = String::from_utf8(body.to_vec()).map_err(|_| {
        let e = ResourceError::BadFragment("not UTF-8".into());
        let (status, code) = resource_status(&e);
        ApiError::new(status, code, format!("{} session: {e}", source.to_uppercase()))
    })?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((fragment, if_match))
}

/// The answer to a PATCH: 204 for trickled candidates, 200 with our new credentials for an ICE restart.
pub fn patched(result: PatchResult) -> Response {
    match result {
        PatchResult::Trickled => StatusCode::NO_CONTENT.into_response(),
        PatchResult::Restarted { etag, fragment } => {
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
                fragment,
            )
                .into_response();
            resp.headers_mut()
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("token is ASCII"));
            resp
        }
    }
}

/// `PATCH /v2/{pub,sub}/session/{id}`: trickle candidates (204) or an ICE restart (200), checked against `If-Match`.
pub async fn patch(
    State(st): State<ApiState>,
    side: Side,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (fragment, if_match) = trickle(side.source(), &headers, body)?;
    let if_match = if_match.as_deref();
    let done = match side {
        Side::Publish => whip(&st)?.patch(&id, if_match, &fragment).await?,
        Side::Play => whep(&st)?.patch(&id, if_match, &fragment).await?,
    };
    Ok(patched(done))
}

/// `DELETE /v2/{pub,sub}/session/{id}`: end the session (a publisher's anchor leaves its room).
pub async fn delete(State(st): State<ApiState>, side: Side, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match side {
        Side::Publish => whip(&st)?.stop(&id).await?,
        Side::Play => whep(&st)?.stop(&id).await?,
    }
    Ok(StatusCode::OK)
}

/// The WHIP service, or `webrtc_disabled`.
fn whip(st: &ApiState) -> Result<&WhipService, WhipError> {
    st.whip.as_deref().ok_or(WhipError::Disabled)
}

/// The WHEP service, or `webrtc_disabled`.
fn whep(st: &ApiState) -> Result<&WhepService, WhepError> {
    st.whep.as_deref().ok_or(WhepError::Disabled)
}

/// The query parameter a cluster redirect adds: a client already sent once is served where it lands (stale
/// room lists or loads on two nodes cannot bounce it between them).
const REDIRECTED: &str = "rg_redirected";

/// Whether the request was already redirected by a node of the cluster.
pub fn redirected(uri: &Uri) -> bool {
    uri.query().unwrap_or("").split('&').any(|p| p.starts_with(REDIRECTED))
}

/// `307 Temporary Redirect` to the same path and query on the node at `http` (its `advertise_http`), marked as
/// redirected; `None` (logged) when that does not make a Location. Counted in
/// `roomgate_cluster_redirects_total{side}`.
pub fn redirect_to(side: Side, node: &crate::cluster::NodeInfo, uri: &Uri) -> Option<Response> {
    let query = uri.query().unwrap_or("");
    let sep = if query.is_empty() { "" } else { "&" };
    let location = format!(
        "{}{}?{query}{sep}{REDIRECTED}=1",
        node.http.trim_end_matches('/'),
        uri.path()
    );
    let Ok(location) = HeaderValue::from_str(&location) else {
        tracing::warn!(node = %node.id, http = %node.http, "node's advertise_http is not a usable Location");
        return None;
    };
    metrics::counter!("roomgate_cluster_redirects_total", "side" => side.source()).increment(1);
    tracing::info!(to = %node.id, side = side.source(), "client sent to another node of the cluster");
    Some((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response())
}
