//! Kafka message values for a batch: OTLP protobuf or OTLP/JSON, each at most `max_message_bytes`.
//!
//! Encoded batches (lists of request bodies) are packed into messages without decoding: a message
//! is a concatenation of whole requests, which decodes as one request. Anything that must be cut
//! finer is decoded and halved (resources, scopes, then spans / log records / metrics) until each
//! part fits; an item that is too large on its own cannot be sent and is reported as rejected.

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use super::config::KafkaEncoding;
use sluice_core::{Encoded, Telemetry, TelemetryError};
use std::collections::HashMap;

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The trace id in hex, when partitioning by trace.
    pub key: Option<String>,
    /// The OTLP request.
    pub value: Bytes,
    /// Items in it.
    pub items: u64,
}

/// A batch cut into messages.
#[derive(Debug, Default)]
pub struct Split {
    /// What to produce.
    pub messages: Vec<Message>,
    /// Items that did not fit in a message on their own.
    pub oversize: u64,
}

/// Cuts `batch` into messages of at most `max` bytes.
pub fn messages(
    batch: &Telemetry,
    encoding: KafkaEncoding,
    max: usize,
    by_trace: bool,
) -> Result<Split, TelemetryError> {
    let mut split = Split::default();
    let keyed = by_trace
        && matches!(
            batch.signal(),
            sluice_config::Signal::Traces | sluice_config::Signal::Logs
        );
    if let (Telemetry::Encoded(e), KafkaEncoding::OtlpProto, false) = (batch, encoding, keyed) {
        pack(e, max, &mut split)?;
        return Ok(split);
    }
    let decoded = batch.decoded()?;
    if keyed {
        for (key, part) in by_trace_id(decoded.into_owned()) {
            let start = split.messages.len();
            fit(part, encoding, max, &mut split)?;
            for m in &mut split.messages[start..] {
                m.key.clone_from(&key);
            }
        }
        return Ok(split);
    }
    // A batch that fits is encoded where it is; only cutting it needs a copy.
    match encode_if_fits(&decoded, encoding, max)? {
        Some(value) => split.messages.push(Message {
            key: None,
            value,
            items: decoded.item_count(),
        }),
        None => cut(decoded.into_owned(), encoding, max, &mut split)?,
    }
    Ok(split)
}

/// Packs whole encoded requests into messages; a request larger than `max` is decoded and cut.
fn pack(e: &Encoded, max: usize, split: &mut Split) -> Result<(), TelemetryError> {
    let signal = e.signal();
    let mut cur: Vec<&Bytes> = Vec::new();
    let (mut cur_len, mut cur_items) = (0, 0);
    let flush =
        |cur: &mut Vec<&Bytes>, cur_len: &mut usize, cur_items: &mut u64, split: &mut Split| {
            let value = match cur.as_slice() {
                [] => return,
                [one] => (*one).clone(),
                many => {
                    let mut b = BytesMut::with_capacity(*cur_len);
                    for c in many {
                        b.extend_from_slice(c);
                    }
                    b.freeze()
                }
            };
            split.messages.push(Message {
                key: None,
                value,
                items: *cur_items,
            });
            cur.clear();
            *cur_len = 0;
            *cur_items = 0;
        };
    for (c, items) in e.chunks_with_items() {
        if c.len() > max {
            flush(&mut cur, &mut cur_len, &mut cur_items, split);
            let one = Telemetry::Encoded(Encoded::new(signal, c.clone(), items)).into_decoded()?;
            fit(one, KafkaEncoding::OtlpProto, max, split)?;
            continue;
        }
        if cur_len + c.len() > max {
            flush(&mut cur, &mut cur_len, &mut cur_items, split);
        }
        cur.push(c);
        cur_len += c.len();
        cur_items += items;
    }
    flush(&mut cur, &mut cur_len, &mut cur_items, split);
    Ok(())
}

fn encode(t: &Telemetry, encoding: KafkaEncoding) -> Result<Bytes, TelemetryError> {
    Ok(match encoding {
        KafkaEncoding::OtlpProto => t.encode_protobuf(),
        KafkaEncoding::OtlpJson => t.to_json()?.into(),
    })
}

