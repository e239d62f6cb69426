//! `GET /v1/rooms` and `GET /v1/rooms/{sdkappid}/{room}`: rooms and their anchors with codec, resolution,
//! fps, bitrate, source kind and start time. Rooms of apps with `public_playback` are listed for everyone; the
//! others only for admin (room and user ids are not public there).

use super::console::{is_admin, peer, require_admin, Peer};
use super::{ApiError, ApiState};
use crate::room::RoomRef;
use crate::room::{Anchor, Room, RoomKey, SourceKind, TrackInfo, TrackStats};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Method};
use axum::Json;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
pub struct RoomView {
    pub sdkappid: u64,
    pub room_id: String,
    /// "string" or "number": TRTC keeps the two kinds of room apart.
    pub room_id_type: &'static str,
    pub created_at_ms: u64,
    pub anchors: Vec<AnchorView>,
}

#[derive(Serialize)]
pub struct AnchorView {
    pub userid: String,
    pub source: SourceKind,
    pub started_at_ms: u64,
    /// WHEP viewers watching this anchor now.
    pub viewers: usize,
    pub video: Option<TrackView>,
    pub audio: Option<TrackView>,
}

#[derive(Serialize)]
pub struct TrackView {
    /// What viewers get: "h264" or "opus".
    pub codec: crate::media::Codec,
    #[serde(flatten)]
    pub info: TrackInfo,
    #[serde(flatten)]
    pub stats: TrackStats,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn anchor_view(p: &Anchor) -> AnchorView {
    let track = |t: &crate::room::Track, info: TrackInfo| {
        let stats = t.stats();
        (stats.frames > 0 || !info.source_codec.is_empty()).then_some(TrackView {
            codec: t.codec,
            info,
            stats,
        })
    };
    AnchorView {
        userid: p.userid.clone(),
        source: p.source,
        started_at_ms: ms(p.started_at),
        viewers: p.viewers(),
        video: track(&p.video, p.video_info()),
        audio: track(&p.audio, p.audio_info()),
    }
}

fn room_view(r: &Room) -> RoomView {
    let (room_id, room_id_type) = match &r.key.room {
        RoomRef::Str(s) => (s.clone(), "string"),
        RoomRef::Num(n) => (n.to_string(), "number"),
    };
    RoomView {
        sdkappid: r.key.sdkappid,
        room_id,
        room_id_type,
        created_at_ms: ms(r.created_at),
        anchors: r.participants().iter().map(|p| anchor_view(p)).collect(),
    }
}

fn public(st: &ApiState, sdkappid: u64) -> bool {
    st.config.app(sdkappid).is_some_and(|a| a.public_playback)
}

pub async fn list(State(st): State<ApiState>, p: Peer, headers: HeaderMap) -> Json<serde_json::Value> {
    let admin = is_admin(&st, peer(p), &headers);
    let rooms: Vec<RoomView> = st
        .hub
        .rooms()
        .iter()
        .filter(|r| admin || public(&st, r.key.sdkappid))
        .map(|r| room_view(r))
        .collect();
    Json(serde_json::json!({ "rooms": rooms }))
}

/// A string room by default; `?type=number` looks up the numeric room with that id.
pub async fn one(
    State(st): State<ApiState>,
    p: Peer,
    headers: HeaderMap,
    Path((sdkappid, room)): Path<(u64, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<RoomView>, ApiError> {
    if !public(&st, sdkappid) {
        require_admin(&st, peer(p), &Method::GET, &headers)?;
    }
    let room_ref = if q.get("type").map(String::as_str) == Some("number") {
        RoomRef::Num(room.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_room_id",
                "numeric room ids are 1..4294967295",
            )
        })?)
    } else {
        RoomRef::Str(room.clone())
    };
    let r = st
        .hub
        .room(&RoomKey {
            sdkappid,
            room: room_ref,
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "room_not_found",
                format!("no room {room:?} in app {sdkappid} has anchors now"),
            )
        })?;
    Ok(Json(room_view(&r)))
}
