//! The blackhole exporter: accepts and forgets, optionally as slowly as a struggling backend.

pub mod config;

pub use config::BlackholeExporterConfig;
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use std::sync::Arc;
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Telemetry};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Discards data; `max_rate` and `latency` make it behave like a slow backend.
pub struct BlackholeExporter {
    max_rate: Option<f64>,
    latency: Option<Duration>,
    next_free: Mutex<Option<Instant>>,
}

impl BlackholeExporter {
    /// Builds it from settings.
    pub fn new(cfg: &BlackholeExporterConfig) -> Self {
        Self {
            max_rate: cfg.max_rate,
            latency: cfg.latency.map(|d| d.0),
            next_free: Mutex::new(None),
        }
    }
}

impl Exporter for BlackholeExporter {
    fn needs_decoded(&self) -> bool {
        false
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            if let Some(rate) = self.max_rate {
                // Pace like a backend that absorbs `rate` items/s: this batch is done when the
                // backend would have worked through everything before it plus this batch.
                let cost = Duration::from_secs_f64(batch.item_count() as f64 / rate);
                let done = {
                    let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
                    let start = next.map_or_else(Instant::now, |n| n.max(Instant::now()));
                    let done = start + cost;
                    *next = Some(done);
                    done
                };
                tokio::time::sleep_until(done).await;
            }
            if let Some(l) = self.latency {
                tokio::time::sleep(l).await;
            }
            Ok(Delivered::ALL)
        })
    }
}

impl ExporterKind for BlackholeExporterConfig {
    const TYPE: &'static str = "blackhole";

    fn validate(&self, problems: &mut Problems) {
        if let Some(r) = self.max_rate {
            if !(r.is_finite() && r > 0.0) {
                problems.at(
                    "max_rate",
                    format!("must be a positive number of items per second, got {r}"),
                );
            }
        }
    }

    fn build(&self, _ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(BlackholeExporter::new(self)))
    }
}
