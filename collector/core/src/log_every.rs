//! A limiter for log lines about recurring conditions, so a flood of bad requests or a long
//! outage says what happens without drowning the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Logs at most one line per `every` for a recurring condition, saying how many were not logged.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last line, plus one (0 = never logged).
    last: AtomicU64,
    skipped: AtomicU64,
}

impl LogEvery {
    /// A limiter that lets one line through per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            start: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be logged now.
    pub fn check(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every
            || self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}
