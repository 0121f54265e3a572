//! The component registry. Every receiver, processor and exporter kind implements one trait
//! ([`ReceiverKind`], [`ProcessorKind`], [`ExporterKind`]) on its own config type: its `type`
//! name, its settings (serde), its checks and how to build it. A [`Registry`] lists the kinds (one
//! line each) and turns a raw [`Config`] into a [`Resolved`] one — every table decoded by its
//! kind, every check run, errors with file and line — which the topology builds, diffs and
//! rebuilds component by component. Nothing outside a component's folder knows its settings.

use crate::exporter::Exporter;
use crate::load::DownstreamLoad;
use crate::metrics::Metrics;
use crate::pipeline::Routes;
use crate::stage::Stage;
use crate::BoxFuture;
use serde::de::DeserializeOwned;
use sluice_config::delivery::DELIVERY_KEYS;
use sluice_config::{
    ComponentTable, Config, ConfigError, ConfigErrors, DeliveryConfig, QueueConfig, RetryConfig,
    Section, Seg, Signal,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a component's own checks found; paths are relative to its table (`"tiers[2].probability"`).
#[derive(Debug, Default)]
pub struct Problems(Vec<(Vec<Seg>, String)>);

impl Problems {
    /// A problem at `path` below the component's table (`""` for the table itself), e.g.
    /// `"actions[0].value"`.
    pub fn at(&mut self, path: &str, message: impl Into<String>) {
        self.0.push((parse_path(path), message.into()));
    }
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Key(rest[..i].to_owned()));
            rest = &rest[i..];
            while let Some(close) = rest.find(']') {
                if let Ok(n) = rest[1..close].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_owned()));
        }
    }
    out
}

/// Why a component could not be built (a directory not creatable, a client not constructible).
#[derive(Debug, thiserror::Error)]
#[error("{section} {name}: {message}")]
pub struct BuildError {
    /// receiver, processor or exporter.
    pub section: &'static str,
    /// The component's name.
    pub name: String,
    /// What went wrong, for the user.
    pub message: String,
}

/// A failed receiver, as its task reports it.
pub type ReceiverError = Box<dyn std::error::Error + Send + Sync>;

/// A receiver kind: `[receivers.NAME]` with `type = TYPE`.
pub trait ReceiverKind: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The `type` value that selects this kind.
    const TYPE: &'static str;
    /// Signals it can produce; pipelines asking for others are rejected.
    fn signals(&self) -> &'static [Signal];
    /// Addresses it listens on, by key, so no two listeners claim one.
    fn addresses(&self) -> Vec<(&'static str, SocketAddr)>;
    /// Checks beyond what the types say.
    fn validate(&self, _problems: &mut Problems) {}
    /// Takes its sockets from `ctx` (bound now, so a failure stops a start or reload cleanly)
    /// and returns the receiver, not yet serving.
    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String>;
}

/// A built receiver.
pub trait Receiver: Send {
    /// Serves until `shutdown`, then lets in-flight requests finish.
    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ReceiverError>>;
}

/// What a receiver is built with.
pub struct ReceiverContext<'a> {
    /// Its name.
    pub name: &'a str,
    /// The pipelines it feeds; swapped in place on reload, so the receiver keeps its sockets.
    pub routes: Routes,
    /// Self-metrics.
    pub metrics: &'a Metrics,
    /// The process's memory budget: every request is charged against it from its body on.
    pub budget: Arc<crate::MemoryBudget>,
    listeners: &'a mut Listeners,
}

impl<'a> ReceiverContext<'a> {
    /// The context for building receiver `name` (topology only).
    pub fn new(
        name: &'a str,
        routes: Routes,
        metrics: &'a Metrics,
        budget: Arc<crate::MemoryBudget>,
        listeners: &'a mut Listeners,
    ) -> Self {
        Self {
            name,
            routes,
            metrics,
            budget,
            listeners,
        }
    }

    /// A listener on `addr`: the socket already open at that address when there is one (a
    /// receiver rebuilt by a reload keeps accepting on it), else a newly bound one.
    pub fn listen(&mut self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        self.listeners.listen(addr)
    }
}

/// The listening sockets of a topology, by address. A rebuilt receiver gets a duplicate of the
/// socket its predecessor accepts on, so no connection attempt is refused during a reload.
#[derive(Default)]
pub struct Listeners(HashMap<SocketAddr, std::net::TcpListener>);

