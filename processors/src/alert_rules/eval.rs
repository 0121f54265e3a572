//! What a rule reads from one series over its sliding window: a gauge's value, a sum's rate, a
//! histogram's quantile (Prometheus' `histogram_quantile` interpolation over the window's buckets).

use std::collections::VecDeque;

/// One observation of a series, as the rule needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Obs {
    /// A gauge value (or a summary's quantile).
    Value(f64),
    /// A sum's value; `cumulative` sums are differenced, delta sums added up.
    Sum {
        /// The point's value.
        value: f64,
        /// Cumulative (true) or delta temporality.
        cumulative: bool,
    },
    /// Histogram buckets: `counts[i]` observations at or below `bounds[i]` (the last is +Inf).
    Buckets {
        /// Upper bounds of all buckets but the last.
        bounds: Vec<f64>,
        /// Counts per bucket (`bounds.len() + 1`).
        counts: Vec<u64>,
        /// Cumulative (true) or delta temporality.
        cumulative: bool,
    },
}

/// Points held per series at most: a series reporting faster than `window / MAX_SAMPLES` is
/// evaluated over its latest points only, so memory and time per point stay bounded.
pub const MAX_SAMPLES: usize = 256;

/// The observations of one series within its window (plus the one just before it, the
/// baseline cumulative values are differenced against).
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<(u64, Obs)>,
}

impl Window {
    /// Adds the observation at `t` (unix nanos) and forgets what fell out of `window` nanos.
    pub fn push(&mut self, t: u64, obs: Obs, window: u64) {
        // Out-of-order points are placed in time order; a point at a time already held (a
        // replayed request) replaces it.
        let at = self.samples.partition_point(|(ts, _)| *ts <= t);
        match at.checked_sub(1).and_then(|i| self.samples.get_mut(i)) {
            Some(slot) if slot.0 == t => slot.1 = obs,
            _ => self.samples.insert(at, (t, obs)),
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        let newest = self.samples.back().map_or(t, |(ts, _)| *ts);
        let start = newest.saturating_sub(window);
        // Keep one sample at or before the window's start as the baseline.
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|(ts, _)| *ts <= start) {
            self.samples.pop_front();
        }
    }

