//! Filter processor settings.

use serde::Deserialize;

/// `[processors.NAME] type = "filter"`: drops every span, log record and metric data point that
/// matches any of `drop_when`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Conditions, any of which drops an item.
    pub drop_when: Vec<Condition>,
}

/// One condition on an attribute of the item (or of its resource).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The attribute key, looked up on the item first, then on its resource.
    pub attribute: String,
    /// Matches when the value, as text, equals this.
    pub equals: Option<String>,
    /// Matches when the attribute is present (`true`) or absent (`false`).
    pub exists: Option<bool>,
}
