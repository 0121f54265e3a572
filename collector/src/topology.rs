//! Builds the running graph from a validated config and tears it down in order:
//! receivers stop accepting → pipelines flush → exporters drain, within the shutdown deadline.

use crate::pipeline::{Pipeline, Step};
use anyhow::{Context, Result};
use serde_json::json;
use sluice_config::{Config, ExporterConfig, ProcessorConfig, ReceiverConfig, Signal};
use sluice_core::pipeline::PIPELINE_CHANNEL_REQUESTS;
use sluice_core::{
    spawn_exporter, Coalesce, DropReason, Exporter, ExporterQueue, LoadSignal, Metrics, PerSignal,
    PipelineInput, PipelineSender, Processor,
};
use sluice_exporters::{
    BlackholeExporter, ClickhouseExporter, FileExporter, KafkaExporter, OtlpExporter,
};
use sluice_processors::sampler::AdaptiveSampler;
use sluice_processors::{AttributesProcessor, Batcher};
use sluice_receivers::{OtlpReceiver, PprofReceiver};

/// A receiver with its sockets bound, not yet serving.
enum Bound {
    Otlp(OtlpReceiver),
    Pprof(PprofReceiver),
}
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running topology.
pub struct Topology {
    receivers: Vec<(
        String,
        JoinHandle<Result<(), sluice_receivers::otlp::OtlpError>>,
    )>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<(String, JoinHandle<()>)>,
    receiver_shutdown: CancellationToken,
    /// What `/status` and shutdown accounting read.
    status: Arc<StatusInfo>,
    metrics: Metrics,
}

/// What `/status` reports about the configured graph.
pub struct StatusInfo {
    config: serde_json::Value,
    exporters: Vec<(String, Arc<LoadSignal>)>,
    samplers: Vec<Arc<AdaptiveSampler>>,
    metrics: Metrics,
    pipelines: Vec<(String, Vec<Signal>)>,
    exporter_names: Vec<String>,
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
        let samplers: Vec<_> = self.samplers.iter().map(|s| s.status()).collect();
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
        })
    }

    /// Items still counted in pipeline and exporter queues, by component and signal.
    fn still_queued(&self) -> Vec<(String, Signal, u64)> {
        let gauge =
            |g: prometheus_client::metrics::gauge::Gauge| u64::try_from(g.get()).unwrap_or(0);
        let pipelines = self.pipelines.iter().flat_map(|(name, signals)| {
            signals.iter().map(|s| {
                (
                    name.clone(),
                    *s,
                    gauge(self.metrics.pipeline_queue(name, *s)),
                )
            })
        });
        let exporters = self.exporter_names.iter().flat_map(|name| {
            Signal::ALL.map(|s| (name.clone(), s, gauge(self.metrics.exporter_queue(name, s))))
        });
        pipelines
            .chain(exporters)
            .filter(|(_, _, n)| *n > 0)
            .collect()
    }
}

fn build_exporter(name: &str, cfg: &ExporterConfig) -> Result<Arc<dyn Exporter>> {
    Ok(match cfg {
        ExporterConfig::File(c) => {
            Arc::new(FileExporter::new(c).with_context(|| {
                format!("exporter {name}: cannot create directory {:?}", c.path)
            })?)
        }
        ExporterConfig::Blackhole(c) => Arc::new(BlackholeExporter::new(c)),
        ExporterConfig::Clickhouse(c) => Arc::new(ClickhouseExporter::new(c)),
        ExporterConfig::Kafka(c) => {
            Arc::new(KafkaExporter::new(c).with_context(|| format!("exporter {name}"))?)
        }
        ExporterConfig::Otlp(c) => {
            Arc::new(OtlpExporter::new(c).with_context(|| format!("exporter {name}"))?)
        }
    })
}

fn used<'a>(
    cfg: &'a Config,
    pick: impl Fn(&'a sluice_config::PipelineConfig) -> &'a Vec<String>,
) -> BTreeSet<&'a str> {
    cfg.pipelines
        .values()
        .flat_map(|p| pick(p).iter().map(String::as_str))
        .collect()
}

