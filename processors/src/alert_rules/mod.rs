//! The alert rules processor: Prometheus-style alerting rules evaluated on the metric stream.
//!
//! Metrics pass through untouched. Per rule and series (the metric's data points with the same
//! attributes, plus `service.name` and the resource attributes the matchers name) it keeps a
//! sliding window and walks pending → firing → resolved by the data's timestamps. Each transition
//! becomes an OTLP log record (`event.name = "alert"`) that the stage adds to its output, so the
//! pipeline's exporters get the alerts with the metrics: the file exporter writes them, ClickHouse
//! stores them in `otel_logs`, the `alertmanager` exporter posts them. A firing series that stops
//! reporting resolves after `stale_after`, checked on the stage's deadline tick.

pub mod config;
pub mod eval;
pub mod matcher;

use crate::units;
pub use config::{AlertRulesConfig, Op, RuleConfig};
use eval::{exponential_buckets, Obs, Window};
use matcher::{lookup, text, Matcher};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, AggregationTemporality, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sluice_config::Signal;
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::stage::Out;
use sluice_core::{Envelope, Stage, Telemetry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The attribute key and value that mark a log record as an alert.
pub const EVENT_NAME: &str = "alert";

/// A checked, compiled rule.
#[derive(Debug)]
pub struct Rule {
    cfg: RuleConfig,
    matchers: Vec<Matcher>,
    /// Resource attributes that become series labels: `service.name` and those matched on.
    resource_keys: Vec<String>,
    duration: u64,
    window: u64,
}

/// Compiles one rule; problems go to `problems` below `at` (`rule[1]`).
fn compile(cfg: &RuleConfig, at: &str, problems: &mut Problems) -> Option<Rule> {
    let mut ok = true;
    let mut bad = |path: String, msg: String| {
        problems.at(&path, msg);
        ok = false;
    };
    if cfg.name.trim().is_empty() {
        bad(format!("{at}.name"), "must not be empty".into());
    }
    if cfg.metric.trim().is_empty() {
        bad(format!("{at}.metric"), "must not be empty".into());
    }
    let mut matchers = Vec::new();
    for (j, m) in cfg.matchers.iter().enumerate() {
        match Matcher::parse(m) {
            Ok(m) => matchers.push(m),
            Err(e) => bad(format!("{at}.matchers[{j}]"), e.to_string()),
        }
    }
    if let Some(q) = cfg.quantile {
        if !(0.0..=1.0).contains(&q) || q.is_nan() {
            bad(
                format!("{at}.quantile"),
                format!("must be between 0 and 1, got {q}"),
            );
        }
    }
    if !cfg.threshold.is_finite() {
        bad(format!("{at}.threshold"), "must be a finite number".into());
    }
    if let Some(u) = &cfg.unit {
        if !units::known(u) {
            bad(
                format!("{at}.unit"),
                format!("unknown unit `{u}`; known: {}", units::KNOWN),
            );
        }
    }
    if cfg.window.0.is_zero() {
        bad(format!("{at}.window"), "must be longer than 0s".into());
    }
    for k in cfg.labels.keys() {
        if k == "alertname" {
            bad(
                format!("{at}.labels.{k}"),
                "`alertname` is the rule's `name`".into(),
            );
        }
    }
    if !ok {
        return None;
    }
    let mut resource_keys: Vec<String> = std::iter::once("service.name".to_owned())
        .chain(matchers.iter().map(|m| m.key.clone()))
        .collect();
    resource_keys.sort();
    resource_keys.dedup();
    Some(Rule {
        cfg: cfg.clone(),
        matchers,
        resource_keys,
        duration: nanos(cfg.duration.0),
        window: nanos(cfg.window.0),
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, nanos)
}

/// Every rule of one processor, indexed by metric name.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    by_metric: HashMap<String, Vec<usize>>,
    check_interval: Duration,
    stale_after: Duration,
    name: String,
}

impl Rules {
    /// Compiles the settings (already validated, so problems here are not expected).
    pub fn new(name: &str, cfg: &AlertRulesConfig) -> Result<Self, String> {
        let mut problems = Problems::default();
        let rules: Vec<Rule> = cfg
            .rule
            .iter()
            .enumerate()
            .filter_map(|(i, r)| compile(r, &format!("rule[{i}]"), &mut problems))
            .collect();
        if rules.len() != cfg.rule.len() {
            return Err("invalid alert rules (run `sluice validate`)".into());
        }
        let mut by_metric: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            by_metric.entry(r.cfg.metric.clone()).or_default().push(i);
        }
        Ok(Self {
            rules,
            by_metric,
            check_interval: cfg.check_interval.0.max(Duration::from_millis(10)),
            stale_after: cfg.stale_after.0,
            name: name.to_owned(),
        })
    }
}

