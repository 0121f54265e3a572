//! Alertmanager exporter settings.

use serde::Deserialize;
use sluice_config::HumanDuration;

/// `[exporters.NAME] type = "alertmanager"`: posts the alert log records of the `alert_rules`
/// processor to Alertmanager's v2 API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerExporterConfig {
    /// Alertmanager's base URL (`http://127.0.0.1:9093`); `/api/v2/alerts` is appended.
    pub endpoint: String,
    /// How often firing alerts are sent again (Alertmanager forgets alerts that are not), as
    /// Prometheus' `--rules.alert.resend-delay` (1m).
    #[serde(default = "default_resend_interval")]
    pub resend_interval: HumanDuration,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The `generatorURL` of every alert (a dashboard or the rule's source), if any.
    pub generator_url: Option<String>,
}

fn default_resend_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
