//! The filter processor: drops spans, log records and metric data points whose attributes match
//! a condition (health checks, debug traffic). What it drops is counted by the pipeline as
//! `sluice_dropped_items_total{reason="filtered"}`.

pub mod config;

pub use config::{Condition, FilterConfig};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sluice_config::Signal;
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::telemetry::{data_point_count, retain_data_points};
use sluice_core::{Processor, Stateless, Telemetry};
use std::sync::Arc;

/// The built filter.
pub struct Filter {
    conditions: Vec<Condition>,
}

fn text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

impl Filter {
    /// Whether an item with `attrs` under `resource` is dropped.
    fn drops(&self, attrs: &[KeyValue], resource: Option<&Resource>) -> bool {
        self.conditions.iter().any(|c| {
            let found = attrs
                .iter()
                .chain(resource.map_or(&[][..], |r| &r.attributes[..]))
                .find(|kv| kv.key == c.attribute);
            match (&c.equals, c.exists) {
                (Some(want), _) => found.and_then(text).is_some_and(|v| &v == want),
                (None, Some(exists)) => found.is_some() == exists,
                (None, None) => false,
            }
        })
    }
}

impl Processor for Filter {
    fn process(&self, mut data: Telemetry) -> Option<Telemetry> {
        if let Err(e) = data.decode_in_place() {
            // Cannot happen for bodies the receiver checked; pass the data on rather than lose it.
            tracing::error!(error = %e, "filter: cannot decode request; passing it on unchanged");
            return Some(data);
        }
        match &mut data {
            Telemetry::Traces(r) => {
                for rs in &mut r.resource_spans {
                    let res = rs.resource.as_ref();
                    for ss in &mut rs.scope_spans {
                        ss.spans.retain(|s| !self.drops(&s.attributes, res));
                    }
                    rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                }
                r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            }
            Telemetry::Logs(r) => {
                for rl in &mut r.resource_logs {
                    let res = rl.resource.as_ref();
                    for sl in &mut rl.scope_logs {
                        sl.log_records.retain(|l| !self.drops(&l.attributes, res));
                    }
                    rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
                }
                r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
            }
            Telemetry::Metrics(r) => {
                for rm in &mut r.resource_metrics {
                    let res = rm.resource.as_ref();
                    for sm in &mut rm.scope_metrics {
                        for m in &mut sm.metrics {
                            retain_data_points(m, |attrs| !self.drops(attrs, res));
                        }
                        sm.metrics.retain(|m| data_point_count(m) > 0);
                    }
                    rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
                }
                r.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
            }
            // Validation keeps this processor out of profile pipelines.
            Telemetry::Profiles(_) | Telemetry::Encoded(_) => {}
        }
        Some(data)
    }
}

impl ProcessorKind for FilterConfig {
    const TYPE: &'static str = "filter";

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.drop_when.is_empty() {
            problems.at("drop_when", "needs at least one condition");
        }
        for (i, c) in self.drop_when.iter().enumerate() {
            if c.equals.is_some() == c.exists.is_some() {
                problems.at(
                    &format!("drop_when[{i}]"),
                    "a condition needs exactly one of `equals` or `exists`",
                );
            }
        }
    }

    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        let filter = Filter {
            conditions: self.drop_when.clone(),
        };
        Ok(Stateless::new(ctx.name, Arc::new(filter), ctx.metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn drops_matching_spans_and_empty_containers() {
        let f = Filter {
            conditions: vec![
                Condition {
                    attribute: "http.route".into(),
                    equals: Some("/healthz".into()),
                    exists: None,
                },
                Condition {
                    attribute: "debug".into(),
                    equals: None,
                    exists: Some(true),
                },
            ],
        };
        let span = |attrs: Vec<KeyValue>| Span {
            attributes: attrs,
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![
                            span(vec![kv("http.route", "/healthz")]),
                            span(vec![kv("http.route", "/pay")]),
                            span(vec![kv("debug", "1")]),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("debug", "yes")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(vec![])],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let out = f.process(Telemetry::Traces(req)).unwrap();
        assert_eq!(out.item_count(), 1);
        let Telemetry::Traces(r) = out else { panic!() };
        assert_eq!(r.resource_spans.len(), 1);
        assert_eq!(r.resource_spans[0].scope_spans[0].spans[0].attributes[0], kv("http.route", "/pay"));
    }
}