impl Listeners {
    fn listen(&mut self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let std = match self.0.get(&addr) {
            Some(l) => l.try_clone()?,
            None => {
                // Bound the way tokio's `TcpListener::bind` does (SO_REUSEADDR, a 1024 backlog),
                // then kept as a std socket so it can be duplicated for a rebuilt receiver.
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                #[cfg(unix)]
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                let l = socket.listen(1024)?.into_std()?;
                let copy = l.try_clone()?;
                self.0.insert(addr, l);
                copy
            }
        };
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }

    /// Keeps only the sockets at `addrs` (the others close once their receivers stop).
    pub fn retain(&mut self, addrs: &[SocketAddr]) {
        self.0.retain(|a, _| addrs.contains(a));
    }

    /// Takes over the sockets of `old` at the addresses it has.
    pub fn inherit(&mut self, old: &Listeners) -> std::io::Result<()> {
        for (addr, l) in &old.0 {
            self.0.insert(*addr, l.try_clone()?);
        }
        Ok(())
    }
}

/// A processor kind: `[processors.NAME]` with `type = TYPE`.
pub trait ProcessorKind: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The `type` value that selects this kind.
    const TYPE: &'static str;
    /// Signals it can handle.
    fn signals(&self) -> &'static [Signal];
    /// Checks beyond what the types say.
    fn validate(&self, _problems: &mut Problems) {}
    /// Builds the processor (one instance, shared by every pipeline that lists it).
    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String>;
}

/// What a processor is built with.
pub struct ProcessorContext<'a> {
    /// Its name.
    pub name: &'a str,
    /// Self-metrics.
    pub metrics: &'a Metrics,
    /// The load of the exporters downstream of every pipeline that lists it, kept current across
    /// reloads — for processors that adapt to the backends (the adaptive sampler).
    pub downstream: DownstreamLoad,
}

/// A built processor.
pub trait ProcessorInstance: Send + Sync + 'static {
    /// The stage one pipeline runs (stateful processors such as batch get one per pipeline).
    fn stage(&self) -> Box<dyn Stage>;
    /// What `/status` shows about it, if anything.
    fn status(&self) -> Option<serde_json::Value> {
        None
    }
}

/// An exporter kind: `[exporters.NAME]` with `type = TYPE`. The delivery keys (`queue`, `retry`,
/// `max_concurrency`) are taken out of the table and handled by the delivery layer.
pub trait ExporterKind: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The `type` value that selects this kind.
    const TYPE: &'static str;
    /// `max_concurrency` when the table does not say.
    const DEFAULT_CONCURRENCY: usize = 1;
    /// False for exporters that write one batch at a time (they take no `max_concurrency`).
    const CONCURRENT: bool = true;
    /// Signals it can write.
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    /// Checks beyond what the types say.
    fn validate(&self, _problems: &mut Problems) {}
    /// Builds the backend writer.
    fn build(&self, ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String>;
}

/// What an exporter is built with.
pub struct ExporterContext<'a> {
    /// Its name.
    pub name: &'a str,
    /// Self-metrics.
    pub metrics: &'a Metrics,
    /// Its queue, retry and concurrency settings, for exporters that run delivery workers of
    /// their own (the balancing OTLP exporter runs one per gateway).
    pub delivery: &'a DeliveryConfig,
}

/// A decoded receiver table, whatever its kind.
pub trait ReceiverSpec: fmt::Debug + Send + Sync {
    /// See [`ReceiverKind::signals`].
    fn signals(&self) -> &'static [Signal];
    /// See [`ReceiverKind::addresses`].
    fn addresses(&self) -> Vec<(&'static str, SocketAddr)>;
    /// See [`ReceiverKind::validate`].
    fn validate(&self, problems: &mut Problems);
    /// See [`ReceiverKind::build`].
    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String>;
}

impl<K: ReceiverKind> ReceiverSpec for K {
    fn signals(&self) -> &'static [Signal] {
        ReceiverKind::signals(self)
    }
    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        ReceiverKind::addresses(self)
    }
    fn validate(&self, problems: &mut Problems) {
        ReceiverKind::validate(self, problems)
    }
    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String> {
        ReceiverKind::build(self, ctx)
    }
}

/// A decoded processor table, whatever its kind.
pub trait ProcessorSpec: fmt::Debug + Send + Sync {
    /// See [`ProcessorKind::signals`].
    fn signals(&self) -> &'static [Signal];
    /// See [`ProcessorKind::validate`].
    fn validate(&self, problems: &mut Problems);
    /// See [`ProcessorKind::build`].
    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String>;
}

