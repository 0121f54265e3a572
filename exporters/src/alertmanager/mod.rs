//! The Alertmanager exporter: turns the `alert_rules` processor's alert log records
//! (`event.name = "alert"`) into Alertmanager v2 alerts (`POST /api/v2/alerts`).
//!
//! Firing alerts are posted when they start and then every `resend_interval` with an `endsAt` four
//! intervals ahead (as Prometheus does), so Alertmanager keeps them while Sluice runs and lets them
//! expire if it stops; resolved alerts are posted once with their `endsAt`. The records come through
//! the normal queue and retry; the periodic resends are posted by a timer of this exporter (the next
//! resend replaces a failed one). Pending alerts and other records (and the metrics of the pipeline
//! the processor sits in) are acknowledged without a request: they are not alerts for Alertmanager.

pub mod config;

pub use config::AlertmanagerExporterConfig;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{json, Value};
use sluice_config::Signal;
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Telemetry};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// One alert as Alertmanager identifies it (by its label set).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Label names made valid for Alertmanager (`service.name` → `service_name`).
    pub labels: BTreeMap<String, String>,
    /// Annotations: the rule's, plus the value and threshold.
    pub annotations: BTreeMap<String, String>,
    /// When the condition started to hold.
    pub starts_at: SystemTime,
    /// When it resolved (`None` while firing).
    pub ends_at: Option<SystemTime>,
}

/// Shared between the exporter and its resend timer.
struct Inner {
    client: reqwest::Client,
    url: String,
    generator_url: Option<String>,
    resend: Duration,
    /// Firing alerts by label set.
    active: Mutex<HashMap<Vec<(String, String)>, Alert>>,
}

/// The built exporter.
pub struct AlertmanagerExporter {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

/// A label name Alertmanager accepts: `[a-zA-Z_][a-zA-Z0-9_]*` (others become `_`).
pub fn label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn str_of(kv: &KeyValue) -> Option<String> {
    Some(match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        _ => return None,
    })
}

fn kvlist(kv: Option<&KeyValue>) -> Vec<(String, String)> {
    match kv.and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
        Some(any_value::Value::KvlistValue(l)) => l
            .values
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), str_of(kv)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn time_of(kv: Option<&KeyValue>) -> Option<SystemTime> {
    match kv?.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(n) => {
            let n = u64::try_from(*n).ok().filter(|n| *n > 0)?;
            Some(UNIX_EPOCH + Duration::from_nanos(n))
        }
        _ => None,
    }
}

