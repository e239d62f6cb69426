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
    let (room_id, room_id_type) = r.key.room.id_and_kind();
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

/// Every room of this node as `/v1/rooms` shows it (all apps): what a node publishes for the others in cluster
/// mode.
pub fn snapshot(hub: &crate::room::RoomHub) -> serde_json::Value {
    let rooms: Vec<RoomView> = hub.rooms().iter().map(|r| room_view(r)).collect();
    serde_json::to_value(rooms).expect("rooms serialize")
}

/// `GET /v1/rooms`: this node's rooms and, in cluster mode, the other nodes' (a room with anchors on several
/// nodes is one room; each anchor says its `node`). If Redis does not answer, the local rooms with
/// `"partial": true`.
pub async fn list(
    State(st): State<ApiState>,
    p: Peer,
    tls: super::server::OverTls,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let admin = is_admin(&st, peer(p), &headers, tls);
    let visible = |sdkappid: u64| admin || public(&st, sdkappid);
    let clustered = st.registry.clustered();
    let mut all = vec![(st.registry.node_id().to_string(), snapshot(&st.hub))];
    let mut partial = false;
    match st.registry.remote_rooms().await {
        Ok(remote) => all.extend(remote),
        Err(e) => {
            tracing::warn!(error = %e, "other nodes' rooms are unavailable; listing this node's");
            partial = true;
        }
    }
    let rooms = merge_rooms(all, clustered, visible);
    let mut body = serde_json::json!({ "rooms": rooms });
    if partial {
        body["partial"] = true.into();
    }
    Json(body)
}

/// One list of rooms from every node's rooms: rooms with the same app, id and id type are one, their anchors
/// together, each marked with its node when `mark_node` (cluster mode); rooms of apps not `visible` are left out.
fn merge_rooms(
    per_node: Vec<(String, serde_json::Value)>,
    mark_node: bool,
    visible: impl Fn(u64) -> bool,
) -> Vec<serde_json::Value> {
    let mut merged: Vec<serde_json::Value> = Vec::new();
    for (node, rooms) in per_node {
        for mut room in rooms.as_array().cloned().unwrap_or_default() {
            if !room["sdkappid"].as_u64().is_some_and(&visible) {
                continue;
            }
            if mark_node {
                for a in room["anchors"].as_array_mut().into_iter().flatten() {
                    a["node"] = node.clone().into();
                }
            }
            let same = |r: &serde_json::Value| ["sdkappid", "room_id", "room_id_type"].iter().all(|k| r[k] == room[k]);
            match merged.iter_mut().find(|r| same(r)) {
                Some(r) => {
                    let anchors = room["anchors"].as_array().cloned().unwrap_or_default();
                    if let Some(list) = r["anchors"].as_array_mut() {
                        list.extend(anchors);
                    }
                    if room["created_at_ms"].as_u64() < r["created_at_ms"].as_u64() {
                        r["created_at_ms"] = room["created_at_ms"].clone();
                    }
                }
                None => merged.push(room),
            }
        }
    }
    merged
}

/// A string room by default; `?type=number` looks up the numeric room with that id.
pub async fn one(
    State(st): State<ApiState>,
    p: Peer,
    tls: super::server::OverTls,
    headers: HeaderMap,
    Path((sdkappid, room)): Path<(u64, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<RoomView>, ApiError> {
    if !public(&st, sdkappid) {
        require_admin(&st, peer(p), &Method::GET, &headers, tls.0)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_room_on_two_nodes_is_one_room_with_each_anchor_marked() {
        let room = |user: &str, created: u64| {
            json!([{"sdkappid": 7, "room_id": "r", "room_id_type": "string", "created_at_ms": created,
                    "anchors": [{"userid": user}]}])
        };
        let other_app = json!([{"sdkappid": 8, "room_id": "r", "room_id_type": "string", "created_at_ms": 1,
                                "anchors": [{"userid": "x"}]}]);
        let numeric = json!([{"sdkappid": 7, "room_id": "r", "room_id_type": "number", "created_at_ms": 1,
                              "anchors": []}]);
        let merged = merge_rooms(
            vec![
                ("a".into(), room("u1", 20)),
                ("b".into(), room("u2", 10)),
                ("b".into(), other_app),
                ("c".into(), numeric),
            ],
            true,
            |app| app == 7,
        );
        assert_eq!(
            merged.len(),
            2,
            "one string room r and one numeric room r of app 7: {merged:?}"
        );
        let anchors = &merged[0]["anchors"];
        assert_eq!(anchors[0], json!({"userid": "u1", "node": "a"}));
        assert_eq!(anchors[1], json!({"userid": "u2", "node": "b"}));
        assert_eq!(
            merged[0]["created_at_ms"], 10,
            "the room began with its earliest anchor"
        );
        let single = merge_rooms(vec![("a".into(), room("u1", 1))], false, |_| true);
        assert!(
            single[0]["anchors"][0].get("node").is_none(),
            "a single node marks nothing"
        );
    }
}
