//! End-to-end acknowledgements: how a receiver learns that data it took is safely handed on.
//!
//! A receiver reading from an ordered source it must confirm (a Kafka partition: commit an
//! offset) keeps one [`AckLog`] per source and attaches the token of each record to the record's
//! [`Lease`](crate::Lease). The lease travels through processors, batches (merged) and fan-out
//! (shared) to every exporter; the token is released when the last holder is done with the data:
//! every exporter that got it delivered it (or, for a persistent queue, stored it on disk), or
//! dropped it for a counted reason. [`AckLog::settled_through`] then gives the highest id below
//! which everything was settled, in order — the offset that is safe to commit.
//!
//! Receivers that ask for nothing pay nothing: their leases carry no token.

use crate::lease::Held;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// The acknowledgement state of one ordered source (a Kafka partition): ids in the order they
/// were read, each pending until its token is released.
#[derive(Debug, Default)]
pub struct AckLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Ids read and not yet past the settled prefix, ascending, with whether each is settled.
    open: VecDeque<(i64, bool)>,
    /// Ids at or above this are never reported settled (their data was abandoned unsent).
    barrier: Option<i64>,
    /// Ids tracked and not settled yet.
    pending: usize,
}

impl AckLog {
    /// A log with nothing read yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers `id` (ids must increase) and returns the token to attach to its data.
    pub fn track(self: &Arc<Self>, id: i64) -> Arc<dyn Held> {
        let mut inner = self.lock();
        if inner.open.back().is_none_or(|&(last, _)| last < id) {
            inner.open.push_back((id, false));
            inner.pending += 1;
        }
        drop(inner);
        Arc::new(AckToken {
            log: self.clone(),
            id,
        })
    }

    /// Marks `id` settled; called by the token's drop.
    fn settle(&self, id: i64) {
        let mut inner = self.lock();
        if let Ok(i) = inner.open.binary_search_by_key(&id, |&(k, _)| k) {
            if let Some(entry) = inner.open.get_mut(i) {
                if !entry.1 {
                    entry.1 = true;
                    inner.pending = inner.pending.saturating_sub(1);
                }
            }
        }
    }

    /// The highest id such that it and every id read before it are settled, forgetting them;
    /// `None` when nothing new is settled. Commit `id + 1` for a Kafka partition.
    pub fn settled_through(&self) -> Option<i64> {
        let mut inner = self.lock();
        let barrier = inner.barrier;
        let mut last = None;
        while let Some(&(id, true)) = inner.open.front() {
            if barrier.is_some_and(|b| id >= b) {
                break;
            }
            inner.open.pop_front();
            last = Some(id);
        }
        last
    }

    /// Data of `id` will never be delivered (read, but not handed on before a shutdown): nothing
    /// from `id` on may be reported settled, so the source sends it again later.
    pub fn hold_back(&self, id: i64) {
        let mut inner = self.lock();
        inner.barrier = Some(inner.barrier.map_or(id, |b| b.min(id)));
    }

    /// Ids read and not settled yet.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked mid-update (plain fields).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Settles its id in its log when the last lease holding it is dropped.
struct AckToken {
    log: Arc<AckLog>,
    id: i64,
}

impl Held for AckToken {}

impl Drop for AckToken {
    fn drop(&mut self) {
        self.log.settle(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Lease;

    #[test]
    fn settles_in_order_only() {
        let log = AckLog::new();
        let a = log.track(10);
        let b = log.track(11);
        let c = log.track(12);
        assert_eq!(log.pending(), 3);
        drop(b);
        assert_eq!(log.settled_through(), None, "10 is still open");
        drop(a);
        assert_eq!(log.settled_through(), Some(11));
        assert_eq!(log.settled_through(), None, "nothing new");
        drop(c);
        assert_eq!(log.settled_through(), Some(12));
        assert_eq!(log.pending(), 0);
    }

    #[test]
    fn a_token_in_a_fanned_out_and_merged_lease_settles_after_the_last_holder() {
        let log = AckLog::new();
        let mut first = Lease::of(log.track(1));
        let copy = first.share();
        let mut batch = Lease::of(log.track(2));
        batch.absorb(first);
        drop(batch);
        assert_eq!(
            log.settled_through(),
            None,
            "the fanned-out copy still holds 1"
        );
        drop(copy);
        assert_eq!(log.settled_through(), Some(2));
    }

    #[test]
    fn held_back_data_is_never_reported_settled() {
        let log = AckLog::new();
        let a = log.track(5);
        let b = log.track(6);
        log.hold_back(6);
        drop(a);
        drop(b);
        assert_eq!(log.settled_through(), Some(5));
        assert_eq!(log.settled_through(), None);
    }
}
