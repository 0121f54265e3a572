//! The exporter contract and the delivery layer every exporter runs behind: a bounded queue (in
//! memory, or persistent on disk), the retry worker, and [`Books`], the one place where the
//! exporter's queued / sent / failed / dropped counts and its room change.

use crate::concurrency::AdaptiveConcurrency;
use crate::disk_queue::{self, DiskLog, Record};
use crate::lease::Lease;
use crate::load::LoadSignal;
use crate::metrics::{DropReason, FloatGauge, Metrics, PerSignal};
use crate::pipeline::Envelope;
use crate::telemetry::{Encoded, Telemetry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sluice_config::{DeliveryConfig, RetryConfig, Signal, WhenFull};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// The exporter already told the user about this condition once (a missing topic, say):
    /// the retry loop logs its attempts at debug level instead of warning at every one.
    pub reported: bool,
}

impl ExportError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
            retry_after: None,
            throttled: false,
            reported: false,
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
            reported: false,
        }
    }

    /// Marks the error as already reported to the user (see [`Self::reported`]).
    pub fn reported(mut self) -> Self {
        self.reported = true;
        self
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

    /// Writes one batch, or what an earlier attempt at the same batch left unwritten: `progress`
    /// is 0 at a batch's first attempt and kept across its retries, for exporters that write a
    /// batch in several steps (ClickHouse: one insert per metrics table) so a retry does not
    /// write a step twice.
    fn export_resuming<'a>(
        &'a self,
        batch: &'a Telemetry,
        progress: &'a mut u64,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        let _ = progress;
        self.export(batch)
    }

    /// Flushes and closes; called once after the queue drained.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }

    /// Called once when the exporter goes live (its configuration was accepted and its queue is
    /// spawned): the place for work a rejected reload must not do, like creating a schema.
    fn start(self: Arc<Self>) {}
}

/// A batch on its way from a queue to the worker, with the room it holds.
struct Queued {
    data: Telemetry,
    items: u64,
    /// Item room held: the batch is in memory.
    permits: u32,
    /// Byte room held (`queue.max_bytes`, or its record's bytes on disk).
    bytes: u64,
    /// The persistent queue's records it came from, acknowledged once it is done.
    acks: Vec<u64>,
    /// Dropped (released) once the batch was delivered or counted as dropped; a persistent
    /// queue releases it as soon as the batch is on disk.
    lease: Lease,
}

/// How long [`ExporterQueue::enqueue`] may wait for room in a `block` queue (a `drop` queue
/// never waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As long as it takes: back-pressure reaches the receivers.
    Forever,
    /// Until then; after that the batch is dropped for this exporter and counted.
    Until(Instant),
    /// Not at all.
    No,
}

/// What became of a batch handed to an exporter queue (anything not queued is already counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// It is in the queue (for a persistent queue: on disk).
    Queued,
    /// The queue was full: dropped, counted `reason="queue_full"`.
    Full,
    /// The persistent queue could not write it: dropped, counted `reason="persist_failed"`.
    Failed,
}

/// A bound kept with a semaphore. Room taken beyond capacity (a replayed queue larger than the
/// configured bound) is a debt, paid back before room is given again.
struct Room {
    sem: Arc<Semaphore>,
    capacity: u64,
    debt: AtomicU64,
}

impl Room {
    fn new(capacity: u64) -> Self {
        let capacity = capacity.clamp(1, (Semaphore::MAX_PERMITS as u64).min(u64::from(u32::MAX)));
        Self {
            sem: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            debt: AtomicU64::new(0),
        }
    }

    /// What `n` units take: at least 1, at most the whole room (a batch larger than the queue
    /// takes the whole queue rather than waiting forever).
    fn want(&self, n: u64) -> u32 {
        u32::try_from(n.clamp(1, self.capacity)).unwrap_or(u32::MAX)
    }

    async fn take(&self, n: u32, wait: Wait) -> bool {
        let permit = match wait {
            Wait::Forever => self.sem.acquire_many(n).await.ok(),
            Wait::No => self.sem.try_acquire_many(n).ok(),
            Wait::Until(t) => tokio::time::timeout_at(t, self.sem.acquire_many(n))
                .await
                .ok()
                .and_then(Result::ok),
        };
        permit.map(|p| p.forget()).is_some()
    }

    /// Takes `n` whatever is free; the rest becomes debt.
    fn force(&self, n: u64) {
        let free = (self.sem.available_permits() as u64).min(n);
        if let Some(p) = u32::try_from(free)
            .ok()
            .and_then(|f| self.sem.try_acquire_many(f).ok())
        {
            p.forget();
            self.debt.fetch_add(n - free, Ordering::Relaxed);
        } else {
            self.debt.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn give(&self, n: u64) {
        let mut paid = 0;
        let _ = self
            .debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                paid = d.min(n);
                Some(d - paid)
            });
        self.sem.add_permits(usize::try_from(n - paid).unwrap_or(0));
    }
}