/// Where a series is in its alert's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inactive,
    Pending { active_at: u64 },
    Firing { active_at: u64 },
}

/// One rule's view of one series.
#[derive(Debug)]
struct Series {
    labels: Vec<(String, String)>,
    resource: Option<Resource>,
    window: Window,
    state: State,
    value: f64,
    last_seen: Instant,
    warned_unit: bool,
}

/// An alert transition, as emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Pending,
    Firing,
    Resolved,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One pipeline's evaluation state.
pub struct AlertStage {
    rules: Arc<Rules>,
    series: HashMap<(usize, Vec<(String, String)>), Series>,
    next_check: Option<Instant>,
}

impl AlertStage {
    /// A stage with no series yet.
    pub fn new(rules: Arc<Rules>) -> Self {
        Self {
            rules,
            series: HashMap::new(),
            next_check: None,
        }
    }

    /// Feeds every data point of `req` the rules read; returns the alert records it caused.
    pub fn observe(&mut self, data: &Telemetry, now: Instant) -> Vec<ResourceLogs> {
        let mut alerts = Vec::new();
        let Telemetry::Metrics(req) = data else {
            return alerts;
        };
        let rules = Arc::clone(&self.rules);
        for rm in &req.resource_metrics {
            let res_attrs = rm
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                let Some(idxs) = rules.by_metric.get(&m.name) else {
                    continue;
                };
                for &i in idxs {
                    self.observe_metric(i, m, rm.resource.as_ref(), res_attrs, now, &mut alerts);
                }
            }
        }
        if !self.series.is_empty() && self.next_check.is_none() {
            self.next_check = Some(now + self.rules.check_interval);
        }
        alerts
    }

    fn observe_metric(
        &mut self,
        i: usize,
        m: &Metric,
        resource: Option<&Resource>,
        res_attrs: &[KeyValue],
        now: Instant,
        alerts: &mut Vec<ResourceLogs>,
    ) {
        let rules = Arc::clone(&self.rules);
        let Some(rule) = rules.rules.get(i) else {
            return;
        };
        let q = rule.cfg.quantile.unwrap_or(0.99);
        let factor = match &rule.cfg.unit {
            Some(to) if *to != m.unit => units::factor(&m.unit, to),
            _ => Some(1.0),
        };
        let selected = |attrs: &[KeyValue]| {
            rule.matchers
                .iter()
                .all(|mt| mt.matches(&lookup(&mt.key, attrs, res_attrs)))
        };
        for (attrs, t, obs) in points(m, q, selected) {
            let t = if t == 0 { wall_nanos() } else { t };
            let labels = series_labels(attrs, res_attrs, &rule.resource_keys);
            let key = (i, labels);
            let s = match self.series.get_mut(&key) {
                Some(s) => s,
                None => {
                    let labels = key.1.clone();
                    self.series.entry(key).or_insert(Series {
                        labels,
                        resource: resource.cloned(),
                        window: Window::default(),
                        state: State::Inactive,
                        value: 0.0,
                        last_seen: now,
                        warned_unit: false,
                    })
                }
            };
            s.last_seen = now;
            s.window.push(t, obs, rule.window);
            let Some(factor) = factor else {
                if !s.warned_unit {
                    s.warned_unit = true;
                    tracing::warn!(processor = %rules.name, rule = %rule.cfg.name, metric = %m.name,
                        unit = %m.unit, "alert_rules: cannot convert the metric's unit to the rule's; the rule skips this series");
                }
                continue;
            };
            let Some(v) = s.window.value(q, rule.window) else {
                continue;
            };
            let v = v * factor;
            s.value = v;
            let breach = rule.cfg.op.holds(v, rule.cfg.threshold);
            for tr in step(&mut s.state, breach, t, rule.duration) {
                alerts.push(record(&rules.name, rule, s, tr, t));
            }
        }
    }

    /// Resolves firing alerts on series that stopped reporting and forgets idle series.
    pub fn check_stale(&mut self, now: Instant) -> Vec<ResourceLogs> {
        let mut alerts = Vec::new();
        let stale_after = self.rules.stale_after;
        let rules = Arc::clone(&self.rules);
        self.series.retain(|(i, _), s| {
            if now.saturating_duration_since(s.last_seen) < stale_after {
                return true;
            }
            if let (State::Firing { .. }, Some(rule)) = (s.state, rules.rules.get(*i)) {
                alerts.push(record(
                    &rules.name,
                    rule,
                    s,
                    Transition::Resolved,
                    wall_nanos(),
                ));
            }
            false
        });
        alerts
    }

    /// Series currently tracked (for tests and status).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

