//! The takeover rule across nodes: a publisher that enters as (sdkappid, room, userid) on one node replaces the
//! anchor with that identity on any other node. Each node announces its joins on the Redis channel
//! `roomgate:joins` and listens to the others'; an anchor that started before the announced join is told it was
//! replaced, and its source ends as on a local takeover.

use crate::room::{RoomHub, RoomKey, RoomRef};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The channel joins are announced on.
const CHANNEL: &str = "roomgate:joins";

/// One announced join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The node the publisher entered on.
    pub node: String,
    /// Its app.
    pub sdkappid: u64,
    /// Its room: `s:<id>` for a string room, `n:<id>` for a numeric one.
    pub room: String,
    /// Its user id.
    pub userid: String,
    /// When it entered (ms since the Unix epoch).
    pub at_ms: u64,
}

impl Join {
    /// The join of `userid` into `key` on `node`, now.
    pub fn now(node: &str, key: &RoomKey, userid: &str) -> Join {
        Join {
            node: node.to_string(),
            sdkappid: key.sdkappid,
            room: match &key.room {
                RoomRef::Str(s) => format!("s:{s}"),
                RoomRef::Num(n) => format!("n:{n}"),
            },
            userid: userid.to_string(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The room it names; `None` for a malformed one.
    pub fn key(&self) -> Option<RoomKey> {
        let room = match self.room.split_once(':')? {
            ("s", s) => RoomRef::Str(s.to_string()),
            ("n", n) => RoomRef::Num(n.parse().ok()?),
            _ => return None,
        };
        Some(RoomKey {
            sdkappid: self.sdkappid,
            room,
        })
    }
}

/// Announce a join of this node to the others (best effort: a Redis outage is logged by the registry loop).
pub async fn announce(redis: &mut redis::aio::ConnectionManager, join: &Join) -> redis::RedisResult<()> {
    let body = serde_json::to_string(join).expect("join serializes");
    redis::cmd("PUBLISH").arg(CHANNEL).arg(body).query_async(redis).await
}

/// Listen to the other nodes' joins and apply the takeover rule to this node's anchors, until aborted;
/// reconnects after a Redis outage.
pub async fn listen(client: redis::Client, node: String, hub: Arc<RoomHub>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                Ok(()) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        let Ok(join) = serde_json::from_str::<Join>(&payload) else {
                            continue;
                        };
                        if join.node == node {
                            continue;
                        }
                        if let Some(key) = join.key() {
                            let at = UNIX_EPOCH + Duration::from_millis(join.at_ms);
                            if hub.replaced_elsewhere(&key, &join.userid, at) {
                                metrics::counter!("roomgate_cluster_takeovers_total").increment(1);
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to cluster joins; retrying"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot listen to cluster joins; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_names_its_room_either_kind() {
        for room in [RoomRef::Str("r:1".into()), RoomRef::Num(42)] {
            let key = RoomKey { sdkappid: 7, room };
            let j = Join::now("a", &key, "u");
            let back: Join = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
            assert_eq!(back.key(), Some(key));
        }
        let bad = Join {
            room: "x:1".into(),
            ..Join::now(
                "a",
                &RoomKey {
                    sdkappid: 7,
                    room: RoomRef::Num(1),
                },
                "u",
            )
        };
        assert_eq!(bad.key(), None);
    }
}