/// How a batch ended.
enum Outcome {
    /// Delivered (all but `rejected` items).
    Delivered(Delivered),
    /// Given up on: counted as failed and dropped.
    Failed(ExportError),
    /// Left in the persistent queue for the next start (shutdown came while it was retrying).
    Kept,
}

/// An exporter's books: every change to its queued / sent / failed / dropped counts and to its
/// room goes through here, so the counts always add up.
struct Books {
    name: Arc<str>,
    queued: PerSignal<Gauge>,
    /// This worker's own part of `queued` (two generations of an exporter share the gauge
    /// across a reload, and a persistent queue hands its part to the next start).
    own: [AtomicI64; 4],
    sent: PerSignal<Counter>,
    failed: PerSignal<Counter>,
    dropped_failed: PerSignal<Counter>,
    dropped_full: PerSignal<Counter>,
    dropped_persist: PerSignal<Counter>,
    /// Items in memory.
    items: Room,
    /// Bytes in the queue (in memory with `max_bytes`, or on disk).
    bytes: Option<Room>,
    /// Last refusal warning and how many were not logged since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl Books {
    fn add_queued(&self, signal: Signal, items: i64) {
        self.queued.get(signal).inc_by(items);
        self.own[signal.index()].fetch_add(items, Ordering::Relaxed);
    }

    /// Takes room for a batch: items (when it is held in memory) and bytes (when bounded).
    async fn admit(
        &self,
        signal: Signal,
        items: u64,
        in_memory: bool,
        bytes: u64,
        wait: Wait,
    ) -> Option<(u32, u64)> {
        let permits = if in_memory {
            let want = self.items.want(items);
            if !self.items.take(want, wait).await {
                return None;
            }
            want
        } else {
            0
        };
        let bytes = match &self.bytes {
            Some(room) => {
                let want = room.want(bytes);
                if !room.take(want, wait).await {
                    self.items.give(u64::from(permits));
                    return None;
                }
                u64::from(want)
            }
            None => 0,
        };
        self.add_queued(signal, items as i64);
        Some((permits, bytes))
    }

    /// Counts a batch that did not get into the queue, and says so (at most once a second).
    fn refused(&self, signal: Signal, items: u64, reason: DropReason) {
        match reason {
            DropReason::PersistFailed => self.dropped_persist.get(signal).inc_by(items),
            _ => self.dropped_full.get(signal).inc_by(items),
        };
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        w.1 += items;
        if w.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(exporter = %self.name, %signal, items = w.1, reason = reason.as_str(), "exporter queue refused data; dropped (counted in sluice_dropped_items_total)");
            *w = (Some(Instant::now()), 0);
        }
    }

    /// Gives back the room a batch held.
    fn release(&self, permits: u32, bytes: u64) {
        self.items.give(u64::from(permits));
        if let Some(room) = &self.bytes {
            room.give(bytes);
        }
    }

    /// Books a batch that reached the end of the line.
    fn finished(&self, signal: Signal, items: u64, permits: u32, bytes: u64, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered(Delivered { rejected }) => {
                let rejected = (*rejected).min(items);
                self.sent.get(signal).inc_by(items - rejected);
                if rejected > 0 {
                    self.failed.get(signal).inc_by(rejected);
                    self.dropped_failed.get(signal).inc_by(rejected);
                    tracing::error!(exporter = %self.name, %signal, items = rejected, "the backend refused part of a batch for good; those items are dropped");
                }
            }
            Outcome::Failed(e) => {
                self.failed.get(signal).inc_by(items);
                self.dropped_failed.get(signal).inc_by(items);
                tracing::error!(exporter = %self.name, %signal, items, error = %e.message, "export failed; batch dropped");
            }
            // Stays queued (on disk): the count is handed over by `hand_over`.
            Outcome::Kept => {
                self.release(permits, 0);
                return;
            }
        }
        self.add_queued(signal, -(items as i64));
        self.release(permits, bytes);
    }

    /// A persistent queue stopping: what it still holds is on disk, not lost; it leaves this
    /// process's books and is counted again when the next start replays it.
    fn hand_over(&self) -> u64 {
        let mut left = 0;
        for s in Signal::ALL {
            let n = self.own[s.index()].swap(0, Ordering::Relaxed);
            self.queued.get(s).dec_by(n);
            left += n.max(0) as u64;
        }
        left
    }
}

