//! `Outbox`: durable, ordered delivery of event callbacks.
//!
//! Every callback is written to SQLite before its first attempt. Delivery follows TRTC's policy: a POST that gets
//! no HTTP 200 within `timeout_secs` (5) failed; it is retried at once, then every `retry_interval_secs` (10)
//! until `retry_window_secs` (60) after the first try, then kept as `failed` with its last error (listable and
//! re-sendable). One worker per ordering key (an anchor, a task) sends its callbacks one after the other; keys
//! run in parallel, and nothing here ever blocks the media path (events reach us through unbounded channels).
//! After a restart, pending callbacks are queued again in their original order.

use super::{sign, CallbackEvent};
use crate::config::Config;
use crate::store::{now_ms, CallbackRecord, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Outbox {
    store: Arc<Store>,
    config: Arc<Config>,
    http: reqwest::Client,
    queues: Mutex<HashMap<String, VecDeque<CallbackRecord>>>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("store task")
}

impl Outbox {
    pub fn new(store: Arc<Store>, config: Arc<Config>) -> Arc<Outbox> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.callbacks.timeout_secs))
            .connect_timeout(Duration::from_secs(config.callbacks.timeout_secs))
            .user_agent(concat!("roomgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client settings");
        Arc::new(Outbox {
            store,
            config,
            http,
            queues: Mutex::default(),
        })
    }

    /// Whether `sdkappid` wants callbacks.
    pub fn wants(&self, sdkappid: u64) -> bool {
        self.config.app(sdkappid).is_some_and(|a| !a.callback_url.is_empty())
    }

    /// Store `ev` and queue it for delivery (skipped when its app has no callback URL).
    pub async fn submit(self: &Arc<Self>, ev: CallbackEvent) -> Result<(), StoreError> {
        if !self.wants(ev.sdkappid) {
            return Ok(());
        }
        let store = self.store.clone();
        let rec = blocking(move || store.insert_callback(ev.sdkappid, &ev.order_key, ev.event_type, &ev.body)).await?;
        self.enqueue(rec);
        Ok(())
    }

    /// Queue every pending callback of the store (at start-up). Returns how many.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let pending = blocking(move || store.pending_callbacks()).await?;
        let n = pending.len();
        for rec in pending {
            self.enqueue(rec);
        }
        Ok(n)
    }

    /// Re-send a failed callback (`POST /v1/callbacks/<id>/retry`). `None` when it is not failed.
    pub async fn retry(self: &Arc<Self>, id: i64) -> Result<Option<CallbackRecord>, StoreError> {
        let store = self.store.clone();
        let rec = blocking(move || store.callback_retry(id)).await?;
        if let Some(r) = &rec {
            self.enqueue(r.clone());
        }
        Ok(rec)
    }

    pub async fn list(&self, status: Option<String>, limit: usize) -> Result<Vec<CallbackRecord>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.callbacks(status.as_deref(), limit)).await
    }

    pub async fn get(&self, id: i64) -> Result<Option<CallbackRecord>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.callback(id)).await
    }

    fn enqueue(self: &Arc<Self>, rec: CallbackRecord) {
        let key = rec.order_key.clone();
        let mut queues = self.queues.lock().expect("queues lock");
        match queues.get_mut(&key) {
            Some(q) => q.push_back(rec),
            None => {
                queues.insert(key.clone(), VecDeque::from([rec]));
                let me = self.clone();
                tokio::spawn(async move { me.work(key).await });
            }
        }
    }

    /// Deliver one key's callbacks in order until its queue is empty.
    async fn work(self: Arc<Self>, key: String) {
        loop {
            let next = self
                .queues
                .lock()
                .expect("queues lock")
                .get(&key)
                .and_then(|q| q.front().cloned());
            let Some(rec) = next else {
                self.queues.lock().expect("queues lock").remove(&key);
                return;
            };
            self.deliver(rec).await;
            let mut queues = self.queues.lock().expect("queues lock");
            if let Some(q) = queues.get_mut(&key) {
                q.pop_front();
                if q.is_empty() {
                    queues.remove(&key);
                    return;
                }
            }
        }
    }

    /// Try `rec` until it is delivered or its retry window is over.
    async fn deliver(&self, rec: CallbackRecord) {
        let cfg = &self.config.callbacks;
        let window_ms = cfg.retry_window_secs as i64 * 1000;
        let interval_ms = cfg.retry_interval_secs as i64 * 1000;
        let mut attempts = rec.attempts;
        let first_try = rec.first_try_ms.unwrap_or_else(now_ms);
        if rec.first_try_ms.is_some() && now_ms() - first_try > window_ms {
            self.expire(
                &rec,
                &format!(
                    "retry window ended while roomgate was down; last error: {}",
                    rec.last_error
                ),
            )
            .await;
            return;
        }
        loop {
            let Some(app) = self.config.app(rec.sdkappid).filter(|a| !a.callback_url.is_empty()) else {
                self.expire(&rec, "the app no longer has a callback_url").await;
                return;
            };
            attempts += 1;
            let sent_at = std::time::Instant::now();
            let result = self
                .http
                .post(&app.callback_url)
                .header("Content-Type", "application/json")
                .header("Sign", sign(&app.callback_key, &rec.body))
                .header("SdkAppId", rec.sdkappid.to_string())
                .body(rec.body.clone())
                .send()
                .await;
            let error = match result {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status().as_u16())),
                Err(e) if e.is_timeout() => Some(format!("no reply within {} s", cfg.timeout_secs)),
                Err(e) => Some(crate::error_chain(&e)),
            };
            let store = self.store.clone();
            match error {
                None => {
                    metrics::counter!("roomgate_callbacks_delivered_total").increment(1);
                    metrics::histogram!("roomgate_callback_delivery_seconds")
                        .record((now_ms() - rec.created_ms).max(0) as f64 / 1000.0);
                    metrics::histogram!("roomgate_callback_request_seconds").record(sent_at.elapsed().as_secs_f64());
                    let id = rec.id;
                    if let Err(e) = blocking(move || store.callback_delivered(id, attempts, first_try)).await {
                        tracing::error!(id, error = %e, "cannot record a delivered callback");
                    }
                    return;
                }
                Some(err) => {
                    tracing::debug!(id = rec.id, attempts, error = %err, "callback delivery failed");
                    let (id, e2) = (rec.id, err.clone());
                    if let Err(e) = blocking(move || store.callback_attempt_failed(id, attempts, first_try, &e2)).await
                    {
                        tracing::error!(id, error = %e, "cannot record a callback attempt");
                    }
                    // Once at once, then on the interval grid from the first try, within the window.
                    let next = if attempts == 1 {
                        now_ms()
                    } else {
                        let elapsed = now_ms() - first_try;
                        first_try + (elapsed / interval_ms + 1) * interval_ms
                    };
                    if next - first_try > window_ms {
                        metrics::counter!("roomgate_callbacks_expired_total").increment(1);
                        tracing::warn!(id = rec.id, attempts, error = %err, "callback not delivered within its retry window; kept as failed");
                        self.expire(&rec, &err).await;
                        return;
                    }
                    metrics::counter!("roomgate_callbacks_retried_total").increment(1);
                    let wait = (next - now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    async fn expire(&self, rec: &CallbackRecord, error: &str) {
        let store = self.store.clone();
        let (id, error) = (rec.id, error.to_string());
        if let Err(e) = blocking(move || store.callback_expired(id, &error)).await {
            tracing::error!(id, error = %e, "cannot record an expired callback");
        }
    }
}

/// Feed the outbox from the room hub and the pull service, in the order events happen. Runs until both sources
/// are gone.
pub async fn forward(
    outbox: Arc<Outbox>,
    mut rooms: tokio::sync::mpsc::UnboundedReceiver<crate::room::RoomEvent>,
    mut tasks: tokio::sync::mpsc::UnboundedReceiver<crate::ingest::pull::IngestEvent>,
) {
    loop {
        let ev = tokio::select! {
            Some(ev) = rooms.recv() => CallbackEvent::from_room(&ev, now_ms()),
            Some(ev) = tasks.recv() => CallbackEvent::from_ingest(&ev, now_ms()),
            else => return,
        };
        if let Err(e) = outbox.submit(ev).await {
            tracing::error!(error = %e, "cannot store a callback");
        }
    }
}
