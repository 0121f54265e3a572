//! Trace-aware load balancing across gateways (`endpoints = [...]` or `resolver = { dns }`), like
//! the OpenTelemetry Collector's `loadbalancing` exporter.
//!
//! Spans, and log records with a trace id, go to the gateway that owns their trace id on a
//! consistent-hash ring ([`ring`]), so every span of a trace reaches one gateway and adding or
//! removing a gateway moves only its share. Log records without a trace id, metrics and profiles
//! go whole to the gateways in turn (round robin per batch). Batches are split on the wire
//! ([`split`]), without a decode.
//!
//! Each gateway has its own queue, retry and concurrency: the one delivery layer
//! ([`spawn_exporter`]) runs once per gateway with the exporter's delivery settings. The outer
//! exporter's `export` hands the parts to those queues and completes only once every part was
//! delivered or counted as dropped there (each part's lease holds a share of a waiter), so the
//! batch's own lease — and any acknowledgement riding on it — lives exactly that long.
//!
//! A gateway whose sends fail [`DOWN_AFTER`] times in a row without an answer (refused or reset
//! connection, timeout) leaves the ring for new data; what its queue still holds is delivered to
//! the gateways that took over its share, and a probe (an empty request every
//! [`PROBE_INTERVAL`]) brings it back once it answers.

pub mod ring;
pub mod split;

