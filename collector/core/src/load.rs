//! The load an exporter publishes and samplers read, lock-free.
//!
//! `load` is the max of the queue fill ratio and a latency term (per-item round-trip time over its
//! healthy baseline, scaled so 4× the baseline reads as 1.0). A recent throttle (HTTP 429/503, gRPC
//! RESOURCE_EXHAUSTED/UNAVAILABLE, a backend's "too many parts") is a separate flag, and the drain
//! rate (items/s while exporting) tells samplers how much the backend can take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a throttle response keeps the flag up.
pub const THROTTLE_MEMORY: Duration = Duration::from_secs(5);

/// Per-item latency this many times the baseline counts as load 1.0.
const LATENCY_SCALE: f64 = 4.0;

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

/// One exporter's load, shared between its worker (writer) and samplers (readers).
#[derive(Debug)]
pub struct LoadSignal {
    room: Arc<Semaphore>,
    capacity: u32,
    /// A byte bound (`queue.max_bytes`, a persistent queue's disk), if any: room and capacity.
    bytes: Option<(Arc<Semaphore>, u64)>,
    max_concurrency: usize,
    in_flight: AtomicU64,
    limit: AtomicU64,
    epoch: Instant,
    latency_ewma: AtomicU64,
    latency_baseline: AtomicU64,
    drain_rate: AtomicU64,
    throttled_until_ms: AtomicU64,
}

impl LoadSignal {
    pub(crate) fn new(room: Arc<Semaphore>, capacity: u32, max_concurrency: usize) -> Self {
        Self {
            room,
            capacity,
            bytes: None,
            max_concurrency: max_concurrency.max(1),
            in_flight: AtomicU64::new(0),
            limit: AtomicU64::new(1),
            epoch: Instant::now(),
            latency_ewma: AtomicU64::new(0f64.to_bits()),
            latency_baseline: AtomicU64::new(0f64.to_bits()),
            drain_rate: AtomicU64::new(0f64.to_bits()),
            throttled_until_ms: AtomicU64::new(0),
        }
    }

    /// Adds a byte bound to the fill ratio.
    pub(crate) fn with_bytes(mut self, room: Arc<Semaphore>, capacity: u64) -> Self {
        self.bytes = Some((room, capacity.max(1)));
        self
    }

    /// Items queued or in flight.
    pub fn queue_items(&self) -> u64 {
        u64::from(self.capacity).saturating_sub(self.room.available_permits() as u64)
    }

    /// Queue capacity in items.
    pub fn queue_capacity(&self) -> u64 {
        u64::from(self.capacity)
    }

    /// Queue fill ratio in [0, 1].
    pub fn queue_fill(&self) -> f64 {
        let items = self.queue_items() as f64 / f64::from(self.capacity.max(1));
        let bytes = self.bytes.as_ref().map_or(0.0, |(room, cap)| {
            cap.saturating_sub(room.available_permits() as u64) as f64 / *cap as f64
        });
        items.max(bytes)
    }

    /// The latency term: per-item round-trip time over the healthy baseline, / 4.
    pub fn latency_term(&self) -> f64 {
        let base = load_f64(&self.latency_baseline);
        if base <= 0.0 {
            return 0.0;
        }
        load_f64(&self.latency_ewma) / base / LATENCY_SCALE
    }

    /// Requests in flight over the most the exporter may ever run: 1.0 when every connection
    /// it is allowed is busy (a limit lowered by adaptive concurrency shows in the latency term).
    pub fn in_flight_term(&self) -> f64 {
        self.in_flight.load(Ordering::Relaxed) as f64 / self.max_concurrency as f64
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current adaptive concurrency limit.
    pub fn concurrency_limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_in_flight(&self, n: usize, limit: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
        self.limit.store(limit as u64, Ordering::Relaxed);
    }

    /// The load in [0, ∞): 1.0 means at capacity. The in-flight term counts only exporters that
    /// may run several requests: a one-at-a-time exporter is "in flight" whenever it writes.
    pub fn load(&self) -> f64 {
        let in_flight = if self.max_concurrency > 1 {
            self.in_flight_term()
        } else {
            0.0
        };
        self.queue_fill().max(self.latency_term()).max(in_flight)
    }

    /// Whether the backend pushed back recently.
    pub fn throttled(&self) -> bool {
        self.now_ms() < self.throttled_until_ms.load(Ordering::Relaxed)
    }

    /// Items per second the exporter moves while busy; `None` before the first export.
    pub fn drain_rate(&self) -> Option<f64> {
        let r = load_f64(&self.drain_rate);
        (r > 0.0).then_some(r)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a successful export of `items` that took `elapsed`.
    pub fn record_export(&self, items: u64, elapsed: Duration) {
        if items == 0 {
            return;
        }
        let secs = elapsed.as_secs_f64().max(1e-6);
        // With several requests in flight, the exporter moves about that many times one request's rate.
        let parallel = self.in_flight.load(Ordering::Relaxed).max(1) as f64;
        let rate = items as f64 / secs * parallel;
        let old = load_f64(&self.drain_rate);
        store_f64(
            &self.drain_rate,
            if old > 0.0 {
                0.7 * old + 0.3 * rate
            } else {
                rate
            },
        );
        let per_item = secs / items as f64;
        let ewma = load_f64(&self.latency_ewma);
        let ewma = if ewma > 0.0 {
            0.8 * ewma + 0.2 * per_item
        } else {
            per_item
        };
        store_f64(&self.latency_ewma, ewma);
        // The baseline follows the best recent latency down at once and drifts up slowly, so an
        // old lucky sample does not make every later one look like overload.
        let base = load_f64(&self.latency_baseline);
        let base = if base <= 0.0 || ewma < base {
            ewma
        } else {
            base * 1.01
        };
        store_f64(&self.latency_baseline, base.min(ewma));
    }

    /// Records a throttle response from the backend.
    pub fn record_throttle(&self) {
        let until = self.now_ms() + u64::try_from(THROTTLE_MEMORY.as_millis()).unwrap_or(5000);
        self.throttled_until_ms.store(until, Ordering::Relaxed);
    }
}

/// The loads of the exporters downstream of a processor, by exporter name. The topology keeps it
/// current across reloads; a processor that adapts to its backends reads it whenever it decides.
#[derive(Debug, Clone, Default)]
pub struct DownstreamLoad(Arc<arc_swap::ArcSwap<Loads>>);

/// Exporter loads by exporter name.
pub type Loads = Vec<(String, Arc<LoadSignal>)>;

impl DownstreamLoad {
    /// The exporters downstream now.
    pub fn get(&self) -> Arc<Loads> {
        self.0.load_full()
    }

    /// Replaces the list (topology only).
    pub fn set(&self, loads: Loads) {
        self.0.store(Arc::new(loads));
    }
}