impl<K: ProcessorKind> ProcessorSpec for K {
    fn signals(&self) -> &'static [Signal] {
        ProcessorKind::signals(self)
    }
    fn validate(&self, problems: &mut Problems) {
        ProcessorKind::validate(self, problems)
    }
    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        ProcessorKind::build(self, ctx)
    }
}

/// A decoded exporter table, whatever its kind.
pub trait ExporterSpec: fmt::Debug + Send + Sync {
    /// See [`ExporterKind::signals`].
    fn signals(&self) -> &'static [Signal];
    /// See [`ExporterKind::validate`].
    fn validate(&self, problems: &mut Problems);
    /// See [`ExporterKind::build`].
    fn build(&self, ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String>;
}

impl<K: ExporterKind> ExporterSpec for K {
    fn signals(&self) -> &'static [Signal] {
        ExporterKind::signals(self)
    }
    fn validate(&self, problems: &mut Problems) {
        ExporterKind::validate(self, problems)
    }
    fn build(&self, ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        ExporterKind::build(self, ctx)
    }
}

/// A decoded exporter table: its kind's settings and the shared delivery settings.
#[derive(Debug, Clone)]
pub struct ExporterEntry {
    /// The exporter's own settings.
    pub spec: Arc<dyn ExporterSpec>,
    /// Queue, retry and concurrency.
    pub delivery: DeliveryConfig,
}

/// One decoded component with the table it came from (what reloads compare).
#[derive(Debug)]
pub struct Decoded<T: ?Sized> {
    /// The `type`.
    pub kind: &'static str,
    /// The table as written.
    pub table: ComponentTable,
    /// The decoded settings.
    pub spec: Arc<T>,
}

impl<T: ?Sized> Clone for Decoded<T> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            table: self.table.clone(),
            spec: self.spec.clone(),
        }
    }
}

/// A configuration whose every component was decoded and checked by its kind.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Service, pipelines and the raw tables.
    pub config: Config,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Decoded<dyn ReceiverSpec>>,
    /// Processors by name.
    pub processors: BTreeMap<String, Decoded<dyn ProcessorSpec>>,
    /// Exporters by name (settings and delivery).
    pub exporters: BTreeMap<String, Decoded<ExporterEntry>>,
}

type Decoder<T> =
    Box<dyn Fn(&Config, &[Seg], toml::Value) -> Result<Arc<T>, ConfigError> + Send + Sync>;

struct ExporterKindInfo {
    decode: Decoder<dyn ExporterSpec>,
    default_concurrency: usize,
    concurrent: bool,
}

/// Every component kind the binary knows, by `type`.
#[derive(Default)]
pub struct Registry {
    receivers: BTreeMap<&'static str, Decoder<dyn ReceiverSpec>>,
    processors: BTreeMap<&'static str, Decoder<dyn ProcessorSpec>>,
    exporters: BTreeMap<&'static str, ExporterKindInfo>,
}

impl Registry {
    /// Registers a receiver kind.
    pub fn receiver<K: ReceiverKind>(&mut self) -> &mut Self {
        self.receivers.insert(
            K::TYPE,
            Box::new(|cfg, base, v| {
                cfg.decode::<K>(base, v)
                    .map(|k| Arc::new(k) as Arc<dyn ReceiverSpec>)
            }),
        );
        self
    }

    /// Registers a processor kind.
    pub fn processor<K: ProcessorKind>(&mut self) -> &mut Self {
        self.processors.insert(
            K::TYPE,
            Box::new(|cfg, base, v| {
                cfg.decode::<K>(base, v)
                    .map(|k| Arc::new(k) as Arc<dyn ProcessorSpec>)
            }),
        );
        self
    }

    /// Registers an exporter kind.
    pub fn exporter<K: ExporterKind>(&mut self) -> &mut Self {
        self.exporters.insert(
            K::TYPE,
            ExporterKindInfo {
                decode: Box::new(|cfg, base, v| {
                    cfg.decode::<K>(base, v)
                        .map(|k| Arc::new(k) as Arc<dyn ExporterSpec>)
                }),
                default_concurrency: K::DEFAULT_CONCURRENCY,
                concurrent: K::CONCURRENT,
            },
        );
        self
    }

