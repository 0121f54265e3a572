//! The metric transform processor: metric-name migrations (exact and regex renames with captures),
//! attribute key renames and drops, and unit conversion (`s` → `ms` scales values, histogram
//! sums and bounds), from inline rules and versioned mapping files.

pub mod config;

use crate::units;
pub use config::{MappingFile, MetricTransformConfig, TransformRule};
use opentelemetry_proto::tonic::metrics::v1::exemplar;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use regex::Regex;
use sluice_config::source::Source;
use sluice_config::{ConfigError, Seg, Signal};
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::telemetry::retain_data_points;
use sluice_core::{Processor, Stateless, Telemetry};
use std::sync::Arc;

/// Which metrics a rule applies to.
#[derive(Debug)]
enum NameMatch {
    Exact(String),
    Regex(Regex),
}

/// A checked, compiled rule.
#[derive(Debug)]
pub struct Rule {
    matcher: NameMatch,
    rename: Option<String>,
    rename_attributes: Vec<(String, String)>,
    drop_attributes: Vec<String>,
    unit: Option<String>,
    from_unit: Option<String>,
}

/// Compiles `r`; problems go to `problems` with paths below `at` (`rule[2]`).
fn compile(r: &TransformRule, at: &str, problems: &mut Vec<(String, String)>) -> Option<Rule> {
    let before = problems.len();
    let matcher = match (&r.metric, &r.metric_regex) {
        (Some(m), None) => Some(NameMatch::Exact(m.clone())),
        (None, Some(re)) => match Regex::new(&format!("^(?:{re})$")) {
            Ok(re) => Some(NameMatch::Regex(re)),
            Err(e) => {
                problems.push((
                    format!("{at}.metric_regex"),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                ));
                None
            }
        },
        _ => {
            problems.push((
                at.to_owned(),
                "a rule needs exactly one of `metric` or `metric_regex`".into(),
            ));
            None
        }
    };
    if let Some(u) = &r.unit {
        if !units::known(u) {
            problems.push((
                format!("{at}.unit"),
                format!("unknown unit `{u}`; known: {}", units::KNOWN),
            ));
        }
    }
    if let Some(u) = &r.from_unit {
        if !units::known(u) {
            problems.push((
                format!("{at}.from_unit"),
                format!("unknown unit `{u}`; known: {}", units::KNOWN),
            ));
        } else if r.unit.is_none() {
            problems.push((
                format!("{at}.from_unit"),
                "`from_unit` needs `unit` (the unit to convert to)".into(),
            ));
        }
    }
    if let (Some(from), Some(to)) = (&r.from_unit, &r.unit) {
        if units::known(from) && units::known(to) && units::factor(from, to).is_none() {
            problems.push((
                format!("{at}.unit"),
                format!("cannot convert `{from}` to `{to}`"),
            ));
        }
    }
    if r.rename.as_deref() == Some("") {
        problems.push((format!("{at}.rename"), "must not be empty".into()));
    }
    if problems.len() > before {
        return None;
    }
    let numbered = matches!(matcher, Some(NameMatch::Regex(_)));
    Some(Rule {
        matcher: matcher?,
        rename: r
            .rename
            .as_deref()
            .map(|t| if numbered { brace_numbers(t) } else { t.to_owned() }),
        rename_attributes: r
            .rename_attributes
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
        drop_attributes: r.drop_attributes.clone(),
        unit: r.unit.clone(),
        from_unit: r.from_unit.clone(),
    })
}

