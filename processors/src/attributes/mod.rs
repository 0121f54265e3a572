//! The attributes processor: insert, update, upsert or delete attributes on every span, log
//! record and metric data point (e.g. to add `deployment.environment` or drop a secret header).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
pub mod config;

pub use config::{AttributeAction, AttributeActionKind, AttributesConfig};
use sluice_config::Signal;
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::telemetry::retain_data_points;
use sluice_core::{Processor, Stateless, Telemetry};
use std::sync::Arc;

/// A configured list of attribute actions.
pub struct AttributesProcessor {
    actions: Vec<(String, AttributeActionKind, Option<String>)>,
}

impl AttributesProcessor {
    /// Builds the processor from validated settings.
    pub fn new(cfg: &AttributesConfig) -> Self {
        Self {
            actions: cfg
                .actions
                .iter()
                .map(|a| (a.key.clone(), a.action, a.value.clone()))
                .collect(),
        }
    }

    /// Applies every action to one attribute list. A key repeated in the list (OTLP does not forbid
    /// it) is acted on everywhere it stands: `delete` removes every copy — a redaction a second copy
    /// could slip past is no redaction — and `update`/`upsert` change every copy.
    fn apply(&self, attrs: &mut Vec<KeyValue>) {
        for (key, action, value) in &self.actions {
            let new_value = || {
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(
                        value.clone().unwrap_or_default(),
                    )),
                })
            };
            let present = attrs.iter().any(|kv| &kv.key == key);
            match (action, present) {
                (AttributeActionKind::Delete, true) => attrs.retain(|kv| &kv.key != key),
                (AttributeActionKind::Update | AttributeActionKind::Upsert, true) => attrs
                    .iter_mut()
                    .filter(|kv| &kv.key == key)
                    .for_each(|kv| kv.value = new_value()),
                (AttributeActionKind::Insert | AttributeActionKind::Upsert, false) => {
                    attrs.push(KeyValue {
                        key: key.clone(),
                        value: new_value(),
                        ..Default::default()
                    })
                }
                _ => {}
            }
        }
    }
}

impl Processor for AttributesProcessor {
    fn process(&self, mut data: Telemetry) -> Option<Telemetry> {
        if let Err(e) = data.decode_in_place() {
            // Cannot happen for bodies the receiver checked; pass the data on rather than lose it.
            tracing::error!(error = %e, "attributes: cannot decode request; passing it on unchanged");
            return Some(data);
        }
        match &mut data {
            Telemetry::Traces(r) => r
                .resource_spans
                .iter_mut()
                .flat_map(|rs| rs.scope_spans.iter_mut())
                .flat_map(|ss| ss.spans.iter_mut())
                .for_each(|s| self.apply(&mut s.attributes)),
            Telemetry::Logs(r) => r
                .resource_logs
                .iter_mut()
                .flat_map(|rl| rl.scope_logs.iter_mut())
                .flat_map(|sl| sl.log_records.iter_mut())
                .for_each(|l| self.apply(&mut l.attributes)),
            Telemetry::Metrics(r) => {
                for m in r
                    .resource_metrics
                    .iter_mut()
                    .flat_map(|rm| rm.scope_metrics.iter_mut())
                    .flat_map(|sm| sm.metrics.iter_mut())
                {
                    retain_data_points(m, |attrs| {
                        self.apply(attrs);
                        true
                    });
                }
            }
            // Validation keeps this processor out of profile pipelines.
            Telemetry::Profiles(_) | Telemetry::Encoded(_) => {}
        }
        Some(data)
    }
}

impl ProcessorKind for AttributesConfig {
    const TYPE: &'static str = "attributes";

    fn signals(&self) -> &'static [Signal] {
        // Profile attributes live in a shared dictionary; editing them is not supported.
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.actions.is_empty() {
            problems.at("actions", "needs at least one action");
        }
        for (i, act) in self.actions.iter().enumerate() {
            let needs_value = act.action != AttributeActionKind::Delete;
            if needs_value && act.value.is_none() {
                problems.at(
                    &format!("actions[{i}]"),
                    format!("action {:?} needs a `value`", act.action).to_lowercase(),
                );
            } else if !needs_value && act.value.is_some() {
                problems.at(&format!("actions[{i}].value"), "a delete action takes no `value`");
            }
        }
    }

    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        Ok(Stateless::new(ctx.name, Arc::new(AttributesProcessor::new(self)), ctx.metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::AttributeAction;

    #[test]
    fn insert_update_upsert_delete() {
        let p = AttributesProcessor::new(&AttributesConfig {
            actions: vec![
                AttributeAction {
                    key: "env".into(),
                    action: AttributeActionKind::Insert,
                    value: Some("prod".into()),
                },
                AttributeAction {
                    key: "keep".into(),
                    action: AttributeActionKind::Insert,
                    value: Some("no".into()),
                },
                AttributeAction {
                    key: "secret".into(),
                    action: AttributeActionKind::Delete,
                    value: None,
                },
                AttributeAction {
                    key: "absent".into(),
                    action: AttributeActionKind::Update,
                    value: Some("x".into()),
                },
            ],
        });
        let kv = |k: &str, v: &str| KeyValue {
            key_strindex: 0,
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        };
        let mut attrs = vec![kv("keep", "yes"), kv("secret", "s")];
        p.apply(&mut attrs);
        assert_eq!(attrs, vec![kv("keep", "yes"), kv("env", "prod")]);
    }

    #[test]
    fn a_repeated_key_is_deleted_and_updated_everywhere() {
        let action = |key: &str, action, value: Option<&str>| AttributeAction {
            key: key.into(),
            action,
            value: value.map(Into::into),
        };
        let kv = |k: &str, v: &str| KeyValue {
            key_strindex: 0,
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        };
        let p = AttributesProcessor::new(&AttributesConfig {
            actions: vec![
                action("password", AttributeActionKind::Delete, None),
                action("env", AttributeActionKind::Upsert, Some("prod")),
                action("env", AttributeActionKind::Insert, Some("never")),
            ],
        });
        let mut attrs = vec![
            kv("password", "a"),
            kv("env", "dev"),
            kv("password", "b"),
            kv("env", "test"),
        ];
        p.apply(&mut attrs);
        assert_eq!(attrs, vec![kv("env", "prod"), kv("env", "prod")]);
    }
}