/// The persistent queue as the enqueue side sees it: opened by the worker once any
/// predecessor (same exporter before a reload) has let go of the directory.
#[derive(Clone)]
struct DiskSide {
    /// `None` while opening; then `Some(None)` if it could not be opened.
    log: watch::Receiver<Option<Option<Arc<DiskLog>>>>,
    /// Wakes the reader when a record was appended.
    wake: Arc<Notify>,
}

/// The pipelines' handle to an exporter's queue.
#[derive(Clone)]
pub struct ExporterQueue {
    books: Arc<Books>,
    /// Memory queues send batches here; for a persistent queue it only tells the worker when
    /// the last handle is gone.
    tx: mpsc::UnboundedSender<Queued>,
    disk: Option<DiskSide>,
    when_full: WhenFull,
    block_timeout: Duration,
    load: Arc<LoadSignal>,
    load_gauge: FloatGauge,
}

impl ExporterQueue {
    /// Puts a batch in the queue. A `block` queue waits for room as `wait` allows, a `drop`
    /// queue not at all; whatever does not get in is counted (and logged, rate-limited) here.
    /// A persistent queue returns only once the batch is written to its log.
    pub async fn enqueue(&self, env: Envelope, wait: Wait) -> Enqueued {
        let Envelope { data, items, lease } = env;
        let signal = data.signal();
        let wait = match self.when_full {
            WhenFull::Block => wait,
            WhenFull::Drop => Wait::No,
        };
        let result = match &self.disk {
            None => self.enqueue_memory(data, items, lease, wait).await,
            // Once on disk the batch no longer needs its memory: the lease is released.
            Some(disk) => self.enqueue_disk(disk, data, items, wait).await,
        };
        match result {
            Enqueued::Full => self.books.refused(signal, items, DropReason::QueueFull),
            Enqueued::Failed => self.books.refused(signal, items, DropReason::PersistFailed),
            Enqueued::Queued => {}
        }
        self.load_gauge.set(self.load.load());
        result
    }

    async fn enqueue_memory(
        &self,
        data: Telemetry,
        items: u64,
        lease: Lease,
        wait: Wait,
    ) -> Enqueued {
        let signal = data.signal();
        let bytes = if self.books.bytes.is_some() {
            data.encoded_len() as u64
        } else {
            0
        };
        let Some((permits, bytes)) = self.books.admit(signal, items, true, bytes, wait).await
        else {
            return Enqueued::Full;
        };
        let q = Queued {
            data,
            items,
            permits,
            bytes,
            acks: Vec::new(),
            lease,
        };
        if let Err(mpsc::error::SendError(q)) = self.tx.send(q) {
            // The worker is gone (it only ends once every handle is dropped, so it panicked).
            let e = ExportError::permanent("exporter worker stopped");
            self.books
                .finished(signal, q.items, q.permits, q.bytes, &Outcome::Failed(e));
        }
        Enqueued::Queued
    }

    async fn enqueue_disk(
        &self,
        disk: &DiskSide,
        data: Telemetry,
        items: u64,
        wait: Wait,
    ) -> Enqueued {
        let signal = data.signal();
        let mut opened = disk.log.clone();
        let log = match opened.wait_for(Option::is_some).await {
            Ok(v) => v.clone().flatten(),
            Err(_) => None,
        };
        let Some(log) = log else {
            return Enqueued::Failed;
        };
        let body = data.encode_protobuf();
        drop(data);
        let size = disk_queue::record_size(body.len());
        let Some((_, bytes)) = self.books.admit(signal, items, false, size, wait).await else {
            return Enqueued::Full;
        };
        let written = tokio::task::spawn_blocking(move || log.append(signal, items, &body)).await;
        match written {
            Ok(Ok(_)) => {
                disk.wake.notify_one();
                Enqueued::Queued
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::error!(exporter = %self.books.name, %signal, items, error = %why, "cannot write to the persistent queue");
                self.books.add_queued(signal, -(items as i64));
                self.books.release(0, bytes);
                Enqueued::Failed
            }
        }
    }

    /// How long a pipeline with several exporters waits for this one's room (`queue.block_timeout`).
    pub fn block_timeout(&self) -> Duration {
        self.block_timeout
    }

    /// Whether the queue waits for room when full (`when_full = "block"`).
    pub fn blocks(&self) -> bool {
        self.when_full == WhenFull::Block
    }

    /// The exporter's name.
    pub fn name(&self) -> &str {
        &self.books.name
    }

    /// The exporter's published load, for samplers upstream.
    pub fn load_signal(&self) -> Arc<LoadSignal> {
        self.load.clone()
    }
}

/// A directory name for an exporter's persistent queue (exporter names are TOML keys).
fn queue_dir(storage: &std::path::Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    storage.join(format!("queue-{safe}"))
}