impl Topology {
    /// Binds every socket and starts every task; fails without leaving anything running.
    pub async fn start(cfg: &Config, metrics: Metrics) -> Result<Self> {
        // Exporters first, so pipelines have somewhere to send.
        let used_exporters = used(cfg, |p| &p.exporters);
        let mut queues: BTreeMap<&str, ExporterQueue> = BTreeMap::new();
        let mut exporters = Vec::new();
        for (name, ecfg) in &cfg.exporters {
            if !used_exporters.contains(name.as_str()) {
                tracing::warn!(exporter = %name, "exporter is not used by any pipeline; not started");
                continue;
            }
            let exp = crate::self_telemetry::traced(name, build_exporter(name, ecfg)?);
            let (q, task) = spawn_exporter(
                name,
                exp,
                ecfg.queue(),
                ecfg.retry(),
                ecfg.max_concurrency(),
                ecfg.coalesce().map(|(min_items, max_delay)| Coalesce {
                    min_items,
                    max_delay,
                }),
                &metrics,
            );
            queues.insert(name, q);
            exporters.push((name.clone(), task));
        }

        let used_processors = used(cfg, |p| &p.processors);
        let mut procs: BTreeMap<&str, Arc<dyn Processor>> = BTreeMap::new();
        let mut samplers = Vec::new();
        for (name, pcfg) in &cfg.processors {
            if !used_processors.contains(name.as_str()) {
                tracing::warn!(processor = %name, "processor is not used by any pipeline");
            }
            match pcfg {
                ProcessorConfig::Attributes(a) => {
                    procs.insert(name, Arc::new(AttributesProcessor::new(a)));
                }
                ProcessorConfig::AdaptiveSampler(c) => {
                    // The sampler watches every exporter downstream of every pipeline it is in.
                    let downstream: BTreeSet<&str> = cfg
                        .pipelines
                        .values()
                        .filter(|p| p.processors.contains(name))
                        .flat_map(|p| p.exporters.iter().map(String::as_str))
                        .collect();
                    let loads = downstream
                        .into_iter()
                        .filter_map(|e| queues.get(e).map(|q| (e.to_owned(), q.load_signal())))
                        .collect();
                    let sampler = Arc::new(AdaptiveSampler::new(name, c, &metrics));
                    // A fixed sampler needs the loop only to measure per-service rates for floors.
                    if c.mode != sluice_config::SamplerMode::Fixed || c.per_service_floor.is_some()
                    {
                        sampler.spawn_control(loads, &metrics);
                    }
                    samplers.push(sampler.clone());
                    procs.insert(name, sampler);
                }
                ProcessorConfig::Batch(_) => {}
            }
        }

        let mut inputs: BTreeMap<&str, PipelineInput> = BTreeMap::new();
        let mut pipelines = Vec::new();
        let mut pipeline_info = Vec::new();
        for (pname, p) in &cfg.pipelines {
            let (tx, rx) = mpsc::channel(PIPELINE_CHANNEL_REQUESTS);
            let queued = PerSignal::new(|s| metrics.pipeline_queue(pname, s));
            let (mut before, mut batcher, mut after) = (Vec::new(), None, Vec::new());
            for proc_name in &p.processors {
                match &cfg.processors[proc_name] {
                    ProcessorConfig::Batch(b) => batcher = Some(Batcher::new(b)),
                    _ => {
                        let step =
                            Step::new(proc_name, procs[proc_name.as_str()].clone(), &metrics);
                        if batcher.is_some() {
                            after.push(step)
                        } else {
                            before.push(step)
                        }
                    }
                }
            }
            let sender = PipelineSender::new(pname.clone(), tx, queued.clone());
            for r in &p.receivers {
                let input = inputs.entry(r.as_str()).or_default();
                for s in &p.signals {
                    input.add(*s, sender.clone());
                }
            }
            drop(sender);
            let pipeline = Pipeline {
                name: pname.clone(),
                rx,
                before,
                batcher,
                after,
                exporters: p
                    .exporters
                    .iter()
                    .map(|e| queues[e.as_str()].clone())
                    .collect(),
                queued,
            };
            pipelines.push(tokio::spawn(pipeline.run()));
            pipeline_info.push((pname.clone(), p.signals.clone()));
        }

        let status = Arc::new(StatusInfo {
            config: config_summary(cfg),
            exporters: queues
                .iter()
                .map(|(name, q)| ((*name).to_owned(), q.load_signal()))
                .collect(),
            samplers,
            metrics: metrics.clone(),
            pipelines: pipeline_info,
            exporter_names: exporters.iter().map(|(name, _)| name.clone()).collect(),
        });

        let receiver_shutdown = CancellationToken::new();
        let mut bound = Vec::new();
        for (name, rcfg) in &cfg.receivers {
            let Some(input) = inputs.remove(name.as_str()) else {
                tracing::warn!(receiver = %name, "receiver is not used by any pipeline; not started");
                continue;
            };
            match rcfg {
                ReceiverConfig::Otlp(o) => bound.push((
                    name.clone(),
                    Bound::Otlp(OtlpReceiver::bind(name, o, input, &metrics).await?),
                )),
                ReceiverConfig::Pprof(p) => bound.push((
                    name.clone(),
                    Bound::Pprof(PprofReceiver::bind(name, p, input, &metrics).await?),
                )),
            }
        }
        // Everything is bound: only now start serving, so a failed start leaves nothing behind.
        let receivers = bound
            .into_iter()
            .map(|(name, r)| {
                let stop = receiver_shutdown.clone();
                let task = match r {
                    Bound::Otlp(r) => tokio::spawn(r.run(stop)),
                    Bound::Pprof(r) => tokio::spawn(r.run(stop)),
                };
                (name, task)
            })
            .collect();

        Ok(Self {
            receivers,
            pipelines,
            exporters,
            receiver_shutdown,
            status,
            metrics,
        })
    }

