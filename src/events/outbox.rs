//! `Outbox`: durable, ordered delivery of event callbacks.
//!
//! Every callback is written to SQLite before its first attempt. Delivery follows TRTC's policy: a POST that gets
//! no HTTP 200 within `timeout_secs` (5) failed; it is retried at once, then every `retry_interval_secs` (10)
//! until `retry_window_secs` (60) after the first try, then kept as `failed` with its last error (listable and
//! re-sendable). One worker per ordering key (an anchor, a task) sends its callbacks one after the other; keys
//! run in parallel, and nothing here ever blocks the media path (events reach us through unbounded channels).
//! After a restart, pending callbacks are queued again in their original order.
//!
//! When the store refuses a write (disk full, SQLITE_BUSY, read-only), the callback is not lost: it is delivered
//! from memory and kept in `Unstored` until `keep_storing` writes it (counted in
//! `roomgate_callbacks_store_errors_total`). Every attempt carries the event's `X-Roomgate-Event-Id`.

use super::unstored::Unstored;
use super::{sign, CallbackEvent};
use crate::config::Config;
use crate::store::{now_ms, CallbackRecord, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header that carries a callback's event id (the same on every attempt, before and after a restart).
pub const EVENT_ID_HEADER: &str = "X-Roomgate-Event-Id";

/// How often `keep_storing` tries again to store what the store refused.
const STORE_RETRY_EVERY: Duration = Duration::from_secs(1);

/// Stores callbacks and delivers them, in order per key, with TRTC's retry policy.
pub struct Outbox {
    store: Arc<Store>,
    config: Arc<Config>,
    /// Built at the first delivery: a gateway without callbacks holds no HTTP client (nor the system's CAs).
    http: tokio::sync::OnceCell<reqwest::Client>,
    queues: Mutex<HashMap<String, VecDeque<CallbackRecord>>>,
    unstored: Arc<Unstored>,
    /// Wakes `keep_storing` when something is added to `unstored`.
    unstored_added: tokio::sync::Notify,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task of the outbox")
}

/// When to try a callback next, after `attempts` failed ones (the first at `first_try_ms`), at `now_ms`: at once
/// after the first failure, then on the `interval_ms` grid from the first try; `None` once that would be more
/// than `window_ms` after the first try (the callback then expires).
pub fn next_attempt(attempts: u32, first_try_ms: i64, now_ms: i64, interval_ms: i64, window_ms: i64) -> Option<i64> {
    let next = if attempts <= 1 {
        now_ms
    } else {
        let elapsed = (now_ms - first_try_ms).max(0);
        first_try_ms + (elapsed / interval_ms.max(1) + 1) * interval_ms.max(1)
    };
    (next - first_try_ms <= window_ms).then_some(next)
}

/// Count and log a write the store refused.
fn store_error(e: &StoreError, what: &str, event_id: &str) {
    metrics::counter!("roomgate_callbacks_store_errors_total").increment(1);
    tracing::warn!(event_id, error = %e, "{what}");
}

/// What `submit` did with a new callback.
enum Submitted {
    Stored(i64),
    InMemory,
    Full,
}

impl Outbox {
    /// An outbox over `store`, delivering by `config.callbacks`; starts no task of its own.
    pub fn new(store: Arc<Store>, config: Arc<Config>) -> Arc<Outbox> {
        let unstored = Arc::new(Unstored::new(config.callbacks.memory_queue_max));
        Arc::new(Outbox {
            store,
            config,
            http: tokio::sync::OnceCell::new(),
            queues: Mutex::default(),
            unstored,
            unstored_added: tokio::sync::Notify::new(),
        })
    }

    /// The callbacks' HTTP client (the gateway's shared TLS settings), built once, at first use. Building it may
    /// read and parse the system's CA bundle (a few ms of file I/O), so that runs on a blocking thread; deliveries
    /// that need it meanwhile wait for that one build.
    async fn http(&self) -> &reqwest::Client {
        let timeout = Duration::from_secs(self.config.callbacks.timeout_secs);
        self.http
            .get_or_init(|| {
                blocking(move || {
                    reqwest::Client::builder()
                        .tls_backend_preconfigured(crate::tls::https_client_config())
                        .timeout(timeout)
                        .connect_timeout(timeout)
                        .user_agent(concat!("roomgate/", env!("CARGO_PKG_VERSION")))
                        .build()
                        .expect("static client settings")
                })
            })
            .await
    }

    /// Whether `sdkappid` wants callbacks.
    pub fn wants(&self, sdkappid: u64) -> bool {
        self.config.app(sdkappid).is_some_and(|a| !a.callback_url.is_empty())
    }

    /// Store `ev` and queue it for delivery (skipped when its app has no callback URL). When the store refuses
    /// it, it is kept and delivered from memory; when that memory is full too, this waits for room.
    pub async fn submit(self: &Arc<Self>, ev: CallbackEvent) {
        if !self.wants(ev.sdkappid) {
            return;
        }
        let mut rec = CallbackRecord::pending(ev.sdkappid, &ev.order_key, ev.event_type, &ev.body, now_ms());
        let mut warned_full = false;
        loop {
            let (store, unstored, r) = (self.store.clone(), self.unstored.clone(), rec.clone());
            let outcome = blocking(move || {
                // Behind callbacks still waiting for the store, so row ids keep the events' order.
                if unstored.is_empty() {
                    match store.save_callback(&r) {
                        Ok(id) => return Submitted::Stored(id),
                        Err(e) => store_error(&e, "cannot store a callback; delivering it from memory", &r.event_id),
                    }
                }
                if unstored.push(&r) {
                    Submitted::InMemory
                } else {
                    Submitted::Full
                }
            })
            .await;
            match outcome {
                Submitted::Stored(id) => rec.id = id,
                Submitted::InMemory => self.unstored_added.notify_one(),
                Submitted::Full => {
                    if !warned_full {
                        tracing::error!(
                            max = self.config.callbacks.memory_queue_max,
                            "the store refuses writes and the in-memory callback queue is full; new events wait"
                        );
                        warned_full = true;
                    }
                    tokio::time::sleep(STORE_RETRY_EVERY).await;
                    continue;
                }
            }
            break;
        }
        self.enqueue(rec);
    }

    /// Write what the store refused once it takes writes again, oldest first. Runs until the gateway stops.
    pub async fn keep_storing(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.unstored_added.notified() => {}
                _ = tokio::time::sleep(STORE_RETRY_EVERY) => {}
            }
            if self.unstored.is_empty() {
                continue;
            }
            let (store, unstored) = (self.store.clone(), self.unstored.clone());
            let stored = blocking(move || {
                let mut n = 0;
                while let Some(front) = unstored.front() {
                    match store.save_callback(&front) {
                        Ok(_) => n += usize::from(unstored.pop_if_stored(&front)),
                        Err(e) => {
                            store_error(&e, "the store still refuses callbacks; trying again", &front.event_id);
                            break;
                        }
                    }
                }
                n
            })
            .await;
            if stored > 0 {
                tracing::info!(
                    callbacks = stored,
                    left = self.unstored.len(),
                    "stored callbacks kept in memory while the store refused writes"
                );
            }
        }
    }

    /// Save `rec`'s delivery state: into its in-memory copy while it waits for the store, else into the store
    /// (if the store refuses, the state waits in memory too, as far as there is room).
    async fn save(&self, rec: &CallbackRecord) {
        let (store, unstored, r) = (self.store.clone(), self.unstored.clone(), rec.clone());
        let queued = blocking(move || {
            if unstored.update(&r) {
                return false;
            }
            let Err(e) = store.save_callback(&r) else {
                return false;
            };
            store_error(&e, "cannot record a callback's delivery state", &r.event_id);
            if !unstored.push(&r) {
                tracing::error!(event_id = %r.event_id, "in-memory callback queue full: the stored state of this \
                    callback is out of date (after a restart it may be sent again, with the same event id)");
                return false;
            }
            true
        })
        .await;
        if queued {
            self.unstored_added.notify_one();
        }
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

    /// Callbacks in the store, newest first, of `status` when given, at most `limit`.
    pub async fn list(&self, status: Option<String>, limit: usize) -> Result<Vec<CallbackRecord>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.callbacks(status.as_deref(), limit)).await
    }

    /// One stored callback by row id; `None` when there is none.
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
    async fn deliver(&self, mut rec: CallbackRecord) {
        let cfg = &self.config.callbacks;
        let window_ms = cfg.retry_window_secs as i64 * 1000;
        let interval_ms = cfg.retry_interval_secs as i64 * 1000;
        let first_try = rec.first_try_ms.unwrap_or_else(now_ms);
        if rec.first_try_ms.is_some() && now_ms() - first_try > window_ms {
            let error = format!(
                "retry window ended while roomgate was down; last error: {}",
                rec.last_error
            );
            self.expire(rec, error).await;
            return;
        }
        rec.first_try_ms = Some(first_try);
        loop {
            let Some(app) = self.config.app(rec.sdkappid).filter(|a| !a.callback_url.is_empty()) else {
                self.expire(rec, "the app no longer has a callback_url".into()).await;
                return;
            };
            rec.attempts += 1;
            let http = self.http().await;
            let sent_at = std::time::Instant::now();
            let result = http
                .post(&app.callback_url)
                .header("Content-Type", "application/json")
                .header("Sign", sign(&app.callback_key, &rec.body))
                .header("SdkAppId", rec.sdkappid.to_string())
                .header(EVENT_ID_HEADER, &rec.event_id)
                .body(rec.body.clone())
                .send()
                .await;
            let error = match result {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status().as_u16())),
                Err(e) if e.is_timeout() => Some(format!("no reply within {} s", cfg.timeout_secs)),
                Err(e) => Some(crate::error_chain(&e)),
            };
            match error {
                None => {
                    metrics::counter!("roomgate_callbacks_delivered_total").increment(1);
                    metrics::histogram!("roomgate_callback_delivery_seconds")
                        .record((now_ms() - rec.created_ms).max(0) as f64 / 1000.0);
                    metrics::histogram!("roomgate_callback_request_seconds").record(sent_at.elapsed().as_secs_f64());
                    rec.status = "delivered".into();
                    rec.delivered_ms = Some(now_ms());
                    self.save(&rec).await;
                    return;
                }
                Some(err) => {
                    tracing::debug!(event_id = %rec.event_id, attempts = rec.attempts, error = %err,
                        "callback delivery failed");
                    rec.last_error = err.clone();
                    self.save(&rec).await;
                    let Some(next) = next_attempt(rec.attempts, first_try, now_ms(), interval_ms, window_ms) else {
                        metrics::counter!("roomgate_callbacks_expired_total").increment(1);
                        tracing::warn!(event_id = %rec.event_id, attempts = rec.attempts, error = %err,
                            "callback not delivered within its retry window; kept as failed");
                        self.expire(rec, err).await;
                        return;
                    };
                    metrics::counter!("roomgate_callbacks_retried_total").increment(1);
                    let wait = (next - now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    async fn expire(&self, mut rec: CallbackRecord, error: String) {
        rec.status = "failed".into();
        rec.last_error = error;
        self.save(&rec).await;
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
        outbox.submit(ev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn trtc_retry_schedule() {
        // First failure at t=0: retried at once.
        assert_eq!(next_attempt(1, 0, 0, 10 * S, 60 * S), Some(0));
        // Second failure at 5 s (a 5 s timeout): next on the 10 s grid.
        assert_eq!(next_attempt(2, 0, 5 * S, 10 * S, 60 * S), Some(10 * S));
        assert_eq!(next_attempt(3, 0, 10 * S + 1, 10 * S, 60 * S), Some(20 * S));
        assert_eq!(
            next_attempt(7, 0, 50 * S, 10 * S, 60 * S),
            Some(60 * S),
            "the last one at the window's end"
        );
        assert_eq!(next_attempt(8, 0, 60 * S, 10 * S, 60 * S), None, "then it expires");
        assert_eq!(
            next_attempt(1, 0, 61 * S, 10 * S, 60 * S),
            None,
            "a first try after the window"
        );
        assert_eq!(
            next_attempt(2, 0, 0, 0, 60 * S),
            Some(1),
            "a zero interval does not divide by zero"
        );
    }
}
