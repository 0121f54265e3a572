use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_config::HumanDuration;

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
        timeout: HumanDuration::from_millis(100),
    })
}

#[test]
fn flushes_at_max_items_keeping_every_item() {
    let mut b = batcher(10);
    let now = Instant::now();
    assert!(b.push(spans(4), 4, now).is_empty());
    assert!(b.push(spans(4), 4, now).is_empty());
    let out = b.push(spans(4), 4, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, 12);
    assert_eq!(out[0].0.item_count(), 12);
    assert_eq!(b.buffered(), 0);
}

#[test]
fn flushes_on_timeout_and_on_shutdown() {
    let mut b = batcher(100);
    let now = Instant::now();
    b.push(spans(3), 3, now);
    assert_eq!(b.next_deadline(), Some(now + Duration::from_millis(100)));
    assert!(b.flush_due(now + Duration::from_millis(50)).is_empty());
    assert_eq!(b.flush_due(now + Duration::from_millis(100))[0].1, 3);
    b.push(spans(2), 2, now);
    assert_eq!(b.flush_all()[0].0.item_count(), 2);
    assert!(b.next_deadline().is_none());
}
