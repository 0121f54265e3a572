//! Attributes processor settings.

use serde::Deserialize;

/// Attributes processor settings: an ordered list of actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions applied in order to each span, log record and data point.
    pub actions: Vec<AttributeAction>,
}

/// One attribute edit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    /// The attribute key.
    pub key: String,
    /// What to do with it.
    pub action: AttributeActionKind,
    /// The string value for insert, update and upsert.
    pub value: Option<String>,
}

/// What an attribute action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeActionKind {
    /// Add the key when absent.
    Insert,
    /// Change the value when present.
    Update,
    /// Insert or update.
    Upsert,
    /// Remove the key.
    Delete,
}
