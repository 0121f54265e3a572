//! `sluice`: the binary's edge — CLI, logging, signals, start-up and graceful shutdown.

mod admin;
mod pipeline;
mod prom_text;
mod self_telemetry;
mod status_page;
mod top;
mod topology;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_config::{Config, ConfigErrors};
use sluice_core::Metrics;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// glibc's allocator spent ~60% of the CPU in a decode-heavy profile (malloc_consolidate on
/// freeing whole batches of small strings); mimalloc's thread-local free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: an OpenTelemetry-compatible telemetry collector.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default runs: OTLP on 4317/4318 → ./sluice-data.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the collector (the default).
    Run,
    /// Check a configuration and exit: 0 when valid, 2 with every error (file:line: path: message).
    Validate,
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Live terminal view of a running Sluice (rates, queues, drops, samplers), read from its admin server.
    Top {
        /// Admin server (HOST:PORT); default: `service.admin` of --config, else 127.0.0.1:13133.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::DefaultConfig => {
            print!("{}", sluice_config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Top { admin, interval } => top::main(cli.config.as_deref(), admin, interval),
        Command::Validate => match load(cli.config.as_ref()) {
            Ok(cfg) => {
                println!(
                    "configuration is valid: {} receiver(s), {} processor(s), {} exporter(s), {} pipeline(s)",
                    cfg.receivers.len(),
                    cfg.processors.len(),
                    cfg.exporters.len(),
                    cfg.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{} configuration error(s):\n{errs}", errs.0.len());
                ExitCode::from(2)
            }
        },
        Command::Run => {
            let cfg = match load(cli.config.as_ref()) {
                Ok(cfg) => cfg,
                Err(errs) => {
                    eprintln!("{} configuration error(s):\n{errs}", errs.0.len());
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let telemetry = match cfg.service.telemetry.as_ref().map(|t| {
                let _in_runtime = rt.enter();
                self_telemetry::start(t)
            }) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    eprintln!("sluice: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            self_telemetry::init_logging(&cfg.service.log_level, telemetry.as_ref());
            let code = match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("sluice: {e:#}");
                    ExitCode::FAILURE
                }
            };
            if let Some(t) = telemetry {
                t.shutdown();
            }
            code
        }
    }
}

async fn run(cfg: Config) -> Result<()> {
    let metrics = Metrics::new();
    self_telemetry::watch(&metrics);
    let mut topo = topology::Topology::start(&cfg, metrics.clone()).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin_stop = CancellationToken::new();
    let admin_task = match cfg.service.admin {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr.0)
                .await
                .with_context(|| format!("service.admin: cannot listen on {addr}"))?;
            tracing::info!(%addr, "admin server listening");
            let app = admin::app(admin::Admin {
                metrics: metrics.clone(),
                status: topo.status(),
                ready: ready.clone(),
            });
            let stop = admin_stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    ready.store(true, Ordering::Release);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "sluice started");

    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        r = topo.receiver_failed() => r.err(),
    };
    ready.store(false, Ordering::Release);
    let lost = topo.shutdown(cfg.service.shutdown_timeout.0).await;
    admin_stop.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if lost > 0 {
        tracing::error!(
            items = lost,
            "shutdown lost items (see sluice_dropped_items_total{{reason=\"shutdown_timeout\"}})"
        );
    }
    tracing::info!("sluice stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
