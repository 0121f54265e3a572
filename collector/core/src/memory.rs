//! The memory budget: every request is charged, in bytes, from the moment its body is read until
//! the last exporter is done with it, so memory is bounded by what the data really takes and not
//! by how many requests or items are queued.
//!
//! Two levels: new data is admitted only below the **soft** level (above it receivers answer with a
//! retryable refusal); data already admitted may grow (decompressed, decoded) up to the **hard**
//! level and never past it. A [`Charge`] releases its bytes when dropped; it travels inside the
//! data's [`crate::Lease`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a charge was refused: retryable, the budget frees up as exporters deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory budget exhausted: {wanted} more bytes would pass the {level} level of {limit} bytes ({used} in use); retry later")]
pub struct OverBudget {
    /// Bytes asked for.
    pub wanted: usize,
    /// Bytes charged when asked.
    pub used: usize,
    /// The level that would be crossed.
    pub limit: usize,
    /// `"soft"` (admission) or `"hard"` (growth).
    pub level: &'static str,
}

/// Process-wide byte accounting of the data in flight.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    peak: AtomicUsize,
    soft: usize,
    hard: usize,
}

impl MemoryBudget {
    /// A budget that admits new data below `soft` bytes and never lets charges pass `hard`.
    pub fn new(soft: usize, hard: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            soft: soft.min(hard),
            hard,
        })
    }

    /// A budget that only counts (tests, tools).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX, usize::MAX)
    }

    /// Charges `bytes` for new data, refusing when that would pass the soft level.
    pub fn admit(self: &Arc<Self>, bytes: usize) -> Result<Charge, OverBudget> {
        self.take(bytes, self.soft, "soft")?;
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Highest charge seen since start.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The admission level.
    pub fn soft(&self) -> usize {
        self.soft
    }

    /// The level charges never pass.
    pub fn hard(&self) -> usize {
        self.hard
    }

    /// Whether new data would be refused now.
    pub fn over_soft(&self) -> bool {
        self.used() >= self.soft
    }

    fn take(&self, bytes: usize, limit: usize, level: &'static str) -> Result<(), OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if after > limit {
                return Err(OverBudget {
                    wanted: bytes,
                    used,
                    limit,
                    level,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(after, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes charged to the budget for one piece of data; released on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// Charges `more` bytes to data already admitted (decompressed or decoded into a larger form),
    /// refusing when that would pass the hard level.
    pub fn grow(&mut self, more: usize) -> Result<(), OverBudget> {
        self.budget.take(more, self.budget.hard, "hard")?;
        self.bytes += more;
        Ok(())
    }

    /// Sets the charge to `bytes` (the data's size is now known): shrinking always succeeds,
    /// growing is checked against the hard level.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes >= self.bytes {
            self.grow(bytes - self.bytes)
        } else {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
            Ok(())
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl crate::lease::Held for Charge {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_soft_growth_at_hard_and_drops_release() {
        let b = MemoryBudget::new(100, 150);
        let mut a = b.admit(60).unwrap();
        assert!(b.admit(50).is_err(), "60 + 50 passes soft 100");
        let c = b.admit(40).unwrap();
        assert_eq!(b.used(), 100);
        assert!(b.admit(1).is_err());
        a.grow(50).unwrap();
        assert_eq!(b.used(), 150);
        assert_eq!(a.grow(1).unwrap_err().level, "hard");
        a.resize(10).unwrap();
        assert_eq!(b.used(), 50);
        drop(c);
        drop(a);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 150);
    }
}
