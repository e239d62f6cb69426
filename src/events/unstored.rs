//! `Unstored`: callbacks whose latest state the store refused (disk full, SQLITE_BUSY, a read-only database).
//!
//! Such a callback is not dropped: it is delivered from memory like any other, and kept here, oldest first, until
//! the outbox's writer manages to store it (with whatever state delivery has reached by then). While anything is
//! here, new callbacks queue behind it rather than going to the store first, so row ids keep the events' order
//! (a restart resumes pending callbacks in row-id order). The queue is bounded: when it is full, new events wait
//! (in the event channel) for room instead of being dropped.

use crate::store::CallbackRecord;
use std::collections::VecDeque;
use std::sync::Mutex;

/// The in-memory queue of callbacks waiting for the store. Pure data structure; the outbox does the I/O.
#[derive(Debug)]
pub struct Unstored {
    items: Mutex<VecDeque<CallbackRecord>>,
    max: usize,
}

impl Unstored {
    /// An empty queue holding at most `max` callbacks (at least 1).
    pub fn new(max: usize) -> Unstored {
        Unstored {
            items: Mutex::default(),
            max: max.max(1),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<CallbackRecord>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when no callback waits for the store.
    pub fn is_empty(&self) -> bool {
        self.items().is_empty()
    }

    /// Callbacks waiting for the store.
    pub fn len(&self) -> usize {
        self.items().len()
    }

    /// Add `rec` at the back. False (and nothing added) when the queue is full: the caller keeps `rec`.
    #[must_use]
    pub fn push(&self, rec: &CallbackRecord) -> bool {
        let mut items = self.items();
        if items.len() >= self.max {
            return false;
        }
        items.push_back(rec.clone());
        true
    }

    /// Replace the queued copy of `rec` (same event id) with this newer state. False when it is not queued (it is
    /// in the store already).
    pub fn update(&self, rec: &CallbackRecord) -> bool {
        let mut items = self.items();
        match items.iter_mut().find(|r| r.event_id == rec.event_id) {
            Some(slot) => {
                *slot = rec.clone();
                true
            }
            None => false,
        }
    }

    /// The oldest queued callback (the next to store).
    pub fn front(&self) -> Option<CallbackRecord> {
        self.items().front().cloned()
    }

    /// Remove the front once `stored` has been written, unless its state changed meanwhile (then it is written
    /// again). Returns whether it was removed.
    pub fn pop_if_stored(&self, stored: &CallbackRecord) -> bool {
        let mut items = self.items();
        if items.front() == Some(stored) {
            items.pop_front();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u32) -> CallbackRecord {
        CallbackRecord::pending(7, "k", t, b"{}", 1)
    }

    #[test]
    fn bounded_and_in_order() {
        let q = Unstored::new(2);
        let (a, b, c) = (rec(101), rec(103), rec(104));
        assert!(q.push(&a));
        assert!(q.push(&b));
        assert!(!q.push(&c), "full: refused, so the caller keeps it");
        assert_eq!(q.len(), 2);
        assert_eq!(q.front(), Some(a.clone()));
        assert!(q.pop_if_stored(&a));
        assert_eq!(q.front(), Some(b));
    }

    #[test]
    fn a_state_change_while_storing_is_stored_again() {
        let q = Unstored::new(10);
        let a = rec(101);
        assert!(q.push(&a));
        let being_written = q.front().unwrap();
        let mut delivered = a.clone();
        delivered.status = "delivered".into();
        assert!(q.update(&delivered));
        assert!(
            !q.pop_if_stored(&being_written),
            "the newer state still has to be written"
        );
        assert_eq!(q.front(), Some(delivered.clone()));
        assert!(q.pop_if_stored(&delivered));
        assert!(q.is_empty());
        assert!(!q.update(&delivered), "not queued: it is in the store");
    }
}
