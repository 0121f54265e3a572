//! `sluice`: the binary's edge — CLI, logging, signals, start-up, reloads and graceful shutdown.

mod admin;
mod diagnose;
mod pipeline;
mod prom_text;
#[cfg(test)]
mod registry_tests;
mod reload;
mod self_telemetry;
mod status_page;
mod top;
mod topology;
mod watch;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_config::{Config, ConfigErrors};
use sluice_core::component::{Registry, Resolved};
use sluice_core::Metrics;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
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
    /// Reload when the configuration file changes (also a Kubernetes ConfigMap's `..data` swap).
    /// SIGHUP and `POST /reload` on the admin server reload in any case.
    #[arg(long)]
    watch: bool,
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
    /// Diagnoses from stored telemetry (`memory-leak`: growing heap stacks in ClickHouse profiles).
    #[command(subcommand)]
    Diagnose(diagnose::Diagnose),
}

/// Every component kind this binary knows: one registration line per kind, in each crate.
fn registry() -> Registry {
    let mut r = Registry::default();
    sluice_receivers::register(&mut r);
    sluice_processors::register(&mut r);
    sluice_exporters::register(&mut r);
    r
}

/// Reads, parses and checks a configuration (the file, or the embedded default).
fn load(registry: &Registry, path: Option<&PathBuf>) -> Result<Resolved, ConfigErrors> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    };
    registry.resolve(cfg)
}

fn main() -> ExitCode {
    let thp = disable_transparent_huge_pages();
    let cli = Cli::parse();
    let registry = registry();
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::DefaultConfig => {
            print!("{}", sluice_config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Top { admin, interval } => {
            top::main(cli.config.as_deref(), admin.clone(), *interval)
        }
        Command::Diagnose(d) => diagnose::main(d),
        Command::Validate => match load(&registry, cli.config.as_ref()) {
            Ok(cfg) => {
                println!(
                    "configuration is valid: {} receiver(s), {} processor(s), {} exporter(s), {} pipeline(s)",
                    cfg.receivers.len(),
                    cfg.processors.len(),
                    cfg.exporters.len(),
                    cfg.config.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{} configuration error(s):\n{errs}", errs.0.len());
                ExitCode::from(2)
            }
        },
        Command::Run => {
            let cfg = match load(&registry, cli.config.as_ref()) {
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
            let telemetry = match cfg.config.service.telemetry.as_ref().map(|t| {
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
            self_telemetry::init_logging(&cfg.config.service.log_level, telemetry.as_ref());
            raise_open_files_limit();
            if let Some(e) = thp {
                tracing::warn!(error = %e, "cannot turn transparent huge pages off (prctl PR_SET_THP_DISABLE)");
            }
            let source = reload::Source {
                registry,
                path: cli.config.clone(),
            };
            let code = match rt.block_on(run(cfg, source, cli.watch)) {
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

/// Raises the soft open-files limit to the hard one (as Go programs do at start): every receiver
/// connection takes a descriptor and each listener allows `limits.max_connections` of them, while
/// the usual soft default is 1,024.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (now.current, now.maximum) else {
        return;
    };
    if soft >= hard {
        return;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = soft,
            to = hard,
            "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
        ),
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit (RLIMIT_NOFILE)")
        }
    }
}

/// Turns transparent huge pages off for the whole process as `main` starts: mimalloc returns freed
/// pages to the kernel after 10 ms, and where they were 2 MiB huge pages each refault zeroes 2 MiB
/// and holds it whole. On the ClickHouse bench 12 of 48 MiB resident were huge pages; off, peak RSS
/// fell 6–9 MiB in every bench row (BENCHMARKS.md, round 4). mimalloc is built with `no_thp` (it
/// never asks for them); this covers kernels whose THP mode is `always`. `MIMALLOC_ALLOW_THP` set
/// leaves the flag alone (huge pages again where the kernel's mode is `always`).
fn disable_transparent_huge_pages() -> Option<std::io::Error> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return None;
    }
    rustix::thread::disable_transparent_huge_pages(true)
        .err()
        .map(std::io::Error::from)
}

async fn run(cfg: Resolved, source: reload::Source, watch: bool) -> Result<()> {
    let metrics = Metrics::new();
    self_telemetry::watch(&metrics);
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let admin_addr = cfg.config.service.admin;
    let mut reloader = reload::Reloader::start(cfg, source, metrics.clone(), failures_tx)?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin_stop = CancellationToken::new();
    let (reload_tx, mut reload_requests) = mpsc::channel::<admin::ReloadRequest>(4);
    let admin_task = match admin_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr.0)
                .await
                .with_context(|| format!("service.admin: cannot listen on {addr}"))?;
            tracing::info!(%addr, "admin server listening");
            let app = admin::app(admin::Admin {
                metrics: metrics.clone(),
                status: reloader.status(),
                ready: ready.clone(),
                reload: reload_tx,
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
    let (watch_tx, mut watch_events) = mpsc::channel::<()>(1);
    let _watcher = match (watch, reloader.path()) {
        (true, Some(path)) => Some(watch::Watcher::start(path, watch_tx)?),
        (true, None) => {
            tracing::warn!("--watch needs --config FILE; the embedded default never changes");
            None
        }
        (false, _) => None,
    };
    let mut hangups = hangup_signal();
    ready.store(true, Ordering::Release);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "sluice started");

    let failure = loop {
        tokio::select! {
            _ = shutdown_signal() => break None,
            Some((name, why)) = failures.recv() => break Some(anyhow::anyhow!("receiver {name}: {why}")),
            Some(()) = hangups.recv() => {
                reloader.reload("SIGHUP");
            }
            Some(req) = reload_requests.recv() => {
                let outcome = reloader.reload("admin");
                let _ = req.reply.send(outcome);
            }
            Some(()) = watch_events.recv() => {
                reloader.reload("file watch");
            }
        }
    };
    ready.store(false, Ordering::Release);
    let timeout = reloader.shutdown_timeout();
    let lost = reloader.into_topology().shutdown(timeout).await;
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

/// SIGHUP as a stream of reload requests (never fires where there is no SIGHUP).
fn hangup_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /reload"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
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
