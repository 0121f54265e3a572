//! What travels with data from the receiver that took it to the last exporter done with it.
//!
//! A [`Lease`] holds shares of whatever must be released once nobody holds the data any more: the
//! bytes it was charged against the memory budget ([`crate::memory::Charge`]), and whatever a
//! later feature attaches (an end-to-end acknowledgement). Fan-out clones the lease (shares are
//! reference counted), batching merges leases, and the exporter worker drops it after the batch
//! was delivered or counted as dropped: the last drop releases each share. A lease with nothing in
//! it costs one empty `Vec` — no allocation for data that asks for nothing.

use crate::memory::Charge;
use std::fmt;
use std::sync::Arc;

/// Something released when the last lease holding it is dropped (its `Drop` does the work).
pub trait Held: Send + Sync + 'static {}

/// Shares of everything that must live exactly as long as some piece of data.
///
/// The memory charge is kept inline while the data has one holder (no allocation; merging two
/// charges of one budget adds their bytes) and becomes a reference-counted share only when the
/// data is fanned out.
#[derive(Default)]
pub struct Lease {
    charge: Option<Charge>,
    shared: Vec<Arc<dyn Held>>,
}

impl Lease {
    /// A lease that holds nothing.
    pub const fn none() -> Self {
        Self {
            charge: None,
            shared: Vec::new(),
        }
    }

    /// A lease holding one share.
    pub fn of(held: Arc<dyn Held>) -> Self {
        Self {
            charge: None,
            shared: vec![held],
        }
    }

    /// A lease holding a memory charge (released when the last holder drops the data).
    pub fn charged(charge: Charge) -> Self {
        Self {
            charge: Some(charge),
            shared: Vec::new(),
        }
    }

    /// Adds a share to this lease.
    pub fn hold(&mut self, held: Arc<dyn Held>) {
        self.shared.push(held);
    }

    /// Takes over every share of `other` (two pieces of data were merged into one).
    pub fn absorb(&mut self, mut other: Lease) {
        if let Some(theirs) = other.charge.take() {
            match &mut self.charge {
                None => self.charge = Some(theirs),
                Some(mine) => {
                    if let Err(theirs) = mine.merge(theirs) {
                        self.shared.push(Arc::new(theirs));
                    }
                }
            }
        }
        if self.shared.is_empty() {
            self.shared = std::mem::take(&mut other.shared);
        } else {
            self.shared.append(&mut other.shared);
        }
    }

    /// A second holder of the same shares, for fan-out: an inline charge becomes a shared one
    /// first, so it is released once, by the last holder.
    pub fn share(&mut self) -> Lease {
        if let Some(c) = self.charge.take() {
            self.shared.push(Arc::new(c));
        }
        Lease {
            charge: None,
            shared: self.shared.clone(),
        }
    }

    /// Whether the lease holds anything.
    pub fn is_empty(&self) -> bool {
        self.charge.is_none() && self.shared.is_empty()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Lease({} shares, charge {:?})",
            self.shared.len(),
            self.charge.as_ref().map(Charge::bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);
    impl Held for Counted {}
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_share_is_released_when_the_last_clone_and_merge_is_gone() {
        let released = Arc::new(AtomicUsize::new(0));
        let mut a = Lease::of(Arc::new(Counted(released.clone())));
        let mut b = Lease::of(Arc::new(Counted(released.clone())));
        let fan_out = a.share();
        b.absorb(a);
        drop(b);
        assert_eq!(released.load(Ordering::SeqCst), 1, "b's own share only");
        drop(fan_out);
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn inline_charges_merge_and_are_released_once_after_fan_out() {
        let budget = crate::MemoryBudget::unlimited();
        let mut a = Lease::charged(budget.admit(100).unwrap());
        a.absorb(Lease::charged(budget.admit(50).unwrap()));
        assert_eq!(budget.used(), 150);
        let copy = a.share();
        drop(a);
        assert_eq!(budget.used(), 150, "still held by the fanned-out copy");
        drop(copy);
        assert_eq!(budget.used(), 0);
    }
}
