//! A running pipeline: processors in order (with at most one batch stage), then fan-out to one
//! queue per exporter. Blocking on a full exporter queue is the back-pressure that reaches receivers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sluice_core::{DropReason, Envelope, ExporterQueue, Metrics, PerSignal, Processor, Telemetry};
use sluice_processors::Batcher;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A sync processor with its drop counters.
pub struct Step {
    processor: Arc<dyn Processor>,
    /// `None` when the processor counts what it removes itself (the sampler).
    dropped: Option<PerSignal<Counter>>,
}

impl Step {
    /// Wraps processor `name`; items it removes are counted as `filtered`.
    pub fn new(name: &str, processor: Arc<dyn Processor>, metrics: &Metrics) -> Self {
        let dropped = (!processor.counts_own_drops())
            .then(|| PerSignal::new(|s| metrics.dropped(name, s, DropReason::Filtered)));
        Self { processor, dropped }
    }
}

/// Everything a pipeline task owns.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// Its input channel; the task ends when every receiver dropped its sender.
    pub rx: mpsc::Receiver<Envelope>,
    /// Processors before the batch stage (or all of them when there is none).
    pub before: Vec<Step>,
    /// The batch stage.
    pub batcher: Option<Batcher>,
    /// Processors after the batch stage.
    pub after: Vec<Step>,
    /// Exporter queues (fan-out).
    pub exporters: Vec<ExporterQueue>,
    /// `sluice_pipeline_queue_items` per signal.
    pub queued: PerSignal<Gauge>,
}

impl Pipeline {
    /// Runs until the input closes, then flushes the batch stage and hands everything to exporters.
    pub async fn run(mut self) {
        loop {
            let deadline = self.batcher.as_ref().and_then(Batcher::next_deadline);
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(env) => self.accept(env).await,
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let due = self.batcher.as_mut().map(|b| b.flush_due(Instant::now())).unwrap_or_default();
                    for (data, items) in due {
                        self.after_batch(data, items).await;
                    }
                }
            }
        }
        let rest = self
            .batcher
            .as_mut()
            .map(Batcher::flush_all)
            .unwrap_or_default();
        for (data, items) in rest {
            self.after_batch(data, items).await;
        }
        tracing::debug!(pipeline = %self.name, "pipeline drained");
    }

    async fn accept(&mut self, env: Envelope) {
        let Some((data, items)) = run_steps(&self.before, &self.queued, env.data, env.items) else {
            return;
        };
        let ready = match self.batcher.as_mut() {
            Some(b) => b.push(data, items, Instant::now()),
            None => vec![(data, items)],
        };
        for (data, items) in ready {
            self.after_batch(data, items).await;
        }
    }

    async fn after_batch(&mut self, data: Telemetry, items: u64) {
        let Some((data, items)) = run_steps(&self.after, &self.queued, data, items) else {
            return;
        };
        let signal = data.signal();
        if let Some((last, rest)) = self.exporters.split_last() {
            for q in rest {
                q.enqueue(data.clone(), items).await;
            }
            last.enqueue(data, items).await;
        }
        self.queued.get(signal).dec_by(items as i64);
    }
}

fn run_steps(
    steps: &[Step],
    queued: &PerSignal<Gauge>,
    mut data: Telemetry,
    items: u64,
) -> Option<(Telemetry, u64)> {
    let signal = data.signal();
    let mut items = items;
    for step in steps {
        let out = step.processor.process(data);
        let left = out.as_ref().map_or(0, Telemetry::item_count);
        if left < items {
            if let Some(d) = &step.dropped {
                d.get(signal).inc_by(items - left);
            }
            queued.get(signal).dec_by((items - left) as i64);
        }
        items = left;
        data = match out {
            Some(d) if items > 0 => d,
            _ => return None,
        };
    }
    Some((data, items))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
