//! pprof → OTLP profiles (`v1development`): every sample, every value of every sample type, the
//! stacks (locations, functions, files, lines, mappings, addresses), labels (string, and numeric
//! with units), period and period type, time and duration. A pprof with k sample types becomes k
//! `Profile`s sharing one dictionary, as DESIGN §3 and the OTLP profiles spec describe.

use super::proto;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::HashMap;
use std::io::Read;

/// What a pprof body may not be, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PprofError {
    /// Not gzip/raw pprof protobuf (legacy text or binary formats, garbage).
    #[error("body is not a pprof protobuf profile (gzipped or raw; legacy text and binary profile formats are not supported): {0}")]
    NotPprof(String),
    /// Larger than the receiver's limit once decompressed.
    #[error("profile exceeds max_request_size ({0} bytes) after decompression")]
    TooLarge(usize),
}

/// Where the profile came from: service name, labels and the Pyroscope query parameters.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// `service.name`.
    pub service: String,
    /// Extra resource attributes (Pyroscope `name=app{k=v}` labels, query labels).
    pub labels: Vec<(String, String)>,
    /// Pyroscope `from` (unix seconds), used when the profile has no time.
    pub from: Option<i64>,
    /// Pyroscope `until` (unix seconds), used when the profile has no duration.
    pub until: Option<i64>,
    /// Pyroscope `spyName` (the profiler).
    pub spy_name: Option<String>,
    /// Pyroscope `sampleRate` (Hz).
    pub sample_rate: Option<u32>,
}

/// Decodes a gzipped (detected by magic bytes, not names) or raw pprof protobuf and checks that
/// every index in it points somewhere.
pub fn decode(body: &[u8], limit: usize) -> Result<proto::Profile, PprofError> {
    let raw: std::borrow::Cow<'_, [u8]> = if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| PprofError::NotPprof(format!("bad gzip: {e}")))?;
        if out.len() > limit {
            return Err(PprofError::TooLarge(limit));
        }
        out.into()
    } else {
        body.into()
    };
    let p = proto::Profile::decode(&raw[..]).map_err(|e| PprofError::NotPprof(e.to_string()))?;
    validate(&p)?;
    Ok(p)
}