    /// Decodes and checks every component of `config` and how the pipelines use them; all
    /// problems are reported at once, each with file, line and TOML path.
    pub fn resolve(&self, config: Config) -> Result<Resolved, ConfigErrors> {
        let mut errs = Vec::new();
        let mut receivers = BTreeMap::new();
        let mut processors = BTreeMap::new();
        let mut exporters = BTreeMap::new();
        for (name, table) in &config.receivers {
            if let Some(d) = self.decode(
                &config,
                Section::Receivers,
                name,
                table,
                &self.receivers,
                &mut errs,
            ) {
                receivers.insert(name.clone(), d);
            }
        }
        for (name, table) in &config.processors {
            if let Some(d) = self.decode(
                &config,
                Section::Processors,
                name,
                table,
                &self.processors,
                &mut errs,
            ) {
                processors.insert(name.clone(), d);
            }
        }
        for (name, table) in &config.exporters {
            if let Some(d) = self.decode_exporter(&config, name, table, &mut errs) {
                exporters.insert(name.clone(), d);
            }
        }
        let resolved = Resolved {
            config,
            receivers,
            processors,
            exporters,
        };
        resolved.check(&mut errs);
        if errs.is_empty() {
            Ok(resolved)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// The `type` of a table, or an error naming the kinds there are.
    fn kind_of<'k, V>(
        config: &Config,
        base: &[Seg],
        table: &ComponentTable,
        kinds: &'k BTreeMap<&'static str, V>,
    ) -> Result<(&'static str, &'k V), ConfigError> {
        let expected = kinds
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut at_type = base.to_vec();
        at_type.push(Seg::Key("type".into()));
        match table.0.get("type") {
            None => {
                Err(config.error_at(base, format!("missing `type`; expected one of {expected}")))
            }
            Some(toml::Value::String(s)) => kinds
                .get_key_value(s.as_str())
                .map(|(k, v)| (*k, v))
                .ok_or_else(|| {
                    config.error_at(
                        &at_type,
                        format!("unknown type `{s}`, expected one of {expected}"),
                    )
                }),
            Some(_) => Err(config.error_at(
                &at_type,
                format!("`type` must be a string, one of {expected}"),
            )),
        }
    }

    fn decode<T: ?Sized + Validate>(
        &self,
        config: &Config,
        section: Section,
        name: &str,
        table: &ComponentTable,
        kinds: &BTreeMap<&'static str, Decoder<T>>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Decoded<T>> {
        let base = [Seg::Key(section.as_str().into()), Seg::Key(name.into())];
        let (kind, decode) = Self::kind_of(config, &base, table, kinds)
            .map_err(|e| errs.push(e))
            .ok()?;
        let mut rest = table.0.clone();
        rest.remove("type");
        let spec = decode(config, &base, toml::Value::Table(rest))
            .map_err(|e| errs.push(e))
            .ok()?;
        let mut problems = Problems::default();
        spec.validate_into(&mut problems);
        push_problems(config, &base, problems, errs);
        Some(Decoded {
            kind,
            table: table.clone(),
            spec,
        })
    }

    fn decode_exporter(
        &self,
        config: &Config,
        name: &str,
        table: &ComponentTable,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Decoded<ExporterEntry>> {
        let base = [Seg::Key("exporters".into()), Seg::Key(name.into())];
        let (kind, info) = Self::kind_of(config, &base, table, &self.exporters)
            .map_err(|e| errs.push(e))
            .ok()?;
        let mut rest = table.0.clone();
        rest.remove("type");
        let mut delivery_table = toml::Table::new();
        for k in DELIVERY_KEYS {
            if let Some(v) = rest.remove(k) {
                delivery_table.insert(k.to_owned(), v);
            }
        }
        if !info.concurrent && delivery_table.contains_key("max_concurrency") {
            let mut p = base.to_vec();
            p.push(Seg::Key("max_concurrency".into()));
            errs.push(config.error_at(
                &p,
                format!(
                    "unknown field `max_concurrency`: a {kind} exporter writes one batch at a time"
                ),
            ));
        }
        let delivery = decode_delivery(config, &base, delivery_table, info.default_concurrency);
        let spec = (info.decode)(config, &base, toml::Value::Table(rest));
        let (delivery, spec) = match (delivery, spec) {
            (Ok(d), Ok(s)) => (d, s),
            (d, s) => {
                errs.extend(d.err());
                errs.extend(s.err());
                return None;
            }
        };
        let mut problems = Problems::default();
        for (path, msg) in delivery.problems() {
            problems.at(path, msg);
        }
        spec.validate(&mut problems);
        push_problems(config, &base, problems, errs);
        Some(Decoded {
            kind,
            table: table.clone(),
            spec: Arc::new(ExporterEntry { spec, delivery }),
        })
    }
}

fn decode_delivery(
    config: &Config,
    base: &[Seg],
    table: toml::Table,
    default_concurrency: usize,
) -> Result<DeliveryConfig, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        queue: QueueConfig,
        #[serde(default)]
        retry: RetryConfig,
        max_concurrency: Option<usize>,
    }
    let raw: Raw = config.decode(base, toml::Value::Table(table))?;
    Ok(DeliveryConfig {
        queue: raw.queue,
        retry: raw.retry,
        max_concurrency: raw.max_concurrency.unwrap_or(default_concurrency),
        storage_dir: config.service.storage_dir.clone(),
    })
}

