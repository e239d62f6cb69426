//! Retention: delivered callbacks and ended pull tasks are deleted once they are older than configured, so the
//! database does not grow forever. Pending and failed callbacks and active tasks are never deleted. The sweep runs
//! once at start and then every `SWEEP_EVERY`.

use super::{now_ms, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often the periodic sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How long to keep what may be deleted; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delivered callbacks, counted from their delivery.
    pub delivered_callbacks: Option<Duration>,
    /// Finished, failed and stopped tasks, counted from their last change.
    pub ended_tasks: Option<Duration>,
}

impl Retention {
    /// From the config's day counts (0: keep forever).
    pub fn from_days(callback_days: u64, task_days: u64) -> Retention {
        let days = |d: u64| (d > 0).then(|| Duration::from_secs(d.saturating_mul(86_400)));
        Retention {
            delivered_callbacks: days(callback_days),
            ended_tasks: days(task_days),
        }
    }

    /// The cut-off times (ms since the epoch) at `now_ms`: rows older than these go.
    pub fn cutoffs(&self, now_ms: i64) -> (Option<i64>, Option<i64>) {
        let cut = |d: Option<Duration>| d.map(|d| now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
        (cut(self.delivered_callbacks), cut(self.ended_tasks))
    }
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Delivered callbacks deleted.
    pub callbacks: usize,
    /// Ended tasks deleted.
    pub tasks: usize,
}

/// Delete what `retention` no longer keeps, as of `now_ms` (blocking).
pub fn prune(store: &Store, retention: &Retention, now_ms: i64) -> Result<Pruned, StoreError> {
    let (callbacks_before, tasks_before) = retention.cutoffs(now_ms);
    let mut pruned = Pruned::default();
    if let Some(before) = callbacks_before {
        pruned.callbacks = store.prune_callbacks(before)?;
    }
    if let Some(before) = tasks_before {
        pruned.tasks = store.prune_tasks(before)?;
    }
    Ok(pruned)
}

/// Sweep now and then every `SWEEP_EVERY`, forever (the gateway aborts it at shutdown).
pub async fn run(store: Arc<Store>, retention: Retention) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || prune(&store, &retention, now_ms())).await {
            Ok(Ok(p)) if p.callbacks + p.tasks > 0 => {
                tracing::info!(
                    callbacks = p.callbacks,
                    tasks = p.tasks,
                    "pruned old delivered callbacks and ended tasks"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed; it runs again in an hour"),
            Err(e) => tracing::error!(error = %e, "retention sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_keeps_forever() {
        let r = Retention::from_days(0, 30);
        assert_eq!(r.cutoffs(100 * 86_400_000), (None, Some(70 * 86_400_000)));
        assert_eq!(
            Retention::from_days(7, 0).cutoffs(10),
            (Some(10 - 7 * 86_400_000), None)
        );
    }

    #[test]
    fn prunes_only_old_delivered_callbacks_and_old_ended_tasks() {
        let s = Store::in_memory().unwrap();
        let day = 86_400_000i64;
        let now = 100 * day;
        let cb = |status: &str, delivered: Option<i64>| {
            let mut r = crate::store::CallbackRecord::pending(7, "k", 103, b"{}", now - 50 * day);
            r.status = status.into();
            r.delivered_ms = delivered;
            r.id = s.save_callback(&r).unwrap();
            r
        };
        let old_delivered = cb("delivered", Some(now - 8 * day));
        let new_delivered = cb("delivered", Some(now - 6 * day));
        let old_pending = cb("pending", None);
        let old_failed = cb("failed", None);
        for (id, state, age_days) in [
            ("old-stopped", "stopped", 31),
            ("old-failed", "failed", 40),
            ("old-finished", "finished", 31),
            ("new-stopped", "stopped", 29),
            ("old-running", "running", 90),
            ("old-paused", "paused", 90),
        ] {
            s.conn()
                .execute(
                    "INSERT INTO pull_tasks (task_id, sdkappid, spec, state, created_at_ms, updated_at_ms)
                     VALUES (?1, 7, '{}', ?2, ?3, ?3)",
                    rusqlite::params![id, state, now - age_days * day],
                )
                .unwrap();
        }
        let r = Retention::from_days(7, 30);
        assert_eq!(prune(&s, &r, now).unwrap(), Pruned { callbacks: 1, tasks: 3 });
        assert!(s.callback(old_delivered.id).unwrap().is_none());
        for kept in [&new_delivered, &old_pending, &old_failed] {
            assert!(s.callback(kept.id).unwrap().is_some(), "{kept:?}");
        }
        for gone in ["old-stopped", "old-failed", "old-finished"] {
            assert!(s.task(gone).unwrap().is_none(), "{gone}");
        }
        for kept in ["new-stopped", "old-running", "old-paused"] {
            assert!(s.task(kept).unwrap().is_some(), "{kept}");
        }
        assert_eq!(prune(&s, &r, now).unwrap(), Pruned::default(), "idempotent");
        assert_eq!(
            prune(&s, &Retention::default(), now + 1000 * day).unwrap(),
            Pruned::default(),
            "no retention: nothing goes"
        );
    }
}