use super::{OtlpExporter, OtlpExporterConfig, OtlpExporterError, SendFailure};
use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use ring::Ring;
use sluice_config::{DeliveryConfig, Signal};
use sluice_core::component::ExporterContext;
use sluice_core::exporter::{spawn_exporter, ExporterQueue, Wait};
use sluice_core::{
    BoxFuture, Delivered, Encoded, Envelope, ExportError, Exporter, Held, Lease, Metrics,
    Telemetry,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Sends without an answer in a row after which a gateway leaves the ring for new data.
pub const DOWN_AFTER: u32 = 3;

/// How often a gateway out of the ring is probed (an empty OTLP traces request).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Gateways whose resume progress is remembered across retries (bits of the progress word).
const TRACKED: usize = 48;

/// One gateway: its client and its health.
struct Gateway {
    /// `host:port` as listed or resolved.
    key: String,
    /// Unique within the balancer (bit in a rerouted batch's progress word).
    slot: usize,
    client: OtlpExporter,
    up: AtomicBool,
    failures: AtomicU32,
    probing: AtomicBool,
    /// Left the resolved address set: its queue drains to the others.
    gone: AtomicBool,
    up_gauge: Gauge,
    rerouted: Counter,
}

/// A gateway of the current set with its delivery queue.
#[derive(Clone)]
struct Member {
    gw: Arc<Gateway>,
    queue: ExporterQueue,
}

/// The gateways as routing sees them; replaced whole when the set or a gateway's health changes.
struct State {
    members: Vec<Member>,
    /// Every member, by index.
    all: Ring<usize>,
    all_list: Vec<usize>,
    /// Members that are up.
    live: Ring<usize>,
    live_list: Vec<usize>,
    generation: u64,
}

impl State {
    fn empty() -> Self {
        Self {
            members: Vec::new(),
            all: Ring::new([]),
            all_list: Vec::new(),
            live: Ring::new([]),
            live_list: Vec::new(),
            generation: 0,
        }
    }
}

struct Shared {
    name: Arc<str>,
    cfg: OtlpExporterConfig,
    delivery: DeliveryConfig,
    metrics: Metrics,
    state: ArcSwap<State>,
    /// Serializes changes of `state`.
    edit: Mutex<()>,
    next_slot: AtomicUsize,
    generation: AtomicU64,
    /// Round-robin position for data not routed by trace id.
    rr: AtomicUsize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
}

/// The balancing exporter: routes each batch's items to per-gateway queues.
pub struct Balancer {
    shared: Arc<Shared>,
}

/// Released (its sender dropped) once every part of a batch is done with.
struct PartsDone(#[allow(dead_code)] mpsc::Sender<()>);
impl Held for PartsDone {}

impl Balancer {
    /// Starts the per-gateway queues (and the resolver, with `resolver`); needs a Tokio runtime.
    pub fn start(
        cfg: &OtlpExporterConfig,
        ctx: &ExporterContext<'_>,
    ) -> Result<Self, OtlpExporterError> {
        let mut delivery = ctx.delivery.clone();
        // The exporter's own queue is the persistent one (a batch leaves it only once every part
        // was delivered); the gateway queues hold parts in memory.
        delivery.queue.persistent = false;
        let shared = Arc::new(Shared {
            name: ctx.name.into(),
            cfg: cfg.clone(),
            delivery,
            metrics: ctx.metrics.clone(),
            state: ArcSwap::from_pointee(State::empty()),
            edit: Mutex::new(()),
            next_slot: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            rr: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
        });
        if let Some(list) = &cfg.endpoints {
            shared.set_members(list)?;
        }
        if let Some(r) = &cfg.resolver {
            let weak = Arc::downgrade(&shared);
            let task = tokio::spawn(resolve_loop(
                weak,
                r.dns.clone(),
                r.interval.0,
                shared.stop.clone(),
            ));
            shared.track(task);
        }
        Ok(Self { shared })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl Shared {
    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Makes `keys` the gateway set: members still listed keep their queue, new ones get one,
    /// the others drain what they hold to the rest.
    fn set_members(self: &Arc<Self>, keys: &[String]) -> Result<(), OtlpExporterError> {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.state.load_full();
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            match current.members.iter().find(|m| &m.gw.key == key) {
                Some(m) => members.push(m.clone()),
                None => members.push(self.new_member(key)?),
            }
        }
        for old in &current.members {
            if !keys.contains(&old.gw.key) {
                old.gw.gone.store(true, Ordering::Relaxed);
                old.gw.up_gauge.set(0);
                tracing::info!(exporter = %self.name, endpoint = %old.gw.key, "gateway left the resolved set; what its queue holds goes to the others");
            }
        }
        self.publish(members);
        Ok(())
    }

    fn new_member(self: &Arc<Self>, key: &str) -> Result<Member, OtlpExporterError> {
        let url = self.cfg.endpoint_url(key);
        let client = OtlpExporter::for_url(&self.cfg, &url)?;
        let gw = Arc::new(Gateway {
            key: key.to_owned(),
            slot: self.next_slot.fetch_add(1, Ordering::Relaxed),
            client,
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            up_gauge: self.metrics.endpoint_up(&self.name, key),
            rerouted: self.metrics.endpoint_rerouted(&self.name, key),
        });
        gw.up_gauge.set(1);
        let exporter = Arc::new(GatewayExporter {
            gw: gw.clone(),
            shared: Arc::downgrade(self),
        });
        let (queue, task) = spawn_exporter(
            &format!("{}/{key}", self.name),
            exporter,
            &self.delivery,
            None,
            &self.metrics,
        );
        self.track(task);
        Ok(Member { gw, queue })
    }

    /// Publishes `members` with rings built from their names and health.
    fn publish(&self, members: Vec<Member>) {
        let all = Ring::new(members.iter().enumerate().map(|(i, m)| (i, m.gw.key.as_str())));
        let live_list: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.gw.up.load(Ordering::Relaxed) && !m.gw.gone.load(Ordering::Relaxed))
            .map(|(i, _)| i)
            .collect();
        let live = Ring::new(live_list.iter().filter_map(|&i| {
            members.get(i).map(|m| (i, m.gw.key.as_str()))
        }));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let all_list = (0..members.len()).collect();
        self.state.store(Arc::new(State {
            members,
            all,
            all_list,
            live,
            live_list,
            generation,
        }));
    }

    /// Rebuilds the rings after a health change.
    fn republish(&self) {
        let _edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.state.load().members.clone();
        self.publish(members);
    }

    /// Books one send's outcome in the gateway's health.
    fn observe(self: &Arc<Self>, gw: &Arc<Gateway>, result: &Result<Delivered, SendFailure>) {
        match result {
            Err(f) if f.unreachable => {
                let n = gw.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= DOWN_AFTER && gw.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(exporter = %self.name, endpoint = %gw.key, error = %f.error.message, "gateway unreachable; its share goes to the other gateways until it answers again");
                    gw.up_gauge.set(0);
                    self.republish();
                    self.probe(gw.clone());
                }
            }
            _ => self.mark_up(gw),
        }
    }

    fn mark_up(&self, gw: &Gateway) {
        gw.failures.store(0, Ordering::Relaxed);
        if !gw.up.load(Ordering::Relaxed) && !gw.up.swap(true, Ordering::Relaxed) {
            tracing::info!(exporter = %self.name, endpoint = %gw.key, "gateway answers again; it takes its share back");
            if !gw.gone.load(Ordering::Relaxed) {
                gw.up_gauge.set(1);
            }
            self.republish();
        }
    }

    /// Probes a gateway out of the ring until it answers (or leaves the set).
    fn probe(self: &Arc<Self>, gw: Arc<Gateway>) {
        if gw.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            let empty = Telemetry::Encoded(Encoded::new(Signal::Traces, Bytes::new(), 0));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = stop.cancelled() => break,
                }
                if gw.up.load(Ordering::Relaxed) || gw.gone.load(Ordering::Relaxed) {
                    break;
                }
                let answered = !matches!(gw.client.send(&empty).await, Err(SendFailure { unreachable: true, .. }));
                if answered {
                    if let Some(shared) = weak.upgrade() {
                        shared.mark_up(&gw);
                    }
                    break;
                }
            }
            gw.probing.store(false, Ordering::Relaxed);
        });
        self.track(task);
    }

    /// The member for data not routed by trace id: the next in turn among `candidates`.
    fn next_in_turn(&self, candidates: &[usize]) -> usize {
        let n = candidates.len().max(1);
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % n;
        candidates.get(i).copied().unwrap_or(0)
    }

    /// Splits `batch` over `state`'s live ring (every member's when none is up): the parts as
    /// `(member index, data, items)`, only non-empty ones.
    fn route(&self, state: &State, batch: &Telemetry) -> Vec<(usize, Telemetry, u64)> {
        let (ring, candidates) = if state.live.is_empty() {
            (&state.all, &state.all_list)
        } else {
            (&state.live, &state.live_list)
        };
        let turn = self.next_in_turn(candidates);
        let whole = |batch: &Telemetry| {
            let items = batch.item_count();
            let data = match batch {
                Telemetry::Encoded(_) => batch.clone(),
                // Queued encoded: a fifth of the memory of a decoded copy.
                other => Telemetry::Encoded(Encoded::new(other.signal(), other.encode_protobuf(), items)),
            };
            vec![(turn, data, items)]
        };
        if candidates.len() <= 1 {
            return whole(batch);
        }
        let n = state.members.len();
        let mut route = |id: Option<&[u8]>| match id {
            Some(id) => ring.owner(ring::hash(id)).unwrap_or(turn),
            None => turn,
        };
        match split::split(batch, n, &mut route) {
            Some(parts) => parts
                .into_iter()
                .enumerate()
                .filter(|(_, (_, items))| *items > 0)
                .map(|(i, (data, items))| (i, data, items))
                .collect(),
            None => whole(batch),
        }
    }

    /// Delivers a batch queued for `gw` (down or gone) to the members that own its items now,
    /// directly through their clients. `progress` remembers which of them already took their
    /// part, so a retry does not send those again (unless the rings changed meanwhile).
    async fn reroute(
        self: &Arc<Self>,
        gw: &Gateway,
        state: &State,
        batch: &Telemetry,
        progress: &mut u64,
    ) -> Result<Delivered, ExportError> {
        let generation = state.generation & 0xffff;
        let mut done = if *progress >> TRACKED == generation {
            *progress & ((1 << TRACKED) - 1)
        } else {
            0
        };
        let mut rejected = 0;
        let mut failure = None;
        for (i, data, items) in self.route(state, batch) {
            let Some(target) = state.members.get(i).map(|m| m.gw.clone()) else {
                continue;
            };
            let bit = (target.slot < TRACKED).then(|| 1u64 << target.slot);
            if bit.is_some_and(|b| done & b != 0) {
                continue;
            }
            let result = target.client.send(&data).await;
            self.observe(&target, &result);
            match result {
                Ok(d) => {
                    done |= bit.unwrap_or(0);
                    rejected += d.rejected.min(items);
                    gw.rerouted.inc_by(items - d.rejected.min(items));
                }
                Err(f) if !f.error.retryable => {
                    // Refused for good by the gateway that owns them now: counted as rejected.
                    tracing::error!(exporter = %self.name, endpoint = %target.key, items, error = %f.error.message, "a gateway refused rerouted data for good");
                    done |= bit.unwrap_or(0);
                    rejected += items;
                }
                Err(f) => failure = Some(f.error),
            }
        }
        *progress = generation << TRACKED | done;
        match failure {
            Some(e) => Err(e),
            None => Ok(Delivered { rejected }),
        }
    }
}

