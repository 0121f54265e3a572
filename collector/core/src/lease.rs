//! What travels with data from the receiver that took it to the last exporter done with it.
//!
//! A [`Lease`] holds shares of whatever must be released once nobody holds the data any more: the
//! bytes it was charged against the memory budget ([`crate::memory::Charge`]), and whatever a
//! later feature attaches (an end-to-end acknowledgement). Fan-out clones the lease (shares are
//! reference counted), batching merges leases, and the exporter worker drops it after the batch
//! was delivered or counted as dropped: the last drop releases each share. A lease with nothing in
//! it costs one empty `Vec` — no allocation for data that asks for nothing.

use std::fmt;
use std::sync::Arc;

/// Something released when the last lease holding it is dropped (its `Drop` does the work).
pub trait Held: Send + Sync + 'static {}

/// Shares of everything that must live exactly as long as some piece of data.
#[derive(Clone, Default)]
pub struct Lease(Vec<Arc<dyn Held>>);

impl Lease {
    /// A lease that holds nothing.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// A lease holding one share.
    pub fn of(held: Arc<dyn Held>) -> Self {
        Self(vec![held])
    }

    /// Adds a share to this lease.
    pub fn hold(&mut self, held: Arc<dyn Held>) {
        self.0.push(held);
    }

    /// Takes over every share of `other` (two pieces of data were merged into one).
    pub fn absorb(&mut self, mut other: Lease) {
        if self.0.is_empty() {
            self.0 = other.0;
        } else {
            self.0.append(&mut other.0);
        }
    }

    /// Whether the lease holds anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lease({} shares)", self.0.len())
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
        let a = Lease::of(Arc::new(Counted(released.clone())));
        let mut b = Lease::of(Arc::new(Counted(released.clone())));
        let fan_out = a.clone();
        b.absorb(a);
        drop(b);
        assert_eq!(released.load(Ordering::SeqCst), 1, "b's own share only");
        drop(fan_out);
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }
}
