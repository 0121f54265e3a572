//! Sluice configuration: TOML text to a [`Config`] whose `[service]` and `[pipelines]` are typed
//! and whose component tables stay raw until the component registry (in `sluice-core`) decodes
//! each with its own kind's type. Errors name the file, the TOML path, the line and what was
//! expected. No I/O beyond reading the file, no tokio, so `sluice validate`, reloads and the
//! running collector share exactly the same checks.

pub mod delivery;
pub mod error;
pub mod redact;
pub mod retention;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod types;

pub use delivery::{DeliveryConfig, QueueConfig, RetryConfig, SyncMode, WhenFull};
pub use error::{ConfigError, ConfigErrors};
pub use retention::Retention;
pub use source::Seg;
pub use telemetry::{TelemetryConfig, TelemetryProtocol};
pub use tls::TlsClientConfig;
pub use types::{ByteSize, HumanDuration, ListenAddr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use source::Source;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

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

/// The three kinds of components, as the top-level tables that hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// `[receivers.NAME]`.
    Receivers,
    /// `[processors.NAME]`.
    Processors,
    /// `[exporters.NAME]`.
    Exporters,
}

impl Section {
    /// The table name (`receivers`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receivers => "receivers",
            Self::Processors => "processors",
            Self::Exporters => "exporters",
        }
    }

    /// One of them, for messages (`receiver`, ...).
    pub fn singular(self) -> &'static str {
        match self {
            Self::Receivers => "receiver",
            Self::Processors => "processor",
            Self::Exporters => "exporter",
        }
    }
}

/// One `[SECTION.NAME]` table as written (after `${ENV}` expansion). Its `type` picks the kind
/// that decodes the rest; two tables that compare equal configure the same component, which is
/// how a reload knows what it may keep.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ComponentTable(pub toml::Table);

impl ComponentTable {
    /// The `type` value, if it is a string.
    pub fn kind(&self) -> Option<&str> {
        self.0.get("type").and_then(toml::Value::as_str)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub service: ServiceConfig,
    /// Named receivers (decoded by the registry).
    pub receivers: BTreeMap<String, ComponentTable>,
    /// Named processors (decoded by the registry).
    pub processors: BTreeMap<String, ComponentTable>,
    /// Named exporters (decoded by the registry).
    pub exporters: BTreeMap<String, ComponentTable>,
    /// Named pipelines that connect them.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    source: Located,
}

/// The text a configuration came from, so later checks can still name lines.
#[derive(Clone)]
struct Located {
    source: Arc<Source>,
    hash: u64,
}

impl fmt::Debug for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Located({:016x})", self.hash)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: ServiceConfig,
    #[serde(default)]
    receivers: BTreeMap<String, ComponentTable>,
    #[serde(default)]
    processors: BTreeMap<String, ComponentTable>,
    #[serde(default)]
    exporters: BTreeMap<String, ComponentTable>,
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineConfig>,
}

/// `[service]`: the admin server, logging and shutdown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Admin server (`/healthz`, `/readyz`, `/metrics`, `/status`, `POST /reload`); absent = off.
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
    /// Where persistent exporter queues live; required when any exporter has `queue.persistent`.
    #[serde(default)]
    pub storage_dir: Option<std::path::PathBuf>,
    /// The process's memory target: data in flight is charged in bytes up to 75% of it (hard
    /// level), and new data is refused, retryably, above 60% (soft level). Absent = 80% of the
    /// cgroup's memory limit, or half the machine's memory when there is no cgroup limit.
    #[serde(default)]
    pub memory_limit: Option<ByteSize>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            admin: default_admin(),
            log_level: default_log_level(),
            shutdown_timeout: default_shutdown_timeout(),
            telemetry: None,
            storage_dir: None,
            memory_limit: None,
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
/// Creates `dir` if needed and proves a file can be written there (persistent queues must not
/// find out at the first batch).
fn check_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".sluice-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// `[pipelines.NAME]`: receivers → processors (in order) → exporters, for the listed signals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

impl PipelineConfig {
    /// The component names this pipeline lists under `section`.
    pub fn names(&self, section: Section) -> &[String] {
        match section {
            Section::Receivers => &self.receivers,
            Section::Processors => &self.processors,
            Section::Exporters => &self.exporters,
        }
    }
}

