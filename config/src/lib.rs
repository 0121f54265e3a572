//! Sluice configuration: TOML text to a typed, validated [`Config`], with errors that name the
//! file, the TOML path, the line and what was expected. No I/O beyond reading the file, no tokio,
//! so `sluice validate` and the running collector share exactly the same checks.

pub mod components;
pub mod error;
pub mod retention;
pub mod source;
mod tagged;
pub mod telemetry;
pub mod types;
mod validate;

pub use components::*;
pub use error::{ConfigError, ConfigErrors};
pub use retention::Retention;
pub use telemetry::{TelemetryConfig, TelemetryProtocol};
pub use types::{ByteSize, HumanDuration, ListenAddr};

use serde::{Deserialize, Serialize};
use source::{Seg, Source};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The configuration `sluice` runs with no `--config`: OTLP in, batched, to files in `./sluice-data`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The four OTLP signals; a pipeline lists the ones it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
    /// Profile samples.
    Profiles,
}

impl Signal {
    /// All signals, in a fixed order.
    pub const ALL: [Signal; 4] = [
        Signal::Traces,
        Signal::Metrics,
        Signal::Logs,
        Signal::Profiles,
    ];

    /// Lower-case name used in metrics labels and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }

    /// Position in [`Signal::ALL`], for per-signal arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub service: ServiceConfig,
    /// Named receivers.
    #[serde(default)]
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Named processors.
    #[serde(default)]
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// Named exporters.
    #[serde(default)]
    pub exporters: BTreeMap<String, ExporterConfig>,
    /// Named pipelines that connect them.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// `[service]`: the admin server, logging and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Admin server (`/healthz`, `/readyz`, `/metrics`, `/status`); absent = off.
    #[serde(default = "default_admin")]
    pub admin: Option<ListenAddr>,
    /// Log filter (`info`, `debug`, or a `tracing` filter such as `sluice=debug,info`).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How long shutdown may take to flush batches and queues before it gives up (and counts the loss).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// `[service.telemetry]`: own metrics, logs and spans over OTLP; absent = off.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            admin: default_admin(),
            log_level: default_log_level(),
            shutdown_timeout: default_shutdown_timeout(),
            telemetry: None,
        }
    }
}

fn default_admin() -> Option<ListenAddr> {
    Some(ListenAddr(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        13133,
    ))))
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// `[pipelines.NAME]`: receivers → processors (in order) → exporters, for the listed signals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Signals carried.
    pub signals: Vec<Signal>,
    /// Receiver names.
    pub receivers: Vec<String>,
    /// Processor names, applied in order.
    #[serde(default)]
    pub processors: Vec<String>,
    /// Exporter names; each gets its own queue (fan-out).
    pub exporters: Vec<String>,
}

impl Config {
    /// Reads, interpolates, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            path: None,
            line: None,
            column: None,
            message: format!("cannot read configuration file: {e}"),
        })?;
        Self::from_str_named(&name, &text, &|k| std::env::var(k).ok())
    }

    /// The embedded default configuration, validated like any other.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Self::from_str_named("<embedded default>", EMBEDDED_DEFAULT, &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses and validates configuration text; `file` names it in errors, `env` resolves `${VAR}`.
    pub fn from_str_named(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let source = Source::parse(file, text)?;
        let expanded = source.interpolate(env).map_err(ConfigErrors)?;
        let config = deserialize(&source, &expanded)?;
        validate::validate(&config, &source).map_err(ConfigErrors)?;
        Ok(config)
    }
}

fn deserialize(source: &Source, text: &str) -> Result<Config, ConfigError> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => return Err(from_toml_error(source, text, &[], e.message(), e.span())),
    };
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|err| {
        let mut path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let inner = err.into_inner();
        let mut msg = inner.message().to_owned();
        // Errors inside a component table carry their inner path (see `tagged`).
        if let Some(rest) = msg.strip_prefix(tagged::PATH_MARK) {
            if let Some((p, m)) = rest.split_once(tagged::PATH_MARK) {
                for seg in p.split('\u{1}').filter(|s| !s.is_empty()) {
                    path.push(match seg.strip_prefix('#').and_then(|i| i.parse().ok()) {
                        Some(i) => Seg::Index(i),
                        None => Seg::Key(seg.to_owned()),
                    });
                }
                msg = m.to_owned();
            }
        }
        // Point unknown keys at the key itself rather than at their table.
        if let Some(key) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(k, _)| k.to_owned())
        {
            if path.last() != Some(&Seg::Key(key.clone())) {
                path.push(Seg::Key(key));
            }
        }
        from_toml_error(source, text, &path, &msg, inner.span())
    })
}

fn from_toml_error(
    source: &Source,
    text: &str,
    path: &[Seg],
    msg: &str,
    span: Option<std::ops::Range<usize>>,
) -> ConfigError {
    let mut err = source.error_at(path, friendly(msg, path));
    if err.line.is_none() || path.is_empty() {
        if let Some(span) = span {
            err.line = Some(source::line_col(text, span.start).0);
        }
    }
    if path.is_empty() {
        err.path = None;
    }
    err
}

fn friendly(msg: &str, path: &[Seg]) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        // serde says "unknown variant `x`, expected one of `a`, `b`": keep it, say which key.
        let what = match path.last() {
            Some(Seg::Key(k)) if k == "type" => "type",
            _ => "value",
        };
        return format!("unknown {what} `{rest}");
    }
    // Speak TOML, not Rust: "expected usize" means nothing to most users.
    let mut out = msg.to_owned();
    for (rust, human) in [
        ("expected usize", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        if out.ends_with(rust) {
            out = format!("{}{human}", &out[..out.len() - rust.len()]);
        }
    }
    out
}

#[cfg(test)]
mod tests;
