//! Event callbacks: TRTC's room (101-104), media (201-204) and stream-ingest (701/702) events of every virtual
//! anchor, POSTed to the app's `callback_url` with `Sign = base64(HMAC-SHA256(callback_key, body))`.
//!
//! `CallbackEvent::from_*` turn what the room hub and the pull service report into TRTC's JSON bodies (pure,
//! tested against the reference's vector); the `Outbox` stores each one before its first attempt and delivers
//! it with TRTC's retry policy, in order per anchor (or task), different anchors in parallel. Delivery is at least
//! once: every POST carries the event's `X-Roomgate-Event-Id` so receivers can drop duplicates.

pub mod outbox;
pub mod unstored;

pub use outbox::Outbox;

use crate::ingest::pull::{IngestEvent, IngestEventKind};
use crate::media::Codec;
use crate::room::RoomRef;
use crate::room::{LeaveReason, RoomEvent, RoomKey, SourceKind};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Our values for the fields TRTC leaves to the client SDK (documented in the README).
pub const ROLE_ANCHOR: u32 = 20;
/// TerminalType: 100 = other (roomgate's anchors are not phones or desktops).
pub const TERMINAL_OTHER: u32 = 100;
/// UserType of WHIP publishers (1 = WebRTC).
pub const USER_TYPE_WEBRTC: u32 = 1;
/// UserType of RTMP publishers and pull robots (not a TRTC SDK: 100 = other).
pub const USER_TYPE_OTHER: u32 = 100;

