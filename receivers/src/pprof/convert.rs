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
    /// Its tables reference each other so that converting it would take far more memory than
    /// its size (one long string named by many comments or labels, many labels × sample types).
    #[error("profile would expand to more than {0} bytes when converted (comments, labels or sample types that repeat one another); refused")]
    Expands(usize),
}

/// Where the profile came from: service name, labels and the Pyroscope query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `service.name`.
    pub service: String,
    /// Extra resource attributes (Pyroscope `name=app{k=v}` labels, query labels).
    pub labels: Vec<(String, String)>,
    /// Attributes of each profile rather than of the resource (push API `__name__` and other
    /// `__`-prefixed labels).
    pub profile_labels: Vec<(String, String)>,
    /// Pyroscope `from` (unix seconds), used when the profile has no time.
    pub from: Option<i64>,
    /// Pyroscope `until` (unix seconds), used when the profile has no duration.
    pub until: Option<i64>,
    /// Pyroscope `spyName` (the profiler).
    pub spy_name: Option<String>,
    /// Instrumentation scope name and version (push API labels `otel.scope.name`/`.version`).
    pub scope: Option<(String, String)>,
    /// Pyroscope `sampleRate` (Hz).
    pub sample_rate: Option<u32>,
}

/// Decodes a gzipped (detected by magic bytes, not names) or raw pprof protobuf and checks that
/// every index in it points somewhere.
pub fn decode(body: &[u8], limit: usize) -> Result<proto::Profile, PprofError> {
    decode_sized(body, limit).map(|(p, _)| p)
}

/// [`decode`], also telling the profile's decompressed size (so several profiles of one request
/// can share one limit).
pub fn decode_sized(body: &[u8], limit: usize) -> Result<(proto::Profile, usize), PprofError> {
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
    } else if body.len() > limit {
        return Err(PprofError::TooLarge(limit));
    } else {
        body.into()
    };
    let decoded = sluice_core::wire::size::decoded_size(&raw, &proto::shape::PROFILE);
    let bound = Budget::for_size(raw.len()).total;
    if decoded > bound {
        return Err(PprofError::Expands(bound));
    }
    let p = proto::Profile::decode(&raw[..]).map_err(|e| PprofError::NotPprof(e.to_string()))?;
    validate(&p)?;
    Ok((p, raw.len()))
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
    if ![p.drop_frames, p.keep_frames, p.default_sample_type]
        .into_iter()
        .chain(p.comment.iter().copied())
        .all(s_ok)
    {
        return bad(
            "drop_frames, keep_frames, default_sample_type or a comment points outside the string table"
                .into(),
        );
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

/// Decodes `len` bytes of hex (trace and span ids in labels); `None` for anything else, whatever
/// its characters.
fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    const_hex::decode(s).ok().filter(|v| v.len() == len)
}

/// How many times its own encoded size a profile may grow by when converted, before the
/// [`EXPANSION_FLOOR`]: far above what real profiles need (a few times), far below what a crafted
/// one could reach (comments and labels that name one long string many times, labels ×
/// sample types).
pub const EXPANSION: usize = 16;
/// Expansion every profile may use whatever its size, so small profiles are never refused.
pub const EXPANSION_FLOOR: usize = 1 << 20;
/// What one output sample costs against the expansion budget beyond its attribute indices: its
/// value and a share of its struct.
const SAMPLE_COST: usize = 32;
/// What one output profile costs against the budget beyond its samples.
const PROFILE_COST: usize = 256;

/// The memory a profile whose decompressed size is `size` may take decoded, and again converted:
/// what the receivers charge against the memory budget for it.
pub fn memory_bound(size: usize) -> usize {
    Budget::for_size(size).total
}

/// The memory a profile may still take while converted; charged where a table entry is repeated
/// into the output.
struct Budget {
    left: usize,
    total: usize,
}

