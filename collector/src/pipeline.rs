//! A running pipeline: its stages in order (whatever processors they are), then fan-out to one
//! queue per exporter. Blocking on a full exporter queue is the back-pressure that reaches
//! receivers. The task ends when every sender is gone (a reload swapped the receivers' routes, or
//! shutdown): it flushes every stage into the exporters first, so nothing is lost.

use prometheus_client::metrics::gauge::Gauge;
use sluice_core::stage::Out;
use sluice_core::{Envelope, ExporterQueue, PerSignal, Stage};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Everything a pipeline task owns.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// Its input channel; the task ends when every sender is dropped.
    pub rx: mpsc::Receiver<Envelope>,
    /// Its processors' stages, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// Exporter queues (fan-out).
    pub exporters: Vec<ExporterQueue>,
    /// `sluice_pipeline_queue_items` per signal.
    pub queued: PerSignal<Gauge>,
}

impl Pipeline {
    /// Runs until the input closes, then flushes every stage and hands everything to exporters.
    pub async fn run(mut self) {
        loop {
            let deadline = self.stages.iter().filter_map(|s| s.next_deadline()).min();
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(env) => self.run_from(0, vec![env]).await,
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    for i in 0..self.stages.len() {
                        if self.stages[i].next_deadline().is_some_and(|d| d <= now) {
                            let mut out = Vec::new();
                            self.stages[i].flush(Some(now), &mut out);
                            self.count_created(i, &out);
                            self.run_from(i + 1, out).await;
                        }
                    }
                }
            }
        }
        for i in 0..self.stages.len() {
            let mut out = Vec::new();
            self.stages[i].flush(None, &mut out);
            self.count_created(i, &out);
            self.run_from(i + 1, out).await;
        }
        tracing::debug!(pipeline = %self.name, "pipeline drained");
    }

    /// Passes requests through stages `first..` and then to the exporters.
    async fn run_from(&mut self, first: usize, mut batch: Out) {
        let now = Instant::now();
        for i in first..self.stages.len() {
            if batch.is_empty() {
                return;
            }
            let mut out = Vec::with_capacity(batch.len());
            for env in batch {
                let signal = env.signal();
                let removed = self.stages[i].push(env, now, &mut out);
                if removed > 0 {
                    self.queued.get(signal).dec_by(removed as i64);
                }
            }
            self.count_created(i, &out);
            batch = out;
        }
        for env in batch {
            let (signal, items) = (env.signal(), env.items);
            if let Some((last, rest)) = self.exporters.split_last() {
                for q in rest {
                    q.enqueue(env.share()).await;
                }
                last.enqueue(env).await;
            }
            self.queued.get(signal).dec_by(items as i64);
        }
    }
}

impl Pipeline {
    /// Counts in the items stage `i` created (see [`Stage::emits`]), so the queue gauge that the
    /// exporters' hand-off counts down stays balanced.
    fn count_created(&self, i: usize, out: &Out) {
        let Some(signal) = self.stages.get(i).and_then(|s| s.emits()) else {
            return;
        };
        let created: u64 = out
            .iter()
            .filter(|e| e.signal() == signal)
            .map(|e| e.items)
            .sum();
        if created > 0 {
            self.queued.get(signal).inc_by(created as i64);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
