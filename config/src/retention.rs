//! Per-signal retention for the ClickHouse exporter: `ttl = "72h"` (every table) or
//! `ttl = { traces = "7d", logs = "30d", metrics = "24h", profiles = "3d" }` (a signal left out
//! keeps its data forever).

use crate::types::HumanDuration;
use crate::Signal;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// How long each signal's tables keep rows; `None` = forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Spans (`otel_traces` and its trace-id index).
    pub traces: Option<HumanDuration>,
    /// Metric data points (the five `otel_metrics_*` tables).
    pub metrics: Option<HumanDuration>,
    /// Log records.
    pub logs: Option<HumanDuration>,
    /// Profile samples.
    pub profiles: Option<HumanDuration>,
    /// Written as one duration for every signal (errors then point at `ttl` itself).
    pub uniform: bool,
}

impl Retention {
    /// The same retention for every signal.
    pub fn all(d: HumanDuration) -> Self {
        Self {
            traces: Some(d),
            metrics: Some(d),
            logs: Some(d),
            profiles: Some(d),
            uniform: true,
        }
    }

    /// The retention of one signal's tables.
    pub fn of(&self, s: Signal) -> Option<HumanDuration> {
        match s {
            Signal::Traces => self.traces,
            Signal::Metrics => self.metrics,
            Signal::Logs => self.logs,
            Signal::Profiles => self.profiles,
        }
    }

    /// Problems with the values, each with the signal it concerns (`None` when written uniformly).
    pub fn problems(&self) -> Vec<(Option<Signal>, String)> {
        let mut out = Vec::new();
        for s in Signal::ALL {
            if let Some(d) = self.of(s) {
                if d.0.as_secs() < 3600 {
                    out.push((
                        (!self.uniform).then_some(s),
                        "must be at least 1h".to_owned(),
                    ));
                    if self.uniform {
                        break;
                    }
                }
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerSignal {
    traces: Option<HumanDuration>,
    metrics: Option<HumanDuration>,
    logs: Option<HumanDuration>,
    profiles: Option<HumanDuration>,
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"72h\", or a table such as { traces = \"7d\", logs = \"30d\", metrics = \"24h\", profiles = \"3d\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Retention, E> {
                HumanDuration::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(Retention::all)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Retention, A::Error> {
                let p = PerSignal::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Retention {
                    traces: p.traces,
                    metrics: p.metrics,
                    logs: p.logs,
                    profiles: p.profiles,
                    uniform: false,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Deserialize)]
    struct W {
        ttl: Retention,
    }

    #[test]
    fn one_duration_or_a_table() {
        let w: W = toml::from_str(r#"ttl = "72h""#).unwrap();
        assert_eq!(
            w.ttl.logs.map(|d| d.0),
            Some(Duration::from_secs(72 * 3600))
        );
        assert!(w.ttl.uniform);
        let w: W = toml::from_str(r#"ttl = { traces = "7d", metrics = "24h" }"#).unwrap();
        assert_eq!(
            w.ttl.traces.map(|d| d.0),
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(w.ttl.logs, None);
        assert!(toml::from_str::<W>(r#"ttl = { spans = "7d" }"#).is_err());
        assert!(toml::from_str::<W>(r#"ttl = { traces = "soon" }"#).is_err());
    }

    #[test]
    fn short_retention_is_named_per_signal() {
        let w: W = toml::from_str(r#"ttl = { traces = "7d", logs = "5m" }"#).unwrap();
        assert_eq!(
            w.ttl.problems(),
            vec![(Some(Signal::Logs), "must be at least 1h".to_owned())]
        );
        let w: W = toml::from_str(r#"ttl = "5m""#).unwrap();
        assert_eq!(w.ttl.problems().len(), 1);
    }
}
