//! `GET /v1/nodes` (admin): the nodes of the cluster with their address and load, as the registry in Redis has
//! them; a single node lists itself alone.

use super::console::Admin;
use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// Seconds a client is told to wait when Redis does not answer.
const RETRY_AFTER: u64 = 5;

/// The live nodes, by id; 503 `cluster_unavailable` while Redis does not answer.
pub async fn list(State(st): State<ApiState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let nodes = st.registry.nodes().await.map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", e.to_string()).retry_after(RETRY_AFTER)
    })?;
    Ok(Json(json!({
        "cluster": st.registry.clustered(),
        "node": st.registry.node_id(),
        "nodes": nodes,
    })))
}