impl Budget {
    /// The budget of a profile whose encoded (decompressed) size is `size`.
    fn for_size(size: usize) -> Self {
        let total = size
            .saturating_mul(EXPANSION)
            .saturating_add(EXPANSION_FLOOR);
        Self { left: total, total }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), PprofError> {
        match self.left.checked_sub(bytes) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => Err(PprofError::Expands(self.total)),
        }
    }
}

/// Converts a validated pprof profile into a request of its own.
pub fn to_otlp(
    p: &proto::Profile,
    meta: &Meta,
) -> Result<ExportProfilesServiceRequest, PprofError> {
    let mut b = Builder::default();
    b.add(p, meta)?;
    Ok(b.finish())
}

/// [`to_otlp`] for a profile whose encoded size is known (from [`decode_sized`]).
pub fn to_otlp_sized(
    p: &proto::Profile,
    size: usize,
    meta: &Meta,
) -> Result<ExportProfilesServiceRequest, PprofError> {
    let mut b = Builder::default();
    b.add_sized(p, size, meta)?;
    Ok(b.finish())
}

/// Converts several pprof profiles (a push request's series and samples) into one OTLP request
/// with one dictionary: each profile's string table is appended once, indices are shifted, and
/// profiles with the same resource share a `ResourceProfiles`.
pub struct Builder {
    dict: otlp::ProfilesDictionary,
    /// Strings Sluice adds (attribute keys), interned in O(1) rather than by scanning the table.
    own_strings: HashMap<String, i32>,
    resources: Vec<(Meta, otlp::ResourceProfiles)>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            dict: otlp::ProfilesDictionary {
                string_table: vec![String::new()],
                mapping_table: vec![otlp::Mapping::default()],
                location_table: vec![otlp::Location::default()],
                function_table: vec![otlp::Function::default()],
                link_table: vec![otlp::Link::default()],
                attribute_table: vec![otlp::KeyValueAndUnit::default()],
                stack_table: vec![otlp::Stack::default()],
            },
            own_strings: HashMap::new(),
            resources: Vec::new(),
        }
    }
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn intern(dict: &mut otlp::ProfilesDictionary, own: &mut HashMap<String, i32>, s: &str) -> i32 {
    if let Some(i) = own.get(s) {
        return *i;
    }
    dict.string_table.push(s.to_owned());
    let i = len_i32(dict.string_table.len() - 1);
    own.insert(s.to_owned(), i);
    i
}

