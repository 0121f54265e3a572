//! A pipeline is a chain of stages. A stage takes requests and passes requests on, now or later
//! (a batch holds them until a size or a deadline); the pipeline task knows nothing else about it.

use crate::metrics::{DropReason, Metrics, PerSignal};
use crate::pipeline::Envelope;
use crate::telemetry::Telemetry;
use crate::Processor;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use tokio::time::Instant;

/// Requests a stage passes on, with their item counts and leases.
pub type Out = Vec<Envelope>;

/// One step of a pipeline.
pub trait Stage: Send {
    /// Takes one request; pushes what goes on into `out` (keeping its lease with it) and returns
    /// how many items it removed for good (already counted by the stage, by reason).
    fn push(&mut self, env: Envelope, now: Instant, out: &mut Out) -> u64;

    /// When the stage next wants [`Stage::flush`] called with a time, if ever.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Passes on what is due at `now`, or everything when `now` is `None` (the pipeline is
    /// draining).
    fn flush(&mut self, _now: Option<Instant>, _out: &mut Out) {}

    /// The signal of the requests this stage creates rather than passes on (alert log records
    /// derived from metrics), if any: the pipeline counts those items in as new. Such a stage
    /// must not take that signal in.
    fn emits(&self) -> Option<sluice_config::Signal> {
        None
    }
}

/// The stage of a stateless [`Processor`]: items it removes are counted as dropped
/// `{reason="filtered"}` unless it counts them itself.
#[derive(Clone)]
pub struct EachRequest {
    processor: Arc<dyn Processor>,
    dropped: Option<PerSignal<Counter>>,
}

impl EachRequest {
    /// Wraps processor `name`.
    pub fn new(name: &str, processor: Arc<dyn Processor>, metrics: &Metrics) -> Self {
        let dropped = (!processor.counts_own_drops())
            .then(|| PerSignal::new(|s| metrics.dropped(name, s, DropReason::Filtered)));
        Self { processor, dropped }
    }
}

impl Stage for EachRequest {
    fn push(&mut self, env: Envelope, _now: Instant, out: &mut Out) -> u64 {
        let Envelope { data, items, lease } = env;
        let signal = data.signal();
        let result = self.processor.process(data);
        let left = result.as_ref().map_or(0, Telemetry::item_count);
        let removed = items.saturating_sub(left);
        if removed > 0 {
            if let Some(d) = &self.dropped {
                d.get(signal).inc_by(removed);
            }
        }
        if let Some(d) = result {
            if left > 0 {
                out.push(Envelope {
                    data: d,
                    items: left,
                    lease,
                });
            }
        }
        removed
    }
}

/// A [`crate::component::ProcessorInstance`] for a stateless processor shared by every pipeline.
pub struct Stateless(EachRequest);

impl Stateless {
    /// Wraps processor `name`.
    pub fn new(name: &str, processor: Arc<dyn Processor>, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self(EachRequest::new(name, processor, metrics)))
    }
}

impl crate::component::ProcessorInstance for Stateless {
    fn stage(&self) -> Box<dyn Stage> {
        Box::new(self.0.clone())
    }

    fn status(&self) -> Option<serde_json::Value> {
        self.0.processor.status()
    }
}
