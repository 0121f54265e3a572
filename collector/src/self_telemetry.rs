//! Sluice's own telemetry over OTLP (`[service.telemetry]`), with the OpenTelemetry SDK:
//!
//! - **Metrics**: one observable instrument per family of the self-metrics registry, named exactly
//!   as `/metrics` names its samples (counters keep their `_total`), whose callbacks read the very
//!   registry `/metrics` renders — one set of books, exported every `interval` (cumulative).
//! - **Logs**: the `tracing` events, through `opentelemetry-appender-tracing`.
//! - **Spans**: an export that fails or takes longer than `slow_export` becomes a client span
//!   (`export EXPORTER`, status error with the message); reloads can record one with
//!   [`record_reload`].
//!
//! **No feedback loop.** The telemetry may point at this Sluice's own OTLP receiver, and then
//! flows through its pipelines like any data; it can never amplify itself because:
//! 1. it leaves through the SDK's own OTLP exporters, outside the pipelines, so exporting it never
//!    creates pipeline data, and a failure to export it is not an exporter failure of Sluice's;
//! 2. the log bridge drops every event of the SDK, its transports (`opentelemetry*`, `tonic`,
//!    `h2`, `hyper`, `reqwest`) and of this module, so its own export errors are only printed to
//!    stderr, never sent as log records that could fail to export and log again;
//! 3. each stream is bounded: metrics are one batch per interval whatever happens, logs and spans
//!    go through the SDK's batch processors with bounded queues that drop (never block) when full,
//!    and Sluice's own failure logs are rate-limited — so data it receives from itself adds at most
//!    a bounded number of records per interval, not a growing one.

use anyhow::{Context, Result};
use opentelemetry::metrics::Meter;
use opentelemetry::trace::{Span, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use sluice_config::{TelemetryConfig, TelemetryProtocol};
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Metrics, Telemetry};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::prom_text::{self, Kind, Sample};

/// Targets whose events never become OTLP log records (see "No feedback loop" above).
const NOT_BRIDGED: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
opentelemetry_appender_tracing=off,tonic=off,h2=off,hyper=off,hyper_util=off,reqwest=off,tower=off,\
sluice::self_telemetry=off";

/// What the rest of the binary reaches: the meter for the registry's instruments and the tracer
/// for export and reload spans. Set once, when `[service.telemetry]` is configured.
struct Shared {
    meter: Meter,
    tracer: SdkTracer,
    slow_export: Duration,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The running SDK providers; flushed and stopped by [`SelfTelemetry::shutdown`].
pub struct SelfTelemetry {
    meters: SdkMeterProvider,
    logs: SdkLoggerProvider,
    traces: SdkTracerProvider,
    log_level: String,
}

fn endpoint(cfg: &TelemetryConfig, path: &str) -> String {
    match cfg.protocol {
        TelemetryProtocol::Grpc => cfg.endpoint.clone(),
        TelemetryProtocol::Http => format!("{}{path}", cfg.endpoint.trim_end_matches('/')),
    }
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the providers; call inside the tokio runtime (the gRPC transport spawns onto it).
pub fn start(cfg: &TelemetryConfig) -> Result<SelfTelemetry> {
    let mut resource = Resource::builder()
        .with_service_name("sluice")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (k, v) in &cfg.resource {
        resource = resource.with_attribute(KeyValue::new(k.clone(), v.clone()));
    }
    let resource = resource.build();

    let metric_exporter = match cfg.protocol {
        TelemetryProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint(cfg, ""))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        TelemetryProtocol::Http => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint(cfg, "/v1/metrics"))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .context("service.telemetry: metrics exporter")?;
    let log_exporter = match cfg.protocol {
        TelemetryProtocol::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint(cfg, ""))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        TelemetryProtocol::Http => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_endpoint(endpoint(cfg, "/v1/logs"))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .context("service.telemetry: logs exporter")?;
    let span_exporter = match cfg.protocol {
        TelemetryProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint(cfg, ""))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        TelemetryProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint(cfg, "/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .context("service.telemetry: traces exporter")?;

    let meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(
            PeriodicReader::builder(metric_exporter)
                .with_interval(cfg.interval.0)
                .build(),
        )
        .build();
    let logs = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(log_exporter)
        .build();
    let traces = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(span_exporter)
        .build();
    let shared = Shared {
        meter: opentelemetry::metrics::MeterProvider::meter(&meters, "sluice"),
        tracer: traces.tracer("sluice"),
        slow_export: cfg.slow_export.0,
    };
    // A second start (tests, reload) keeps the first providers' handles: harmless.
    let _ = SHARED.set(shared);
    Ok(SelfTelemetry {
        meters,
        logs,
        traces,
        log_level: cfg.log_level.clone(),
    })
}

impl SelfTelemetry {
    /// Exports what is pending and stops; call while the runtime is still running.
    pub fn shutdown(self) {
        for (what, r) in [
            ("metrics", self.meters.shutdown()),
            ("traces", self.traces.shutdown()),
            ("logs", self.logs.shutdown()),
        ] {
            if let Err(e) = r {
                tracing::warn!(target: "sluice::self_telemetry", "own {what} not flushed at shutdown: {e}");
            }
        }
    }
}

/// Installs the `tracing` subscriber: stderr with `level` (or `RUST_LOG`), plus the OTLP log
/// bridge when own telemetry runs.
pub fn init_logging(level: &str, telemetry: Option<&SelfTelemetry>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let bridge = telemetry.map(|t| {
        let filter = EnvFilter::try_new(format!("{},{NOT_BRIDGED}", t.log_level))
            .unwrap_or_else(|_| EnvFilter::new(format!("info,{NOT_BRIDGED}")));
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&t.logs)
            .with_filter(filter)
    });
    tracing_subscriber::registry().with(fmt).with(bridge).init();
}

/// One parse of the registry per collection, shared by every instrument's callback.
struct Snapshot {
    metrics: Metrics,
    last: Mutex<(Option<Instant>, Arc<Vec<Sample>>)>,
}

impl Snapshot {
    fn samples(&self) -> Arc<Vec<Sample>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = last
            .0
            .is_some_and(|t| t.elapsed() < Duration::from_millis(50));
        if !fresh {
            *last = (
                Some(Instant::now()),
                Arc::new(prom_text::parse(&self.metrics.render())),
            );
        }
        last.1.clone()
    }
}