/// A callback ready to store: its app, ordering key, type and exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The app whose callback URL and key deliver it.
    pub sdkappid: u64,
    /// Callbacks with the same key are delivered in order.
    pub order_key: String,
    /// TRTC event type (101-104 room, 201-204 media, 701/702 stream ingest).
    pub event_type: u32,
    /// The exact JSON body POSTed and signed.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoomBody {
    event_group_id: u32,
    event_type: u32,
    callback_ts: i64,
    event_info: RoomInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoomInfo {
    room_id: serde_json::Value,
    event_ts: i64,
    event_ms_ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminal_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IngestBody {
    event_group_id: u32,
    event_type: u32,
    callback_ms_ts: i64,
    event_info: IngestInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IngestInfo {
    event_ms_ts: i64,
    task_id: String,
    status: u32,
}

/// TRTC's 104 `Reason` for why an anchor left: 1 normal, 2 timeout, 3 removed from the room.
pub fn exit_reason(r: &LeaveReason) -> u32 {
    match r {
        LeaveReason::Normal => 1,
        LeaveReason::Timeout => 2,
        LeaveReason::Replaced | LeaveReason::Ended(_) => 3,
    }
}

fn room_id_value(room: &RoomRef) -> serde_json::Value {
    match room {
        RoomRef::Num(n) => serde_json::Value::from(*n),
        RoomRef::Str(s) => serde_json::Value::from(s.clone()),
    }
}

fn anchor_key(key: &RoomKey, userid: &str) -> String {
    format!("anchor:{}:{}:{userid}", key.sdkappid, key.room)
}

impl CallbackEvent {
    /// The callback for a room event at `now_ms`. Room creation and dismissal are queued with the anchor that
    /// caused them, so a receiver sees 101, 103, ..., 104, 102 in that order.
    pub fn from_room(ev: &RoomEvent, now_ms: i64) -> CallbackEvent {
        let (key, userid, group, event_type) = match ev {
            RoomEvent::RoomCreated { key, userid } => (key, userid, 1, 101),
            RoomEvent::RoomDismissed { key, userid } => (key, userid, 1, 102),
            RoomEvent::AnchorEntered { key, userid, .. } => (key, userid, 1, 103),
            RoomEvent::AnchorLeft { key, userid, .. } => (key, userid, 1, 104),
            RoomEvent::MediaStarted { key, userid, codec } => {
                (key, userid, 2, if *codec == Codec::H264 { 201 } else { 203 })
            }
            RoomEvent::MediaStopped { key, userid, codec } => {
                (key, userid, 2, if *codec == Codec::H264 { 202 } else { 204 })
            }
        };
        let mut info = RoomInfo {
            room_id: room_id_value(&key.room),
            event_ts: now_ms / 1000,
            event_ms_ts: now_ms,
            user_id: (event_type != 102).then(|| userid.clone()),
            role: None,
            terminal_type: None,
            user_type: None,
            reason: None,
        };
        match ev {
            RoomEvent::AnchorEntered { source, .. } => {
                info.role = Some(ROLE_ANCHOR);
                info.terminal_type = Some(TERMINAL_OTHER);
                info.user_type = Some(match source {
                    SourceKind::Whip => USER_TYPE_WEBRTC,
                    SourceKind::Rtmp | SourceKind::Srt | SourceKind::Pull => USER_TYPE_OTHER,
                });
                info.reason = Some(1);
            }
            RoomEvent::AnchorLeft { reason, .. } => {
                info.role = Some(ROLE_ANCHOR);
                info.reason = Some(exit_reason(reason));
            }
            RoomEvent::MediaStopped { .. } => info.reason = Some(0),
            _ => {}
        }
        let body = RoomBody {
            event_group_id: group,
            event_type,
            callback_ts: now_ms,
            event_info: info,
        };
        CallbackEvent {
            sdkappid: key.sdkappid,
            order_key: anchor_key(key, userid),
            event_type,
            body: serde_json::to_vec(&body).expect("callback body serializes"),
        }
    }

    /// The callback for a pull-task event: 701 with Status 0 (started), 1 (failed), 2 (restarting); 702 Status 0.
    pub fn from_ingest(ev: &IngestEvent, now_ms: i64) -> CallbackEvent {
        let (event_type, status) = match ev.kind {
            IngestEventKind::Started => (701, 0),
            IngestEventKind::Failed { .. } => (701, 1),
            IngestEventKind::Restarting { .. } => (701, 2),
            IngestEventKind::Stopped { .. } => (702, 0),
        };
        let body = IngestBody {
            event_group_id: 7,
            event_type,
            callback_ms_ts: now_ms,
            event_info: IngestInfo {
                event_ms_ts: ev.at_ms,
                task_id: ev.task_id.clone(),
                status,
            },
        };
        CallbackEvent {
            sdkappid: ev.sdkappid,
            order_key: format!("task:{}", ev.task_id),
            event_type,
            body: serde_json::to_vec(&body).expect("callback body serializes"),
        }
    }
}

/// `Sign` header value: standard base64 of HMAC-SHA256(key, body).
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_signature_vector() {
        let body = "{\n\t\"EventGroupId\":\t2,\n\t\"EventType\":\t204,\n\t\"CallbackTs\":\t1664209748188,\n\t\"EventInfo\":\t{\n\t\t\"RoomId\":\t8489,\n\t\t\"EventTs\":\t1664209748,\n\t\t\"EventMsTs\":\t1664209748180,\n\t\t\"UserId\":\t\"user_85034614\",\n\t\t\"Reason\":\t0\n\t}\n}";
        assert_eq!(
            sign("123654", body.as_bytes()),
            "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA="
        );
    }

    fn key(room: RoomRef) -> RoomKey {
        RoomKey { sdkappid: 7, room }
    }

    #[test]
    fn room_bodies_have_trtcs_shapes() {
        let k = key(RoomRef::Num(12345));
        let ev = RoomEvent::AnchorEntered {
            key: k.clone(),
            userid: "test".into(),
            source: SourceKind::Whip,
        };
        let cb = CallbackEvent::from_room(&ev, 1687770731831);
        assert_eq!(
            String::from_utf8(cb.body).unwrap(),
            r#"{"EventGroupId":1,"EventType":103,"CallbackTs":1687770731831,"EventInfo":{"RoomId":12345,"EventTs":1687770731,"EventMsTs":1687770731831,"UserId":"test","Role":20,"TerminalType":100,"UserType":1,"Reason":1}}"#
        );
        let dismissed = CallbackEvent::from_room(
            &RoomEvent::RoomDismissed {
                key: key(RoomRef::Str("12345".into())),
                userid: "test".into(),
            },
            1000,
        );
        let v: serde_json::Value = serde_json::from_slice(&dismissed.body).unwrap();
        assert_eq!(v["EventInfo"]["RoomId"], "12345", "string rooms keep a string RoomId");
        assert!(v["EventInfo"].get("UserId").is_none(), "102 has no UserId");
        assert!(
            dismissed.order_key.ends_with(":test"),
            "102 is queued with the anchor whose leaving emptied the room"
        );
        let left = CallbackEvent::from_room(
            &RoomEvent::AnchorLeft {
                key: k.clone(),
                userid: "test".into(),
                reason: LeaveReason::Timeout,
            },
            1000,
        );
        let v: serde_json::Value = serde_json::from_slice(&left.body).unwrap();
        assert_eq!(
            (v["EventType"].as_u64(), v["EventInfo"]["Reason"].as_u64()),
            (Some(104), Some(2))
        );
        let stopped = CallbackEvent::from_room(
            &RoomEvent::MediaStopped {
                key: k,
                userid: "test".into(),
                codec: Codec::Opus,
            },
            1000,
        );
        let v: serde_json::Value = serde_json::from_slice(&stopped.body).unwrap();
        assert_eq!(
            (v["EventGroupId"].as_u64(), v["EventType"].as_u64()),
            (Some(2), Some(204))
        );
        assert_eq!(v["EventInfo"]["Reason"], 0);
    }

    #[test]
    fn ingest_bodies() {
        let ev = IngestEvent {
            sdkappid: 7,
            task_id: "xx".into(),
            kind: IngestEventKind::Started,
            at_ms: 1701937900013,
        };
        let cb = CallbackEvent::from_ingest(&ev, 1701937900012);
        assert_eq!(
            String::from_utf8(cb.body).unwrap(),
            r#"{"EventGroupId":7,"EventType":701,"CallbackMsTs":1701937900012,"EventInfo":{"EventMsTs":1701937900013,"TaskId":"xx","Status":0}}"#
        );
        let failed = IngestEvent {
            kind: IngestEventKind::Failed { reason: "x".into() },
            ..ev.clone()
        };
        assert!(String::from_utf8(CallbackEvent::from_ingest(&failed, 0).body)
            .unwrap()
            .contains(r#""EventType":701"#));
        let stopped = IngestEvent {
            kind: IngestEventKind::Stopped { reason: "x".into() },
            ..ev
        };
        let cb = CallbackEvent::from_ingest(&stopped, 0);
        assert_eq!(cb.event_type, 702);
        assert_eq!(cb.order_key, "task:xx");
    }
}
