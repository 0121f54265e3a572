use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

fn trace_id(i: u64) -> Vec<u8> {
    // Spread the randomness over the whole 56-bit range.
    let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8;
    let mut id = vec![0xab; 9];
    id.extend_from_slice(&r.to_be_bytes()[1..]);
    id
}

fn spans(n: u64) -> Telemetry {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: trace_id(i),
            span_id: vec![1; 8],
            ..Default::default()
        })
        .collect();
    Telemetry::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn fixed(p: f64) -> AdaptiveSampler {
    let mut cfg = controller::tests::config(crate::sampler::SamplerMode::Fixed);
    cfg.probability = p;
    AdaptiveSampler::new("s", &cfg, &Metrics::new())
}

#[test]
fn fixed_probability_keeps_about_p_and_adjusted_counts_add_up() {
    let s = fixed(0.1);
    let Some(Telemetry::Traces(out)) = s.process(spans(200_000)) else {
        panic!()
    };
    let kept: Vec<&Span> = out
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let adjusted: f64 = kept
        .iter()
        .map(|s| {
            read_ot(&s.trace_state)
                .th
                .expect("kept spans carry th")
                .adjusted_count()
        })
        .sum();
    assert!(
        (adjusted / 200_000.0 - 1.0).abs() < 0.03,
        "adjusted {adjusted}"
    );
    assert!(kept.iter().all(|s| s.trace_state == "ot=th:e666"));
}

#[test]
fn decisions_are_consistent_and_respect_incoming_threshold() {
    let t = Decision::new(Threshold::from_probability(0.5, 4));
    let mut a = Span {
        trace_id: trace_id(7),
        ..Default::default()
    };
    let mut b = a.clone();
    assert_eq!(decide_span(&mut a, &t), decide_span(&mut b, &t));
    // An upstream sampler already applied p = 0.25: we may not raise p back to 0.5.
    let r = randomness_from_trace_id(&trace_id(7)).unwrap();
    let mut span = Span {
        trace_id: trace_id(7),
        trace_state: "ot=th:c,v=1".into(),
        ..Default::default()
    };
    let kept = decide_span(&mut span, &t);
    assert_eq!(kept, r >= Threshold::from_probability(0.25, 4).0);
    if kept {
        assert_eq!(
            span.trace_state, "ot=th:c,v=1",
            "unchanged when the incoming threshold is higher"
        );
    }
    // Explicit rv wins over the trace id.
    let mut s = Span {
        trace_id: trace_id(7),
        trace_state: "ot=rv:ffffffffffffff".into(),
        ..Default::default()
    };
    assert!(decide_span(
        &mut s,
        &Decision::new(Threshold::from_probability(0.01, 4))
    ));
    assert_eq!(s.trace_state, "ot=th:fd70a;rv:ffffffffffffff");
    let mut s = Span {
        trace_id: trace_id(7),
        trace_state: "ot=rv:00000000000001".into(),
        ..Default::default()
    };
    assert!(!decide_span(
        &mut s,
        &Decision::new(Threshold::from_probability(0.5, 4))
    ));
}

#[test]
fn metrics_and_profiles_pass_untouched() {
    let s = fixed(0.001);
    let m = Telemetry::Metrics(Default::default());
    assert_eq!(s.process(m.clone()), Some(m));
}

#[test]
fn logs_follow_their_trace_and_carry_the_threshold() {
    let s = fixed(0.5);
    let t = Threshold::from_probability(0.5, 4);
    let records: Vec<LogRecord> = (0..1000)
        .map(|i| LogRecord {
            trace_id: trace_id(i),
            ..Default::default()
        })
        .collect();
    let req = Telemetry::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    let Some(Telemetry::Logs(out)) = s.process(req) else {
        panic!()
    };
    let kept = &out.resource_logs[0].scope_logs[0].log_records;
    let expected = (0..1000)
        .filter(|i| t.keeps(randomness_from_trace_id(&trace_id(*i)).unwrap()))
        .count();
    assert_eq!(kept.len(), expected);
    assert!(kept.iter().all(|l| l
        .attributes
        .iter()
        .any(|kv| kv.key == SAMPLING_THRESHOLD_ATTR)));
}
