//! What this node knows of the other nodes' rooms: read from Redis at most once a second (one reader at a time,
//! a failure kept as long as an answer), and where an anchor of another node is (`locate`).

use super::{rooms_key, ClusterError, NodeInfo, NodesRooms, Registry, REMOTE_ROOMS_FRESH};

impl Registry {
    /// The rooms the other live nodes published, by node id (an empty list on a single node).
    pub async fn remote_rooms(&self) -> Result<NodesRooms, ClusterError> {
        Ok(self
            .remote_nodes()
            .await?
            .into_iter()
            .map(|(node, rooms)| (node.id, rooms))
            .collect())
    }

    /// The other live nodes with the rooms each published. Answers from Redis are kept `REMOTE_ROOMS_FRESH`
    /// (a failure too), so a public `/v1/rooms` or WHEP flood costs Redis one read a second, not one per request.
    async fn remote_nodes(&self) -> Result<Vec<(NodeInfo, serde_json::Value)>, ClusterError> {
        if self.redis.is_none() {
            return Ok(Vec::new());
        }
        // One reader at a time: the others wait for its answer instead of all asking Redis.
        let _one = self.remote_read.lock().await;
        if let Some((at, read)) = &*self.remote_cache.lock().expect("remote rooms lock") {
            if at.elapsed() < REMOTE_ROOMS_FRESH {
                return read.clone().map_err(ClusterError::Stale);
            }
        }
        let read = self.read_remote_nodes().await;
        let kept = read.as_ref().map(Clone::clone).map_err(|e| e.to_string());
        *self.remote_cache.lock().expect("remote rooms lock") = Some((std::time::Instant::now(), kept));
        read
    }

    async fn read_remote_nodes(&self) -> Result<Vec<(NodeInfo, serde_json::Value)>, ClusterError> {
        let others: Vec<NodeInfo> = self.nodes().await?.into_iter().filter(|n| n.id != self.me.id).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.redis.clone().expect("clustered");
        let keys: Vec<String> = others.iter().map(|n| rooms_key(&n.id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(others
            .into_iter()
            .zip(values)
            .filter_map(|(node, v)| {
                let fresh = super::NODE_TTL + super::REFRESH_EVERY;
                let rooms = serde_json::from_str(self.seal.open_fresh(&rooms_key(&node.id), &v?, fresh)?).ok()?;
                Some((node, rooms))
            })
            .collect())
    }

    /// Another live node with an anchor in the room (`userid` when named, else the first with video, else any)
    /// and that anchor's user id, from the rooms the nodes publish (at most `REMOTE_ROOMS_FRESH` old): where a
    /// viewer who arrives on the wrong node is sent, or whence its anchor is relayed.
    pub async fn locate(
        &self,
        sdkappid: u64,
        room_id: &str,
        room_id_type: &str,
        userid: Option<&str>,
    ) -> Result<Option<(NodeInfo, String)>, ClusterError> {
        let same_room = |room: &serde_json::Value| {
            room["sdkappid"].as_u64() == Some(sdkappid)
                && room["room_id"].as_str() == Some(room_id)
                && room["room_id_type"].as_str() == Some(room_id_type)
        };
        let mut any = None;
        for (node, rooms) in self.remote_nodes().await? {
            for room in rooms.as_array().into_iter().flatten().filter(|r| same_room(r)) {
                for a in room["anchors"].as_array().into_iter().flatten() {
                    let Some(id) = a["userid"].as_str() else { continue };
                    match userid {
                        Some(u) if u == id => return Ok(Some((node, id.to_string()))),
                        Some(_) => {}
                        None if !a["video"].is_null() => return Ok(Some((node, id.to_string()))),
                        None => any = any.or_else(|| Some((node.clone(), id.to_string()))),
                    }
                }
            }
        }
        Ok(any)
    }
}