/// Moves a series' state on one evaluation at data time `t`; returns what to announce.
fn step(state: &mut State, breach: bool, t: u64, duration: u64) -> Vec<Transition> {
    let mut out = Vec::new();
    match (*state, breach) {
        (State::Inactive, true) => {
            out.push(Transition::Pending);
            *state = State::Pending { active_at: t };
            if duration == 0 {
                out.push(Transition::Firing);
                *state = State::Firing { active_at: t };
            }
        }
        (State::Pending { active_at }, true) if t.saturating_sub(active_at) >= duration => {
            out.push(Transition::Firing);
            *state = State::Firing { active_at };
        }
        (State::Pending { .. }, false) => *state = State::Inactive,
        (State::Firing { .. }, false) => {
            out.push(Transition::Resolved);
            *state = State::Inactive;
        }
        _ => {}
    }
    out
}

/// The labels that identify a series: its data point attributes and the rule's resource keys.
fn series_labels(
    attrs: &[KeyValue],
    res_attrs: &[KeyValue],
    resource_keys: &[String],
) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = attrs
        .iter()
        .filter_map(|kv| text(kv).map(|v| (kv.key.clone(), v.into_owned())))
        .collect();
    for k in resource_keys {
        if labels.iter().any(|(l, _)| l == k) {
            continue;
        }
        if let Some(v) = res_attrs.iter().find(|kv| kv.key == *k).and_then(text) {
            labels.push((k.clone(), v.into_owned()));
        }
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// Each data point of `m` that `selected` keeps, as (attributes, time, observation) (buckets are
/// copied only for those); `q` picks a summary's quantile.
fn points(
    m: &Metric,
    q: f64,
    selected: impl Fn(&[KeyValue]) -> bool,
) -> Vec<(&[KeyValue], u64, Obs)> {
    let cumulative = |t: i32| t != AggregationTemporality::Delta as i32;
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    };
    match &m.data {
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .filter(|p| selected(&p.attributes))
            .map(|p| (&p.attributes[..], p.time_unix_nano, Obs::Value(number(&p.value))))
            .collect(),
        Some(Data::Sum(s)) => s
            .data_points
            .iter()
            .filter(|p| selected(&p.attributes))
            .map(|p| {
                (
                    &p.attributes[..],
                    p.time_unix_nano,
                    Obs::Sum {
                        value: number(&p.value),
                        cumulative: cumulative(s.aggregation_temporality),
                    },
                )
            })
            .collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .filter(|p| selected(&p.attributes))
            .map(|p| {
                (
                    &p.attributes[..],
                    p.time_unix_nano,
                    Obs::Buckets {
                        bounds: p.explicit_bounds.clone(),
                        counts: p.bucket_counts.clone(),
                        cumulative: cumulative(h.aggregation_temporality),
                    },
                )
            })
            .collect(),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .iter()
            .filter(|p| selected(&p.attributes))
            .map(|p| {
                let (offset, counts) = p
                    .positive
                    .as_ref()
                    .map_or((0, &[][..]), |b| (b.offset, b.bucket_counts.as_slice()));
                let (bounds, counts) = exponential_buckets(p.scale, p.zero_count, offset, counts);
                (
                    &p.attributes[..],
                    p.time_unix_nano,
                    Obs::Buckets {
                        bounds,
                        counts,
                        cumulative: cumulative(h.aggregation_temporality),
                    },
                )
            })
            .collect(),
        Some(Data::Summary(s)) => s
            .data_points
            .iter()
            .filter(|p| selected(&p.attributes))
            .filter_map(|p| {
                let v = p
                    .quantile_values
                    .iter()
                    .find(|v| (v.quantile - q).abs() < 1e-9)?;
                Some((&p.attributes[..], p.time_unix_nano, Obs::Value(v.value)))
            })
            .collect(),
        None => Vec::new(),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn kvlist<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> any_value::Value {
    any_value::Value::KvlistValue(KeyValueList {
        values: pairs.map(|(k, v)| str_kv(k, v)).collect(),
    })
}

/// The log record that announces transition `tr` of series `s` at `t`.
fn record(processor: &str, rule: &Rule, s: &Series, tr: Transition, t: u64) -> ResourceLogs {
    let active_at = match s.state {
        State::Pending { active_at } | State::Firing { active_at } => active_at,
        State::Inactive => 0,
    };
    let mut labels: Vec<(String, String)> = s.labels.clone();
    for (k, v) in &rule.cfg.labels {
        labels.retain(|(l, _)| l != k);
        labels.push((k.clone(), v.clone()));
    }
    labels.push(("alertname".into(), rule.cfg.name.clone()));
    labels.sort();
    let unit = rule.cfg.unit.as_deref().unwrap_or("");
    let body = format!(
        "alert {} {}: {} = {} {} {} {}",
        rule.cfg.name,
        tr.as_str(),
        rule.cfg.metric,
        s.value,
        rule.cfg.op.as_str(),
        rule.cfg.threshold,
        unit
    );
    let mut attributes = vec![
        str_kv("event.name", EVENT_NAME),
        str_kv("alertname", &rule.cfg.name),
        str_kv("state", tr.as_str()),
        kv("value", any_value::Value::DoubleValue(s.value)),
        kv("threshold", any_value::Value::DoubleValue(rule.cfg.threshold)),
        str_kv("metric", &rule.cfg.metric),
        kv("labels", kvlist(labels.iter().map(|(k, v)| (k, v)))),
        kv(
            "annotations",
            kvlist(rule.cfg.annotations.iter()),
        ),
        kv(
            "starts_at",
            any_value::Value::IntValue(i64::try_from(active_at).unwrap_or(i64::MAX)),
        ),
    ];
    if tr == Transition::Resolved {
        attributes.push(kv(
            "ends_at",
            any_value::Value::IntValue(i64::try_from(t).unwrap_or(i64::MAX)),
        ));
    }
    let (severity, severity_text) = match tr {
        Transition::Firing => (SeverityNumber::Warn, "WARN"),
        Transition::Pending | Transition::Resolved => (SeverityNumber::Info, "INFO"),
    };
    ResourceLogs {
        resource: s.resource.clone(),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "sluice.alert_rules".into(),
                attributes: vec![str_kv("sluice.processor", processor)],
                ..Default::default()
            }),
            log_records: vec![LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: wall_nanos(),
                severity_number: severity as i32,
                severity_text: severity_text.into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes,
                event_name: EVENT_NAME.into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn emit(alerts: Vec<ResourceLogs>, out: &mut Out) {
    if alerts.is_empty() {
        return;
    }
    let n = alerts.len() as u64;
    // Generated here: nothing was charged for it, so it carries an empty lease.
    out.push(Envelope::new(
        Telemetry::Logs(ExportLogsServiceRequest {
            resource_logs: alerts,
        }),
        n,
    ));
}

impl Stage for AlertStage {
    fn push(&mut self, env: Envelope, now: Instant, out: &mut Out) -> u64 {
        let alerts = match env.data.decoded() {
            Ok(d) => self.observe(&d, now),
            Err(e) => {
                tracing::error!(error = %e, "alert_rules: cannot decode request; not evaluated");
                Vec::new()
            }
        };
        out.push(env);
        emit(alerts, out);
        0
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.next_check
    }

    fn flush(&mut self, now: Option<Instant>, out: &mut Out) {
        // Draining (shutdown, reload): firing alerts stay firing; their `endsAt` lets them expire.
        let Some(now) = now else {
            return;
        };
        let alerts = self.check_stale(now);
        self.next_check = (!self.series.is_empty()).then(|| now + self.rules.check_interval);
        emit(alerts, out);
    }

    fn emits(&self) -> Option<Signal> {
        Some(Signal::Logs)
    }
}

/// The built processor: shared rules, one [`AlertStage`] per pipeline.
pub struct AlertRules(Arc<Rules>);

impl ProcessorInstance for AlertRules {
    fn stage(&self) -> Box<dyn Stage> {
        Box::new(AlertStage::new(Arc::clone(&self.0)))
    }

    fn status(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "rules": self.0.rules.len() }))
    }
}

impl ProcessorKind for AlertRulesConfig {
    const TYPE: &'static str = "alert_rules";

    fn signals(&self) -> &'static [Signal] {
        // Not logs: the alerts it emits are logs, and a stage must not take in what it creates.
        &[Signal::Metrics]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.rule.is_empty() {
            problems.at("rule", "needs at least one rule");
        }
        for (i, r) in self.rule.iter().enumerate() {
            compile(r, &format!("rule[{i}]"), problems);
        }
        if self.stale_after.0.is_zero() {
            problems.at("stale_after", "must be longer than 0s");
        }
    }

    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        Ok(Arc::new(AlertRules(Arc::new(Rules::new(ctx.name, self)?))))
    }
}

#[cfg(test)]
mod tests;