/// One gateway's exporter, behind its own queue: sends to the gateway while it is up, and to the
/// gateways that took over its share while it is not.
struct GatewayExporter {
    gw: Arc<Gateway>,
    shared: Weak<Shared>,
}

impl Exporter for GatewayExporter {
    fn needs_decoded(&self) -> bool {
        false
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let mut progress = 0;
            self.export_resuming(batch, &mut progress).await
        })
    }

    fn export_resuming<'a>(
        &'a self,
        batch: &'a Telemetry,
        progress: &'a mut u64,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let Some(shared) = self.shared.upgrade() else {
                return self.gw.client.send(batch).await.map_err(|f| f.error);
            };
            let away =
                !self.gw.up.load(Ordering::Relaxed) || self.gw.gone.load(Ordering::Relaxed);
            if away {
                let state = shared.state.load_full();
                let others_up = state
                    .live_list
                    .iter()
                    .any(|&i| state.members.get(i).is_some_and(|m| m.gw.slot != self.gw.slot));
                if others_up {
                    return shared.reroute(&self.gw, &state, batch, progress).await;
                }
            }
            let result = self.gw.client.send(batch).await;
            shared.observe(&self.gw, &result);
            result.map_err(|f| f.error)
        })
    }
}

impl Exporter for Balancer {
    fn needs_decoded(&self) -> bool {
        false
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let state = self.shared.state.load_full();
            if state.members.is_empty() {
                // Nothing was handed on: the delivery layer retries the whole batch.
                return Err(ExportError::retryable(
                    "no gateway known yet (the resolver found no address)",
                ));
            }
            let parts = self.shared.route(&state, batch);
            let (tx, mut rx) = mpsc::channel::<()>(1);
            let waiter: Arc<dyn Held> = Arc::new(PartsDone(tx));
            let enqueues: Vec<_> = parts
                .into_iter()
                .filter_map(|(i, data, items)| {
                    let queue = state.members.get(i)?.queue.clone();
                    let env = Envelope {
                        data,
                        items,
                        lease: Lease::of(waiter.clone()),
                    };
                    Some(async move { queue.enqueue(env, Wait::Forever).await })
                })
                .collect();
            drop(waiter);
            // What a gateway queue refuses is counted there (`reason="queue_full"`).
            futures::future::join_all(enqueues).await;
            // Ends once every part's lease was released: delivered, or dropped and counted by
            // its gateway's queue.
            let _ = rx.recv().await;
            Ok(Delivered::ALL)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async move {
            self.shared.stop.cancel();
            {
                let _edit = self.shared.edit.lock().unwrap_or_else(|p| p.into_inner());
                self.shared.state.store(Arc::new(State::empty()));
            }
            let tasks = std::mem::take(
                &mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()),
            );
            for t in tasks {
                let _ = t.await;
            }
            Ok(())
        })
    }
}