/// `$1_ms` → `${1}_ms`: a numbered capture ends at its last digit, as users read it (the regex
/// crate would take `1_ms` as a group name); `$$`, `${…}` and `$name` are left as they are.
fn brace_numbers(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 4);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        match chars.peek() {
            Some('$') => {
                out.push('$');
                chars.next();
            }
            Some(d) if d.is_ascii_digit() => {
                out.push('{');
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            _ => {}
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a mapping file could not be used; carries the file, line and key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(ConfigError);

/// Reads, decodes and compiles one mapping file; every problem names the file, line and key.
pub fn load_mapping(path: &str) -> Result<Vec<Rule>, Vec<MappingError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![MappingError(ConfigError {
            file: path.to_owned(),
            path: None,
            line: None,
            column: None,
            message: format!("cannot read mapping file: {e}"),
        })]
    })?;
    let source = Source::parse(path, &text).map_err(|e| vec![MappingError(e)])?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| {
        vec![MappingError(
            source.error_at(&[], one_line(&e.to_string())),
        )]
    })?;
    let file: MappingFile = serde_path_to_error::deserialize(value).map_err(|err| {
        let segs = to_segs(err.path());
        vec![MappingError(
            source.error_at(&segs, one_line(&err.into_inner().to_string())),
        )]
    })?;
    let mut problems = Vec::new();
    let rules: Vec<Rule> = file
        .rule
        .iter()
        .enumerate()
        .filter_map(|(i, r)| compile(r, &format!("rule[{i}]"), &mut problems))
        .collect();
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems
            .into_iter()
            .map(|(p, m)| MappingError(source.error_at(&parse_path(&p), m)))
            .collect())
    }
}

fn to_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            _ => None,
        })
        .collect()
}

/// `rule[2].metric_regex` → segments.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next() {
            out.push(Seg::Key(key.to_owned()));
        }
        for idx in pieces {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(n));
            }
        }
    }
    out
}

/// The built processor: rules in the order they apply.
#[derive(Debug)]
pub struct MetricTransform {
    rules: Vec<Rule>,
}

impl MetricTransform {
    /// Compiles the settings (mapping files first, then inline rules).
    pub fn new(cfg: &MetricTransformConfig) -> Result<Self, String> {
        let mut rules = Vec::new();
        for path in &cfg.mappings {
            rules.extend(load_mapping(path).map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?);
        }
        let mut problems = Vec::new();
        for (i, r) in cfg.rule.iter().enumerate() {
            rules.extend(compile(r, &format!("rule[{i}]"), &mut problems));
        }
        if let Some((p, m)) = problems.first() {
            return Err(format!("{p}: {m}"));
        }
        Ok(Self { rules })
    }

    /// Applies every matching rule to one metric, in order (a later rule sees the earlier renames).
    pub fn apply(&self, m: &mut Metric) {
        for r in &self.rules {
            let matched = match &r.matcher {
                NameMatch::Exact(n) => m.name == *n,
                NameMatch::Regex(re) => re.is_match(&m.name),
            };
            if !matched {
                continue;
            }
            if let Some(to) = &r.rename {
                m.name = match &r.matcher {
                    NameMatch::Exact(_) => to.clone(),
                    NameMatch::Regex(re) => re.replace(&m.name, to.as_str()).into_owned(),
                };
            }
            if !r.rename_attributes.is_empty() || !r.drop_attributes.is_empty() {
                retain_data_points(m, |attrs| {
                    attrs.retain(|kv| !r.drop_attributes.contains(&kv.key));
                    for kv in attrs.iter_mut() {
                        if let Some((_, new)) = r.rename_attributes.iter().find(|(o, _)| *o == kv.key)
                        {
                            kv.key.clone_from(new);
                        }
                    }
                    true
                });
            }
            if let Some(to) = &r.unit {
                let from = r.from_unit.as_deref().unwrap_or(m.unit.as_str());
                if from != to {
                    if let Some(f) = units::factor(from, to) {
                        if scale_values(m, f) {
                            m.unit.clone_from(to);
                        }
                    }
                }
            }
        }
    }
}

fn scale_number(v: &mut Option<number_data_point::Value>, f: f64) {
    use number_data_point::Value;
    *v = match *v {
        Some(Value::AsDouble(d)) => Some(Value::AsDouble(d * f)),
        Some(Value::AsInt(i)) => Some(int_or_double(i, f)),
        None => None,
    };
}

