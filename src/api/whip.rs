//! WHIP routes (`/v2/pub/...`, TRTC's URL form): POST an offer to publish, PATCH trickle/restart, DELETE to
//! stop. OBS 30+ and browser pages publish here.

use super::webrtc::{
    bearer, created, full, ice_server_links, query, redirect_to, redirected, resource_status, sdp_body, Side,
};
use super::{ApiError, ApiState};
use crate::ingest::whip::{PublishRequest, WhipError};
use crate::rtc::ResourceError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use std::collections::HashMap;

impl From<WhipError> for ApiError {
    fn from(e: WhipError) -> Self {
        if let WhipError::Full(f) = &e {
            return full("whip", f);
        }
        if let WhipError::Resource(ResourceError::TooManyCandidates(_)) = &e {
            crate::limits::refused("whip", "too_many_candidates", &e);
        }
        let (status, code) = match &e {
            WhipError::Refused(r) => super::refusal_status(r),
            WhipError::MissingToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            WhipError::MissingUserId => (StatusCode::BAD_REQUEST, "bad_session_id"),
            WhipError::BadOffer(_) => (StatusCode::BAD_REQUEST, "bad_offer"),
            WhipError::MissingCodec(_) => (StatusCode::NOT_ACCEPTABLE, "codec_not_offered"),
            WhipError::Resource(r) => resource_status(r),
            WhipError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "webrtc_disabled"),
            WhipError::Transcoder(_) => (StatusCode::INTERNAL_SERVER_ERROR, "transcoder_unavailable"),
            WhipError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// `POST /v2/pub/{sdkappid}/{room}`: publish into the room from an SDP offer; 201 with the answer.
/// Query: `SessionID` (the publisher's user id), `privatemapkey`; the UserSig is the Bearer token.
pub async fn post(
    State(st): State<ApiState>,
    uri: Uri,
    Path((sdkappid, room)): Path<(u64, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let svc = st.whip.as_ref().ok_or(WhipError::Disabled)?;
    let body = sdp_body("whip", body)?;
    let offer = std::str::from_utf8(&body).map_err(|_| WhipError::BadOffer("not UTF-8".into()))?;
    let get = |k: &str| query(&q, k);
    let req = PublishRequest {
        sdkappid,
        room,
        userid: get("SessionID"),
        bearer: bearer(&headers),
        private_map_key: get("privatemapkey"),
        offer,
    };
    let refused = |e: WhipError| {
        tracing::info!(sdkappid, error = %e, "WHIP request refused");
        ApiError::from(e)
    };
    svc.authorize(&req).map_err(refused)?;
    if let Some(elsewhere) = place_elsewhere(&st, &uri).await? {
        return Ok(elsewhere);
    }
    let answer = svc.publish(req).await.map_err(refused)?;
    let user = get("SessionID").unwrap_or_default();
    let links = ice_server_links(&st.config.rtc, Some(user), crate::auth::unix_now());
    Ok(created(Side::Publish, answer, links))
}

/// Seconds a publisher is told to wait when no node of the cluster takes new publishers.
const FULL_RETRY_AFTER: u64 = 10;

/// In cluster mode, on a node that takes no new work (draining, or its load score over `cluster.max_load`): `307`
/// to the least-loaded node that does, or `503 cluster_full` + `Retry-After` when none does. `None`: publish here
/// (a single node, a node with headroom, a publisher already redirected once, or Redis unavailable).
async fn place_elsewhere(st: &ApiState, uri: &Uri) -> Result<Option<Response>, ApiError> {
    if !st.registry.clustered() || st.registry.accepting() || redirected(uri) {
        return Ok(None);
    }
    match st.registry.place().await {
        Ok(Some(node)) => Ok(redirect_to(Side::Publish, &node, uri)),
        Ok(None) => {
            crate::limits::refused("whip", "cluster_full", &"no node of the cluster takes new publishers");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_full",
                "every node of the cluster is draining or over cluster.max_load",
            )
            .retry_after(FULL_RETRY_AFTER))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot place a publisher on another node; publishing here");
            Ok(None)
        }
    }
}
