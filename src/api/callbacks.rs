//! `GET /v1/callbacks[?status=failed|pending|delivered&limit=N]`, `GET /v1/callbacks/{id}` and
//! `POST /v1/callbacks/{id}/retry`: the callback outbox, for operators (and `roomgate callbacks`). All admin-only:
//! callback bodies name every user and room of every app.

use super::console::Admin;
use super::{ApiError, ApiState};
use crate::store::CallbackRecord;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

fn view(r: &CallbackRecord) -> Value {
    let mut v = serde_json::to_value(r).expect("record serializes");
    v["body"] = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v
}

fn outbox(st: &ApiState) -> Result<&std::sync::Arc<crate::events::Outbox>, ApiError> {
    st.outbox.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "callbacks_disabled",
            "callbacks are off",
        )
    })
}

/// 404 `callback_not_found` for an id the outbox does not hold.
fn no_callback(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "callback_not_found", format!("no callback {id}"))
}

fn internal(e: crate::store::StoreError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string())
}

pub async fn list(
    State(st): State<ApiState>,
    _: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = q.get("status").cloned();
    if let Some(s) = &status {
        if !["pending", "delivered", "failed"].contains(&s.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_status",
                "status must be pending, delivered or failed",
            ));
        }
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_limit", "limit must be within 1..=1000"))?,
    };
    let records = outbox(&st)?.list(status, limit).await.map_err(internal)?;
    Ok(Json(
        json!({ "callbacks": records.iter().map(view).collect::<Vec<_>>() }),
    ))
}

pub async fn one(State(st): State<ApiState>, _: Admin, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    match outbox(&st)?.get(id).await.map_err(internal)? {
        Some(r) => Ok(Json(view(&r))),
        None => Err(no_callback(id)),
    }
}

pub async fn retry(State(st): State<ApiState>, _: Admin, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let outbox = outbox(&st)?;
    match outbox.retry(id).await.map_err(internal)? {
        Some(r) => Ok(Json(view(&r))),
        None => match outbox.get(id).await.map_err(internal)? {
            Some(r) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_failed",
                format!("callback {id} is {}; only failed callbacks are re-sent", r.status),
            )),
            None => Err(no_callback(id)),
        },
    }
}
