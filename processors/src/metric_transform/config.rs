//! Metric transform settings: inline rules and versioned mapping files of the same shape.

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[processors.NAME] type = "metric_transform"`: renames metrics and attribute keys and converts
/// units, by rules read from `mappings` files (in order) and then inline `rule`s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTransformConfig {
    /// Mapping files (`migrations/v1.2-to-v2.0.toml`), relative to the working directory of the
    /// process; each holds `[[rule]]` tables of the same shape as the inline ones.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// Inline rules, applied after the mapping files' rules.
    #[serde(default)]
    pub rule: Vec<TransformRule>,
}

/// One rule: which metrics it applies to and what it changes on them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformRule {
    /// The exact metric name this rule applies to.
    pub metric: Option<String>,
    /// A regular expression the whole metric name must match (instead of `metric`); its capture
    /// groups can be used in `rename` as `$1` / `${1}`.
    pub metric_regex: Option<String>,
    /// The new metric name.
    pub rename: Option<String>,
    /// Data point attribute keys to rename, old → new.
    #[serde(default)]
    pub rename_attributes: BTreeMap<String, String>,
    /// Data point attribute keys to remove.
    #[serde(default)]
    pub drop_attributes: Vec<String>,
    /// The unit to convert values to (`ms`); the metric's own unit field says what they are in.
    pub unit: Option<String>,
    /// The unit the values are in when the metric's unit field is empty or wrong.
    pub from_unit: Option<String>,
}

/// A mapping file: an optional version label and rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Free-form version label (`"v1.2-to-v2.0"`), for the humans who maintain the file.
    pub version: Option<String>,
    /// The rules, applied in order.
    #[serde(default)]
    pub rule: Vec<TransformRule>,
}