/// Segment size of a persistent queue: an eighth of its bound, between 64KiB and 64MiB, so
/// disk use stays within `max_bytes` plus one segment.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024)
}

/// Starts the worker that drains an exporter's queue; it ends (after `shutdown`) once every
/// [`ExporterQueue`] clone is dropped and the queue is empty (a persistent queue: once the
/// batches in flight ended; the rest stays on disk for the next start).
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
    let max_items = u32::try_from(queue.max_items)
        .unwrap_or(u32::MAX)
        .min(Semaphore::MAX_PERMITS as u32);
    let byte_limit = queue.byte_limit();
    let books = Arc::new(Books {
        name: name.into(),
        queued: PerSignal::new(|s| metrics.exporter_queue(name, s)),
        own: Default::default(),
        sent: PerSignal::new(|s| metrics.exporter_sent(name, s)),
        failed: PerSignal::new(|s| metrics.exporter_failed(name, s)),
        dropped_failed: PerSignal::new(|s| metrics.dropped(name, s, DropReason::ExportFailed)),
        dropped_full: PerSignal::new(|s| metrics.dropped(name, s, DropReason::QueueFull)),
        dropped_persist: PerSignal::new(|s| metrics.dropped(name, s, DropReason::PersistFailed)),
        items: Room::new(u64::from(max_items)),
        bytes: byte_limit.map(Room::new),
        warned: Mutex::new((None, 0)),
    });
    let mut load_signal = LoadSignal::new(books.items.sem.clone(), max_items, max_concurrency);
    if let Some(room) = &books.bytes {
        load_signal = load_signal.with_bytes(room.sem.clone(), room.capacity);
    }
    let load_signal = Arc::new(load_signal);
    let load = metrics.exporter_load(name);
    let persistent = match (&delivery.storage_dir, queue.persistent) {
        (Some(dir), true) => Some(queue_dir(dir, name)),
        _ => None,
    };
    let (log_tx, log_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let handle = ExporterQueue {
        books: books.clone(),
        tx,
        disk: persistent.as_ref().map(|_| DiskSide {
            log: log_rx,
            wake: wake.clone(),
        }),
        when_full: queue.when_full,
        block_timeout: queue.block_timeout.0,
        load: load_signal.clone(),
        load_gauge: load.clone(),
    };
    let limit_gauge = metrics.exporter_concurrency(name);
    let retry = Arc::new(retry.clone());
    let name: Arc<str> = name.into();
    let corrupt = metrics.queue_corrupt(&name);
    let replayed = PerSignal::new(|s| metrics.queue_replayed(&name, s));
    let sync = queue.sync;
    exporter.clone().start();
    let coalesce = exporter.coalesce();
    let task = tokio::spawn(async move {
        // Cancelled once the queue closed: a persistent queue's exports stop retrying then (what
        // they carry stays on disk), and what was read but not sent yet is left there.
        let closing = CancellationToken::new();
        if let Some(prev) = after {
            let _ = prev.await;
        }
        // The worker's input: the memory queue itself, or what the reader brings from disk.
        let (input, disk) = match persistent {
            None => (rx, None),
            Some(dir) => {
                let max = byte_limit.unwrap_or(u64::MAX);
                let opened = tokio::task::spawn_blocking(move || {
                    let r = DiskLog::open(&dir, segment_bytes(max), sync);
                    (dir, r)
                })
                .await;
                let log = match opened {
                    Ok((_, Ok((log, found)))) => {
                        corrupt.inc_by(found.corrupt);
                        for s in Signal::ALL {
                            let n = found.items[s.index()];
                            if n > 0 {
                                replayed.get(s).inc_by(n);
                                books.add_queued(s, n as i64);
                            }
                        }
                        if let Some(room) = &books.bytes {
                            room.force(found.bytes);
                        }
                        if found.records > 0 || found.corrupt > 0 {
                            tracing::info!(exporter = %name, records = found.records, bytes = found.bytes, corrupt = found.corrupt, "persistent queue replayed");
                        }
                        Some(Arc::new(log))
                    }
                    Ok((dir, Err(e))) => {
                        tracing::error!(exporter = %name, dir = %dir.display(), error = %e, "cannot open the persistent queue; data for this exporter is dropped and counted (reason persist_failed)");
                        None
                    }
                    Err(e) => {
                        tracing::error!(exporter = %name, error = %e, "cannot open the persistent queue");
                        None
                    }
                };
                let _ = log_tx.send(Some(log.clone()));
                match log {
                    Some(log) => {
                        let (dtx, drx) = mpsc::unbounded_channel();
                        tokio::spawn(read_disk(
                            log.clone(),
                            rx,
                            dtx,
                            wake,
                            books.clone(),
                            closing.clone(),
                        ));
                        (drx, Some(log))
                    }
                    None => {
                        // Nothing to deliver; wait for the handles to go.
                        let mut rx = rx;
                        while rx.recv().await.is_some() {}
                        let _ = exporter.shutdown().await;
                        return;
                    }
                }
            }
        };
        let mut input = match coalesce {
            Some(c) => {
                let (ctx, crx) = mpsc::unbounded_channel::<Queued>();
                tokio::spawn(coalesce_queue(input, ctx, c));
                crx
            }
            None => input,
        };
        let mut arc = AdaptiveConcurrency::new(max_concurrency, Instant::now());
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        // What each running export carries, so even a panicking one is accounted for.
        let mut carried: HashMap<tokio::task::Id, (Signal, u64, u32, u64, Vec<u64>)> =
            HashMap::new();
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
                            let Some((signal, items, permits, bytes, acks)) = carried.remove(&e.id()) else { continue };
                            tracing::error!(exporter = %name, %signal, items, error = %e, "export task panicked");
                            let failed = Outcome::Failed(ExportError::permanent("export task panicked"));
                            books.finished(signal, items, permits, bytes, &failed);
                            ack(disk.as_deref(), &name, &acks);
                            continue;
                        }
                    };
                    arc.on_response(done.rtt, done.throttled, Instant::now());
                    if let Outcome::Delivered(_) = done.outcome {
                        // The worker is the load signal's only writer of latency and drain rate.
                        load_signal.record_export(done.items, done.rtt);
                    }
                    books.finished(done.signal, done.items, done.permits, done.bytes, &done.outcome);
                    if !matches!(done.outcome, Outcome::Kept) {
                        ack(disk.as_deref(), &name, &done.acks);
                    }
                    load_signal.set_in_flight(in_flight.len(), arc.limit());
                    load.set(load_signal.load());
                }
                msg = input.recv(), if open && in_flight.len() < arc.limit() => match msg {
                    Some(q) if disk.is_some() && closing.is_cancelled() => {
                        books.finished(q.data.signal(), q.items, q.permits, q.bytes, &Outcome::Kept);
                    }
                    Some(q) => {
                        let (exporter, retry, task_load, name) =
                            (exporter.clone(), retry.clone(), load_signal.clone(), name.clone());
                        let stop = disk.is_some().then(|| closing.clone());
                        let meta = (q.data.signal(), q.items, q.permits, q.bytes, q.acks.clone());
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
                            let (outcome, rtt, throttled) = match decoded {
                                Ok(()) => export_with_retry(&name, exporter.as_ref(), &data, &retry, &task_load, stop).await,
                                Err(e) => (Outcome::Failed(e), Duration::ZERO, false),
                            };
                            Done { signal, items: q.items, permits: q.permits, bytes: q.bytes, acks: q.acks, outcome, rtt, throttled }
                        });
                        carried.insert(handle.id(), meta);
                        arc.on_dispatch(in_flight.len());
                        load_signal.set_in_flight(in_flight.len(), arc.limit());
                        load.set(load_signal.load());
                    }
                    None => {
                        open = false;
                        closing.cancel();
                    }
                },
            }
        }
        load.set(0.0);
        if let Some(log) = &disk {
            if let Err(e) = log.sync_now() {
                tracing::error!(exporter = %name, error = %e, "cannot sync the persistent queue");
            }
            let left = books.hand_over();
            if left > 0 {
                tracing::info!(exporter = %name, items = left, "items stay in the persistent queue for the next start");
            }
        }
        if let Err(e) = exporter.shutdown().await {
            tracing::error!(exporter = %name, error = %e.message, "exporter shutdown failed");
        }
    });
    (handle, task)
}

