//! The running graph, built from a [`Resolved`] configuration and changed in place by
//! [`Topology::apply`]: every component whose table did not change keeps running as it is
//! (receivers keep their sockets and connections, exporters their queues, processors their state);
//! new and changed ones are built first, and only when all of them built is anything swapped.
//! Receivers route through [`Routes`], swapped whole; a replaced pipeline drains when its last
//! sender is gone, and a replaced exporter starts exporting once its predecessor drained. Nothing
//! here knows any component kind: the registry and the traits in `sluice_core::component` do.

use crate::pipeline::Pipeline;
use anyhow::Result;
use arc_swap::ArcSwap;
use serde_json::json;
use sluice_config::{ComponentTable, PipelineConfig, Section, Signal};
use sluice_core::component::{
    Decoded, ExporterContext, ExporterEntry, Listeners, ProcessorContext, ProcessorInstance,
    Receiver, ReceiverContext, ReceiverError, Resolved,
};
use sluice_core::pipeline::PIPELINE_CHANNEL_REQUESTS;
use sluice_core::{
    spawn_exporter, DownstreamLoad, DropReason, Exporter, ExporterQueue, LoadSignal, MemoryBudget,
    Metrics, PerSignal, PipelineInput, PipelineSender, Routes,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A receiver that stopped by itself (an error, or an end nobody asked for).
pub type ReceiverFailure = (String, String);

struct RunningExporter {
    queue: ExporterQueue,
    task: JoinHandle<()>,
}

struct RunningProcessor {
    instance: Arc<dyn ProcessorInstance>,
    downstream: DownstreamLoad,
}

struct RunningPipeline {
    def: PipelineConfig,
    sender: PipelineSender,
    task: JoinHandle<()>,
}

struct RunningReceiver {
    routes: Routes,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Tasks of replaced or removed components that are still finishing their work.
#[derive(Default)]
struct Retired {
    receivers: Vec<(String, JoinHandle<()>)>,
    pipelines: Vec<(String, JoinHandle<()>)>,
    exporters: Vec<(String, JoinHandle<()>)>,
}

impl Retired {
    fn prune(&mut self) {
        for list in [
            &mut self.receivers,
            &mut self.pipelines,
            &mut self.exporters,
        ] {
            list.retain(|(_, h)| !h.is_finished());
        }
    }
}

/// What changed in one [`Topology::apply`].
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Changes {
    /// Components built anew (added or changed), as `section.name`.
    pub built: Vec<String>,
    /// Components stopped (removed or changed).
    pub stopped: Vec<String>,
    /// Pipelines rebuilt.
    pub pipelines: Vec<String>,
}

/// The running graph.
pub struct Topology {
    metrics: Metrics,
    /// The memory budget every receiver charges; one for the process, its levels set by each apply.
    budget: Arc<MemoryBudget>,
    current: Option<Resolved>,
    listeners: Listeners,
    exporters: BTreeMap<String, RunningExporter>,
    processors: BTreeMap<String, RunningProcessor>,
    pipelines: BTreeMap<String, RunningPipeline>,
    receivers: BTreeMap<String, RunningReceiver>,
    retired: Retired,
    failures: mpsc::UnboundedSender<ReceiverFailure>,
}

/// What `/status` reports about the running graph, rebuilt after every reload.
pub struct StatusInfo {
    config: serde_json::Value,
    exporters: Vec<(String, Arc<LoadSignal>)>,
    processors: Vec<Arc<dyn ProcessorInstance>>,
    metrics: Metrics,
    pipelines: Vec<(String, Vec<Signal>)>,
    /// The last reload, if any.
    pub last_reload: Option<serde_json::Value>,
}

impl StatusInfo {
    /// JSON for `/status`.
    pub fn to_json(&self, state: &str) -> serde_json::Value {
        let exporters: Vec<_> = self
            .exporters
            .iter()
            .map(|(name, l)| {
                json!({
                    "name": name,
                    "queue_items": l.queue_items(),
                    "queue_capacity": l.queue_capacity(),
                    "load": l.load(),
                    "throttled": l.throttled(),
                    "drain_rate": l.drain_rate(),
                    "in_flight": l.in_flight(),
                    "concurrency_limit": l.concurrency_limit(),
                })
            })
            .collect();
        let samplers: Vec<_> = self.processors.iter().filter_map(|p| p.status()).collect();
        let pipelines: Vec<_> = self
            .pipelines
            .iter()
            .map(|(name, signals)| {
                let queued: i64 = signals
                    .iter()
                    .map(|s| self.metrics.pipeline_queue(name, *s).get())
                    .sum();
                json!({"name": name, "queued_items": queued})
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "state": state,
            "config": self.config,
            "pipelines": pipelines,
            "exporters": exporters,
            "samplers": samplers,
            "last_reload": self.last_reload,
        })
    }
}

fn used(r: &Resolved, section: Section) -> BTreeSet<&str> {
    r.config
        .pipelines
        .values()
        .flat_map(|p| p.names(section).iter().map(String::as_str))
        .collect()
}

/// A component a reload keeps running, or built anew but not started yet.
enum Fresh<T> {
    Keep,
    New(T),
}

/// A new exporter: the writer and its settings.
type NewExporter = (Arc<dyn Exporter>, Decoded<ExporterEntry>);
/// A new receiver: bound, not serving, and the routes it will send through.
type NewReceiver = (Box<dyn Receiver>, Routes);

impl Topology {
    /// An empty topology; [`Topology::apply`] builds the first graph.
    pub fn new(metrics: Metrics, failures: mpsc::UnboundedSender<ReceiverFailure>) -> Self {
        let budget = MemoryBudget::new(usize::MAX, usize::MAX, &metrics);
        budget.watch_resident(std::time::Duration::from_millis(50));
        Self {
            budget,
            metrics,
            current: None,
            listeners: Listeners::default(),
            exporters: BTreeMap::new(),
            processors: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            receivers: BTreeMap::new(),
            retired: Retired::default(),
            failures,
        }
    }

    /// Changes the running graph into `next`. Every new or changed component is built (sockets
    /// bound, clients created) before anything running is touched; on error nothing changed.
    pub fn apply(&mut self, next: Resolved) -> Result<Changes> {
        let mut changes = Changes::default();
        let old = self.current.take();
        let same = |section: Section, name: &str, table: &ComponentTable| {
            old.as_ref()
                .and_then(|o| o.config.section(section).get(name))
                .is_some_and(|t| t == table)
        };
        let (soft, hard, resident) =
            sluice_core::memory::levels(next.config.service.memory_limit.map(|b| b.as_usize()));
        self.budget.set_levels(soft, hard);
        self.budget.set_resident_limit(resident);
        let result = self.build_and_swap(&next, &same, &mut changes);
        match result {
            Ok(()) => {
                self.current = Some(next);
                self.retired.prune();
                Ok(changes)
            }
            Err(e) => {
                self.current = old;
                Err(e)
            }
        }
    }

    fn build_and_swap(
        &mut self,
        next: &Resolved,
        same: &dyn Fn(Section, &str, &ComponentTable) -> bool,
        changes: &mut Changes,
    ) -> Result<()> {
        // 1. Build everything new; nothing running is touched yet.
        let used_exporters = used(next, Section::Exporters);
        let mut exporters: BTreeMap<String, Fresh<NewExporter>> = BTreeMap::new();
        for (name, dec) in &next.exporters {
            if !used_exporters.contains(name.as_str()) {
                tracing::warn!(exporter = %name, "exporter is not used by any pipeline; not started");
                continue;
            }
            if same(Section::Exporters, name, &dec.table) && self.exporters.contains_key(name) {
                exporters.insert(name.clone(), Fresh::Keep);
                continue;
            }
            let ctx = ExporterContext {
                name,
                metrics: &self.metrics,
                delivery: &dec.spec.delivery,
            };
            let built = dec
                .spec
                .spec
                .build(&ctx)
                .map_err(|m| anyhow::anyhow!("exporter {name}: {m}"))?;
            let built = crate::self_telemetry::traced(name, built);
            exporters.insert(name.clone(), Fresh::New((built, dec.clone())));
        }
        let used_processors = used(next, Section::Processors);
        let mut processors: BTreeMap<String, Fresh<RunningProcessor>> = BTreeMap::new();
        for (name, dec) in &next.processors {
            if !used_processors.contains(name.as_str()) {
                tracing::warn!(processor = %name, "processor is not used by any pipeline");
                continue;
            }
            if same(Section::Processors, name, &dec.table) && self.processors.contains_key(name) {
                processors.insert(name.clone(), Fresh::Keep);
                continue;
            }
            let downstream = DownstreamLoad::default();
            let ctx = ProcessorContext {
                name,
                metrics: &self.metrics,
                downstream: downstream.clone(),
            };
            let instance = dec
                .spec
                .build(&ctx)
                .map_err(|m| anyhow::anyhow!("processor {name}: {m}"))?;
            processors.insert(
                name.clone(),
                Fresh::New(RunningProcessor {
                    instance,
                    downstream,
                }),
            );
        }
        let used_receivers = used(next, Section::Receivers);
        let mut listeners = Listeners::default();
        listeners
            .inherit(&self.listeners)
            .map_err(|e| anyhow::anyhow!("cannot share a listening socket: {e}"))?;
        let mut receivers: BTreeMap<String, Fresh<NewReceiver>> = BTreeMap::new();
        for (name, dec) in &next.receivers {
            if !used_receivers.contains(name.as_str()) {
                tracing::warn!(receiver = %name, "receiver is not used by any pipeline; not started");
                continue;
            }
            if same(Section::Receivers, name, &dec.table) && self.receivers.contains_key(name) {
                receivers.insert(name.clone(), Fresh::Keep);
                continue;
            }
            let routes: Routes = Arc::new(ArcSwap::from_pointee(PipelineInput::default()));
            let mut ctx = ReceiverContext::new(
                name,
                routes.clone(),
                &self.metrics,
                self.budget.clone(),
                &mut listeners,
            );
            let built = dec
                .spec
                .build(&mut ctx)
                .map_err(|m| anyhow::anyhow!("receiver {name}: {m}"))?;
            receivers.insert(name.clone(), Fresh::New((built, routes)));
        }

        // 2. Swap. Exporters first, so pipelines have somewhere to send.
        let mut old_exporters = std::mem::take(&mut self.exporters);
        for (name, fresh) in exporters {
            match fresh {
                Fresh::Keep => {
                    if let Some(e) = old_exporters.remove(&name) {
                        self.exporters.insert(name, e);
                    }
                }
                Fresh::New((exporter, dec)) => {
                    // A changed exporter exports only once its predecessor drained.
                    let after = old_exporters.remove(&name).map(|old| {
                        changes.stopped.push(format!("exporters.{name}"));
                        old.task
                    });
                    let (queue, task) =
                        spawn_exporter(&name, exporter, &dec.spec.delivery, after, &self.metrics);
                    changes.built.push(format!("exporters.{name}"));
                    self.exporters.insert(name, RunningExporter { queue, task });
                }
            }
        }
        for (name, old) in old_exporters {
            // Its queue closes once the pipelines that still hold it drained.
            changes.stopped.push(format!("exporters.{name}"));
            self.retired.exporters.push((name, old.task));
        }

        let mut old_processors = std::mem::take(&mut self.processors);
        for (name, fresh) in processors {
            let p = match fresh {
                Fresh::Keep => match old_processors.remove(&name) {
                    Some(p) => p,
                    None => continue,
                },
                Fresh::New(p) => {
                    if old_processors.remove(&name).is_some() {
                        changes.stopped.push(format!("processors.{name}"));
                    }
                    changes.built.push(format!("processors.{name}"));
                    p
                }
            };
            self.processors.insert(name, p);
        }
        for name in old_processors.into_keys() {
            changes.stopped.push(format!("processors.{name}"));
        }
        // Every processor sees the loads of the exporters downstream of it, as of now.
        for (name, p) in &self.processors {
            let downstream: BTreeSet<&str> = next
                .config
                .pipelines
                .values()
                .filter(|pl| pl.processors.contains(name))
                .flat_map(|pl| pl.exporters.iter().map(String::as_str))
                .collect();
            p.downstream.set(
                downstream
                    .into_iter()
                    .filter_map(|e| {
                        self.exporters
                            .get(e)
                            .map(|x| (e.to_owned(), x.queue.load_signal()))
                    })
                    .collect(),
            );
        }

        // Pipelines: kept when neither their definition nor any component they use changed.
        let built: BTreeSet<String> = changes.built.iter().cloned().collect();
        let rebuilt = |section: &str, n: &str| built.contains(&format!("{section}.{n}"));
        let mut old_pipelines = std::mem::take(&mut self.pipelines);
        for (pname, def) in &next.config.pipelines {
            let keep = old_pipelines.get(pname).is_some_and(|old| {
                old.def == *def
                    && !def.processors.iter().any(|n| rebuilt("processors", n))
                    && !def.exporters.iter().any(|n| rebuilt("exporters", n))
            });
            if keep {
                if let Some(p) = old_pipelines.remove(pname) {
                    self.pipelines.insert(pname.clone(), p);
                }
                continue;
            }
            if let Some(old) = old_pipelines.remove(pname) {
                // Drains once the receivers' routes no longer hold its sender.
                self.retired.pipelines.push((pname.clone(), old.task));
            }
            changes.pipelines.push(pname.clone());
            let running = self.start_pipeline(pname, def);
            self.pipelines.insert(pname.clone(), running);
        }
        for (pname, old) in old_pipelines {
            changes.pipelines.push(pname.clone());
            self.retired.pipelines.push((pname, old.task));
        }

        // Receivers: new routes for everyone, then start the new ones and stop the old ones.
        let mut inputs: BTreeMap<&str, PipelineInput> = BTreeMap::new();
        for (pname, def) in &next.config.pipelines {
            let Some(p) = self.pipelines.get(pname) else {
                continue;
            };
            for r in &def.receivers {
                let input = inputs.entry(r.as_str()).or_default();
                for s in &def.signals {
                    input.add(*s, p.sender.clone());
                }
            }
        }
        let mut old_receivers = std::mem::take(&mut self.receivers);
        for (name, fresh) in receivers {
            let input = inputs.remove(name.as_str()).unwrap_or_default();
            match fresh {
                Fresh::Keep => {
                    if let Some(r) = old_receivers.remove(&name) {
                        r.routes.store(Arc::new(input));
                        self.receivers.insert(name, r);
                    }
                }
                Fresh::New((receiver, routes)) => {
                    if let Some(old) = old_receivers.remove(&name) {
                        changes.stopped.push(format!("receivers.{name}"));
                        old.stop.cancel();
                        self.retired.receivers.push((name.clone(), old.task));
                    }
                    changes.built.push(format!("receivers.{name}"));
                    routes.store(Arc::new(input));
                    let stop = CancellationToken::new();
                    let task = self.spawn_receiver(&name, receiver, stop.clone());
                    self.receivers
                        .insert(name, RunningReceiver { routes, stop, task });
                }
            }
        }
        for (name, old) in old_receivers {
            changes.stopped.push(format!("receivers.{name}"));
            old.stop.cancel();
            self.retired.receivers.push((name, old.task));
        }
        let addrs: Vec<_> = next
            .receivers
            .iter()
            .filter(|(n, _)| self.receivers.contains_key(*n))
            .flat_map(|(_, d)| d.spec.addresses().into_iter().map(|(_, a)| a))
            .collect();
        listeners.retain(&addrs);
        self.listeners = listeners;
        Ok(())
    }

    fn start_pipeline(&self, pname: &str, def: &PipelineConfig) -> RunningPipeline {
        let (tx, rx) = mpsc::channel(PIPELINE_CHANNEL_REQUESTS);
        let queued = PerSignal::new(|s| self.metrics.pipeline_queue(pname, s));
        let stages = def
            .processors
            .iter()
            .filter_map(|n| self.processors.get(n).map(|p| p.instance.stage()))
            .collect();
        let exporters = def
            .exporters
            .iter()
            .filter_map(|e| self.exporters.get(e).map(|x| x.queue.clone()))
            .collect();
        let pipeline = Pipeline {
            name: pname.to_owned(),
            rx,
            stages,
            exporters,
            queued: queued.clone(),
        };
        RunningPipeline {
            def: def.clone(),
            sender: PipelineSender::new(pname.to_owned(), tx, queued),
            task: tokio::spawn(pipeline.run()),
        }
    }

    fn spawn_receiver(
        &self,
        name: &str,
        receiver: Box<dyn Receiver>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let failures = self.failures.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let result: Result<(), ReceiverError> = receiver.run(stop.clone()).await;
            if stop.is_cancelled() {
                if let Err(e) = result {
                    tracing::error!(receiver = %name, error = %e, "receiver failed while stopping");
                }
                return;
            }
            let why = match result {
                Ok(()) => "stopped unexpectedly".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = failures.send((name, why));
        })
    }

    /// `/status` data for the graph running now.
    pub fn status(&self, last_reload: Option<serde_json::Value>) -> StatusInfo {
        StatusInfo {
            config: self
                .current
                .as_ref()
                .map(config_summary)
                .unwrap_or_default(),
            exporters: self
                .exporters
                .iter()
                .map(|(name, e)| (name.clone(), e.queue.load_signal()))
                .collect(),
            processors: self
                .processors
                .values()
                .map(|p| p.instance.clone())
                .collect(),
            metrics: self.metrics.clone(),
            pipelines: self
                .current
                .iter()
                .flat_map(|c| &c.config.pipelines)
                .map(|(n, p)| (n.clone(), p.signals.clone()))
                .collect(),
            last_reload,
        }
    }

    /// Graceful shutdown; returns the number of items that could not be delivered in time.
    pub async fn shutdown(self, deadline: std::time::Duration) -> u64 {
        let Self {
            metrics,
            current,
            receivers,
            pipelines,
            exporters,
            mut retired,
            processors,
            listeners,
            ..
        } = self;
        drop(processors);
        let until = tokio::time::Instant::now() + deadline;
        tracing::info!("shutting down: receivers stop accepting");
        let mut routes = Vec::new();
        for (name, r) in receivers {
            r.stop.cancel();
            routes.push(r.routes);
            retired.receivers.push((name, r.task));
        }
        // Receivers get half the grace period to finish the requests they are serving; a client
        // that stalls mid-request must not take the time the pipelines need to flush.
        let receivers_until = tokio::time::Instant::now() + deadline / 2;
        for (name, h) in retired.receivers {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(receivers_until, h).await.is_err() {
                tracing::error!(receiver = %name, "receiver did not stop in half the shutdown timeout; its connections are closed");
                abort.abort();
            }
        }
        drop(listeners);
        // Emptying the routes drops the last senders even where a connection still holds the
        // routes (a stalled client): the pipelines drain.
        for r in &routes {
            r.store(Arc::new(PipelineInput::default()));
        }
        drop(routes);
        tracing::info!("flushing pipelines and exporter queues");
        let mut lost_tasks = false;
        for (name, p) in pipelines {
            drop(p.sender);
            retired.pipelines.push((name, p.task));
        }
        for (_, h) in retired.pipelines {
            if tokio::time::timeout_at(until, h).await.is_err() {
                lost_tasks = true;
            }
        }
        for (name, e) in exporters {
            drop(e.queue);
            retired.exporters.push((name, e.task));
        }
        for (name, h) in retired.exporters {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(until, h).await.is_err() {
                tracing::error!(exporter = %name, "exporter did not drain before the shutdown deadline");
                abort.abort();
                lost_tasks = true;
            }
        }
        if !lost_tasks {
            return 0;
        }
        // Whatever is still counted as queued is lost: say so in the books.
        let mut lost = 0u64;
        if let Some(cfg) = current {
            for (component, signal, n) in still_queued(&metrics, &cfg) {
                metrics
                    .dropped(&component, signal, DropReason::ShutdownTimeout)
                    .inc_by(n);
                lost += n;
            }
        }
        tracing::error!(
            items = lost,
            "shutdown deadline passed; undelivered items dropped"
        );
        lost
    }
}

/// Items still counted in pipeline and exporter queues, by component and signal.
fn still_queued(metrics: &Metrics, cfg: &Resolved) -> Vec<(String, Signal, u64)> {
    let gauge = |g: prometheus_client::metrics::gauge::Gauge| u64::try_from(g.get()).unwrap_or(0);
    let pipelines = cfg.config.pipelines.iter().flat_map(|(name, p)| {
        p.signals
            .iter()
            .map(|s| (name.clone(), *s, gauge(metrics.pipeline_queue(name, *s))))
            .collect::<Vec<_>>()
    });
    let exporters = cfg.exporters.keys().flat_map(|name| {
        Signal::ALL.map(|s| (name.clone(), s, gauge(metrics.exporter_queue(name, s))))
    });
    pipelines
        .chain(exporters)
        .filter(|(_, _, n)| *n > 0)
        .collect()
}

fn config_summary(r: &Resolved) -> serde_json::Value {
    let kinds = |m: Vec<(&String, &'static str)>| -> serde_json::Value {
        m.into_iter()
            .map(|(k, v)| (k.clone(), json!({"type": v})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "receivers": kinds(r.receivers.iter().map(|(k, v)| (k, v.kind)).collect()),
        "processors": kinds(r.processors.iter().map(|(k, v)| (k, v.kind)).collect()),
        "exporters": kinds(r.exporters.iter().map(|(k, v)| (k, v.kind)).collect()),
        "pipelines": r.config.pipelines.iter().map(|(k, p)| (k.clone(), json!({
            "signals": p.signals, "receivers": p.receivers, "processors": p.processors, "exporters": p.exporters,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}