/// The message value for `t`, or `None` when it is larger than `max`. Protobuf is sized without
/// encoding it (a walk, no allocation); JSON has to be written to be measured.
fn encode_if_fits(
    t: &Telemetry,
    encoding: KafkaEncoding,
    max: usize,
) -> Result<Option<Bytes>, TelemetryError> {
    if encoding == KafkaEncoding::OtlpProto && t.encoded_len() > max {
        return Ok(None);
    }
    Ok(Some(encode(t, encoding)?).filter(|v| v.len() <= max))
}

/// Emits `t` whole if it fits, else its halves, recursively.
fn fit(
    t: Telemetry,
    encoding: KafkaEncoding,
    max: usize,
    split: &mut Split,
) -> Result<(), TelemetryError> {
    let items = t.item_count();
    if items == 0 {
        return Ok(());
    }
    match encode_if_fits(&t, encoding, max)? {
        Some(value) => {
            split.messages.push(Message {
                key: None,
                value,
                items,
            });
            Ok(())
        }
        None => cut(t, encoding, max, split),
    }
}

/// Emits the halves of `t` (which does not fit); a single item that does not fit is counted.
fn cut(
    t: Telemetry,
    encoding: KafkaEncoding,
    max: usize,
    split: &mut Split,
) -> Result<(), TelemetryError> {
    let items = t.item_count();
    match halve(t) {
        Some((a, b)) => {
            fit(a, encoding, max, split)?;
            fit(b, encoding, max, split)
        }
        None => {
            split.oversize += items;
            Ok(())
        }
    }
}

/// Halves one OTLP request type: its resources, their scopes, then the scopes' item lists.
macro_rules! halve_request {
    ($r:expr, $variant:ident, $req:ident, $resources:ident, $Resource:ident, $scopes:ident, $Scope:ident, $items:ident) => {{
        let (a, b) = halve_top(
            $r.$resources,
            |r| r.$scopes.iter().map(|s| s.$items.len()).sum(),
            |mut r, n| {
                let (head, tail) = halve_nested(
                    std::mem::take(&mut r.$scopes),
                    |s| s.$items.len(),
                    |mut s, n| {
                        let other = $Scope {
                            $items: s.$items.split_off(n),
                            scope: s.scope.clone(),
                            schema_url: s.schema_url.clone(),
                        };
                        (s, other)
                    },
                    n,
                );
                let other = $Resource {
                    $scopes: tail,
                    resource: r.resource.clone(),
                    schema_url: r.schema_url.clone(),
                };
                r.$scopes = head;
                (r, other)
            },
        )?;
        Some((
            Telemetry::$variant($req { $resources: a }),
            Telemetry::$variant($req { $resources: b }),
        ))
    }};
}

/// Splits a request into two with about half the items each; `None` when it holds a single item
/// (or is a profile request, whose samples share one dictionary). Metrics are cut between metrics:
/// a metric's data points stay together.
pub fn halve(t: Telemetry) -> Option<(Telemetry, Telemetry)> {
    match t {
        Telemetry::Traces(r) => halve_request!(
            r,
            Traces,
            ExportTraceServiceRequest,
            resource_spans,
            ResourceSpans,
            scope_spans,
            ScopeSpans,
            spans
        ),
        Telemetry::Logs(r) => halve_request!(
            r,
            Logs,
            ExportLogsServiceRequest,
            resource_logs,
            ResourceLogs,
            scope_logs,
            ScopeLogs,
            log_records
        ),
        Telemetry::Metrics(r) => halve_request!(
            r,
            Metrics,
            ExportMetricsServiceRequest,
            resource_metrics,
            ResourceMetrics,
            scope_metrics,
            ScopeMetrics,
            metrics
        ),
        Telemetry::Profiles(_) | Telemetry::Encoded(_) => None,
    }
}