impl Builder {
    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Appends one validated profile; refuses (and leaves the builder unusable for a response,
    /// the caller drops it) a profile whose conversion would exceed its expansion budget.
    pub fn add(&mut self, p: &proto::Profile, meta: &Meta) -> Result<(), PprofError> {
        self.add_sized(p, p.encoded_len(), meta)
    }

    /// [`Builder::add`] for a profile whose encoded size is known (from [`decode_sized`]), which
    /// spares walking it once more.
    pub fn add_sized(
        &mut self,
        p: &proto::Profile,
        size: usize,
        meta: &Meta,
    ) -> Result<(), PprofError> {
        let mut budget = Budget::for_size(size);
        let dict = &mut self.dict;
        let own = &mut self.own_strings;
        // The profile's string i (> 0) lands at `base + i - 1`; its empty string 0 stays at 0.
        let base = dict.string_table.len() as i64;
        let s = |i: i64| -> i32 {
            if i <= 0 {
                0
            } else {
                i32::try_from(base + i - 1).unwrap_or(0)
            }
        };
        let text = |i: i64| -> &str {
            usize::try_from(i)
                .ok()
                .and_then(|i| p.string_table.get(i))
                .map_or("", String::as_str)
        };
        dict.string_table
            .extend(p.string_table.iter().skip(1).cloned());

        let mut function_idx = HashMap::with_capacity(p.function.len());
        for f in &p.function {
            function_idx.insert(f.id, len_i32(dict.function_table.len()));
            dict.function_table.push(otlp::Function {
                name_strindex: s(f.name),
                system_name_strindex: s(f.system_name),
                filename_strindex: s(f.filename),
                start_line: f.start_line,
            });
        }

        // Attributes, deduplicated by (key, string index | number, is-number, unit).
        let mut attr_idx: HashMap<(i32, i32, i64, bool, i32), i32> = HashMap::new();
        let mut intern_attr = |dict: &mut otlp::ProfilesDictionary,
                               budget: &mut Budget,
                               key: i32,
                               value: &dyn Fn() -> any_value::Value,
                               dedupe: (i32, i64, bool),
                               unit: i32|
         -> Result<i32, PprofError> {
            use std::collections::hash_map::Entry;
            match attr_idx.entry((key, dedupe.0, dedupe.1, dedupe.2, unit)) {
                Entry::Occupied(e) => Ok(*e.get()),
                Entry::Vacant(e) => {
                    let value = value();
                    if let any_value::Value::StringValue(v) = &value {
                        budget.charge(v.len())?;
                    }
                    dict.attribute_table.push(otlp::KeyValueAndUnit {
                        key_strindex: key,
                        value: Some(AnyValue { value: Some(value) }),
                        unit_strindex: unit,
                    });
                    Ok(*e.insert(len_i32(dict.attribute_table.len() - 1)))
                }
            }
        };

        let build_id_key = p
            .mapping
            .iter()
            .any(|m| m.build_id != 0)
            .then(|| intern(dict, own, "process.executable.build_id.gnu"));
        let mut mapping_idx = HashMap::with_capacity(p.mapping.len());
        for m in &p.mapping {
            let mut attribute_indices = Vec::new();
            if let (Some(key), true) = (build_id_key, m.build_id != 0) {
                attribute_indices.push(intern_attr(
                    dict,
                    &mut budget,
                    key,
                    &|| any_value::Value::StringValue(text(m.build_id).to_owned()),
                    (s(m.build_id), 0, false),
                    0,
                )?);
            }
            mapping_idx.insert(m.id, len_i32(dict.mapping_table.len()));
            dict.mapping_table.push(otlp::Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename_strindex: s(m.filename),
                attribute_indices,
            });
        }

        let mut location_idx = HashMap::with_capacity(p.location.len());
        for l in &p.location {
            location_idx.insert(l.id, len_i32(dict.location_table.len()));
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

        let key_of = |name: &str| p.string_table.iter().position(|t| t == name);
        let (span_id_key, trace_id_key, profile_id_key) =
            (key_of("span_id"), key_of("trace_id"), key_of("profile_id"));
        let is_key =
            |k: i64, want: Option<usize>| want.is_some() && usize::try_from(k).ok() == want;
        let mut stack_idx: HashMap<Vec<i32>, i32> = HashMap::new();
        let mut link_idx: HashMap<(Vec<u8>, Vec<u8>), i32> = HashMap::new();
        // Per pprof sample: stack, attributes, link — shared by the k profiles.
        let mut shared = Vec::with_capacity(p.sample.len());
        let k = p.sample_type.len();
        for smp in &p.sample {
            // Each of the k profiles repeats this sample's value and attribute indices.
            budget.charge(
                k.saturating_mul(SAMPLE_COST.saturating_add(smp.label.len().saturating_mul(4))),
            )?;
            let locs: Vec<i32> = smp
                .location_id
                .iter()
                .map(|id| location_idx.get(id).copied().unwrap_or(0))
                .collect();
            let stack_index = match stack_idx.entry(locs) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let i = len_i32(dict.stack_table.len());
                    dict.stack_table.push(otlp::Stack {
                        location_indices: e.key().clone(),
                    });
                    *e.insert(i)
                }
            };
            let mut attribute_indices = Vec::with_capacity(smp.label.len());
            let (mut span_id, mut trace_id) = (None, None);
            for l in &smp.label {
                let key = s(l.key);
                let index = if l.str != 0 || l.num == 0 && l.num_unit == 0 {
                    let value = text(l.str);
                    if is_key(l.key, span_id_key) || is_key(l.key, profile_id_key) {
                        span_id = span_id.or_else(|| hex_bytes(value, 8));
                    }
                    if is_key(l.key, trace_id_key) {
                        trace_id = hex_bytes(value, 16);
                    }
                    intern_attr(
                        dict,
                        &mut budget,
                        key,
                        &|| any_value::Value::StringValue(value.to_owned()),
                        (s(l.str), 0, false),
                        s(l.num_unit),
                    )?
                } else {
                    intern_attr(
                        dict,
                        &mut budget,
                        key,
                        &|| any_value::Value::IntValue(l.num),
                        (0, l.num, true),
                        s(l.num_unit),
                    )?
                };
                attribute_indices.push(index);
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
                            len_i32(dict.link_table.len() - 1)
                        })
                }
                None => 0,
            };
            shared.push((stack_index, attribute_indices, link_index));
        }

        let mut profile_attrs = Vec::new();
        let mut add_profile_attr = |dict: &mut otlp::ProfilesDictionary,
                                    own: &mut HashMap<String, i32>,
                                    key: &str,
                                    value: String| {
            let k = intern(dict, own, key);
            dict.attribute_table.push(otlp::KeyValueAndUnit {
                key_strindex: k,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(value)),
                }),
                unit_strindex: 0,
            });
            profile_attrs.push(len_i32(dict.attribute_table.len() - 1));
        };
        if !p.comment.is_empty() {
            let size = p
                .comment
                .iter()
                .map(|c| text(*c).len() + 1)
                .fold(0usize, usize::saturating_add);
            budget.charge(size)?;
            let mut comments = String::with_capacity(size);
            for (i, c) in p.comment.iter().enumerate() {
                if i > 0 {
                    comments.push('\n');
                }
                comments.push_str(text(*c));
            }
            add_profile_attr(dict, own, "pprof.comments", comments);
        }
        for (key, v) in [
            ("pprof.drop_frames", p.drop_frames),
            ("pprof.keep_frames", p.keep_frames),
            ("pprof.default_sample_type", p.default_sample_type),
        ] {
            if v != 0 {
                add_profile_attr(dict, own, key, text(v).to_owned());
            }
        }
        for (key, v) in &meta.profile_labels {
            add_profile_attr(dict, own, key, v.clone());
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
                (Some(f), Some(u)) if u > f => u.saturating_sub(f).saturating_mul(1_000_000_000),
                _ => 0,
            }
        };
        let profile_id: Vec<u8> = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (time, duration, p.sample.len(), &meta.service).hash(&mut h);
            let a = h.finish();
            (p.string_table.len(), base).hash(&mut h);
            [a.to_be_bytes(), h.finish().to_be_bytes()].concat()
        };
        budget.charge(k.saturating_mul(PROFILE_COST + 4 * profile_attrs.len()))?;
        let profiles = p
            .sample_type
            .iter()
            .enumerate()
            .map(|(ki, st)| otlp::Profile {
                sample_type: Some(otlp::ValueType {
                    type_strindex: s(st.r#type),
                    unit_strindex: s(st.unit),
                }),
                samples: p
                    .sample
                    .iter()
                    .zip(&shared)
                    .map(
                        |(smp, (stack_index, attribute_indices, link_index))| otlp::Sample {
                            stack_index: *stack_index,
                            attribute_indices: attribute_indices.clone(),
                            link_index: *link_index,
                            values: vec![smp.value.get(ki).copied().unwrap_or(0)],
                            timestamps_unix_nano: vec![],
                        },
                    )
                    .collect(),
                time_unix_nano: u64::try_from(time).unwrap_or(0),
                duration_nano: u64::try_from(duration).unwrap_or(0),
                period_type: p.period_type.map(|v| otlp::ValueType {
                    type_strindex: s(v.r#type),
                    unit_strindex: s(v.unit),
                }),
                period: p.period,
                profile_id: profile_id.clone(),
                attribute_indices: profile_attrs.clone(),
                ..Default::default()
            })
            .collect::<Vec<_>>();

        let same_resource = |m: &Meta| {
            m.service == meta.service
                && m.labels == meta.labels
                && m.spy_name == meta.spy_name
                && m.sample_rate == meta.sample_rate
                && m.scope == meta.scope
        };
        match self.resources.last_mut() {
            Some((m, rp)) if same_resource(m) => {
                if let Some(sp) = rp.scope_profiles.first_mut() {
                    sp.profiles.extend(profiles);
                }
            }
            _ => self
                .resources
                .push((meta.clone(), resource(meta, profiles))),
        }
        Ok(())
    }

    /// The request: every profile added, one dictionary.
    pub fn finish(self) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: self.resources.into_iter().map(|(_, rp)| rp).collect(),
            dictionary: Some(self.dict),
        }
    }
}

