//! Fuzz and property tests on stable Rust, bounded in time: every parser a client (or an operator's
//! config file) can reach is fed mutations of real inputs and of the committed corpus of past
//! crashers (`tests/fuzz/corpus/<target>/`), and must never panic. Where two parsers must agree —
//! the allocation-free OTLP wire check and `prost` — they are checked against each other.
//!
//! `SLUICE_FUZZ_SECONDS` (default 5) bounds each mutation loop; CI sets it. A failing input is
//! written to `target/fuzz-crashers/<target>/` so it can be added to the corpus.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;
use sluice_core::wire::size::decoded_request_size;
use sluice_core::Signal;
use sluice_receivers::otlp::decode::{decode_json, decode_protobuf};
use sluice_receivers::pprof::{convert, push};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn budget() -> Duration {
    let secs = std::env::var("SLUICE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

/// The committed corpus of one target plus `extra` seeds.
fn seeds(target: &str, extra: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let dir = root().join("tests/fuzz/corpus").join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out.extend(extra);
    out
}

/// xorshift: deterministic mutations, no dependency on a fuzzing engine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bit flips, byte changes, inserts, deletes, truncation, duplicated and spliced ranges, and
/// interesting values (varint maxima, lengths) — the usual mutations of a coverage-free fuzzer.
fn mutate(rng: &mut Rng, src: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..=rng.below(4) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(b.len());
        match rng.below(9) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                b.remove(at);
            }
            3 => b.insert(at, rng.next() as u8),
            4 => b.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                let chunk = b[at..end].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            6 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(128)).min(other.len());
                b.splice(at..at, other[from..end].iter().copied());
            }
            7 => {
                let v: &[u8] = match rng.below(4) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                    2 => &[0x00],
                    _ => &[0x7f],
                };
                b.splice(at..at, v.iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
        }
    }
    b
}

/// Runs `check` on every seed, then on mutations until the time budget is spent; a panic saves
/// the input and fails the test.
fn fuzz(target: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8])) -> u64 {
    let run = |input: &[u8]| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
            let dir = root().join("target/fuzz-crashers").join(target);
            let _ = std::fs::create_dir_all(&dir);
            let name = format!(
                "{:016x}",
                input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                })
            );
            let _ = std::fs::write(dir.join(&name), input);
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "{target}: input {} ({} bytes) failed: {msg}",
                dir.join(name).display(),
                input.len()
            );
        }
    };
    for s in seeds {
        run(s);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    let deadline = Instant::now() + budget();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            run(&mutate(&mut rng, a, b));
            n += 1;
        }
    }
    eprintln!("{target}: {n} mutated inputs, {} seeds", seeds.len());
    n
}

fn span(i: u8) -> Span {
    Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: format!("span {i}"),
        attributes: vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::IntValue(i64::from(i))),
                        }],
                    },
                )),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
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

fn json_fixtures() -> Vec<Vec<u8>> {
    ["trace.json", "metrics.json", "logs.json", "events.json"]
        .iter()
        .filter_map(|f| std::fs::read(root().join("tests/fixtures/otlp").join(f)).ok())
        .collect()
}

fn protobuf_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![];
    let t = traces((1..4).map(span).collect()).encode_to_vec();
    out.push([&[0u8][..], &t].concat());
    for (i, j) in json_fixtures().iter().enumerate() {
        let signal = [Signal::Traces, Signal::Metrics, Signal::Logs, Signal::Logs][i.min(3)];
        if let Ok(data) = decode_json(signal, j) {
            if let Ok(d) = data.into_decoded() {
                let body = match d {
                    sluice_core::Telemetry::Traces(r) => r.encode_to_vec(),
                    sluice_core::Telemetry::Metrics(r) => r.encode_to_vec(),
                    sluice_core::Telemetry::Logs(r) => r.encode_to_vec(),
                    _ => continue,
                };
                let tag = match signal {
                    Signal::Traces => 0u8,
                    Signal::Metrics => 1,
                    _ => 2,
                };
                out.push([&[tag][..], &body].concat());
            }
        }
    }
    out
}

