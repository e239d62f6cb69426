//! The takeover rule across nodes: a publisher that enters as (sdkappid, room, userid) on one node replaces the
//! anchor with that identity on any other node. Redis orders the joins: a node that takes an identity writes
//! itself as the identity's owner (`roomgate:owner:{room}:{userid}`, kept a minute) and announces the join on the
//! channel `roomgate:joins`; a node that hears of it and has an anchor with that identity tells it it was
//! replaced unless the owner is itself (its own join came later). No clocks are compared.

use crate::room::{RoomHub, RoomKey, RoomRef};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The channel joins are announced on.
const CHANNEL: &str = "roomgate:joins";
/// How long an identity's owner is kept: only the moments around a join need it.
const OWNER_TTL_SECS: u64 = 60;

/// The key naming the node that took an identity last.
fn owner_key(join: &Join) -> String {
    format!("roomgate:owner:{}:{}:{}", join.sdkappid, join.room, join.userid)
}

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

/// Take the identity for this node and announce the join to the others.
pub async fn announce(redis: &mut super::RedisLink, seal: &super::Seal, join: &Join) -> redis::RedisResult<()> {
    let body = seal.seal(CHANNEL, &serde_json::to_string(join).expect("join serializes"));
    let owner = seal.seal(&owner_key(join), &join.node);
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(owner_key(join))
        .arg(owner)
        .arg("EX")
        .arg(OWNER_TTL_SECS)
        .ignore()
        .cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(body)
        .ignore()
        .query_async(redis)
        .await
}

/// Whether this node (`node`) must give up the identity `join` names: another node owns it now.
async fn lost_to(
    redis: &mut super::RedisLink,
    seal: &super::Seal,
    join: &Join,
    node: &str,
) -> redis::RedisResult<bool> {
    let owner: Option<String> = redis::cmd("GET").arg(owner_key(join)).query_async(redis).await?;
    let fresh = Duration::from_secs(OWNER_TTL_SECS);
    Ok(owner.is_some_and(|o| seal.open_fresh(&owner_key(join), &o, fresh).is_some_and(|o| o != node)))
}

/// Listen to the other nodes' joins and apply the takeover rule to this node's anchors, until aborted;
/// reconnects after a Redis outage.
pub async fn listen(mut redis: super::RedisLink, seal: super::Seal, node: String, hub: Arc<RoomHub>) {
    loop {
        let client = redis.client().await;
        match async { client?.get_async_pubsub().await }.await {
            Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                Ok(()) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        let opened = seal.open_fresh(CHANNEL, &payload, super::MESSAGE_FRESH);
                        let Some(Ok(join)) = opened.map(serde_json::from_str::<Join>) else {
                            continue;
                        };
                        if join.node == node {
                            continue;
                        }
                        let Some(key) = join.key() else { continue };
                        if hub.participant(&key, &join.userid).is_none() {
                            continue;
                        }
                        match lost_to(&mut redis, &seal, &join, &node).await {
                            Ok(true) => {
                                if hub.replaced_elsewhere(&key, &join.userid) {
                                    metrics::counter!("roomgate_cluster_takeovers_total").increment(1);
                                }
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot check who owns an identity; the anchor stays"),
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
