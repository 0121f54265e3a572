//! A running pipeline: its stages in order (whatever processors they are), then fan-out to one
//! queue per exporter. Blocking on a full exporter queue is the back-pressure that reaches
//! receivers. The task ends when every sender is gone (a reload swapped the receivers' routes, or
//! shutdown): it flushes every stage into the exporters first, so nothing is lost.
//!
//! Fan-out with several exporters hands each batch to all of them at once. A full `block` queue
//! holds the pipeline at most its `queue.block_timeout`; then that exporter is *stalled*: its
//! batch is dropped for it alone (counted `reason="queue_full"`), and later batches are offered
//! to it without waiting until it has room again, so one stuck exporter never starves the others.
//! A pipeline with one exporter waits for it as long as it takes.

use prometheus_client::metrics::gauge::Gauge;
use sluice_core::exporter::{Enqueued, Wait};
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
        let mut stalled = vec![false; self.exporters.len()];
        loop {
            let deadline = self.stages.iter().filter_map(|s| s.next_deadline()).min();
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(env) => self.run_from(0, vec![env], &mut stalled).await,
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    for i in 0..self.stages.len() {
                        if self.stages[i].next_deadline().is_some_and(|d| d <= now) {
                            let mut out = Vec::new();
                            self.stages[i].flush(Some(now), &mut out);
                            self.count_created(i, &out);
                            self.run_from(i + 1, out, &mut stalled).await;
                        }
                    }
                }
            }
        }
        for i in 0..self.stages.len() {
            let mut out = Vec::new();
            self.stages[i].flush(None, &mut out);
            self.count_created(i, &out);
            self.run_from(i + 1, out, &mut stalled).await;
        }
        tracing::debug!(pipeline = %self.name, "pipeline drained");
    }

    /// Passes requests through stages `first..` and then to the exporters.
    async fn run_from(&mut self, first: usize, mut batch: Out, stalled: &mut [bool]) {
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
            fan_out(&self.name, &self.exporters, env, stalled).await;
            self.queued.get(signal).dec_by(items as i64);
        }
    }
}

/// Hands one batch to every exporter (see the module docs for what a full one does).
async fn fan_out(pipeline: &str, exporters: &[ExporterQueue], env: Envelope, stalled: &mut [bool]) {
    match exporters {
        [] => {}
        [only] => {
            only.enqueue(env, Wait::Forever).await;
        }
        many => {
            let now = Instant::now();
            let last = many.len() - 1;
            let mut env = Some(env);
            let offers = many.iter().enumerate().map(|(i, q)| {
                let e = if i == last {
                    env.take()
                } else {
                    env.as_mut().map(Envelope::share)
                };
                let wait = if stalled.get(i).copied().unwrap_or(false) {
                    Wait::No
                } else {
                    Wait::Until(now + q.block_timeout())
                };
                async move {
                    match e {
                        Some(e) => q.enqueue(e, wait).await,
                        None => Enqueued::Queued,
                    }
                }
            });
            let results = futures::future::join_all(offers).await;
            for ((q, result), stuck) in many.iter().zip(results).zip(stalled.iter_mut()) {
                let now_stuck = result == Enqueued::Full && q.blocks();
                if now_stuck && !*stuck {
                    tracing::error!(%pipeline, exporter = q.name(), timeout = ?q.block_timeout(),
                        "exporter queue stayed full; its data is dropped (counted, reason queue_full) until it has room again, so the pipeline's other exporters keep going");
                } else if *stuck && !now_stuck {
                    tracing::info!(%pipeline, exporter = q.name(), "exporter queue has room again");
                }
                *stuck = now_stuck;
            }
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