/// Marks a persistent queue's records delivered (or given up on and counted).
fn ack(log: Option<&DiskLog>, name: &str, seqs: &[u64]) {
    let Some(log) = log else { return };
    for &seq in seqs {
        if let Err(e) = log.ack(seq) {
            tracing::error!(exporter = %name, error = %e, "cannot advance the persistent queue's head; delivered batches may be sent again after a restart");
        }
    }
}

/// Feeds a persistent queue's records to its worker in order, as item room allows (memory stays
/// bounded by `max_items` whatever the disk holds), and syncs `sync = "interval"` writes. Ends
/// when every [`ExporterQueue`] handle is gone.
async fn read_disk(
    log: Arc<DiskLog>,
    mut handles: mpsc::UnboundedReceiver<Queued>,
    out: mpsc::UnboundedSender<Queued>,
    wake: Arc<Notify>,
    books: Arc<Books>,
    closing: CancellationToken,
) {
    read_records(&log, &mut handles, &out, &wake, &books).await;
    closing.cancel();
}

async fn read_records(
    log: &Arc<DiskLog>,
    handles: &mut mpsc::UnboundedReceiver<Queued>,
    out: &mpsc::UnboundedSender<Queued>,
    wake: &Notify,
    books: &Books,
) {
    let mut reader = Some(log.reader());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Read what is there (up to 4 MiB at a time, off the async threads).
        let Some(r) = reader.take() else { return };
        let l = log.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut r = r;
            let mut got: Vec<Record> = Vec::new();
            let mut size = 0;
            while size < 4 << 20 {
                match r.next(&l) {
                    Ok(Some(rec)) => {
                        size += rec.disk_bytes;
                        got.push(rec);
                    }
                    Ok(None) => break,
                    Err(e) => return (r, got, Some(e)),
                }
            }
            (r, got, None)
        })
        .await;
        let Ok((r, got, err)) = read else { return };
        reader = Some(r);
        if let Some(e) = err {
            tracing::error!(exporter = %books.name, error = %e, "cannot read the persistent queue; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let empty = got.is_empty();
        for rec in got {
            let want = books.items.want(rec.items);
            tokio::select! {
                ok = books.items.take(want, Wait::Forever) => if !ok { return },
                _ = handles.recv() => return,
            }
            let q = Queued {
                data: Telemetry::Encoded(Encoded::new(rec.signal, rec.body, rec.items)),
                items: rec.items,
                permits: want,
                bytes: rec.disk_bytes,
                acks: vec![rec.seq],
                lease: Lease::none(),
            };
            if out.send(q).is_err() {
                return;
            }
        }
        if empty {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tick.tick() => {
                    if let Err(e) = log.sync_if_due() {
                        tracing::error!(exporter = %books.name, error = %e, "cannot sync the persistent queue");
                    }
                }
                // No data ever comes this way: `None` means the last handle is gone.
                _ = handles.recv() => return,
            }
        }
    }
}