impl Config {
    /// Reads, interpolates, parses and checks the shape of a configuration file (component tables
    /// are checked by the registry that decodes them).
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

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Self::from_str_named("<embedded default>", EMBEDDED_DEFAULT, &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses configuration text; `file` names it in errors, `env` resolves `${VAR}`.
    pub fn from_str_named(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let source = Source::parse(file, text)?;
        let expanded = source.interpolate(env).map_err(ConfigErrors)?;
        let raw: RawConfig = decode_text(&source, &expanded)?;
        let mut hasher = std::hash::DefaultHasher::new();
        expanded.hash(&mut hasher);
        let config = Config {
            service: raw.service,
            receivers: raw.receivers,
            processors: raw.processors,
            exporters: raw.exporters,
            pipelines: raw.pipelines,
            source: Located {
                source: Arc::new(source),
                hash: hasher.finish(),
            },
        };
        let errs = config.shape_problems();
        if errs.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// A stable fingerprint of the expanded text: equal hashes mean nothing changed.
    pub fn hash(&self) -> u64 {
        self.source.hash
    }

    /// The file name errors carry.
    pub fn file(&self) -> &str {
        self.source.source.file()
    }

    /// The component tables of one section.
    pub fn section(&self, section: Section) -> &BTreeMap<String, ComponentTable> {
        match section {
            Section::Receivers => &self.receivers,
            Section::Processors => &self.processors,
            Section::Exporters => &self.exporters,
        }
    }

    /// An error at `path`, with the line of the deepest part of it that exists in the file.
    pub fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.source.source.error_at(path, message)
    }

    /// Decodes `value` (found at `base`) into `T`; an error names the exact key and its line.
    pub fn decode<T: DeserializeOwned>(
        &self,
        base: &[Seg],
        value: toml::Value,
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
            let mut path = base.to_vec();
            path.extend(err.path().iter().filter_map(seg_of));
            let inner = err.into_inner();
            located(&self.source.source, None, path, inner.message(), None)
        })
    }

    /// What is wrong with the graph regardless of component kinds: empty pipelines, names listed
    /// twice or not defined.
    fn shape_problems(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let key = |s: &str| Seg::Key(s.to_owned());
        if let Some(t) = &self.service.telemetry {
            for (k, msg) in t.problems() {
                errs.push(self.error_at(&[key("service"), key("telemetry"), key(k)], msg));
            }
        }
        if let Some(dir) = &self.service.storage_dir {
            if let Err(msg) = check_writable_dir(dir) {
                errs.push(self.error_at(&[key("service"), key("storage_dir")], msg));
            }
        }
        if self.pipelines.is_empty() {
            errs.push(self.error_at(
                &[],
                "no pipelines: add at least one [pipelines.NAME] with signals, receivers and exporters",
            ));
        }
        for (pname, p) in &self.pipelines {
            let base = [key("pipelines"), key(pname)];
            let at = |k: &str, i: Option<usize>| {
                let mut v = base.to_vec();
                v.push(key(k));
                v.extend(i.map(Seg::Index));
                v
            };
            if p.signals.is_empty() {
                errs.push(self.error_at(&at("signals", None), "lists no signals; expected some of \"traces\", \"metrics\", \"logs\", \"profiles\""));
            }
            for (i, s) in p.signals.iter().enumerate() {
                if p.signals.iter().take(i).any(|x| x == s) {
                    errs.push(self.error_at(
                        &at("signals", Some(i)),
                        format!("signal {s} is listed twice"),
                    ));
                }
            }
            for section in [Section::Receivers, Section::Processors, Section::Exporters] {
                let list = p.names(section);
                let k = section.as_str();
                if list.is_empty() && section != Section::Processors {
                    errs.push(self.error_at(&at(k, None), format!("lists no {k}")));
                }
                for (i, n) in list.iter().enumerate() {
                    if list.iter().take(i).any(|x| x == n) {
                        errs.push(self.error_at(
                            &at(k, Some(i)),
                            format!("{} {n:?} is listed twice", section.singular()),
                        ));
                    } else if !self.section(section).contains_key(n) {
                        errs.push(self.error_at(
                            &at(k, Some(i)),
                            format!(
                                "{} {n:?} is not defined; add a [{k}.{n}] table",
                                section.singular()
                            ),
                        ));
                    }
                }
            }
        }
        errs
    }
}

fn seg_of(s: &serde_path_to_error::Segment) -> Option<Seg> {
    match s {
        serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
        serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
        _ => None,
    }
}

fn decode_text<T: DeserializeOwned>(source: &Source, text: &str) -> Result<T, ConfigError> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => return Err(located(source, Some(text), vec![], e.message(), e.span())),
    };
    serde_path_to_error::deserialize::<_, T>(de).map_err(|err| {
        let path: Vec<Seg> = err.path().iter().filter_map(seg_of).collect();
        let inner = err.into_inner();
        located(source, Some(text), path, inner.message(), inner.span())
    })
}

/// Turns a serde message at `path` into a located, readable error.
fn located(
    source: &Source,
    text: Option<&str>,
    mut path: Vec<Seg>,
    msg: &str,
    span: Option<std::ops::Range<usize>>,
) -> ConfigError {
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
    let mut err = source.error_at(&path, friendly(msg, &path));
    if err.line.is_none() || path.is_empty() {
        if let (Some(span), Some(text)) = (span, text) {
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
        ("expected u8", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        if let Some(head) = out.strip_suffix(rust) {
            out = format!("{head}{human}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
