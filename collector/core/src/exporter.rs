//! The exporter contract and the queue + retry worker every exporter runs behind.

use crate::concurrency::AdaptiveConcurrency;
use crate::lease::Lease;
use crate::load::LoadSignal;
use crate::metrics::{DropReason, FloatGauge, Metrics, PerSignal};
use crate::pipeline::Envelope;
use crate::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sluice_config::{DeliveryConfig, RetryConfig, Signal, WhenFull};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// A boxed future, so exporters can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an export attempt failed; decides between retrying and giving up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// Whether trying again may succeed (timeouts, 429/503, connection refused).
    pub retryable: bool,
    /// The backend's own words.
    pub message: String,
    /// How long the backend asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// The backend said it is overloaded (429/503, RESOURCE_EXHAUSTED, "too many parts"):
    /// samplers upstream shed load.
    pub throttled: bool,
}

impl ExportError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
            retry_after: None,
            throttled: false,
        }
    }

    /// The backend is overloaded: retry later, and tell samplers.
    pub fn throttled(message: impl Into<String>) -> Self {
        Self {
            throttled: true,
            ..Self::retryable(message)
        }
    }

    /// A failure that will not go away by retrying (bad data, schema mismatch).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            retry_after: None,
            throttled: false,
        }
    }
}

/// What a successful export delivered: everything, or all but some items the backend refused for
/// good (a next hop's partial success, a record too large for Kafka). Those are counted as failed
/// and dropped, not sent, so the books still add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Items of the batch that were not delivered and never will be.
    pub rejected: u64,
}

impl Delivered {
    /// The whole batch was delivered.
    pub const ALL: Self = Self { rejected: 0 };
}

/// A backend writer. One batch at a time per exporter; the worker handles queueing and retry.
pub trait Exporter: Send + Sync + 'static {
    /// Writes one batch.
    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>>;

    /// False for exporters that take batches still in OTLP protobuf ([`Telemetry::Encoded`]);
    /// the others get them decoded once, before the first attempt.
    fn needs_decoded(&self) -> bool {
        true
    }

    /// Whether (and how) queued batches are merged before export (ClickHouse wants big inserts).
    fn coalesce(&self) -> Option<Coalesce> {
        None
    }

    /// Flushes and closes; called once after the queue drained.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }
}

struct Queued {
    data: Telemetry,
    items: u64,
    permits: u32,
    /// Dropped (released) once the batch was delivered or counted as dropped.
    lease: Lease,
}

/// The pipelines' handle to an exporter's queue.
#[derive(Clone)]
pub struct ExporterQueue {
    name: Arc<str>,
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    max_items: u32,
    when_full: WhenFull,
    queued: PerSignal<Gauge>,
    dropped_full: PerSignal<Counter>,
    load: Arc<LoadSignal>,
    load_gauge: FloatGauge,
}

impl ExporterQueue {
    /// Puts a batch in the queue: waits for room (`block`) or drops and counts it (`drop`).
    /// Returns false when the data did not go in.
    pub async fn enqueue(&self, env: Envelope) -> bool {
        let Envelope { data, items, lease } = env;
        let signal = data.signal();
        // A batch larger than the whole queue takes the whole queue rather than waiting forever.
        let want = u32::try_from(items)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_items);
        let permit = match self.when_full {
            WhenFull::Block => self.room.acquire_many(want).await.ok(),
            WhenFull::Drop => self.room.try_acquire_many(want).ok(),
        };
        let Some(permit) = permit else {
            self.dropped_full.get(signal).inc_by(items);
            tracing::warn!(exporter = %self.name, %signal, items, "exporter queue full; dropped");
            return false;
        };
        permit.forget();
        self.queued.get(signal).inc_by(items as i64);
        self.load_gauge.set(self.load.load());
        if self
            .tx
            .send(Queued {
                data,
                items,
                permits: want,
                lease,
            })
            .is_err()
        {
            self.queued.get(signal).dec_by(items as i64);
            self.room.add_permits(want as usize);
            return false;
        }
        true
    }

    /// The exporter's published load, for samplers upstream.
    pub fn load_signal(&self) -> Arc<LoadSignal> {
        self.load.clone()
    }
}

