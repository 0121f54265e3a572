//! Splitting a batch into per-gateway parts: from the wire when the batch is OTLP protobuf (no
//! decode), from the decoded request otherwise (and as the fallback for bodies the wire walk
//! leaves to the decoder).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use sluice_config::Signal;
use sluice_core::wire::split::{split as wire_split, Part};
use sluice_core::{Encoded, Telemetry};

/// A router: the part (index) for an item's trace id (`None`: a log record without one).
pub type Route<'a> = dyn FnMut(Option<&[u8]>) -> usize + 'a;

/// Splits a traces or logs batch into `n` parts by `route`; each part is OTLP protobuf with its
/// item count (empty parts have no items). Other signals, or data that does not split, give
/// `None` (the caller sends such a batch whole).
pub fn split(batch: &Telemetry, n: usize, route: &mut Route<'_>) -> Option<Vec<(Telemetry, u64)>> {
    let signal = batch.signal();
    if !matches!(signal, Signal::Traces | Signal::Logs) {
        return None;
    }
    let mut parts = vec![Part::default(); n];
    let from_wire = match batch {
        Telemetry::Encoded(e) => e
            .chunks_with_items()
            .all(|(chunk, _)| wire_split(signal, chunk, &mut parts, route).is_ok()),
        _ => false,
    };
    if !from_wire {
        // A decoded batch (a processor read it), or a body the walk left to the decoder.
        let decoded = batch.decoded().ok()?;
        let split = split_decoded(&decoded, n, route)?;
        return Some(
            split
                .into_iter()
                .map(|t| {
                    let items = t.item_count();
                    (t, items)
                })
                .collect(),
        );
    }
    Some(
        parts
            .into_iter()
            .map(|p| {
                let t = Telemetry::Encoded(Encoded::new(signal, Bytes::from(p.body), p.items));
                (t, p.items)
            })
            .collect(),
    )
}