    /// `/status` data.
    pub fn status(&self) -> Arc<StatusInfo> {
        self.status.clone()
    }

    /// Waits until a receiver stops on its own (an error) — normally never.
    pub async fn receiver_failed(&mut self) -> Result<()> {
        if self.receivers.is_empty() {
            return std::future::pending().await;
        }
        let (res, idx, _) =
            futures::future::select_all(self.receivers.iter_mut().map(|(_, h)| h)).await;
        let (name, _) = self.receivers.remove(idx);
        match res {
            Ok(Ok(())) => anyhow::bail!("receiver {name} stopped unexpectedly"),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => anyhow::bail!("receiver {name} crashed: {e}"),
        }
    }

    /// Graceful shutdown; returns the number of items that could not be delivered in time.
    pub async fn shutdown(self, deadline: std::time::Duration) -> u64 {
        let Self {
            receivers,
            pipelines,
            exporters,
            receiver_shutdown,
            status,
            metrics,
        } = self;
        let until = tokio::time::Instant::now() + deadline;
        tracing::info!("shutting down: receivers stop accepting");
        receiver_shutdown.cancel();
        for (name, h) in receivers {
            match tokio::time::timeout_at(until, h).await {
                Ok(Ok(Err(e))) => {
                    tracing::error!(receiver = %name, error = %e, "receiver failed during shutdown")
                }
                Ok(Err(e)) => {
                    tracing::error!(receiver = %name, error = %e, "receiver task crashed")
                }
                Err(_) => {
                    tracing::error!(receiver = %name, "receiver did not stop before the shutdown deadline")
                }
                Ok(Ok(Ok(()))) => {}
            }
        }
        tracing::info!("flushing pipelines and exporter queues");
        let mut lost_tasks = false;
        for h in pipelines {
            if tokio::time::timeout_at(until, h).await.is_err() {
                lost_tasks = true;
            }
        }
        for (name, h) in exporters {
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
        for (component, signal, n) in status.still_queued() {
            metrics
                .dropped(&component, signal, DropReason::ShutdownTimeout)
                .inc_by(n);
            lost += n;
        }
        tracing::error!(
            items = lost,
            "shutdown deadline passed; undelivered items dropped"
        );
        lost
    }
}

fn config_summary(cfg: &Config) -> serde_json::Value {
    let kinds = |m: BTreeMap<&String, &'static str>| -> serde_json::Value {
        m.into_iter()
            .map(|(k, v)| (k.clone(), json!({"type": v})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "receivers": kinds(cfg.receivers.iter().map(|(k, v)| (k, v.kind())).collect()),
        "processors": kinds(cfg.processors.iter().map(|(k, v)| (k, v.kind())).collect()),
        "exporters": kinds(cfg.exporters.iter().map(|(k, v)| (k, v.kind())).collect()),
        "pipelines": cfg.pipelines.iter().map(|(k, p)| (k.clone(), json!({
            "signals": p.signals, "receivers": p.receivers, "processors": p.processors, "exporters": p.exporters,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}