/// Resolves `dns` now and every `interval`; the gateway set follows the addresses. A failed
/// lookup keeps the last set (and is logged when it starts failing and when it recovers).
async fn resolve_loop(shared: Weak<Shared>, dns: String, interval: Duration, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let found = tokio::net::lookup_host(dns.as_str()).await;
        let Some(s) = shared.upgrade() else { return };
        match found {
            Ok(addrs) => {
                let keys: BTreeSet<String> = addrs.map(|a| a.to_string()).collect();
                let keys: Vec<String> = keys.into_iter().collect();
                if failing {
                    tracing::info!(exporter = %s.name, name = %dns, "the gateway name resolves again");
                    failing = false;
                }
                let current: Vec<String> =
                    s.state.load().members.iter().map(|m| m.gw.key.clone()).collect();
                let mut sorted = current.clone();
                sorted.sort();
                if sorted != keys {
                    tracing::info!(exporter = %s.name, name = %dns, gateways = ?keys, "gateway set changed");
                    if let Err(e) = s.set_members(&keys) {
                        tracing::error!(exporter = %s.name, error = %e, "cannot use a resolved gateway");
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(exporter = %s.name, name = %dns, error = %e, "cannot resolve the gateway name; keeping the last gateway set");
                    failing = true;
                }
            }
        }
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::{QueueConfig, RetryConfig};

    fn keys(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("10.0.0.{i}:4317")).collect()
    }

    fn owners(shared: &Shared) -> Vec<String> {
        let state = shared.state.load();
        (0u64..20_000)
            .map(|k| {
                let i = state.live.owner(ring::hash(&k.to_le_bytes())).unwrap();
                state.members[i].gw.key.clone()
            })
            .collect()
    }

    /// The resolver's path: a new address set published with `set_members` (no DNS server can
    /// give several addresses for one name on a test machine without editing its hosts file).
    #[tokio::test]
    async fn a_changed_address_set_moves_only_the_share_of_the_gateway_that_came_or_went() {
        let cfg: OtlpExporterConfig =
            toml::from_str(&format!("endpoints = {:?}", keys(3))).unwrap();
        let metrics = Metrics::new();
        let delivery = DeliveryConfig {
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
            max_concurrency: 2,
            storage_dir: None,
        };
        let ctx = ExporterContext {
            name: "lb",
            metrics: &metrics,
            delivery: &delivery,
        };
        let b = Balancer::start(&cfg, &ctx).unwrap();
        let before = owners(&b.shared);

        b.shared.set_members(&keys(4)).unwrap();
        let after = owners(&b.shared);
        let moved: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        assert!(moved.iter().all(|&i| after[i] == "10.0.0.4:4317"), "keys moved only to the new gateway");
        let share = moved.len() as f64 / before.len() as f64;
        assert!((0.18..0.32).contains(&share), "moved {share}, about 1/4 expected");

        // 10.0.0.2 leaves: only its keys move, and it is marked gone (its queue drains elsewhere).
        let left: Vec<String> = keys(4).into_iter().filter(|k| k != "10.0.0.2:4317").collect();
        let gone = b.shared.state.load().members[1].gw.clone();
        b.shared.set_members(&left).unwrap();
        let last = owners(&b.shared);
        for i in 0..after.len() {
            if after[i] != "10.0.0.2:4317" {
                assert_eq!(after[i], last[i]);
            } else {
                assert_ne!(last[i], "10.0.0.2:4317");
            }
        }
        assert!(gone.gone.load(Ordering::Relaxed));
        assert_eq!(metrics.endpoint_up("lb", "10.0.0.2:4317").get(), 0);
        assert_eq!(metrics.endpoint_up("lb", "10.0.0.4:4317").get(), 1);
        b.shutdown().await.unwrap();
    }
}