/// The decoded split: every span (log record) cloned into its part under copies of its resource
/// and scope; resources and scopes left without items are left out. The wire split must give
/// exactly this.
pub fn split_decoded(batch: &Telemetry, n: usize, route: &mut Route<'_>) -> Option<Vec<Telemetry>> {
    match batch {
        Telemetry::Traces(req) => {
            let mut out = vec![ExportTraceServiceRequest::default(); n];
            for rs in &req.resource_spans {
                let mut per: Vec<Vec<ScopeSpans>> = vec![Vec::new(); n];
                for ss in &rs.scope_spans {
                    let mut spans = vec![Vec::new(); n];
                    for span in &ss.spans {
                        let id = Some(span.trace_id.as_slice()).filter(|i| !i.is_empty());
                        spans.get_mut(route(id))?.push(span.clone());
                    }
                    for (d, spans) in spans.into_iter().enumerate() {
                        if !spans.is_empty() {
                            per.get_mut(d)?.push(ScopeSpans {
                                scope: ss.scope.clone(),
                                spans,
                                schema_url: ss.schema_url.clone(),
                            });
                        }
                    }
                }
                for (d, scope_spans) in per.into_iter().enumerate() {
                    if !scope_spans.is_empty() {
                        out.get_mut(d)?.resource_spans.push(ResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans,
                            schema_url: rs.schema_url.clone(),
                        });
                    }
                }
            }
            Some(out.into_iter().map(Telemetry::Traces).collect())
        }
        Telemetry::Logs(req) => {
            let mut out = vec![ExportLogsServiceRequest::default(); n];
            for rl in &req.resource_logs {
                let mut per: Vec<Vec<ScopeLogs>> = vec![Vec::new(); n];
                for sl in &rl.scope_logs {
                    let mut records = vec![Vec::new(); n];
                    for r in &sl.log_records {
                        let id = Some(r.trace_id.as_slice()).filter(|i| !i.is_empty());
                        records.get_mut(route(id))?.push(r.clone());
                    }
                    for (d, log_records) in records.into_iter().enumerate() {
                        if !log_records.is_empty() {
                            per.get_mut(d)?.push(ScopeLogs {
                                scope: sl.scope.clone(),
                                log_records,
                                schema_url: sl.schema_url.clone(),
                            });
                        }
                    }
                }
                for (d, scope_logs) in per.into_iter().enumerate() {
                    if !scope_logs.is_empty() {
                        out.get_mut(d)?.resource_logs.push(ResourceLogs {
                            resource: rl.resource.clone(),
                            scope_logs,
                            schema_url: rl.schema_url.clone(),
                        });
                    }
                }
            }
            Some(out.into_iter().map(Telemetry::Logs).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn traces() -> ExportTraceServiceRequest {
        let mut rng = fastrand::Rng::with_seed(7);
        let resource_spans = (0..3)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &format!("svc-{r}"))],
                    ..Default::default()
                }),
                scope_spans: (0..2)
                    .map(|s| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope-{s}"),
                            version: "1.0".into(),
                            ..Default::default()
                        }),
                        spans: (0..40)
                            .map(|i| Span {
                                trace_id: (0..16).map(|_| rng.u8(..)).collect(),
                                span_id: (0..8).map(|_| rng.u8(..)).collect(),
                                name: format!("op-{i}"),
                                attributes: vec![kv("i", &i.to_string())],
                                ..Default::default()
                            })
                            .collect(),
                        schema_url: if s == 1 { "https://schema/1".into() } else { String::new() },
                    })
                    .collect(),
                schema_url: "https://schema/r".into(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    fn by_first_byte(n: usize) -> impl FnMut(Option<&[u8]>) -> usize {
        move |id| id.and_then(|i| i.first()).map_or(0, |b| usize::from(*b) % n)
    }

    #[test]
    fn wire_parts_decode_and_reencode_equal_to_the_decoded_split() {
        let req = traces();
        let body = Bytes::from(req.encode_to_vec());
        let batch = Telemetry::Encoded(Encoded::check(Signal::Traces, body).unwrap());
        let wire = split(&batch, 3, &mut by_first_byte(3)).unwrap();
        let decoded = split_decoded(&Telemetry::Traces(req.clone()), 3, &mut by_first_byte(3)).unwrap();
        let mut total = 0;
        for ((w, items), d) in wire.into_iter().zip(decoded) {
            let Telemetry::Encoded(_) = &w else { panic!("the wire split keeps data encoded") };
            let w = w.into_decoded().unwrap();
            assert_eq!(w, d);
            assert_eq!(w.encode_protobuf(), d.encode_protobuf());
            assert_eq!(items, d.item_count());
            assert!(items > 0);
            total += items;
        }
        assert_eq!(total, 240);
    }

    #[test]
    fn every_span_of_a_trace_lands_in_one_part_and_batches_of_several_chunks_split_too() {
        let req = traces();
        let mut batch = Telemetry::Encoded(
            Encoded::check(Signal::Traces, Bytes::from(req.encode_to_vec())).unwrap(),
        );
        // A batch of two requests (what the batch processor makes of encoded data).
        batch
            .try_merge(Telemetry::Encoded(
                Encoded::check(Signal::Traces, Bytes::from(req.encode_to_vec())).unwrap(),
            ))
            .unwrap();
        let parts = split(&batch, 4, &mut by_first_byte(4)).unwrap();
        let mut seen = std::collections::HashMap::new();
        for (d, (p, _)) in parts.into_iter().enumerate() {
            let Telemetry::Traces(t) = p.into_decoded().unwrap() else { panic!() };
            for span in t.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                assert_eq!(*seen.entry(span.trace_id.clone()).or_insert(d), d);
                assert_eq!(usize::from(span.trace_id[0]) % 4, d);
            }
        }
        assert_eq!(seen.len(), 240);
    }

    #[test]
    fn logs_split_by_trace_id_and_those_without_one_go_where_the_router_says() {
        let records: Vec<LogRecord> = (0..30u8)
            .map(|i| LogRecord {
                trace_id: if i % 3 == 0 { Vec::new() } else { vec![i; 16] },
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("line {i}"))),
                }),
                ..Default::default()
            })
            .collect();
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource::default()),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let batch = Telemetry::Encoded(
            Encoded::check(Signal::Logs, Bytes::from(req.encode_to_vec())).unwrap(),
        );
        let mut route = |id: Option<&[u8]>| id.map_or(2, |i| usize::from(i[0]) % 2);
        let wire = split(&batch, 3, &mut route).unwrap();
        let decoded = split_decoded(&Telemetry::Logs(req), 3, &mut route).unwrap();
        let counts: Vec<u64> = wire.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![10, 10, 10]);
        for ((w, _), d) in wire.into_iter().zip(decoded) {
            assert_eq!(w.into_decoded().unwrap(), d);
        }
    }

    #[test]
    fn metrics_are_not_split() {
        let m = Telemetry::Metrics(Default::default());
        assert!(split(&m, 3, &mut |_| 0).is_none());
    }
}