/// OTLP protobuf of every signal: decoding never panics; the wire check only accepts what prost
/// decodes, with the same item count; the decoded-size estimate never panics and never counts
/// less than the items' own structs.
#[test]
fn otlp_protobuf_never_panics_and_the_wire_check_agrees_with_prost() {
    let seeds = seeds("otlp_protobuf", protobuf_seeds());
    fuzz("otlp_protobuf", &seeds, |input| {
        let Some((&tag, body)) = input.split_first() else {
            return;
        };
        let signal = [
            Signal::Traces,
            Signal::Metrics,
            Signal::Logs,
            Signal::Profiles,
        ][usize::from(tag % 4)];
        let estimate = decoded_request_size(signal, body);
        if let Ok(n) = sluice_core::wire::check(signal, body) {
            let decoded = match signal {
                Signal::Traces => ExportTraceServiceRequest::decode(body).map(|r| {
                    r.resource_spans
                        .iter()
                        .flat_map(|rs| &rs.scope_spans)
                        .map(|ss| ss.spans.len() as u64)
                        .sum::<u64>()
                }),
                Signal::Logs => ExportLogsServiceRequest::decode(body).map(|r| {
                    r.resource_logs
                        .iter()
                        .flat_map(|rl| &rl.scope_logs)
                        .map(|sl| sl.log_records.len() as u64)
                        .sum::<u64>()
                }),
                _ => panic!("the wire check accepted {signal}"),
            };
            assert_eq!(
                decoded.ok(),
                Some(n),
                "wire check accepted what prost refuses"
            );
        }
        if signal == Signal::Traces {
            if let Ok(r) = ExportTraceServiceRequest::decode(body) {
                let spans: usize = r
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum();
                assert!(estimate >= spans * std::mem::size_of::<Span>());
            }
        }
        if signal == Signal::Metrics {
            let _ = ExportMetricsServiceRequest::decode(body);
        }
        let _ = decode_protobuf(signal, Bytes::copy_from_slice(body));
    });
}

/// OTLP/JSON: never panics, and what it accepts converts to protobuf.
#[test]
fn otlp_json_never_panics() {
    let seeds = seeds("otlp_json", json_fixtures());
    fuzz("otlp_json", &seeds, |input| {
        for signal in Signal::ALL {
            if let Ok(d) = decode_json(signal, input) {
                assert_eq!(d.signal(), signal);
                let _ = d.encoded_len();
            }
        }
    });
}

/// pprof (raw and gzipped) and the push API's request: decode, validation and conversion never
/// panic, whatever the indices and strings say.
#[test]
fn pprof_decode_and_conversion_never_panic() {
    let fixtures = std::fs::read_dir(root().join("tests/fixtures/pprof"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_none_or(|x| x != "tsv"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter(|b| b.len() < 256 * 1024)
                .map(|b| {
                    // Mutate the protobuf, not its gzip wrapper.
                    if b.starts_with(&[0x1f, 0x8b]) {
                        let mut out = Vec::new();
                        let _ = std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&b[..]),
                            &mut out,
                        );
                        out
                    } else {
                        b
                    }
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let seeds = seeds("pprof", fixtures);
    let meta = convert::Meta::default();
    fuzz("pprof", &seeds, |input| {
        if let Ok((p, size)) = convert::decode_sized(input, 16 << 20) {
            let _ = convert::to_otlp_sized(&p, size, &meta);
        }
        if let Ok(req) = push::decode_request(input, false) {
            let _ = push::convert(&req, 16 << 20);
        }
    });
}

/// Config files: parsing (TOML, `${ENV}` interpolation, typed sections) never panics.
#[test]
fn config_parsing_never_panics() {
    let seeds = seeds("config", []);
    fuzz("config", &seeds, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = sluice_config::Config::from_str_named("fuzz.toml", &text, &|_| Some("x".into()));
    });
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(any::<u8>(), 0..12),
        "\\PC{0,12}",
        prop::collection::vec(("\\PC{0,6}", any::<i64>(), 0u8..4), 0..4),
    )
        .prop_map(|(trace_id, span_id, parent_span_id, name, attrs)| Span {
            trace_id,
            span_id,
            parent_span_id,
            name,
            attributes: attrs
                .into_iter()
                .map(|(key, v, depth)| {
                    let mut value = AnyValue {
                        value: Some(any_value::Value::IntValue(v)),
                    };
                    for _ in 0..depth {
                        value = AnyValue {
                            value: Some(any_value::Value::ArrayValue(
                                opentelemetry_proto::tonic::common::v1::ArrayValue {
                                    values: vec![value],
                                },
                            )),
                        };
                    }
                    KeyValue {
                        key,
                        value: Some(value),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Generated requests (ids of any length, unicode names, nested values): the wire check
    /// accepts exactly the requests whose ids are valid, and then counts every span.
    #[test]
    fn wire_check_accepts_exactly_the_valid_requests(spans in prop::collection::vec(arb_span(), 0..6)) {
        let valid = spans.iter().all(|s| {
            s.trace_id.len() == 16
                && s.span_id.len() == 8
                && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)
        });
        let n = spans.len() as u64;
        let body = traces(spans).encode_to_vec();
        let checked = sluice_core::wire::check(Signal::Traces, &body);
        prop_assert_eq!(checked.ok(), valid.then_some(n));
        prop_assert!(decoded_request_size(Signal::Traces, &body) >= body.len());
    }
}