    /// The value the rule compares: `quantile` for buckets; `None` while there is not enough data.
    pub fn value(&self, quantile: f64, window: u64) -> Option<f64> {
        let (t_last, last) = self.samples.back()?;
        let start = t_last.saturating_sub(window);
        match last {
            Obs::Value(v) => Some(*v),
            Obs::Sum {
                cumulative: true, ..
            } => {
                let (t0, _) = self.samples.front()?;
                let secs = (t_last - t0) as f64 / 1e9;
                if secs <= 0.0 {
                    return None;
                }
                let mut increase = 0.0;
                let mut prev: Option<f64> = None;
                for (_, o) in &self.samples {
                    if let Obs::Sum { value, .. } = o {
                        if let Some(p) = prev {
                            // A drop is a counter reset: the new value is all increase.
                            increase += if *value >= p { value - p } else { *value };
                        }
                        prev = Some(*value);
                    }
                }
                Some(increase / secs)
            }
            Obs::Sum {
                cumulative: false, ..
            } => {
                let total: f64 = self
                    .samples
                    .iter()
                    .filter(|(t, _)| *t > start)
                    .filter_map(|(_, o)| match o {
                        Obs::Sum { value, .. } => Some(*value),
                        _ => None,
                    })
                    .sum();
                Some(total / (window as f64 / 1e9))
            }
            Obs::Buckets {
                bounds,
                counts,
                cumulative,
            } => {
                let mut acc = counts.clone();
                if *cumulative {
                    // The increase since the baseline, when the bucket layout is the same and
                    // no count went down (a restart); otherwise the latest counts alone.
                    if let Some((_, Obs::Buckets { bounds: b0, counts: c0, .. })) =
                        self.samples.front().filter(|_| self.samples.len() > 1)
                    {
                        if b0 == bounds
                            && c0.len() == acc.len()
                            && c0.iter().zip(&acc).all(|(a, b)| a <= b)
                        {
                            for (a, b) in acc.iter_mut().zip(c0) {
                                *a -= b;
                            }
                        }
                    }
                } else {
                    // Delta: add up the window's points with the same layout.
                    for (t, o) in self.samples.iter().rev().skip(1) {
                        if *t <= start {
                            break;
                        }
                        if let Obs::Buckets { bounds: b, counts: c, .. } = o {
                            if b == bounds && c.len() == acc.len() {
                                for (a, x) in acc.iter_mut().zip(c) {
                                    *a += x;
                                }
                            }
                        }
                    }
                }
                bucket_quantile(quantile, bounds, &acc)
            }
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Prometheus' `histogram_quantile` over per-bucket counts: linear interpolation within the bucket
/// holding the rank; the lowest bucket starts at 0 (when its bound is positive); a rank in the
/// +Inf bucket yields the highest finite bound.
pub fn bucket_quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, c) in counts.iter().enumerate() {
        let cum = below + c;
        if cum as f64 >= rank && *c > 0 {
            let Some(upper) = bounds.get(i).copied() else {
                return bounds.last().copied();
            };
            let lower = match i.checked_sub(1).and_then(|j| bounds.get(j)) {
                Some(l) => *l,
                None if upper > 0.0 => 0.0,
                None => return Some(upper),
            };
            let into = (rank - below as f64) / *c as f64;
            return Some(lower + (upper - lower) * into);
        }
        below = cum;
    }
    bounds.last().copied()
}

/// An exponential histogram's positive and zero buckets as explicit bounds and counts (the
/// negative ones do not occur in the latencies and sizes rules are written for).
pub fn exponential_buckets(
    scale: i32,
    zero_count: u64,
    offset: i32,
    counts: &[u64],
) -> (Vec<f64>, Vec<u64>) {
    let base = 2f64.powf(2f64.powi(-scale));
    let mut bounds = Vec::with_capacity(counts.len() + 1);
    let mut out = Vec::with_capacity(counts.len() + 2);
    bounds.push(0.0);
    out.push(zero_count);
    for (i, c) in counts.iter().enumerate() {
        let idx = f64::from(offset) + i as f64 + 1.0;
        bounds.push(base.powf(idx));
        out.push(*c);
    }
    // Nothing beyond the last bucket.
    out.push(0);
    (bounds, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 100 observations: 50 in (0, 100], 40 in (100, 1000], 10 in (1000, 5000].
        let bounds = [100.0, 1000.0, 5000.0];
        let counts = [50, 40, 10, 0];
        assert_eq!(bucket_quantile(0.5, &bounds, &counts), Some(100.0));
        let p99 = bucket_quantile(0.99, &bounds, &counts).unwrap();
        assert!((p99 - 4600.0).abs() < 1e-9, "{p99}");
        assert_eq!(bucket_quantile(0.99, &bounds, &[0, 0, 0, 0]), None);
        // All in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(0.5, &bounds, &[0, 0, 0, 5]), Some(5000.0));
    }

    #[test]
    fn cumulative_histograms_are_differenced_over_the_window() {
        let mut w = Window::default();
        let s = 1_000_000_000u64;
        let b = |c: Vec<u64>| Obs::Buckets {
            bounds: vec![1.0, 10.0],
            counts: c,
            cumulative: true,
        };
        w.push(0, b(vec![100, 0, 0]), 5 * s);
        w.push(s, b(vec![200, 0, 0]), 5 * s);
        assert!(w.value(0.99, 5 * s).unwrap() <= 1.0);
        // Slow observations only from now on: the window still holds the fast ones.
        w.push(2 * s, b(vec![200, 100, 0]), 5 * s);
        assert!(w.value(0.99, 5 * s).unwrap() > 1.0);
        // At 7s the baseline is the sample at 2s: only the 100 slow ones are in the window.
        w.push(7 * s, b(vec![200, 200, 0]), 5 * s);
        assert!(w.value(0.5, 5 * s).unwrap() > 1.0);
    }

    #[test]
    fn rates_of_cumulative_and_delta_sums() {
        let s = 1_000_000_000u64;
        let mut w = Window::default();
        for (i, v) in [0.0, 10.0, 20.0, 5.0].into_iter().enumerate() {
            w.push(i as u64 * s, Obs::Sum { value: v, cumulative: true }, 60 * s);
        }
        // 10 + 10 + 5 (reset) over 3 s.
        assert!((w.value(0.0, 60 * s).unwrap() - 25.0 / 3.0).abs() < 1e-9);
        let mut d = Window::default();
        d.push(s, Obs::Sum { value: 30.0, cumulative: false }, 10 * s);
        d.push(2 * s, Obs::Sum { value: 20.0, cumulative: false }, 10 * s);
        assert!((d.value(0.0, 10 * s).unwrap() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn exponential_buckets_bounds() {
        let (b, c) = exponential_buckets(0, 1, 0, &[2, 3]);
        assert_eq!(b, vec![0.0, 2.0, 4.0]);
        assert_eq!(c, vec![1, 2, 3, 0]);
    }
}