fn attributes(s: &Sample) -> Vec<KeyValue> {
    s.labels
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

/// How often [`watch`] looks for families that appeared (the registry only lists a family once
/// it has a series, e.g. the first refusal with a new reason).
const FAMILY_CHECK: Duration = Duration::from_millis(500);

/// Registers one observable instrument per self-metric family, reading `metrics` (the registry
/// `/metrics` renders) at each collection, and keeps registering families as they appear.
/// No-op when own telemetry is off. Call inside the runtime.
pub fn watch(metrics: &Metrics) {
    let Some(shared) = SHARED.get() else {
        return;
    };
    let snapshot = Arc::new(Snapshot {
        metrics: metrics.clone(),
        last: Mutex::new((None, Arc::new(Vec::new()))),
    });
    tokio::spawn(async move {
        let mut known = std::collections::HashSet::new();
        loop {
            for (name, kind, help) in prom_text::families(&snapshot.metrics.render()) {
                if known.insert(name.clone()) {
                    register(&shared.meter, &snapshot, name, kind, help);
                }
            }
            tokio::time::sleep(FAMILY_CHECK).await;
        }
    });
}

fn register(meter: &Meter, snapshot: &Arc<Snapshot>, name: String, kind: Kind, help: String) {
    let snap = snapshot.clone();
    let wanted = name.clone();
    match kind {
        Kind::Counter => {
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |obs| {
                    for s in snap.samples().iter().filter(|s| s.name == wanted) {
                        // Counters are whole numbers in the registry.
                        obs.observe(s.value as u64, &attributes(s));
                    }
                })
                .build();
        }
        Kind::Gauge | Kind::Other => {
            meter
                .f64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |obs| {
                    for s in snap.samples().iter().filter(|s| s.name == wanted) {
                        obs.observe(s.value, &attributes(s));
                    }
                })
                .build();
        }
    }
}

/// Wraps an exporter so failed and slow exports become spans; returns it unchanged when own
/// telemetry is off (nothing added to the hot path).
pub fn traced(name: &str, inner: Arc<dyn Exporter>) -> Arc<dyn Exporter> {
    match SHARED.get() {
        Some(shared) => Arc::new(TracedExporter {
            name: name.to_owned(),
            inner,
            slow: shared.slow_export,
        }),
        None => inner,
    }
}

struct TracedExporter {
    name: String,
    inner: Arc<dyn Exporter>,
    slow: Duration,
}

