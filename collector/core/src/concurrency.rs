//! Adaptive request concurrency (after Vector's ARC): how many exports an exporter runs at once.
//!
//! AIMD on round-trip time: once per window (about one baseline RTT, at least 50 ms) the mean RTT
//! of the window is compared with the healthy baseline; if it rose by more than a quarter, or the
//! backend pushed back, the limit is cut to 90%; if the window used every slot and RTT held,
//! the limit grows by one. So a backend that slows down under more parallel requests is given
//! fewer, and one that keeps up is given more, up to `max`.

use std::time::Duration;
use tokio::time::Instant;

const DECREASE: f64 = 0.9;
const RTT_TOLERANCE: f64 = 1.25;
const EWMA_ALPHA: f64 = 0.4;
const MIN_WINDOW: Duration = Duration::from_millis(50);
const BASELINE_DRIFT: f64 = 1.05;

/// The limiter state; owned by the exporter worker, no locking.
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    limit: usize,
    max: usize,
    past_rtt: Option<f64>,
    window_start: Instant,
    window_rtt_sum: f64,
    window_n: u32,
    window_saturated: bool,
    window_backpressure: bool,
}

impl AdaptiveConcurrency {
    /// Starts at one request in flight, never above `max`.
    pub fn new(max: usize, now: Instant) -> Self {
        Self {
            limit: 1,
            max: max.max(1),
            past_rtt: None,
            window_start: now,
            window_rtt_sum: 0.0,
            window_n: 0,
            window_saturated: false,
            window_backpressure: false,
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Called when a request is dispatched with `in_flight` requests now running.
    pub fn on_dispatch(&mut self, in_flight: usize) {
        if in_flight >= self.limit {
            self.window_saturated = true;
        }
    }

    /// Called when a request finished after `rtt`; `backpressure` when the backend throttled.
    pub fn on_response(&mut self, rtt: Duration, backpressure: bool, now: Instant) {
        self.window_rtt_sum += rtt.as_secs_f64();
        self.window_n += 1;
        self.window_backpressure |= backpressure;
        let window = self
            .past_rtt
            .map_or(MIN_WINDOW, |p| Duration::from_secs_f64(p).max(MIN_WINDOW));
        if now.duration_since(self.window_start) < window {
            return;
        }
        let mean = self.window_rtt_sum / f64::from(self.window_n.max(1));
        let past = *self.past_rtt.get_or_insert(mean);
        let ewma = past * (1.0 - EWMA_ALPHA) + mean * EWMA_ALPHA;
        if self.window_backpressure || mean > past * RTT_TOLERANCE {
            // Slower than the healthy baseline: fewer requests. The baseline learns only from
            // healthy windows (else over-parallelism would teach it that slow is normal), but
            // drifts up a little per cut so a backend that is slower for good is accepted.
            if self.limit > 1 {
                self.limit = ((self.limit as f64 * DECREASE).floor() as usize).max(1);
                self.past_rtt = Some(past * BASELINE_DRIFT);
            } else {
                self.past_rtt = Some(ewma);
            }
        } else {
            if self.window_saturated && self.limit < self.max {
                self.limit += 1;
            }
            self.past_rtt = Some(ewma);
        }
        self.window_start = now;
        self.window_rtt_sum = 0.0;
        self.window_n = 0;
        self.window_saturated = false;
        self.window_backpressure = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        arc: &mut AdaptiveConcurrency,
        now: &mut Instant,
        rtt: impl Fn(usize) -> Duration,
        throttle: bool,
        rounds: usize,
    ) {
        for _ in 0..rounds {
            let n = arc.limit();
            for i in 0..n {
                arc.on_dispatch(i + 1);
            }
            let r = rtt(n);
            *now += r;
            for _ in 0..n {
                arc.on_response(r, throttle, *now);
            }
        }
    }

    #[test]
    fn grows_while_rtt_holds_and_stops_at_max() {
        let mut now = Instant::now();
        let mut arc = AdaptiveConcurrency::new(8, now);
        run(&mut arc, &mut now, |_| Duration::from_millis(60), false, 40);
        assert_eq!(arc.limit(), 8);
    }

    #[test]
    fn backs_off_when_more_parallelism_slows_the_backend() {
        // A backend with 4 workers: beyond 4 requests in flight, RTT grows with the queue.
        let rtt = |n: usize| Duration::from_millis(60 * ((n as u64).div_ceil(4)).max(1));
        let mut now = Instant::now();
        let mut arc = AdaptiveConcurrency::new(32, now);
        run(&mut arc, &mut now, rtt, false, 200);
        assert!((3..=6).contains(&arc.limit()), "limit {}", arc.limit());
    }

    #[test]
    fn a_backend_that_is_slower_for_good_gets_its_parallelism_back() {
        let mut now = Instant::now();
        let mut arc = AdaptiveConcurrency::new(8, now);
        run(&mut arc, &mut now, |_| Duration::from_millis(60), false, 40);
        assert_eq!(arc.limit(), 8);
        // The backend is now 3× slower whatever the parallelism: first a cut, then back to 8.
        run(&mut arc, &mut now, |_| Duration::from_millis(180), false, 3);
        assert!(arc.limit() < 8);
        run(
            &mut arc,
            &mut now,
            |_| Duration::from_millis(180),
            false,
            300,
        );
        assert_eq!(arc.limit(), 8);
    }

    #[test]
    fn throttling_cuts_the_limit() {
        let mut now = Instant::now();
        let mut arc = AdaptiveConcurrency::new(16, now);
        run(&mut arc, &mut now, |_| Duration::from_millis(60), false, 30);
        let before = arc.limit();
        run(&mut arc, &mut now, |_| Duration::from_millis(60), true, 5);
        assert!(arc.limit() < before);
    }
}
