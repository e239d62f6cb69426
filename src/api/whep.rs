//! WHEP routes (`/v2/sub/...`, TRTC's URL form): POST an offer, PATCH trickle candidates, DELETE to stop,
//! OPTIONS for browsers (CORS) and ICE server discovery (`Link` headers).

use super::{ApiError, ApiState};
use crate::config::RtcConfig;
use crate::egress::whep::{PlayRequest, WhepError};
use crate::room::RoomRef;
use crate::rtc::{PatchResult, ResourceError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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

impl From<WhepError> for ApiError {
    fn from(e: WhepError) -> Self {
        if let WhepError::Full(f) = &e {
            return full("whep", f);
        }
        if let WhepError::RateLimited(l, wait) = &e {
            crate::limits::refused("whep", l.reason(), l);
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string()).retry_after(*wait);
        }
        if let WhepError::Resource(ResourceError::TooManyCandidates(_)) = &e {
            crate::limits::refused("whep", "too_many_candidates", &e);
        }
        let (status, code) = match &e {
            WhepError::Refused(r) => super::denied_status(r),
            WhepError::NoAnchor { .. } => (StatusCode::NOT_FOUND, "anchor_not_found"),
            WhepError::BadOffer(_) => (StatusCode::BAD_REQUEST, "bad_offer"),
            WhepError::MissingCodec(_) => (StatusCode::NOT_ACCEPTABLE, "codec_not_offered"),
            WhepError::Resource(r) => resource_status(r),
            WhepError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "webrtc_disabled"),
            WhepError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
            WhepError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

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

pub async fn post(
    State(st): State<ApiState>,
    p: super::console::Peer,
    Path((sdkappid, room)): Path<(u64, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let svc = st.whep.as_ref().ok_or(WhepError::Disabled)?;
    let body = sdp_body("whep", body)?;
    let offer = std::str::from_utf8(&body).map_err(|_| WhepError::BadOffer("not UTF-8".into()))?;
    let room = match q.get("roomtype").map(String::as_str) {
        Some("number") => RoomRef::Num(
            room.parse()
                .map_err(|_| WhepError::BadOffer(format!("room {room:?} is not a numeric room id")))?,
        ),
        _ => RoomRef::Str(room),
    };
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let answer = svc
        .play(PlayRequest {
            sdkappid,
            room,
            viewer: get("SessionID"),
            anchor: get("anchor"),
            bearer: bearer(&headers),
            private_map_key: get("privatemapkey"),
            offer,
            peer: super::console::peer(p).map(|a| a.ip()),
        })
        .await
        .map_err(|e| {
            tracing::info!(sdkappid, error = %e, "WHEP request refused");
            ApiError::from(e)
        })?;
    let mut resp = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        answer.sdp,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/sub/session/{}", answer.resource)).expect("token is ASCII"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&answer.etag).expect("token is ASCII"),
    );
    // Credentials only for a viewer whose UserSig was checked: on a public_playback app anyone can get this far,
    // and a TURN credential is a relay for anything.
    let authenticated = st.config.app(sdkappid).is_some_and(|a| !a.public_playback);
    let user = get("SessionID").filter(|_| authenticated);
    for l in ice_server_links(&st.config.rtc, user, crate::auth::unix_now()) {
        h.append(header::LINK, l);
    }
    Ok(resp)
}

pub async fn patch(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let svc = st.whep.as_ref().ok_or(WhepError::Disabled)?;
    let body = sdp_body("whep", body)?;
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
    let frag =
        std::str::from_utf8(&body).map_err(|_| WhepError::Resource(ResourceError::BadFragment("not UTF-8".into())))?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    Ok(match svc.patch(&id, if_match, frag).await? {
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
    })
}

pub async fn delete(State(st): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let svc = st.whep.as_ref().ok_or(WhepError::Disabled)?;
    svc.stop(&id).await?;
    Ok(StatusCode::OK)
}

/// Preflight and ICE server discovery.
pub async fn options(State(st): State<ApiState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    for l in ice_server_links(&st.config.rtc, None, 0) {
        h.append(header::LINK, l);
    }
    resp
}

/// CORS for WHIP/WHEP: players and publishers are often pages on another origin.
pub async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post"),
    );
    resp
}
