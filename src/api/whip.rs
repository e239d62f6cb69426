//! WHIP routes (`/v2/pub/...`, TRTC's URL form): POST an offer to publish, PATCH trickle/restart, DELETE to
//! stop. OBS 30+ and browser pages publish here.

use super::whep::{bearer, full, ice_server_links, resource_status, sdp_body};
use super::{ApiError, ApiState};
use crate::ingest::whip::{PublishRequest, WhipError};
use crate::rtc::{PatchResult, ResourceError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

pub async fn post(
    State(st): State<ApiState>,
    Path((sdkappid, room)): Path<(u64, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let svc = st.whip.as_ref().ok_or(WhipError::Disabled)?;
    let body = sdp_body("whip", body)?;
    let offer = std::str::from_utf8(&body).map_err(|_| WhipError::BadOffer("not UTF-8".into()))?;
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let answer = svc
        .publish(PublishRequest {
            sdkappid,
            room,
            userid: get("SessionID"),
            bearer: bearer(&headers),
            private_map_key: get("privatemapkey"),
            offer,
        })
        .await
        .map_err(|e| {
            tracing::info!(sdkappid, error = %e, "WHIP request refused");
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
        HeaderValue::from_str(&format!("/v2/pub/session/{}", answer.resource)).expect("ASCII"),
    );
    h.insert(header::ETAG, HeaderValue::from_str(&answer.etag).expect("ASCII"));
    let user = get("SessionID").unwrap_or_default();
    for l in ice_server_links(&st.config.rtc, Some(user), crate::auth::unix_now()) {
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
    let svc = st.whip.as_ref().ok_or(WhipError::Disabled)?;
    let body = sdp_body("whip", body)?;
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
        std::str::from_utf8(&body).map_err(|_| WhipError::Resource(ResourceError::BadFragment("not UTF-8".into())))?;
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
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("ASCII"));
            resp
        }
    })
}

pub async fn delete(State(st): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let svc = st.whip.as_ref().ok_or(WhipError::Disabled)?;
    svc.stop(&id).await?;
    Ok(StatusCode::OK)
}