fn validate(p: &proto::Profile) -> Result<(), PprofError> {
    let bad = |m: String| Err(PprofError::NotPprof(m));
    if p.string_table.first().map(String::as_str) != Some("") {
        return bad("string_table must start with the empty string".into());
    }
    if p.sample_type.is_empty() {
        return bad("no sample types".into());
    }
    let n = p.string_table.len() as i64;
    let s_ok = |i: i64| (0..n).contains(&i);
    if !p
        .sample_type
        .iter()
        .chain(p.period_type.iter())
        .all(|v| s_ok(v.r#type) && s_ok(v.unit))
    {
        return bad("a sample or period type points outside the string table".into());
    }
    let functions: HashMap<u64, ()> = p.function.iter().map(|f| (f.id, ())).collect();
    if !p
        .function
        .iter()
        .all(|f| s_ok(f.name) && s_ok(f.system_name) && s_ok(f.filename))
    {
        return bad("a function points outside the string table".into());
    }
    if !p
        .mapping
        .iter()
        .all(|m| s_ok(m.filename) && s_ok(m.build_id))
    {
        return bad("a mapping points outside the string table".into());
    }
    let locations: HashMap<u64, ()> = p.location.iter().map(|l| (l.id, ())).collect();
    if !p
        .location
        .iter()
        .flat_map(|l| &l.line)
        .all(|l| l.function_id == 0 || functions.contains_key(&l.function_id))
    {
        return bad("a location line names an unknown function".into());
    }
    for s in &p.sample {
        if s.value.len() != p.sample_type.len() {
            return bad(format!(
                "a sample has {} values for {} sample types",
                s.value.len(),
                p.sample_type.len()
            ));
        }
        if !s.location_id.iter().all(|id| locations.contains_key(id)) {
            return bad("a sample names an unknown location".into());
        }
        if !s
            .label
            .iter()
            .all(|l| s_ok(l.key) && s_ok(l.str) && s_ok(l.num_unit))
        {
            return bad("a sample label points outside the string table".into());
        }
    }
    Ok(())
}

fn str_kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn idx(i: i64) -> i32 {
    i32::try_from(i).unwrap_or(0)
}

fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Converts a validated pprof profile.
pub fn to_otlp(p: &proto::Profile, meta: &Meta) -> ExportProfilesServiceRequest {
    let mut dict = otlp::ProfilesDictionary {
        string_table: p.string_table.clone(),
        mapping_table: vec![otlp::Mapping::default()],
        location_table: vec![otlp::Location::default()],
        function_table: vec![otlp::Function::default()],
        link_table: vec![otlp::Link::default()],
        attribute_table: vec![otlp::KeyValueAndUnit::default()],
        stack_table: vec![otlp::Stack::default()],
    };
    let mut function_idx = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        function_idx.insert(f.id, dict.function_table.len() as i32);
        dict.function_table.push(otlp::Function {
            name_strindex: idx(f.name),
            system_name_strindex: idx(f.system_name),
            filename_strindex: idx(f.filename),
            start_line: f.start_line,
        });
    }
    let mut attr_idx: HashMap<(i32, i32, i64, bool, i32), i32> = HashMap::new();
    let mut intern_attr = |dict: &mut otlp::ProfilesDictionary,
                           key: i32,
                           value: AnyValue,
                           dedupe: (i32, i64, bool),
                           unit: i32| {
        *attr_idx
            .entry((key, dedupe.0, dedupe.1, dedupe.2, unit))
            .or_insert_with(|| {
                dict.attribute_table.push(otlp::KeyValueAndUnit {
                    key_strindex: key,
                    value: Some(value),
                    unit_strindex: unit,
                });
                dict.attribute_table.len() as i32 - 1
            })
    };
    let mut mapping_idx = HashMap::with_capacity(p.mapping.len());
    for m in &p.mapping {
        let mut attribute_indices = Vec::new();
        if m.build_id != 0 {
            let key = intern_string(&mut dict.string_table, "process.executable.build_id.gnu");
            let v = AnyValue {
                value: Some(any_value::Value::StringValue(
                    p.string_table[m.build_id as usize].clone(),
                )),
            };
            attribute_indices.push(intern_attr(
                &mut dict,
                key,
                v,
                (idx(m.build_id), 0, false),
                0,
            ));
        }
        mapping_idx.insert(m.id, dict.mapping_table.len() as i32);
        dict.mapping_table.push(otlp::Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: idx(m.filename),
            attribute_indices,
        });
    }
    let mut location_idx = HashMap::with_capacity(p.location.len());
    for l in &p.location {
        location_idx.insert(l.id, dict.location_table.len() as i32);
        dict.location_table.push(otlp::Location {
            mapping_index: mapping_idx.get(&l.mapping_id).copied().unwrap_or(0),
            address: l.address,
            lines: l
                .line
                .iter()
                .map(|ln| otlp::Line {
                    function_index: function_idx.get(&ln.function_id).copied().unwrap_or(0),
                    line: ln.line,
                    column: ln.column,
                })
                .collect(),
            attribute_indices: vec![],
        });
    }
    let mut stack_idx: HashMap<Vec<i32>, i32> = HashMap::new();
    let (span_id_key, trace_id_key, profile_id_key) = (
        p.string_table.iter().position(|s| s == "span_id"),
        p.string_table.iter().position(|s| s == "trace_id"),
        p.string_table.iter().position(|s| s == "profile_id"),
    );
    let mut link_idx: HashMap<(Vec<u8>, Vec<u8>), i32> = HashMap::new();
    // Per pprof sample: stack, attributes, link — shared by the k profiles.
    let mut shared = Vec::with_capacity(p.sample.len());
    for s in &p.sample {
        let locs: Vec<i32> = s
            .location_id
            .iter()
            .map(|id| location_idx.get(id).copied().unwrap_or(0))
            .collect();
        let stack_index = *stack_idx.entry(locs).or_insert_with_key(|locs| {
            dict.stack_table.push(otlp::Stack {
                location_indices: locs.clone(),
            });
            dict.stack_table.len() as i32 - 1
        });
        let mut attribute_indices = Vec::with_capacity(s.label.len());
        let (mut span_id, mut trace_id) = (None, None);
        for l in &s.label {
            let key = idx(l.key);
            let (value, dedupe) = if l.str != 0 || l.num == 0 && l.num_unit == 0 {
                let text = &p.string_table[l.str as usize];
                if Some(l.key as usize) == span_id_key || Some(l.key as usize) == profile_id_key {
                    span_id = span_id.or_else(|| hex_bytes(text, 8));
                }
                if Some(l.key as usize) == trace_id_key {
                    trace_id = hex_bytes(text, 16);
                }
                (
                    AnyValue {
                        value: Some(any_value::Value::StringValue(text.clone())),
                    },
                    (idx(l.str), 0, false),
                )
            } else {
                (
                    AnyValue {
                        value: Some(any_value::Value::IntValue(l.num)),
                    },
                    (0, l.num, true),
                )
            };
            attribute_indices.push(intern_attr(&mut dict, key, value, dedupe, idx(l.num_unit)));
        }
        let link_index = match span_id {
            Some(span) => {
                let trace = trace_id.unwrap_or_default();
                *link_idx
                    .entry((trace.clone(), span.clone()))
                    .or_insert_with(|| {
                        dict.link_table.push(otlp::Link {
                            trace_id: trace,
                            span_id: span,
                        });
                        dict.link_table.len() as i32 - 1
                    })
            }
            None => 0,
        };
        shared.push((stack_index, attribute_indices, link_index));
    }

    let mut profile_attrs = Vec::new();
    let mut add_profile_attr =
        |dict: &mut otlp::ProfilesDictionary, key: &str, value: any_value::Value| {
            let k = intern_string(&mut dict.string_table, key);
            dict.attribute_table.push(otlp::KeyValueAndUnit {
                key_strindex: k,
                value: Some(AnyValue { value: Some(value) }),
                unit_strindex: 0,
            });
            profile_attrs.push(dict.attribute_table.len() as i32 - 1);
        };
    if !p.comment.is_empty() {
        let comments = p
            .comment
            .iter()
            .map(|c| p.string_table.get(*c as usize).cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        add_profile_attr(
            &mut dict,
            "pprof.comments",
            any_value::Value::StringValue(comments.join("\n")),
        );
    }
    for (key, v) in [
        ("pprof.drop_frames", p.drop_frames),
        ("pprof.keep_frames", p.keep_frames),
        ("pprof.default_sample_type", p.default_sample_type),
    ] {
        if v != 0 {
            add_profile_attr(
                &mut dict,
                key,
                any_value::Value::StringValue(p.string_table[v as usize].clone()),
            );
        }
    }

    let time = if p.time_nanos > 0 {
        p.time_nanos
    } else {
        meta.from.unwrap_or(0).saturating_mul(1_000_000_000)
    };
    let duration = if p.duration_nanos > 0 {
        p.duration_nanos
    } else {
        match (meta.from, meta.until) {
            (Some(f), Some(u)) if u > f => (u - f).saturating_mul(1_000_000_000),
            _ => 0,
        }
    };
    let profile_id: Vec<u8> = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (time, duration, p.sample.len(), &meta.service).hash(&mut h);
        let a = h.finish();
        p.string_table.len().hash(&mut h);
        [a.to_be_bytes(), h.finish().to_be_bytes()].concat()
    };
    let profiles = p
        .sample_type
        .iter()
        .enumerate()
        .map(|(k, st)| otlp::Profile {
            sample_type: Some(otlp::ValueType {
                type_strindex: idx(st.r#type),
                unit_strindex: idx(st.unit),
            }),
            samples: p
                .sample
                .iter()
                .zip(&shared)
                .map(
                    |(s, (stack_index, attribute_indices, link_index))| otlp::Sample {
                        stack_index: *stack_index,
                        attribute_indices: attribute_indices.clone(),
                        link_index: *link_index,
                        values: vec![s.value[k]],
                        timestamps_unix_nano: vec![],
                    },
                )
                .collect(),
            time_unix_nano: u64::try_from(time).unwrap_or(0),
            duration_nano: u64::try_from(duration).unwrap_or(0),
            period_type: p.period_type.map(|v| otlp::ValueType {
                type_strindex: idx(v.r#type),
                unit_strindex: idx(v.unit),
            }),
            period: p.period,
            profile_id: profile_id.clone(),
            attribute_indices: profile_attrs.clone(),
            ..Default::default()
        })
        .collect();

    let mut resource_attrs = vec![str_kv("service.name", meta.service.clone())];
    resource_attrs.extend(meta.labels.iter().map(|(k, v)| str_kv(k, v.clone())));
    if let Some(spy) = &meta.spy_name {
        resource_attrs.push(str_kv("pyroscope.spy_name", spy.clone()));
    }
    if let Some(rate) = meta.sample_rate {
        resource_attrs.push(KeyValue {
            key: "pyroscope.sample_rate".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(rate))),
            }),
            ..Default::default()
        });
    }
    ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(Resource {
                attributes: resource_attrs,
                ..Default::default()
            }),
            scope_profiles: vec![otlp::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: meta.spy_name.clone().unwrap_or_else(|| "pprof".into()),
                    ..Default::default()
                }),
                profiles,
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dict),
    }
}

fn intern_string(table: &mut Vec<String>, s: &str) -> i32 {
    match table.iter().position(|t| t == s) {
        Some(i) => i as i32,
        None => {
            table.push(s.to_owned());
            table.len() as i32 - 1
        }
    }
}