/// Starts the worker that drains an exporter's queue; it ends (after `shutdown`) once every
/// [`ExporterQueue`] clone is dropped and the queue is empty.
/// With `after`, the worker starts exporting only once that task ended (a reloaded exporter
/// waits for its predecessor to drain, so two writers never share a backend's files or order).
pub fn spawn_exporter(
    name: &str,
    exporter: Arc<dyn Exporter>,
    delivery: &DeliveryConfig,
    after: Option<JoinHandle<()>>,
    metrics: &Metrics,
) -> (ExporterQueue, JoinHandle<()>) {
    let (queue, retry, max_concurrency) =
        (&delivery.queue, &delivery.retry, delivery.max_concurrency);
    let (tx, rx) = mpsc::unbounded_channel::<Queued>();
    let mut rx = match exporter.coalesce() {
        Some(c) => {
            let (ctx, crx) = mpsc::unbounded_channel::<Queued>();
            tokio::spawn(coalesce_queue(rx, ctx, c));
            crx
        }
        None => rx,
    };
    let max_items = u32::try_from(queue.max_items)
        .unwrap_or(u32::MAX)
        .min(Semaphore::MAX_PERMITS as u32);
    let room = Arc::new(Semaphore::new(max_items as usize));
    let queued = PerSignal::new(|s| metrics.exporter_queue(name, s));
    let load_signal = Arc::new(LoadSignal::new(room.clone(), max_items, max_concurrency));
    let load = metrics.exporter_load(name);
    let handle = ExporterQueue {
        name: name.into(),
        tx,
        room: room.clone(),
        max_items,
        when_full: queue.when_full,
        queued: queued.clone(),
        dropped_full: PerSignal::new(|s| metrics.dropped(name, s, DropReason::QueueFull)),
        load: load_signal.clone(),
        load_gauge: load.clone(),
    };
    let sent = PerSignal::new(|s| metrics.exporter_sent(name, s));
    let failed = PerSignal::new(|s| metrics.exporter_failed(name, s));
    let dropped = PerSignal::new(|s| metrics.dropped(name, s, DropReason::ExportFailed));
    let limit_gauge = metrics.exporter_concurrency(name);
    let retry = Arc::new(retry.clone());
    let name: Arc<str> = name.into();
    let task = tokio::spawn(async move {
        if let Some(prev) = after {
            let _ = prev.await;
        }
        let mut arc = AdaptiveConcurrency::new(max_concurrency, tokio::time::Instant::now());
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        // What each running export carries, so even a panicking one is accounted for.
        let mut carried: HashMap<tokio::task::Id, (Signal, u64, u32)> = HashMap::new();
        let mut open = true;
        while open || !in_flight.is_empty() {
            limit_gauge.set(arc.limit() as i64);
            tokio::select! {
                biased;
                Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let done = match joined {
                        Ok((id, done)) => {
                            carried.remove(&id);
                            done
                        }
                        Err(e) => {
                            let Some((signal, items, permits)) = carried.remove(&e.id()) else { continue };
                            tracing::error!(exporter = %name, %signal, items, error = %e, "export task panicked; batch dropped");
                            failed.get(signal).inc_by(items);
                            dropped.get(signal).inc_by(items);
                            queued.get(signal).dec_by(items as i64);
                            room.add_permits(permits as usize);
                            continue;
                        }
                    };
                    arc.on_response(done.rtt, done.throttled, tokio::time::Instant::now());
                    let signal = done.signal;
                    match done.result {
                        Ok(Delivered { rejected }) => {
                            let rejected = rejected.min(done.items);
                            sent.get(signal).inc_by(done.items - rejected);
                            if rejected > 0 {
                                failed.get(signal).inc_by(rejected);
                                dropped.get(signal).inc_by(rejected);
                                tracing::error!(exporter = %name, %signal, items = rejected, "the backend refused part of a batch for good; those items are dropped");
                            }
                        }
                        Err(e) => {
                            failed.get(signal).inc_by(done.items);
                            dropped.get(signal).inc_by(done.items);
                            tracing::error!(exporter = %name, %signal, items = done.items, error = %e.message, "export failed; batch dropped");
                        }
                    }
                    queued.get(signal).dec_by(done.items as i64);
                    room.add_permits(done.permits as usize);
                    load_signal.set_in_flight(in_flight.len(), arc.limit());
                    load.set(load_signal.load());
                }
                msg = rx.recv(), if open && in_flight.len() < arc.limit() => match msg {
                    Some(q) => {
                        let (exporter, retry, task_load, name) =
                            (exporter.clone(), retry.clone(), load_signal.clone(), name.clone());
                        let meta = (q.data.signal(), q.items, q.permits);
                        let handle = in_flight.spawn(async move {
                            let signal = q.data.signal();
                            // Held until this task ends: delivered, dropped, or panicked.
                            let _lease = q.lease;
                            let mut data = q.data;
                            let decoded = if exporter.needs_decoded() {
                                data.decode_in_place().map_err(|e| {
                                    ExportError::permanent(format!("cannot decode batch: {e}"))
                                })
                            } else {
                                Ok(())
                            };
                            let (result, rtt, throttled) = match decoded {
                                Ok(()) => export_with_retry(&name, exporter.as_ref(), &data, q.items, &retry, &task_load).await,
                                Err(e) => (Err(e), Duration::ZERO, false),
                            };
                            Done { signal, items: q.items, permits: q.permits, result, rtt, throttled }
                        });
                        carried.insert(handle.id(), meta);
                        arc.on_dispatch(in_flight.len());
                        load_signal.set_in_flight(in_flight.len(), arc.limit());
                        load.set(load_signal.load());
                    }
                    None => open = false,
                },
            }
        }
        load.set(0.0);
        if let Err(e) = exporter.shutdown().await {
            tracing::error!(exporter = %name, error = %e.message, "exporter shutdown failed");
        }
    });
    (handle, task)
}