/// Splits `list` so the first part holds `n` (default: half) of the leaf items counted by `count`,
/// cutting one element in two with `cut` where the boundary falls inside it.
fn halve_nested<T>(
    list: Vec<T>,
    count: impl Fn(&T) -> usize,
    cut: impl Fn(T, usize) -> (T, T),
    n: usize,
) -> (Vec<T>, Vec<T>)
where
    T: Sized,
{
    let mut left = n;
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for x in list {
        let c = count(&x);
        if left == 0 {
            tail.push(x);
        } else if c <= left {
            left -= c;
            head.push(x);
        } else {
            let (a, b) = cut(x, left);
            left = 0;
            head.push(a);
            tail.push(b);
        }
    }
    (head, tail)
}

/// [`halve_nested`] at the top level: half of all items, `None` below two.
fn halve_top<T>(
    list: Vec<T>,
    count: impl Fn(&T) -> usize,
    cut: impl Fn(T, usize) -> (T, T),
) -> Option<(Vec<T>, Vec<T>)> {
    let total: usize = list.iter().map(&count).sum();
    if total < 2 {
        return None;
    }
    Some(halve_nested(list, count, cut, total / 2))
}

/// Groups one OTLP request type by trace id, keeping each item under its resource and scope. A
/// group opens a new resource (or scope) entry only when the item's differs from the last one it
/// appended under: same position in the input means the same entry, no comparison needed.
macro_rules! group_by_trace {
    ($r:expr, $variant:ident, $Req:ident, $resources:ident, $Resource:ident, $scopes:ident, $Scope:ident, $items:ident) => {{
        // Per trace id, in order of first appearance: its request and the input position
        // (resource, scope) it last appended under.
        let mut groups: Vec<(Vec<u8>, $Req, (usize, usize))> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for (ri, r) in $r.$resources.into_iter().enumerate() {
            let $Resource {
                resource,
                $scopes: scopes,
                schema_url,
            } = r;
            for (si, s) in scopes.into_iter().enumerate() {
                let $Scope {
                    scope,
                    $items: items,
                    schema_url: scope_schema,
                } = s;
                for item in items {
                    let g = *index.entry(item.trace_id.clone()).or_insert_with(|| {
                        groups.push((item.trace_id.clone(), $Req::default(), (usize::MAX, 0)));
                        groups.len() - 1
                    });
                    let (_, req, last) = &mut groups[g];
                    if last.0 != ri
                        && !req
                            .$resources
                            .last()
                            .is_some_and(|r| r.resource == resource && r.schema_url == schema_url)
                    {
                        req.$resources.push($Resource {
                            resource: resource.clone(),
                            $scopes: Vec::new(),
                            schema_url: schema_url.clone(),
                        });
                    }
                    let Some(r) = req.$resources.last_mut() else {
                        continue;
                    };
                    if *last != (ri, si)
                        && !r
                            .$scopes
                            .last()
                            .is_some_and(|s| s.scope == scope && s.schema_url == scope_schema)
                    {
                        r.$scopes.push($Scope {
                            scope: scope.clone(),
                            $items: Vec::new(),
                            schema_url: scope_schema.clone(),
                        });
                    }
                    *last = (ri, si);
                    if let Some(s) = r.$scopes.last_mut() {
                        s.$items.push(item);
                    }
                }
            }
        }
        groups
            .into_iter()
            .map(|(id, req, _)| {
                let key = (!id.is_empty()).then(|| const_hex::encode(&id));
                (key, Telemetry::$variant(req))
            })
            .collect()
    }};
}

/// One request per trace id (log records without one share a request with no key).
fn by_trace_id(t: Telemetry) -> Vec<(Option<String>, Telemetry)> {
    match t {
        Telemetry::Traces(r) => group_by_trace!(
            r,
            Traces,
            ExportTraceServiceRequest,
            resource_spans,
            ResourceSpans,
            scope_spans,
            ScopeSpans,
            spans
        ),
        Telemetry::Logs(r) => group_by_trace!(
            r,
            Logs,
            ExportLogsServiceRequest,
            resource_logs,
            ResourceLogs,
            scope_logs,
            ScopeLogs,
            log_records
        ),
        other => vec![(None, other)],
    }
}