/// An integer scaled by a whole factor stays an integer (`s` → `ms`); otherwise it becomes a double.
fn int_or_double(i: i64, f: f64) -> number_data_point::Value {
    use number_data_point::Value;
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        // The factor is a whole number well inside i64's range.
        #[allow(clippy::cast_possible_truncation)]
        if let Some(v) = i.checked_mul(f as i64) {
            return Value::AsInt(v);
        }
    }
    Value::AsDouble(i as f64 * f)
}

fn scale_exemplars(ex: &mut [opentelemetry_proto::tonic::metrics::v1::Exemplar], f: f64) {
    for e in ex {
        e.value = match e.value {
            Some(exemplar::Value::AsDouble(d)) => Some(exemplar::Value::AsDouble(d * f)),
            Some(exemplar::Value::AsInt(i)) => Some(match int_or_double(i, f) {
                number_data_point::Value::AsInt(v) => exemplar::Value::AsInt(v),
                number_data_point::Value::AsDouble(v) => exemplar::Value::AsDouble(v),
            }),
            None => None,
        };
    }
}

/// Multiplies every value of `m` by `f`; false (nothing changed) for exponential histograms,
/// whose power-of-two buckets cannot take an arbitrary factor.
fn scale_values(m: &mut Metric, f: f64) -> bool {
    match &mut m.data {
        Some(Data::Gauge(g)) => {
            for p in &mut g.data_points {
                scale_number(&mut p.value, f);
                scale_exemplars(&mut p.exemplars, f);
            }
        }
        Some(Data::Sum(s)) => {
            for p in &mut s.data_points {
                scale_number(&mut p.value, f);
                scale_exemplars(&mut p.exemplars, f);
            }
        }
        Some(Data::Histogram(h)) => {
            for p in &mut h.data_points {
                p.sum = p.sum.map(|v| v * f);
                p.min = p.min.map(|v| v * f);
                p.max = p.max.map(|v| v * f);
                for b in &mut p.explicit_bounds {
                    *b *= f;
                }
                scale_exemplars(&mut p.exemplars, f);
            }
        }
        Some(Data::Summary(s)) => {
            for p in &mut s.data_points {
                p.sum *= f;
                for q in &mut p.quantile_values {
                    q.value *= f;
                }
            }
        }
        Some(Data::ExponentialHistogram(_)) | None => return false,
    }
    true
}

impl Processor for MetricTransform {
    fn process(&self, data: Telemetry) -> Option<Telemetry> {
        let mut data = data;
        if let Err(e) = data.decode_in_place() {
            tracing::error!(error = %e, "metric_transform: cannot decode request; passing it on unchanged");
            return Some(data);
        }
        if let Telemetry::Metrics(r) = &mut data {
            for m in r
                .resource_metrics
                .iter_mut()
                .flat_map(|rm| &mut rm.scope_metrics)
                .flat_map(|sm| &mut sm.metrics)
            {
                self.apply(m);
            }
        }
        Some(data)
    }
}

impl ProcessorKind for MetricTransformConfig {
    const TYPE: &'static str = "metric_transform";

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.mappings.is_empty() && self.rule.is_empty() {
            problems.at("", "needs `mappings` or at least one `rule`");
        }
        for (i, path) in self.mappings.iter().enumerate() {
            if let Err(errs) = load_mapping(path) {
                for e in errs {
                    problems.at(&format!("mappings[{i}]"), e.to_string());
                }
            }
        }
        let mut found = Vec::new();
        for (i, r) in self.rule.iter().enumerate() {
            compile(r, &format!("rule[{i}]"), &mut found);
        }
        for (p, m) in found {
            problems.at(&p, m);
        }
    }

    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        let t = MetricTransform::new(self)?;
        Ok(Stateless::new(ctx.name, Arc::new(t), ctx.metrics))
    }
}

#[cfg(test)]
mod tests;
