//! Cluster mode (`[cluster] redis_url`): several roomgate nodes share one Redis as their control plane. Without
//! `redis_url` nothing here runs and roomgate needs no Redis.
//!
//! What exists so far is the node registry (`Registry`): each node keeps its entry (address, cores, load) and its
//! rooms in Redis with a short TTL and lists the others from there (`GET /v1/nodes`, and every node's anchors
//! in `GET /v1/rooms`). Rooms spanning nodes, relays,
//! placement by load and task failover build on it.

mod link;
mod load;
mod registry;
pub mod relay;
pub(crate) mod rooms;
mod seal;
mod takeover;
pub mod tasks;

pub use link::{RedisLink, SentinelUrl};
pub use load::{CpuMeter, Load};
pub use registry::{ClusterError, NodeInfo, Registry, RoomsSnapshot, NODE_TTL, REFRESH_EVERY};
pub use seal::Seal;

/// A signed message (task control, a join) older than this is refused: replaying one works for seconds only.
pub(crate) const MESSAGE_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

use crate::config::Config;

/// This node's id: `cluster.node_id` when set; on a single node, the host name; in a cluster, the one kept in
/// the data dir (made once from the host name and a random suffix, so a restarted node is the same node).
pub fn node_id(config: &Config) -> std::io::Result<String> {
    if !config.cluster.node_id.is_empty() {
        return Ok(config.cluster.node_id.clone());
    }
    if config.cluster.redis_url.is_empty() {
        return Ok(hostname());
    }
    let path = config.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = format!("{}-{:06x}", hostname(), rand::random::<u32>() & 0xff_ffff);
            crate::store::create_private_dir(&config.data_dir)?;
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// How other nodes and redirected clients reach this node's HTTP: `cluster.advertise_http`, else
/// `<scheme>://<public_host>:<port>` with the HTTPS listener's port when there is one (a client on HTTPS is not
/// sent to plain HTTP), else plain HTTP's.
pub fn advertise_http(config: &Config, (scheme, port): (&str, u16)) -> String {
    if config.cluster.advertise_http.is_empty() {
        format!("{scheme}://{}:{port}", config.public_host)
    } else {
        config.cluster.advertise_http.trim_end_matches('/').to_string()
    }
}

/// Where other nodes reach this node's relay listener, bound at `bound`: its address, or, when it listens on
/// every address, the host of `advertise_http` with its port.
pub fn advertise_relay(config: &Config, bound: std::net::SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let http = advertise_http(config, ("http", 0));
    let host = url::Url::parse(&http)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| config.public_host.clone());
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", bound.port())
    } else {
        format!("{host}:{}", bound.port())
    }
}

/// The machine's host name ("node" when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}
