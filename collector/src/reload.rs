//! Reloads: read and check the configuration again, then change the running topology in place.
//! A configuration that does not parse, check or build is rejected whole; the running topology
//! keeps serving, and the failure is logged with file and line, counted and shown in `/status`.

use crate::topology::{Changes, ReceiverFailure, StatusInfo, Topology};
use anyhow::Result;
use arc_swap::ArcSwap;
use serde::Serialize;
use sluice_config::{Config, ServiceConfig};
use sluice_core::component::{Registry, Resolved};
use sluice_core::Metrics;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Where configurations come from.
pub struct Source {
    /// Every component kind the binary knows.
    pub registry: Registry,
    /// The file, or `None` for the embedded default.
    pub path: Option<PathBuf>,
}

impl Source {
    fn load(&self) -> Result<Resolved, sluice_config::ConfigErrors> {
        let cfg = match &self.path {
            Some(p) => Config::load(p)?,
            None => Config::embedded_default()?,
        };
        self.registry.resolve(cfg)
    }
}

/// What one reload did, for the log, `/status` and `POST /reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// When it finished (RFC 3339).
    pub time: String,
    /// What asked for it (SIGHUP, admin, file watch).
    pub trigger: String,
    /// `success` or `failure`.
    pub result: &'static str,
    /// Why it failed (every configuration error, with file and line).
    pub error: Option<String>,
    /// Fingerprint of the configuration running after it.
    pub config_hash: String,
    /// From the request to the new topology serving, in milliseconds.
    pub duration_ms: f64,
    /// What was rebuilt, stopped and re-wired.
    pub changes: Changes,
}

/// Owns the running topology and changes it on request.
pub struct Reloader {
    source: Source,
    topology: Topology,
    status: Arc<ArcSwap<StatusInfo>>,
    metrics: Metrics,
    service: ServiceConfig,
    hash: u64,
    last: Option<ReloadOutcome>,
}

fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

impl Reloader {
    /// Builds the first topology from `cfg`.
    pub fn start(
        cfg: Resolved,
        source: Source,
        metrics: Metrics,
        failures: mpsc::UnboundedSender<ReceiverFailure>,
    ) -> Result<Self> {
        let service = cfg.config.service.clone();
        let hash = cfg.config.hash();
        let mut topology = Topology::new(metrics.clone(), failures);
        topology.apply(cfg)?;
        let status = Arc::new(ArcSwap::from_pointee(topology.status(None)));
        tracing::info!(config_hash = %hex(hash), "topology started");
        Ok(Self {
            source,
            topology,
            status,
            metrics,
            service,
            hash,
            last: None,
        })
    }

    /// What `/status` reads; replaced after every reload.
    pub fn status(&self) -> Arc<ArcSwap<StatusInfo>> {
        self.status.clone()
    }

    /// The configuration file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.source.path.as_deref()
    }

    /// How long shutdown may take (as configured now).
    pub fn shutdown_timeout(&self) -> Duration {
        self.service.shutdown_timeout.0
    }

    /// The topology, for shutdown.
    pub fn into_topology(self) -> Topology {
        self.topology
    }

    /// Reads the configuration again and applies it; on any error the running topology stays.
    pub fn reload(&mut self, trigger: &str) -> ReloadOutcome {
        let started = Instant::now();
        let started_at = SystemTime::now();
        let result = self
            .source
            .load()
            .map_err(|errs| format!("{} configuration error(s):\n{errs}", errs.0.len()))
            .and_then(|next| {
                let service = next.config.service.clone();
                let hash = next.config.hash();
                self.topology
                    .apply(next)
                    .map(|changes| (changes, service, hash))
                    .map_err(|e| format!("{e:#}"))
            });
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        let (result, error, changes) = match result {
            Ok((changes, service, hash)) => {
                for (what, changed) in [
                    ("service.admin", service.admin != self.service.admin),
                    (
                        "service.log_level",
                        service.log_level != self.service.log_level,
                    ),
                ] {
                    if changed {
                        tracing::warn!(
                            key = what,
                            "{what} changed; it takes effect on the next restart"
                        );
                    }
                }
                self.service.shutdown_timeout = service.shutdown_timeout;
                self.hash = hash;
                tracing::info!(
                    trigger,
                    config_hash = %hex(hash),
                    duration_ms,
                    built = ?changes.built,
                    stopped = ?changes.stopped,
                    pipelines = ?changes.pipelines,
                    "configuration reloaded"
                );
                ("success", None, changes)
            }
            Err(e) => {
                tracing::error!(
                    trigger,
                    "configuration reload rejected; the running configuration stays:\n{e}"
                );
                ("failure", Some(e), Changes::default())
            }
        };
        self.metrics.config_reload(result).inc();
        crate::self_telemetry::record_reload(
            started_at,
            &hex(self.hash),
            error.as_deref().map_or(Ok(()), Err),
        );
        let outcome = ReloadOutcome {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            trigger: trigger.to_owned(),
            result,
            error,
            config_hash: hex(self.hash),
            duration_ms,
            changes,
        };
        self.last = Some(outcome.clone());
        let last = serde_json::to_value(&outcome).ok();
        self.status.store(Arc::new(self.topology.status(last)));
        outcome
    }
}