/// Merge queued batches of one signal into larger exports (ClickHouse wants big inserts).
#[derive(Debug, Clone, Copy)]
pub struct Coalesce {
    /// Export as soon as this many items are merged.
    pub min_items: u64,
    /// Export what has been merged once the oldest part waited this long.
    pub max_delay: Duration,
}

/// Sits between an exporter's queue and its worker, merging batches per signal. Items stay counted
/// as queued (their permits travel with them), and everything is flushed when the queue closes.
async fn coalesce_queue(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    tx: mpsc::UnboundedSender<Queued>,
    c: Coalesce,
) {
    let mut pending: [Option<(Queued, tokio::time::Instant)>; 4] = [None, None, None, None];
    loop {
        let deadline = pending
            .iter()
            .flatten()
            .map(|(_, t)| *t + c.max_delay)
            .min();
        tokio::select! {
            msg = rx.recv() => {
                let Some(q) = msg else { break };
                let slot = &mut pending[q.data.signal().index()];
                match slot {
                    None => *slot = Some((q, tokio::time::Instant::now())),
                    Some((acc, _)) => match acc.data.try_merge(q.data) {
                        Ok(()) => {
                            acc.items += q.items;
                            acc.permits += q.permits;
                            acc.lease.absorb(q.lease);
                        }
                        // Profiles cannot be merged: they go on as they are.
                        Err(data) => {
                            let _ = tx.send(Queued { data, items: q.items, permits: q.permits, lease: q.lease });
                        }
                    },
                }
                if slot.as_ref().is_some_and(|(acc, _)| acc.items >= c.min_items || acc.data.signal() == Signal::Profiles) {
                    if let Some((acc, _)) = slot.take() {
                        let _ = tx.send(acc);
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                for slot in &mut pending {
                    if slot.as_ref().is_some_and(|(_, t)| *t + c.max_delay <= now) {
                        if let Some((acc, _)) = slot.take() {
                            let _ = tx.send(acc);
                        }
                    }
                }
            }
        }
    }
    for (acc, _) in pending.into_iter().flatten() {
        let _ = tx.send(acc);
    }
}

/// What an export task reports back to the worker.
struct Done {
    signal: Signal,
    items: u64,
    permits: u32,
    result: Result<Delivered, ExportError>,
    rtt: Duration,
    throttled: bool,
}

/// Exports with retries; returns the outcome, the last attempt's round-trip time and whether the
/// backend pushed back at any attempt.
async fn export_with_retry(
    name: &str,
    exporter: &dyn Exporter,
    data: &Telemetry,
    items: u64,
    retry: &RetryConfig,
    load: &LoadSignal,
) -> (Result<Delivered, ExportError>, Duration, bool) {
    let start = tokio::time::Instant::now();
    let mut wait = retry.initial_interval.0;
    let mut attempt = 0u32;
    let mut throttled = false;
    loop {
        attempt += 1;
        let began = tokio::time::Instant::now();
        let result = exporter.export(data).await;
        let rtt = began.elapsed();
        let err = match result {
            Ok(d) => {
                load.record_export(items, rtt);
                return (Ok(d), rtt, throttled);
            }
            Err(e) => e,
        };
        if err.throttled {
            throttled = true;
            load.record_throttle();
        }
        if !err.retryable {
            return (Err(err), rtt, throttled);
        }
        let elapsed = start.elapsed();
        if !retry.max_elapsed.0.is_zero() && elapsed >= retry.max_elapsed.0 {
            let err = ExportError::permanent(format!(
                "gave up after {attempt} attempts in {elapsed:?}: {}",
                err.message
            ));
            return (Err(err), rtt, throttled);
        }
        let pause = err
            .retry_after
            .unwrap_or(wait)
            .min(retry.max_interval.0.max(wait));
        tracing::warn!(exporter = %name, attempt, error = %err.message, retry_in = ?pause, "export failed; will retry");
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(retry.max_interval.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(n: usize) -> Queued {
        let data = Telemetry::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        Queued {
            data,
            items: n as u64,
            permits: n as u32,
            lease: Lease::none(),
        }
    }

    struct Panics;
    impl Exporter for Panics {
        fn export<'a>(
            &'a self,
            _batch: &'a Telemetry,
        ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
            Box::pin(async { panic!("exporter bug") })
        }
    }

    #[tokio::test]
    async fn a_panicking_export_is_counted_as_dropped_and_frees_its_room() {
        let metrics = Metrics::new();
        let delivery = DeliveryConfig {
            queue: sluice_config::QueueConfig {
                max_items: 100,
                when_full: WhenFull::Block,
            },
            retry: RetryConfig::default(),
            max_concurrency: 2,
        };
        let (q, task) = spawn_exporter("p", Arc::new(Panics), &delivery, None, &metrics);
        let load = q.load_signal();
        assert!(q.enqueue(Envelope::new(spans(60).data, 60)).await);
        // 60 + 80 > 100: this only fits once the panicked export has given its room back.
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            q.enqueue(Envelope::new(spans(80).data, 80)),
        )
        .await;
        assert_eq!(second, Ok(true), "room freed by the panicked export");
        drop(q);
        task.await.unwrap();
        assert_eq!(metrics.exporter_failed("p", Signal::Traces).get(), 140);
        assert_eq!(
            metrics
                .dropped("p", Signal::Traces, DropReason::ExportFailed)
                .get(),
            140
        );
        assert_eq!(metrics.exporter_queue("p", Signal::Traces).get(), 0);
        assert_eq!(load.queue_items(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn coalescing_merges_up_to_min_items_then_flushes_the_rest_after_the_delay() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (otx, mut orx) = mpsc::unbounded_channel();
        let c = Coalesce {
            min_items: 1000,
            max_delay: Duration::from_secs(1),
        };
        let task = tokio::spawn(coalesce_queue(rx, otx, c));
        for _ in 0..5 {
            tx.send(spans(300)).unwrap();
        }
        let first = orx.recv().await.unwrap();
        assert_eq!(
            (first.items, first.permits, first.data.item_count()),
            (1200, 1200, 1200)
        );
        let start = tokio::time::Instant::now();
        let rest = orx.recv().await.unwrap();
        assert_eq!(rest.items, 300);
        assert!(start.elapsed() >= Duration::from_millis(990));
        tx.send(spans(10)).unwrap();
        drop(tx);
        assert_eq!(
            orx.recv().await.unwrap().items,
            10,
            "flushed when the queue closes"
        );
        task.await.unwrap();
        assert!(orx.recv().await.is_none());
    }
}