impl TracedExporter {
    fn record(
        &self,
        started: SystemTime,
        took: Duration,
        batch: &Telemetry,
        result: &Result<Delivered, ExportError>,
    ) {
        let Some(shared) = SHARED.get() else {
            return;
        };
        let mut attrs = vec![
            KeyValue::new("sluice.exporter", self.name.clone()),
            KeyValue::new("sluice.signal", batch.signal().as_str()),
            KeyValue::new(
                "sluice.items",
                i64::try_from(batch.item_count()).unwrap_or(i64::MAX),
            ),
            KeyValue::new(
                "sluice.duration_ms",
                i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
            ),
        ];
        if let Err(e) = result {
            attrs.push(KeyValue::new("error.type", error_type(e)));
            attrs.push(KeyValue::new("sluice.retryable", e.retryable));
            attrs.push(KeyValue::new("sluice.throttled", e.throttled));
        }
        let mut span = shared
            .tracer
            .span_builder(format!("export {}", self.name))
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .with_attributes(attrs)
            .start(&shared.tracer);
        match result {
            Err(e) => span.set_status(Status::error(e.message.clone())),
            Ok(_) => span.add_event(
                "slow export",
                vec![KeyValue::new(
                    "sluice.slow_export_ms",
                    i64::try_from(self.slow.as_millis()).unwrap_or(i64::MAX),
                )],
            ),
        }
        span.end_with_timestamp(started + took);
    }
}

fn error_type(e: &ExportError) -> &'static str {
    match (e.throttled, e.retryable) {
        (true, _) => "throttled",
        (false, true) => "retryable",
        (false, false) => "permanent",
    }
}

/// Every method forwards to the wrapped exporter (a method left to the trait's default would
/// silently change what the exporter does: batches not merged, a retry writing twice).
impl Exporter for TracedExporter {
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
            let started = SystemTime::now();
            let t0 = Instant::now();
            let result = self.inner.export_resuming(batch, progress).await;
            let took = t0.elapsed();
            if result.is_err() || took >= self.slow {
                self.record(started, took, batch, &result);
            }
            result
        })
    }

    fn needs_decoded(&self) -> bool {
        self.inner.needs_decoded()
    }

    fn coalesce(&self) -> Option<sluice_core::Coalesce> {
        self.inner.coalesce()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        self.inner.shutdown()
    }

    fn start(self: Arc<Self>) {
        self.inner.clone().start();
    }
}

/// Records a configuration reload as a span (`reload`, error status when it failed), for the
/// reload code to call; no-op when own telemetry is off.
pub fn record_reload(started: SystemTime, config_hash: &str, result: Result<(), &str>) {
    let Some(shared) = SHARED.get() else {
        return;
    };
    let mut span = shared
        .tracer
        .span_builder("reload")
        .with_kind(SpanKind::Internal)
        .with_start_time(started)
        .with_attributes([KeyValue::new("sluice.config_hash", config_hash.to_owned())])
        .start(&shared.tracer);
    if let Err(e) = result {
        span.set_status(Status::error(e.to_owned()));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Coalesce;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Answers each trait method differently from the trait's default.
    #[derive(Default)]
    struct Inner {
        started: AtomicBool,
    }

    impl Exporter for Inner {
        fn export<'a>(&'a self, _: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
            Box::pin(async { Err(ExportError::permanent("export instead of export_resuming")) })
        }

        fn export_resuming<'a>(
            &'a self,
            _: &'a Telemetry,
            progress: &'a mut u64,
        ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
            *progress |= 4;
            Box::pin(async { Ok(Delivered { rejected: 3 }) })
        }

        fn needs_decoded(&self) -> bool {
            false
        }

        fn coalesce(&self) -> Option<Coalesce> {
            Some(Coalesce {
                min_items: 7,
                max_bytes: 8,
                max_delay: Duration::from_secs(9),
            })
        }

        fn start(self: Arc<Self>) {
            self.started.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_traced_exporter_forwards_every_method() {
        let inner = Arc::new(Inner::default());
        let traced: Arc<dyn Exporter> = Arc::new(TracedExporter {
            name: "ch".into(),
            inner: inner.clone(),
            slow: Duration::from_secs(3600),
        });
        let batch = Telemetry::Traces(Default::default());
        let mut progress = 1;
        let done = traced.export_resuming(&batch, &mut progress).await;
        assert_eq!(done.map(|d| d.rejected).ok(), Some(3));
        assert_eq!(
            progress, 5,
            "the retry's progress reaches the exporter and comes back"
        );
        assert_eq!(
            traced.export(&batch).await.map(|d| d.rejected).ok(),
            Some(3)
        );
        assert!(!traced.needs_decoded());
        assert_eq!(
            traced.coalesce().map(|c| (c.min_items, c.max_bytes)),
            Some((7, 8))
        );
        traced.clone().start();
        assert!(inner.started.load(Ordering::SeqCst));
    }
}