/// What an export task reports back to the worker.
struct Done {
    signal: Signal,
    items: u64,
    permits: u32,
    bytes: u64,
    acks: Vec<u64>,
    outcome: Outcome,
    rtt: Duration,
    throttled: bool,
}

/// Exports with retries (exponential backoff with full jitter); returns the outcome, the last
/// attempt's round-trip time and whether the backend pushed back at any attempt. With `stop`, a
/// cancelled token ends the retrying: the batch is [`Outcome::Kept`] (it stays on disk).
async fn export_with_retry(
    name: &str,
    exporter: &dyn Exporter,
    data: &Telemetry,
    retry: &RetryConfig,
    load: &LoadSignal,
    stop: Option<CancellationToken>,
) -> (Outcome, Duration, bool) {
    let start = Instant::now();
    let mut wait = retry.initial_interval.0;
    let mut attempt = 0u32;
    let mut throttled = false;
    let mut progress = 0u64;
    loop {
        attempt += 1;
        let began = Instant::now();
        let result = exporter.export_resuming(data, &mut progress).await;
        let rtt = began.elapsed();
        let err = match result {
            Ok(d) => return (Outcome::Delivered(d), rtt, throttled),
            Err(e) => e,
        };
        if err.throttled {
            throttled = true;
            load.record_throttle();
        }
        if !err.retryable {
            return (Outcome::Failed(err), rtt, throttled);
        }
        let elapsed = start.elapsed();
        if !retry.max_elapsed.0.is_zero() && elapsed >= retry.max_elapsed.0 {
            let err = ExportError::permanent(format!(
                "gave up after {attempt} attempts in {elapsed:?}: {}",
                err.message
            ));
            return (Outcome::Failed(err), rtt, throttled);
        }
        if stop.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return (Outcome::Kept, rtt, throttled);
        }
        // Full jitter: anywhere between nothing and the backoff, so retries spread out.
        let ceiling = wait.min(retry.max_interval.0);
        let pause = match err.retry_after {
            Some(asked) => asked.min(retry.max_interval.0.max(wait)),
            None => ceiling.mul_f64(fastrand::f64()),
        };
        if err.reported {
            tracing::debug!(exporter = %name, attempt, error = %err.message, retry_in = ?pause, "export failed; will retry");
        } else {
            tracing::warn!(exporter = %name, attempt, error = %err.message, retry_in = ?pause, "export failed; will retry");
        }
        match &stop {
            Some(stop) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return (Outcome::Kept, rtt, throttled),
                }
            }
            None => tokio::time::sleep(pause).await,
        }
        wait = (wait * 2).min(retry.max_interval.0);
    }
}