fn push_problems(config: &Config, base: &[Seg], problems: Problems, errs: &mut Vec<ConfigError>) {
    for (rel, msg) in problems.0 {
        let mut path = base.to_vec();
        path.extend(rel);
        errs.push(config.error_at(&path, msg));
    }
}

/// The validation both decoded receivers and processors offer (so one decode serves both).
trait Validate {
    fn validate_into(&self, problems: &mut Problems);
}

impl Validate for dyn ReceiverSpec {
    fn validate_into(&self, problems: &mut Problems) {
        self.validate(problems)
    }
}

impl Validate for dyn ProcessorSpec {
    fn validate_into(&self, problems: &mut Problems) {
        self.validate(problems)
    }
}

impl Resolved {
    /// Checks that need kinds and the whole graph: signals each component carries, and listen
    /// addresses claimed twice.
    fn check(&self, errs: &mut Vec<ConfigError>) {
        let cfg = &self.config;
        let key = |s: &str| Seg::Key(s.to_owned());
        let mut claimed: HashMap<SocketAddr, Vec<Seg>> = HashMap::new();
        let mut claim = |addr: SocketAddr, path: Vec<Seg>, errs: &mut Vec<ConfigError>| {
            if let Some(prev) = claimed.get(&addr) {
                errs.push(cfg.error_at(
                    &path,
                    format!(
                        "address {addr} is already used by `{}`",
                        sluice_config::source::render_path(prev)
                    ),
                ));
            } else {
                claimed.insert(addr, path);
            }
        };
        if let Some(a) = cfg.service.admin {
            claim(a.0, vec![key("service"), key("admin")], errs);
        }
        for (name, r) in &self.receivers {
            for (k, addr) in r.spec.addresses() {
                claim(addr, vec![key("receivers"), key(name), key(k)], errs);
            }
        }
        for (pname, p) in &cfg.pipelines {
            for section in [Section::Receivers, Section::Processors, Section::Exporters] {
                for (i, n) in p.names(section).iter().enumerate() {
                    let Some((kind, supported)) = self.kind_and_signals(section, n) else {
                        continue;
                    };
                    for s in &p.signals {
                        if !supported.contains(s) {
                            errs.push(cfg.error_at(
                                &[
                                    key("pipelines"),
                                    key(pname),
                                    key(section.as_str()),
                                    Seg::Index(i),
                                ],
                                format!(
                                        "{} {n:?} (type {kind}) cannot carry {s}; it supports {}",
                                        section.singular(),
                                        supported
                                            .iter()
                                            .map(|s| s.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// The `type` and signals of a component.
    pub fn kind_and_signals(
        &self,
        section: Section,
        name: &str,
    ) -> Option<(&'static str, &'static [Signal])> {
        match section {
            Section::Receivers => self.receivers.get(name).map(|d| (d.kind, d.spec.signals())),
            Section::Processors => self
                .processors
                .get(name)
                .map(|d| (d.kind, d.spec.signals())),
            Section::Exporters => self
                .exporters
                .get(name)
                .map(|d| (d.kind, d.spec.spec.signals())),
        }
    }
}

/// Declares a crate's component modules and its `register` function in one list, so adding a
/// component is its folder plus one line here:
/// `components! { exporter file::FileExporterConfig, processor batch::BatchConfig }`.
#[macro_export]
macro_rules! components {
    ($($method:ident $module:ident :: $ty:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Registers every component kind of this crate with the binary's registry.
        pub fn register(r: &mut $crate::component::Registry) {
            $( r.$method::<$module::$ty>(); )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("tiers[2].probability"),
            vec![
                Seg::Key("tiers".into()),
                Seg::Index(2),
                Seg::Key("probability".into())
            ]
        );
        assert!(parse_path("").is_empty());
    }
}
