use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_config::{ByteSize, HumanDuration};

fn spans(n: usize) -> Telemetry {
    Telemetry::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn batcher(max: usize) -> Batcher {
    Batcher::new(&BatchConfig {
        max_items: max,
        max_bytes: ByteSize::mib(3),
        timeout: HumanDuration::from_millis(100),
    })
}

fn sized_span(name_len: usize) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "x".repeat(name_len),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn batches_stay_under_max_bytes_for_decoded_and_encoded_requests() {
    use prost::Message;
    let limit = 10_000;
    let mut b = Batcher::new(&BatchConfig {
        max_items: 1_000_000,
        max_bytes: ByteSize(limit),
        timeout: HumanDuration::from_millis(100),
    });
    let now = Instant::now();
    let mut out = Vec::new();
    let mut pushed = 0;
    for i in 0..40 {
        // ~1,000-byte requests; every other one still encoded, as the receiver hands them over.
        let r = request(vec![sized_span(300); 3]);
        pushed += 3;
        let data = if i % 2 == 0 {
            let body = bytes::Bytes::from(r.encode_to_vec());
            Telemetry::Encoded(sluice_core::Encoded::check(Signal::Traces, body).unwrap())
        } else {
            Telemetry::Traces(r)
        };
        out.extend(b.push(Envelope::new(data, 3), now));
    }
    out.extend(b.flush_all());
    assert!(out.len() >= 4, "{} batches", out.len());
    for Envelope { data, items, .. } in &out {
        assert!(
            data.encoded_len() as u64 <= limit,
            "{} bytes",
            data.encoded_len()
        );
        assert_eq!(data.item_count(), *items);
    }
    assert_eq!(out.iter().map(|o| o.items).sum::<u64>(), pushed);
    // A request larger than the limit on its own goes out alone, whole.
    let big = Telemetry::Traces(request(vec![sized_span(20_000)]));
    let out = b.push(Envelope::new(big, 1), now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 1);
}

#[test]
fn flushes_at_max_items_keeping_every_item() {
    let mut b = batcher(10);
    let now = Instant::now();
    assert!(b.push(Envelope::new(spans(4), 4), now).is_empty());
    assert!(b.push(Envelope::new(spans(4), 4), now).is_empty());
    let out = b.push(Envelope::new(spans(4), 4), now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 12);
    assert_eq!(out[0].data.item_count(), 12);
    assert_eq!(b.buffered(), 0);
}

#[test]
fn flushes_on_timeout_and_on_shutdown() {
    let mut b = batcher(100);
    let now = Instant::now();
    b.push(Envelope::new(spans(3), 3), now);
    assert_eq!(b.next_deadline(), Some(now + Duration::from_millis(100)));
    assert!(b.flush_due(now + Duration::from_millis(50)).is_empty());
    assert_eq!(b.flush_due(now + Duration::from_millis(100))[0].items, 3);
    b.push(Envelope::new(spans(2), 2), now);
    assert_eq!(b.flush_all()[0].data.item_count(), 2);
    assert!(b.next_deadline().is_none());
}
