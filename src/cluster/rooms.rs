//! Room callbacks decided cluster-wide: 101 when the first anchor of a room enters on any node, 102 when the last
//! one leaves anywhere. Redis keeps, per room, the set of nodes with anchors in it (`roomgate:room:{app}:{room}`)
//! and, per node, the rooms it is in (`roomgate:node:{id}:in`). A node's own "room created" / "room dismissed"
//! (its first anchor in, its last out) becomes a 101 / 102 only when Redis says it was the first node in / the
//! last out, each decided in one MULTI. The rooms of a node that dies without leaving are left for it by the
//! node that prunes it from the registry, which then sends the 102 of each room it emptied.

use super::Registry;
use crate::room::{RoomEvent, RoomKey, RoomRef};
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// A room as it is named in Redis: `{app}:s:{id}` or `{app}:n:{id}`.
pub(crate) fn room_code(key: &RoomKey) -> String {
    match &key.room {
        RoomRef::Str(s) => format!("{}:s:{s}", key.sdkappid),
        RoomRef::Num(n) => format!("{}:n:{n}", key.sdkappid),
    }
}

/// The room a `room_code` names.
pub(crate) fn room_of(code: &str) -> Option<RoomKey> {
    let (app, rest) = code.split_once(':')?;
    let room = match rest.split_once(':')? {
        ("s", s) => RoomRef::Str(s.to_string()),
        ("n", n) => RoomRef::Num(n.parse().ok()?),
        _ => return None,
    };
    Some(RoomKey {
        sdkappid: app.parse().ok()?,
        room,
    })
}

/// The Redis set of the nodes with anchors in a room.
pub(crate) fn room_key(code: &str) -> String {
    format!("roomgate:room:{code}")
}

/// The Redis set of the rooms a node has anchors in.
pub(crate) fn node_in_key(node: &str) -> String {
    format!("roomgate:node:{node}:in")
}

/// Pass the hub's events on to the outbox (`out`), with room creation and dismissal decided for the cluster. A
/// Redis that does not answer leaves the local decision (a room may then get a second 101/102 rather than none).
pub async fn decide(
    registry: Arc<Registry>,
    mut events: UnboundedReceiver<RoomEvent>,
    out: UnboundedSender<RoomEvent>,
) {
    while let Some(ev) = events.recv().await {
        let pass = match &ev {
            RoomEvent::RoomCreated { key, .. } => registry.enter_room(key).await,
            RoomEvent::RoomDismissed { key, .. } => registry.leave_room(key).await,
            _ => Ok(true),
        }
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot decide a room event in Redis; sending this node's own");
            true
        });
        if pass && out.send(ev).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_codes_round_trip_and_keep_the_kinds_apart() {
        for room in [RoomRef::Str("r:1".into()), RoomRef::Num(7), RoomRef::Str("7".into())] {
            let key = RoomKey {
                sdkappid: 1400000001,
                room,
            };
            assert_eq!(room_of(&room_code(&key)), Some(key));
        }
        let s = RoomKey {
            sdkappid: 1,
            room: RoomRef::Str("7".into()),
        };
        let n = RoomKey {
            sdkappid: 1,
            room: RoomRef::Num(7),
        };
        assert_ne!(room_code(&s), room_code(&n));
        assert_eq!(room_of("x:s:1"), None);
        assert_eq!(room_of("1:q:1"), None);
    }
}