fn resource(meta: &Meta, profiles: Vec<otlp::Profile>) -> otlp::ResourceProfiles {
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
    otlp::ResourceProfiles {
        resource: Some(Resource {
            attributes: resource_attrs,
            ..Default::default()
        }),
        scope_profiles: vec![otlp::ScopeProfiles {
            scope: Some(match &meta.scope {
                Some((name, version)) => InstrumentationScope {
                    name: name.clone(),
                    version: version.clone(),
                    ..Default::default()
                },
                None => InstrumentationScope {
                    name: meta.spy_name.clone().unwrap_or_else(|| "pprof".into()),
                    ..Default::default()
                },
            }),
            profiles,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small valid profile: one function, location, mapping and sample with one label.
    fn small() -> proto::Profile {
        proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            sample: vec![proto::Sample {
                location_id: vec![1],
                value: vec![7],
                label: vec![proto::Label {
                    key: 3,
                    str: 4,
                    ..Default::default()
                }],
            }],
            mapping: vec![proto::Mapping {
                id: 1,
                filename: 5,
                build_id: 6,
                ..Default::default()
            }],
            location: vec![proto::Location {
                id: 1,
                mapping_id: 1,
                line: vec![proto::Line {
                    function_id: 1,
                    line: 3,
                    column: 0,
                }],
                ..Default::default()
            }],
            function: vec![proto::Function {
                id: 1,
                name: 7,
                ..Default::default()
            }],
            string_table: [
                "",
                "cpu",
                "nanoseconds",
                "thread",
                "main",
                "/bin/app",
                "abc123",
                "burn",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        }
    }

    fn meta() -> Meta {
        Meta {
            service: "s".into(),
            ..Default::default()
        }
    }

    fn roundtrip(p: &proto::Profile) -> Result<ExportProfilesServiceRequest, PprofError> {
        let p = decode(&p.encode_to_vec(), 64 << 20)?;
        to_otlp(&p, &meta())
    }

    #[test]
    fn out_of_range_table_indices_are_refused_not_panics() {
        let n = small().string_table.len() as i64;
        type Edit = Box<dyn Fn(&mut proto::Profile)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("drop_frames", Box::new(move |p| p.drop_frames = n)),
            ("keep_frames", Box::new(move |p| p.keep_frames = -1)),
            (
                "default_sample_type",
                Box::new(move |p| p.default_sample_type = n + 5),
            ),
            ("comment", Box::new(move |p| p.comment = vec![1, n])),
            ("label str", Box::new(move |p| p.sample[0].label[0].str = n)),
            (
                "build id",
                Box::new(move |p| p.mapping[0].build_id = i64::MAX),
            ),
            ("function name", Box::new(move |p| p.function[0].name = -3)),
            (
                "period type",
                Box::new(move |p| p.period_type = Some(proto::ValueType { r#type: n, unit: 0 })),
            ),
            ("location", Box::new(|p| p.sample[0].location_id = vec![99])),
            (
                "function id",
                Box::new(|p| p.location[0].line[0].function_id = 99),
            ),
        ];
        for (what, f) in cases {
            let mut p = small();
            f(&mut p);
            assert!(
                matches!(roundtrip(&p), Err(PprofError::NotPprof(_))),
                "{what} out of range must be refused"
            );
        }
        // In range, the same fields land as profile attributes.
        let mut p = small();
        (
            p.drop_frames,
            p.keep_frames,
            p.default_sample_type,
            p.comment,
        ) = (4, 5, 1, vec![7, 4]);
        let req = roundtrip(&p).unwrap();
        let d = req.dictionary.as_ref().unwrap();
        let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let attrs: Vec<(String, String)> = prof
            .attribute_indices
            .iter()
            .map(|i| {
                let a = &d.attribute_table[*i as usize];
                let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                (d.string_table[a.key_strindex as usize].clone(), v)
            })
            .collect();
        assert_eq!(
            attrs,
            [
                ("pprof.comments", "burn\nmain"),
                ("pprof.drop_frames", "main"),
                ("pprof.keep_frames", "/bin/app"),
                ("pprof.default_sample_type", "cpu"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn non_ascii_trace_and_span_ids_do_not_panic() {
        let mut p = small();
        // 32 and 16 bytes long, but not hex, with multi-byte characters at odd offsets.
        p.string_table.extend(
            [
                "trace_id",
                "span_id",
                "aé€ffffffffffffffffffffffffff",
                "é€€€€ab",
            ]
            .map(String::from),
        );
        assert_eq!(p.string_table[10].len(), 32);
        assert_eq!(p.string_table[11].len(), 16);
        p.sample[0].label = vec![
            proto::Label {
                key: 8,
                str: 10,
                ..Default::default()
            },
            proto::Label {
                key: 9,
                str: 11,
                ..Default::default()
            },
        ];
        let req = roundtrip(&p).unwrap();
        let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(prof.samples[0].link_index, 0, "no link from non-hex ids");
        assert_eq!(
            prof.samples[0].attribute_indices.len(),
            2,
            "both labels kept as attributes"
        );
    }

    #[test]
    fn hex_ids_become_links() {
        let mut p = small();
        p.string_table.extend(
            [
                "trace_id",
                "span_id",
                "0123456789abcdef0123456789abcdef",
                "0123456789abcdef",
            ]
            .map(String::from),
        );
        p.sample[0].label = vec![
            proto::Label {
                key: 8,
                str: 10,
                ..Default::default()
            },
            proto::Label {
                key: 9,
                str: 11,
                ..Default::default()
            },
        ];
        let req = roundtrip(&p).unwrap();
        let d = req.dictionary.unwrap();
        assert_eq!(d.link_table.len(), 2);
        assert_eq!(
            d.link_table[1].span_id,
            const_hex::decode("0123456789abcdef").unwrap()
        );
    }

    /// One 30 KB string named by 30,000 comments: 900 MB if joined naively.
    #[test]
    fn repeated_comments_cannot_multiply_memory() {
        let mut p = small();
        p.string_table.push("x".repeat(30_000));
        p.comment = vec![8; 30_000];
        let body = p.encode_to_vec();
        assert!(body.len() < 100_000, "{}", body.len());
        assert!(matches!(roundtrip(&p), Err(PprofError::Expands(_))));
    }

    /// 3,000 labels with distinct keys and one 30 KB value: 90 MB of attribute values.
    #[test]
    fn repeated_label_values_cannot_multiply_memory() {
        let mut p = small();
        let big = p.string_table.len() as i64;
        p.string_table.push("y".repeat(30_000));
        let first_key = p.string_table.len() as i64;
        p.string_table.extend((0..3_000).map(|i| format!("k{i}")));
        p.sample[0].label = (0..3_000)
            .map(|i| proto::Label {
                key: first_key + i,
                str: big,
                ..Default::default()
            })
            .collect();
        assert!(p.encoded_len() < 100_000);
        assert!(matches!(roundtrip(&p), Err(PprofError::Expands(_))));
    }

    /// Many labels × many sample types: every one of the k profiles repeats every label index.
    #[test]
    fn labels_times_sample_types_cannot_multiply_memory() {
        let mut p = small();
        p.sample_type = vec![proto::ValueType::default(); 3_000];
        p.sample[0].value = vec![1; 3_000];
        p.sample[0].label = vec![
            proto::Label {
                key: 3,
                str: 4,
                ..Default::default()
            };
            3_000
        ];
        p.sample = vec![p.sample[0].clone(); 2];
        assert!(p.encoded_len() < 100_000, "{}", p.encoded_len());
        assert!(matches!(roundtrip(&p), Err(PprofError::Expands(_))));
    }

    /// 300k strings and 150k mappings with build ids: the build-id key is interned once (the old
    /// code scanned the whole string table per mapping: 25 s of one core).
    #[test]
    fn many_mappings_and_strings_convert_with_one_added_key() {
        let mut p = small();
        let first = p.string_table.len() as i64;
        p.string_table.extend((0..300_000).map(|i| format!("s{i}")));
        p.mapping = (0..150_000u64)
            .map(|i| proto::Mapping {
                id: i + 1,
                build_id: first + i as i64 * 2,
                filename: first + i as i64 * 2 + 1,
                ..Default::default()
            })
            .collect();
        let req = roundtrip(&p).unwrap();
        let d = req.dictionary.unwrap();
        assert_eq!(d.mapping_table.len(), 150_001);
        assert_eq!(
            d.string_table.len(),
            p.string_table.len() + 1,
            "only the build-id key added"
        );
        assert_eq!(
            d.string_table[d.attribute_table[d.mapping_table[150_000].attribute_indices[0] as usize]
                .key_strindex as usize],
            "process.executable.build_id.gnu"
        );
    }

    #[test]
    fn from_until_extremes_do_not_overflow() {
        let p = decode(&small().encode_to_vec(), 1 << 20).unwrap();
        for (from, until) in [
            (i64::MIN, i64::MAX),
            (-1, i64::MAX),
            (i64::MAX - 1, i64::MAX),
            (0, 10),
        ] {
            let req = to_otlp(
                &p,
                &Meta {
                    from: Some(from),
                    until: Some(until),
                    ..meta()
                },
            )
            .unwrap();
            let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
            let want = (i128::from(until) - i128::from(from)) * 1_000_000_000;
            assert_eq!(
                i128::from(prof.duration_nano),
                want.min(i128::from(i64::MAX)),
                "{from}..{until}"
            );
        }
    }

    #[test]
    fn several_profiles_share_one_dictionary() {
        let p = small();
        let mut b = Builder::default();
        b.add(&p, &meta()).unwrap();
        b.add(&p, &meta()).unwrap();
        b.add(
            &p,
            &Meta {
                service: "other".into(),
                ..meta()
            },
        )
        .unwrap();
        let req = b.finish();
        assert_eq!(req.resource_profiles.len(), 2);
        let d = req.dictionary.unwrap();
        for rp in &req.resource_profiles {
            for prof in &rp.scope_profiles[0].profiles {
                let stack = &d.stack_table[prof.samples[0].stack_index as usize];
                let loc = &d.location_table[stack.location_indices[0] as usize];
                let f = &d.function_table[loc.lines[0].function_index as usize];
                assert_eq!(d.string_table[f.name_strindex as usize], "burn");
                assert_eq!(
                    d.string_table[prof.sample_type.unwrap().type_strindex as usize],
                    "cpu"
                );
            }
        }
        assert_eq!(req.resource_profiles[0].scope_profiles[0].profiles.len(), 2);
    }

    fn arb_profile() -> impl Strategy<Value = proto::Profile> {
        let idx = -2i64..12;
        let id = 0u64..5;
        let label = (idx.clone(), idx.clone(), any::<i64>(), idx.clone()).prop_map(
            |(key, str, num, num_unit)| proto::Label {
                key,
                str,
                num,
                num_unit,
            },
        );
        let sample = (
            proptest::collection::vec(id.clone(), 0..4),
            proptest::collection::vec(any::<i64>(), 0..3),
            proptest::collection::vec(label, 0..4),
        )
            .prop_map(|(location_id, value, label)| proto::Sample {
                location_id,
                value,
                label,
            });
        let strings = proptest::collection::vec(".{0,40}", 0..10);
        (
            proptest::collection::vec((idx.clone(), idx.clone()), 0..3),
            proptest::collection::vec(sample, 0..5),
            proptest::collection::vec((id.clone(), id.clone(), idx.clone(), idx.clone()), 0..4),
            proptest::collection::vec((id.clone(), idx.clone(), idx.clone()), 0..4),
            strings,
            proptest::collection::vec(idx.clone(), 0..3),
            (idx.clone(), idx.clone(), idx, any::<i64>(), any::<i64>()),
        )
            .prop_map(
                |(st, sample, locs, funcs, strings, comment, (drop, keep, def, time, dur))| {
                    let mut string_table = vec![String::new()];
                    string_table.extend(strings);
                    proto::Profile {
                        sample_type: st
                            .into_iter()
                            .map(|(r#type, unit)| proto::ValueType { r#type, unit })
                            .collect(),
                        sample,
                        location: locs
                            .into_iter()
                            .map(|(id, f, _, _)| proto::Location {
                                id,
                                mapping_id: id,
                                line: vec![proto::Line {
                                    function_id: f,
                                    line: 1,
                                    column: 0,
                                }],
                                ..Default::default()
                            })
                            .collect(),
                        mapping: vec![proto::Mapping {
                            id: 1,
                            build_id: 1,
                            ..Default::default()
                        }],
                        function: funcs
                            .into_iter()
                            .map(|(id, name, filename)| proto::Function {
                                id,
                                name,
                                filename,
                                ..Default::default()
                            })
                            .collect(),
                        string_table,
                        comment,
                        drop_frames: drop,
                        keep_frames: keep,
                        default_sample_type: def,
                        time_nanos: time,
                        duration_nanos: dur,
                        ..Default::default()
                    }
                },
            )
    }

    proptest! {
        /// Any profile, however its indices point and whatever its strings hold: decoding and
        /// converting either refuse it or produce a request whose every index is in range.
        #[test]
        fn any_profile_is_refused_or_converted_within_range(
            p in arb_profile(),
            from in any::<Option<i64>>(),
            until in any::<Option<i64>>(),
        ) {
            let Ok(p) = decode(&p.encode_to_vec(), 1 << 20) else { return Ok(()) };
            let Ok(req) = to_otlp(&p, &Meta { from, until, ..meta() }) else { return Ok(()) };
            let d = req.dictionary.unwrap();
            let strs = d.string_table.len() as i32;
            let prof = &req.resource_profiles[0].scope_profiles[0].profiles;
            prop_assert_eq!(prof.len(), p.sample_type.len());
            for pr in prof {
                prop_assert_eq!(pr.samples.len(), p.sample.len());
                for s in &pr.samples {
                    prop_assert!((s.stack_index as usize) < d.stack_table.len());
                    prop_assert!(s.attribute_indices.iter().all(|a| (*a as usize) < d.attribute_table.len()));
                }
            }
            prop_assert!(d.attribute_table.iter().all(|a| a.key_strindex < strs && a.unit_strindex < strs));
            prop_assert!(d.function_table.iter().all(|f| f.name_strindex < strs && f.filename_strindex < strs));
        }
    }
}