/// The alert a record announces, and whether it fires (`Some(true)`) or resolved
/// (`Some(false)`); `None` for records that are not firing or resolved alerts.
pub fn alert_of(r: &LogRecord) -> Option<(Alert, bool)> {
    let get = |k: &str| r.attributes.iter().find(|kv| kv.key == k);
    let is_alert =
        r.event_name == "alert" || get("event.name").and_then(str_of).as_deref() == Some("alert");
    if !is_alert {
        return None;
    }
    let firing = match get("state").and_then(str_of)?.as_str() {
        "firing" => true,
        "resolved" => false,
        _ => return None,
    };
    let mut labels: BTreeMap<String, String> = kvlist(get("labels"))
        .into_iter()
        .map(|(k, v)| (label_name(&k), v))
        .collect();
    if let Some(name) = get("alertname").and_then(str_of) {
        labels.insert("alertname".into(), name);
    }
    let mut annotations: BTreeMap<String, String> = kvlist(get("annotations")).into_iter().collect();
    for k in ["value", "threshold"] {
        if let Some(v) = get(k).and_then(str_of) {
            annotations.entry(k.to_owned()).or_insert(v);
        }
    }
    let record_time = if r.time_unix_nano > 0 {
        UNIX_EPOCH + Duration::from_nanos(r.time_unix_nano)
    } else {
        SystemTime::now()
    };
    let starts_at = time_of(get("starts_at")).unwrap_or(record_time);
    let ends_at = (!firing).then(|| time_of(get("ends_at")).unwrap_or(record_time));
    Some((
        Alert {
            labels,
            annotations,
            starts_at,
            ends_at,
        },
        firing,
    ))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Inner {
    /// The v2 API body for `alerts`; firing ones are valid for four resend intervals.
    fn body(&self, alerts: &[Alert]) -> Value {
        let valid_until = SystemTime::now() + self.resend * 4;
        Value::Array(
            alerts
                .iter()
                .map(|a| {
                    let mut v = json!({
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": rfc3339(a.starts_at),
                        "endsAt": rfc3339(a.ends_at.unwrap_or(valid_until).max(a.starts_at)),
                    });
                    if let (Some(u), Some(o)) = (&self.generator_url, v.as_object_mut()) {
                        o.insert("generatorURL".into(), Value::String(u.clone()));
                    }
                    v
                })
                .collect(),
        )
    }

    async fn post(&self, alerts: &[Alert]) -> Result<(), ExportError> {
        let body = serde_json::to_vec(&self.body(alerts))
            .map_err(|e| ExportError::permanent(format!("cannot serialize alerts: {e}")))?;
        let resp = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ExportError::retryable(format!("alertmanager {}: {e}", self.url)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = format!("alertmanager {}: HTTP {status}: {}", self.url, text.trim());
        Err(match status.as_u16() {
            429 | 503 => ExportError::throttled(msg),
            s if s >= 500 || s == 408 => ExportError::retryable(msg),
            _ => ExportError::permanent(msg),
        })
    }

    fn firing(&self) -> Vec<Alert> {
        self.active
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Posts the firing alerts every `resend` until the exporter is gone or stopped.
async fn resend_loop(inner: Weak<Inner>, resend: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resend, resend);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let firing = inner.firing();
        if firing.is_empty() {
            continue;
        }
        if let Err(e) = inner.post(&firing).await {
            // At most one line per resend interval.
            tracing::warn!(error = %e, alerts = firing.len(), "alertmanager: resending firing alerts failed; trying again next interval");
        }
    }
}

impl Exporter for AlertmanagerExporter {
    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let Telemetry::Logs(req) = batch else {
                // Metrics of the pipeline the rules run in: nothing for Alertmanager.
                return Ok(Delivered::ALL);
            };
            let alerts: Vec<(Alert, bool)> = req
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .flat_map(|sl| &sl.log_records)
                .filter_map(alert_of)
                .collect();
            if alerts.is_empty() {
                return Ok(Delivered::ALL);
            }
            if let Ok(mut active) = self.inner.active.lock() {
                for (a, firing) in &alerts {
                    let key: Vec<(String, String)> =
                        a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    if *firing {
                        active.insert(key, a.clone());
                    } else {
                        active.remove(&key);
                    }
                }
            }
            let list: Vec<Alert> = alerts.into_iter().map(|(a, _)| a).collect();
            self.inner.post(&list).await?;
            Ok(Delivered::ALL)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        self.stop.cancel();
        Box::pin(async { Ok(()) })
    }
}

impl Drop for AlertmanagerExporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ExporterKind for AlertmanagerExporterConfig {
    const TYPE: &'static str = "alertmanager";

    fn signals(&self) -> &'static [Signal] {
        // Metrics too: it sits in the metrics pipeline whose alert_rules processor emits the alerts.
        &[Signal::Metrics, Signal::Logs]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.endpoint.starts_with("https://") {
            problems.at("endpoint", "https:// is not supported by the alertmanager exporter yet (its client has no TLS); use http:// on the alerting network");
        } else if !self.endpoint.starts_with("http://") {
            problems.at("endpoint", "must be an http:// URL");
        }
        if self.resend_interval.0.is_zero() {
            problems.at("resend_interval", "must be longer than 0s");
        }
        if self.timeout.0.is_zero() {
            problems.at("timeout", "must be longer than 0s");
        }
    }

    fn build(&self, _ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout.0)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let inner = Arc::new(Inner {
            client,
            url: format!("{}/api/v2/alerts", self.endpoint.trim_end_matches('/')),
            generator_url: self.generator_url.clone(),
            resend: self.resend_interval.0,
            active: Mutex::new(HashMap::new()),
        });
        let stop = CancellationToken::new();
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "the alertmanager exporter needs the async runtime".to_owned())?;
        handle.spawn(resend_loop(
            Arc::downgrade(&inner),
            self.resend_interval.0,
            stop.clone(),
        ));
        Ok(Arc::new(AlertmanagerExporter { inner, stop }))
    }
}

#[cfg(test)]
mod tests;