/// Merge queued batches of one signal into larger exports (ClickHouse wants big inserts).
#[derive(Debug, Clone, Copy)]
pub struct Coalesce {
    /// Export as soon as this many items are merged...
    pub min_items: u64,
    /// ...or as soon as merged encoded requests (whose size is known without a walk) reach this
    /// many bytes, so what an export holds is bounded in bytes too.
    pub max_bytes: u64,
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
                            acc.bytes += q.bytes;
                            acc.acks.extend(q.acks);
                            acc.lease.absorb(q.lease);
                        }
                        // Profiles cannot be merged: they go on as they are.
                        Err(data) => {
                            let _ = tx.send(Queued { data, ..q });
                        }
                    },
                }
                if slot.as_ref().is_some_and(|(acc, _)| {
                    acc.items >= c.min_items
                        || acc.data.signal() == Signal::Profiles
                        || (matches!(acc.data, Telemetry::Encoded(_)) && acc.data.encoded_len() as u64 >= c.max_bytes)
                }) {
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
            bytes: 0,
            acks: Vec::new(),
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
                ..Default::default()
            },
            retry: RetryConfig::default(),
            max_concurrency: 2,
            storage_dir: None,
        };
        let (q, task) = spawn_exporter("p", Arc::new(Panics), &delivery, None, &metrics);
        let load = q.load_signal();
        assert_eq!(
            q.enqueue(Envelope::new(spans(60).data, 60), Wait::Forever)
                .await,
            Enqueued::Queued
        );
        // 60 + 80 > 100: this only fits once the panicked export has given its room back.
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            q.enqueue(Envelope::new(spans(80).data, 80), Wait::Forever),
        )
        .await;
        assert_eq!(
            second,
            Ok(Enqueued::Queued),
            "room freed by the panicked export"
        );
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

    /// Fails while `down` is set; records what it delivered.
    struct Backend {
        down: std::sync::atomic::AtomicBool,
        got: Mutex<Vec<u64>>,
    }
    impl Exporter for Backend {
        fn export<'a>(
            &'a self,
            batch: &'a Telemetry,
        ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
            Box::pin(async move {
                if self.down.load(Ordering::Relaxed) {
                    return Err(ExportError::retryable("down"));
                }
                self.got.lock().unwrap().push(batch.item_count());
                Ok(Delivered::ALL)
            })
        }
    }

    fn persistent(dir: &std::path::Path, max_bytes: u64, when_full: WhenFull) -> DeliveryConfig {
        DeliveryConfig {
            queue: sluice_config::QueueConfig {
                persistent: true,
                max_bytes: Some(sluice_config::types::ByteSize(max_bytes)),
                when_full,
                ..Default::default()
            },
            retry: RetryConfig {
                initial_interval: sluice_config::types::HumanDuration::from_millis(10),
                max_interval: sluice_config::types::HumanDuration::from_millis(50),
                max_elapsed: sluice_config::types::HumanDuration::from_secs(0),
            },
            max_concurrency: 2,
            storage_dir: Some(dir.to_owned()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_persistent_queue_keeps_what_a_down_backend_did_not_take_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let delivery = persistent(dir.path(), 1 << 20, WhenFull::Block);
        let metrics = Metrics::new();
        let down = Arc::new(Backend {
            down: true.into(),
            got: Mutex::default(),
        });
        let (q, task) = spawn_exporter("d", down.clone(), &delivery, None, &metrics);
        for _ in 0..10 {
            assert_eq!(
                q.enqueue(Envelope::new(spans(7).data, 7), Wait::Forever)
                    .await,
                Enqueued::Queued
            );
        }
        assert_eq!(metrics.exporter_queue("d", Signal::Traces).get(), 70);
        drop(q);
        // Shutdown does not wait for a down backend: the batches stay on disk, not lost.
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(metrics.exporter_queue("d", Signal::Traces).get(), 0);
        assert_eq!(metrics.exporter_failed("d", Signal::Traces).get(), 0);

        let metrics = Metrics::new();
        let up = Arc::new(Backend {
            down: false.into(),
            got: Mutex::default(),
        });
        let (q, task) = spawn_exporter("d", up.clone(), &delivery, None, &metrics);
        assert_eq!(
            q.enqueue(Envelope::new(spans(3).data, 3), Wait::Forever)
                .await,
            Enqueued::Queued
        );
        let sent = || metrics.exporter_sent("d", Signal::Traces).get();
        for _ in 0..500 {
            if sent() == 73 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sent(), 73);
        assert_eq!(metrics.queue_replayed("d", Signal::Traces).get(), 70);
        drop(q);
        task.await.unwrap();
        assert_eq!(up.got.lock().unwrap().iter().sum::<u64>(), 73);
        // Everything was acknowledged: a third start finds nothing.
        let metrics = Metrics::new();
        let (q, task) = spawn_exporter("d", up.clone(), &delivery, None, &metrics);
        assert_eq!(
            q.enqueue(Envelope::new(spans(1).data, 1), Wait::Forever)
                .await,
            Enqueued::Queued
        );
        drop(q);
        task.await.unwrap();
        assert_eq!(metrics.queue_replayed("d", Signal::Traces).get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_persistent_queue_drops_and_counts_or_makes_block_wait() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let down = Arc::new(Backend {
            down: true.into(),
            got: Mutex::default(),
        });
        let big = || spans(2000);
        let size = disk_queue::record_size(big().data.encoded_len());
        let cap = 64 * 1024;
        let fits = cap / size;
        let delivery = persistent(dir.path(), cap, WhenFull::Drop);
        let (q, task) = spawn_exporter("f", down.clone(), &delivery, None, &metrics);
        let mut queued = 0;
        for _ in 0..fits + 5 {
            if q.enqueue(Envelope::new(big().data, 2000), Wait::Forever)
                .await
                == Enqueued::Queued
            {
                queued += 1;
            }
        }
        assert_eq!(queued, fits);
        assert_eq!(
            metrics
                .dropped("f", Signal::Traces, DropReason::QueueFull)
                .get(),
            5 * 2000
        );
        drop(q);
        task.await.unwrap();
        let delivery = persistent(dir.path(), cap, WhenFull::Block);
        let (q, task) = spawn_exporter("f", down.clone(), &delivery, None, &metrics);
        let until = Instant::now() + Duration::from_millis(200);
        assert_eq!(
            q.enqueue(Envelope::new(big().data, 2000), Wait::Until(until))
                .await,
            Enqueued::Full
        );
        down.down.store(false, Ordering::Relaxed);
        assert_eq!(
            q.enqueue(Envelope::new(big().data, 2000), Wait::Forever)
                .await,
            Enqueued::Queued
        );
        drop(q);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_memory_queue_with_max_bytes_is_bounded_in_bytes_not_only_items() {
        let metrics = Metrics::new();
        let down = Arc::new(Backend {
            down: true.into(),
            got: Mutex::default(),
        });
        let mut delivery = persistent(
            std::path::Path::new("/nonexistent"),
            64 * 1024,
            WhenFull::Drop,
        );
        delivery.queue.persistent = false;
        delivery.queue.max_items = 1_000_000;
        let size = spans(2000).data.encoded_len() as u64;
        let (q, task) = spawn_exporter("m", down, &delivery, None, &metrics);
        let mut queued = 0;
        for _ in 0..20 {
            if q.enqueue(Envelope::new(spans(2000).data, 2000), Wait::Forever)
                .await
                == Enqueued::Queued
            {
                queued += 1;
            }
        }
        assert_eq!(queued, 64 * 1024 / size);
        assert_eq!(
            metrics
                .dropped("m", Signal::Traces, DropReason::QueueFull)
                .get(),
            (20 - queued) * 2000
        );
        assert_eq!(
            metrics.exporter_queue("m", Signal::Traces).get() as u64,
            queued * 2000
        );
        drop(q);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn coalescing_merges_up_to_min_items_then_flushes_the_rest_after_the_delay() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (otx, mut orx) = mpsc::unbounded_channel();
        let c = Coalesce {
            min_items: 1000,
            max_bytes: u64::MAX,
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

    /// Encoded batches are cut at `max_bytes` too, whatever their item count.
    #[tokio::test(start_paused = true)]
    async fn coalescing_cuts_encoded_batches_at_max_bytes() {
        use prost::Message;
        let (tx, rx) = mpsc::unbounded_channel();
        let (otx, mut orx) = mpsc::unbounded_channel();
        let body = match spans(100).data {
            Telemetry::Traces(r) => bytes::Bytes::from(r.encode_to_vec()),
            _ => unreachable!(),
        };
        let len = body.len() as u64;
        let c = Coalesce {
            min_items: 1_000_000,
            max_bytes: 3 * len,
            max_delay: Duration::from_secs(60),
        };
        let task = tokio::spawn(coalesce_queue(rx, otx, c));
        for _ in 0..4 {
            let mut q = spans(0);
            q.data = Telemetry::Encoded(crate::telemetry::Encoded::new(
                Signal::Traces,
                body.clone(),
                100,
            ));
            q.items = 100;
            tx.send(q).unwrap();
        }
        let first = orx.recv().await.unwrap();
        assert_eq!(
            (first.items, first.data.encoded_len() as u64),
            (300, 3 * len)
        );
        drop(tx);
        assert_eq!(orx.recv().await.unwrap().items, 100);
        task.await.unwrap();
    }
}
