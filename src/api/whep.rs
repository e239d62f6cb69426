//! WHEP routes (`/v2/sub/...`, TRTC's URL form): POST an offer, PATCH trickle candidates, DELETE to stop,
//! OPTIONS for browsers (CORS) and ICE server discovery (`Link` headers).

use super::webrtc::{
    bearer, created, full, ice_server_links, query, redirect_to, redirected, resource_status, sdp_body, Side,
};
use super::{ApiError, ApiState};
use crate::config::RemoteViewers;
use crate::egress::whep::{PlayRequest, WhepError};
use crate::room::RoomRef;
use crate::rtc::ResourceError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

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
            WhepError::NotReceiving(_) => (StatusCode::NOT_ACCEPTABLE, "track_not_received"),
            WhepError::Resource(r) => resource_status(r),
            WhepError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "webrtc_disabled"),
            WhepError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
            WhepError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// `POST /v2/sub/{sdkappid}/{room}`: play an anchor from an SDP offer; 201 with the answer.
/// Query: `SessionID` (viewer), `anchor`, `privatemapkey`, `roomtype=number` for a numeric room.
pub async fn post(
    State(st): State<ApiState>,
    p: super::console::Peer,
    uri: Uri,
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
    let get = |k: &str| query(&q, k);
    let played = svc
        .play(PlayRequest {
            sdkappid,
            room: room.clone(),
            viewer: get("SessionID"),
            anchor: get("anchor"),
            bearer: bearer(&headers),
            private_map_key: get("privatemapkey"),
            offer,
            peer: super::console::peer(p).map(|a| a.ip()),
        })
        .await;
    let answer = match played {
        Ok(answer) => answer,
        Err(e) => {
            // The viewer was authorized (that comes first); the anchor may be on another node of the cluster.
            if matches!(e, WhepError::NoAnchor { .. }) && st.config.cluster.whep == RemoteViewers::Redirect {
                if let Some(to) = anchor_home(&st, sdkappid, &room, get("anchor"), &uri).await {
                    return Ok(to);
                }
            }
            tracing::info!(sdkappid, error = %e, "WHEP request refused");
            return Err(e.into());
        }
    };
    // Credentials only for a viewer whose UserSig was checked: on a public_playback app anyone can get this far,
    // and a TURN credential is a relay for anything.
    let authenticated = st.config.app(sdkappid).is_some_and(|a| !a.public_playback);
    let user = get("SessionID").filter(|_| authenticated);
    let links = ice_server_links(&st.config.rtc, user, crate::auth::unix_now());
    Ok(created(Side::Play, answer, links))
}

/// `307` to the node that has the anchor (same path and query on its `advertise_http`), when another live node
/// of the cluster publishes one in the room; `None` on a single node, when no node has it, for a viewer already
/// redirected once, or when Redis does not answer (the viewer then gets this node's 404).
async fn anchor_home(
    st: &ApiState,
    sdkappid: u64,
    room: &RoomRef,
    anchor: Option<&str>,
    uri: &Uri,
) -> Option<Response> {
    if !st.registry.clustered() || redirected(uri) {
        return None;
    }
    let (id, kind) = room.id_and_kind();
    match st.registry.locate(sdkappid, &id, kind, anchor).await {
        Ok(found) => redirect_to(Side::Play, &found?.0, uri),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for the anchor on other nodes");
            None
        }
    }
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
