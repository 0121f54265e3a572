//! Alert rule settings: the guide's `[[processors.NAME.rule]]` tables.

use serde::Deserialize;
use sluice_config::HumanDuration;
use std::collections::BTreeMap;

/// `[processors.NAME] type = "alert_rules"`: evaluates rules on the metric stream (metrics pass
/// through untouched) and emits alert log records into the pipeline's exporters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRulesConfig {
    /// The rules.
    pub rule: Vec<RuleConfig>,
    /// How often series that stopped reporting are checked (a firing one resolves).
    #[serde(default = "default_check_interval")]
    pub check_interval: HumanDuration,
    /// A series that sent nothing for this long is gone: a firing alert on it resolves.
    #[serde(default = "default_stale_after")]
    pub stale_after: HumanDuration,
}

fn default_check_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}

fn default_stale_after() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The alert's name (`alertname`).
    pub name: String,
    /// The metric the rule reads.
    pub metric: String,
    /// Conditions on resource and data point attributes: `key='v'`, `key!='v'`, `key=~'re'`,
    /// `key!~'re'` (regexes match the whole value, as in Prometheus).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// For histograms: the quantile the rule compares (0..=1).
    pub quantile: Option<f64>,
    /// The value to compare with, in `unit` when given.
    pub threshold: f64,
    /// How the value is compared with the threshold.
    #[serde(default)]
    pub op: Op,
    /// How long the condition must hold before the alert fires (Prometheus `for`).
    #[serde(default)]
    pub duration: HumanDuration,
    /// The sliding window rates and histogram quantiles are computed over.
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    /// Converts the metric's values to this unit before comparing (`ms` for a metric in `s`).
    pub unit: Option<String>,
    /// Labels added to the alert (besides the series' own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations sent with the alert (Alertmanager shows them).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// The comparison of a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Op {
    /// Fires above the threshold.
    #[default]
    #[serde(rename = ">")]
    Gt,
    /// Fires at or above the threshold.
    #[serde(rename = ">=")]
    Ge,
    /// Fires below the threshold.
    #[serde(rename = "<")]
    Lt,
    /// Fires at or below the threshold.
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// Whether `value` breaches `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }
}
