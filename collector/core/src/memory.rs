//! The memory budget: every request is charged, in bytes, from the moment its body is read until
//! the last exporter is done with it, so memory is bounded by what the data really takes and not
//! by how many requests or items are queued.
//!
//! Two levels: new data is admitted only below the **soft** level (above it receivers answer with a
//! retryable refusal); data already admitted may grow (decompressed, decoded) up to the **hard**
//! level and never past it. A [`Charge`] releases its bytes when dropped; it travels inside the
//! data's [`crate::Lease`].

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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

/// Process-wide byte accounting of the data in flight. The levels may change on a reload.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes charged now; it is the `sluice_memory_charged_bytes` gauge itself.
    used: Gauge<i64, AtomicI64>,
    peak: AtomicUsize,
    soft: AtomicUsize,
    hard: AtomicUsize,
    soft_gauge: Gauge<i64, AtomicI64>,
    hard_gauge: Gauge<i64, AtomicI64>,
    /// The process's resident memory, sampled by [`MemoryBudget::watch_resident`].
    resident: Gauge<i64, AtomicI64>,
    /// Above this resident size new data is refused too: what charges cannot see (buffers' spare
    /// capacity, allocator slack, connections) is caught here.
    resident_limit: AtomicUsize,
}

impl MemoryBudget {
    /// A budget that admits new data below `soft` bytes and never lets charges pass `hard`,
    /// published in `metrics`.
    pub fn new(soft: usize, hard: usize, metrics: &crate::Metrics) -> Arc<Self> {
        let b = Arc::new(Self {
            used: metrics.memory("charged"),
            peak: AtomicUsize::new(0),
            soft: AtomicUsize::new(0),
            hard: AtomicUsize::new(0),
            soft_gauge: metrics.memory("soft_limit"),
            hard_gauge: metrics.memory("hard_limit"),
            resident: metrics.memory("resident"),
            resident_limit: AtomicUsize::new(usize::MAX),
        });
        b.set_levels(soft, hard);
        b
    }

    /// Refuse new data while the process's resident memory is above `bytes` (needs
    /// [`MemoryBudget::watch_resident`] running).
    pub fn set_resident_limit(&self, bytes: usize) {
        self.resident_limit.store(bytes, Ordering::Relaxed);
    }

    /// Samples the process's resident memory every `every` (from `/proc/self/status`; where
    /// there is none, only the charges count). Runs until the budget is dropped.
    pub fn watch_resident(self: &Arc<Self>, every: std::time::Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                let Some(rss) = resident_bytes() else { return };
                b.resident.set(i64::try_from(rss).unwrap_or(i64::MAX));
            }
        });
    }

    /// The last sampled resident size of the process (0 when not sampled).
    pub fn resident(&self) -> usize {
        usize::try_from(self.resident.get()).unwrap_or(0)
    }

    /// A budget that only counts (tests, tools).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX, usize::MAX, &crate::Metrics::new())
    }

    /// Sets the levels (start, reload). Data already charged stays charged.
    pub fn set_levels(&self, soft: usize, hard: usize) {
        self.hard.store(hard, Ordering::Relaxed);
        self.soft.store(soft.min(hard), Ordering::Relaxed);
        self.soft_gauge
            .set(i64::try_from(soft.min(hard)).unwrap_or(i64::MAX));
        self.hard_gauge.set(i64::try_from(hard).unwrap_or(i64::MAX));
    }

    /// Charges `bytes` for new data, refusing when that would pass the soft level or the process
    /// is already above its resident limit.
    pub fn admit(self: &Arc<Self>, bytes: usize) -> Result<Charge, OverBudget> {
        let (resident, limit) = (self.resident(), self.resident_limit.load(Ordering::Relaxed));
        if resident > limit {
            return Err(OverBudget {
                wanted: bytes,
                used: resident,
                limit,
                level: "resident",
            });
        }
        self.take(bytes, self.soft(), "soft")?;
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        usize::try_from(self.used.get()).unwrap_or(0)
    }

    /// Highest charge seen since start.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The admission level.
    pub fn soft(&self) -> usize {
        self.soft.load(Ordering::Relaxed)
    }

    /// The level charges never pass.
    pub fn hard(&self) -> usize {
        self.hard.load(Ordering::Relaxed)
    }

    /// Whether new data would be refused now.
    pub fn over_soft(&self) -> bool {
        self.used() >= self.soft()
    }

    fn take(&self, bytes: usize, limit: usize, level: &'static str) -> Result<(), OverBudget> {
        let cell = self.used.inner();
        let want = i64::try_from(bytes).unwrap_or(i64::MAX);
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut used = cell.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(want);
            if after > limit_i {
                return Err(OverBudget {
                    wanted: bytes,
                    used: usize::try_from(used).unwrap_or(0),
                    limit,
                    level,
                });
            }
            match cell.compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak
                        .fetch_max(usize::try_from(after).unwrap_or(0), Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The levels for a process memory target of `limit` bytes (absent: the default target, see
/// [`default_limit`]): `(soft, hard, resident)`. Data is charged up to 75% of the target; the rest
/// is the process's own (code, connections' buffers, allocator slack). New data stops at 60%
/// charged, or when the process's resident memory passes 85% of the target.
pub fn levels(limit: Option<usize>) -> (usize, usize, usize) {
    match limit.or_else(default_limit) {
        Some(l) => (l / 5 * 3, l / 4 * 3, l / 20 * 17),
        None => (usize::MAX, usize::MAX, usize::MAX),
    }
}

/// The process's resident memory (`VmRSS`), where the system tells it.
pub fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<usize>()
        .ok()?;
    kb.checked_mul(1024)
}

/// The memory target when none is configured: 80% of the cgroup's memory limit (containers),
/// else half the machine's memory.
pub fn default_limit() -> Option<usize> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        // cgroup v1 reports "no limit" as a huge number.
        .filter(|&v| v < 1 << 60);
    let total = read("/proc/meminfo").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let target = match (cgroup, total) {
        (Some(c), _) => c / 5 * 4,
        (None, Some(t)) => t / 2,
        (None, None) => return None,
    };
    usize::try_from(target).ok()
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
        self.budget.take(more, self.budget.hard(), "hard")?;
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

    /// Takes over `other`'s bytes when both are charged to the same budget (batching merges
    /// data); otherwise gives `other` back.
    pub fn merge(&mut self, mut other: Charge) -> Result<(), Charge> {
        if !Arc::ptr_eq(&self.budget, &other.budget) {
            return Err(other);
        }
        self.bytes += std::mem::take(&mut other.bytes);
        Ok(())
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
        let b = MemoryBudget::new(100, 150, &crate::Metrics::new());
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
