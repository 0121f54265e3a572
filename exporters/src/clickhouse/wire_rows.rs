//! `otel_traces` and `otel_logs` columns built straight from encoded OTLP requests: the wire
//! walker reads each field once and appends it to its Native column, with no `prost` decode and
//! no per-row allocation (strings are copied once, into the column). Values render exactly as
//! [`super::rows`] renders them for RowBinary (the collector's rendering), which a test checks
//! on the load generator's shapes and the OTLP JSON fixtures.
//!
//! An insert is built in two walks: [`Plan`] reads each request's resources and scopes once and
//! each row's sort key (service, span name, time), and sorts the rows of the whole insert in the
//! table's `ORDER BY` order; [`Plan::fill`] then appends the rows in that order, block by block.
//! What every row of a resource or scope repeats (its attributes, `service.name`, dictionary
//! indexes) is prepared once per block ([`Contexts`]).
//!
//! Anything a checked body may hold but this walk does not mirror field for field (a singular
//! sub-message repeated, which `prost` would merge) returns [`Unusual`]: a resource or scope
//! leaves its whole request to be re-encoded by `prost` and planned again; a row, only itself.

use super::native::{
    sort_order, write_block_header, write_column_sorted, ArrayCol, Column, FixedCol, LcCol, MapCol,
    MapRow, StrCol,
};
use base64::Engine as _;
use prost::Message;
use sluice_core::wire::fields::{Fields, Malformed, WireValue};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The batch holds something the wire walk leaves to the decoder (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unusual;

impl From<Malformed> for Unusual {
    fn from(_: Malformed) -> Self {
        Unusual
    }
}

/// An attribute value as found on the wire, before rendering.
#[derive(Clone, Copy)]
enum Val<'a> {
    Empty,
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An array or key-value list: rendered as JSON from its decoded form.
    Complex(&'a [u8]),
}

/// Reads an `AnyValue`: the last oneof field wins, as in `prost`.
fn any_value(buf: &[u8]) -> Result<Val<'_>, Unusual> {
    let mut v = Val::Empty;
    let mut complex = false;
    for f in Fields::new(buf) {
        let (n, w) = f?;
        v = match n {
            1 => Val::Str(w.bytes()),
            2 => Val::Bool(w.varint() != 0),
            3 => Val::Int(w.varint() as i64),
            4 => Val::Double(f64::from_bits(w.fixed64())),
            5 | 6 => {
                complex = true;
                Val::Complex(buf)
            }
            7 => Val::Bytes(w.bytes()),
            8 => Val::Int(i64::from(w.varint() as i32)),
            _ => continue,
        };
    }
    // A oneof message field merges with earlier ones: let prost decide the whole value.
    if complex {
        return Ok(Val::Complex(buf));
    }
    Ok(v)
}

/// Renders a value as [`super::rows::value_string`] does, into `scratch` when it is not a string.
fn render<'s>(v: Val<'s>, scratch: &'s mut String) -> &'s [u8] {
    scratch.clear();
    match v {
        Val::Empty => return b"",
        Val::Str(s) => return s,
        Val::Bool(true) => return b"true",
        Val::Bool(false) => return b"false",
        Val::Int(i) => {
            let _ = write!(scratch, "{i}");
        }
        Val::Double(d) => {
            let _ = write!(scratch, "{d}");
        }
        Val::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, scratch),
        Val::Complex(buf) => {
            let decoded = opentelemetry_proto::tonic::common::v1::AnyValue::decode(buf).ok();
            *scratch = super::rows::value_string(decoded.as_ref());
        }
    }
    scratch.as_bytes()
}

/// Renders a value once (resource and scope attributes repeat on every row).
fn render_owned(v: Val<'_>) -> Cow<'_, [u8]> {
    match v {
        Val::Str(s) => Cow::Borrowed(s),
        other => {
            let mut scratch = String::new();
            let b = render(other, &mut scratch).to_vec();
            Cow::Owned(b)
        }
    }
}

/// One length-delimited field with the one-byte tag `tag` at the start of `buf`: its bytes and
/// what follows (`None` when `buf` starts otherwise).
#[inline(always)]
fn len_field(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = buf.split_first()?;
    if t != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    // One-byte lengths only: longer fields take the general walk.
    if len >= 0x80 {
        return None;
    }
    if rest.len() < len as usize {
        return None;
    }
    Some(rest.split_at(len as usize))
}

/// The common `KeyValue` — `key` then a string value, nothing else — read without the general
/// field walk (what most attributes are; anything else returns `None`).
#[inline(always)]
fn string_key_value(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key, rest) = len_field(buf, 0x0a)?;
    let (value, rest) = len_field(rest, 0x12)?;
    if !rest.is_empty() {
        return None;
    }
    let (s, rest) = len_field(value, 0x0a)?;
    rest.is_empty().then_some((key, s))
}

/// A `KeyValue`: key and value.
#[inline]
fn key_value(buf: &[u8]) -> Result<(&[u8], Val<'_>), Unusual> {
    if let Some((k, s)) = string_key_value(buf) {
        return Ok((k, Val::Str(s)));
    }
    let (mut key, mut value, mut values) = (&[][..], Val::Empty, 0);
    for f in Fields::new(buf) {
        match f? {
            (1, w) => key = w.bytes(),
            (2, w) => {
                values += 1;
                value = any_value(w.bytes())?;
            }
            _ => {}
        }
    }
    if values > 1 {
        return Err(Unusual);
    }
    Ok((key, value))
}

/// Attributes rendered once, for columns that repeat them on every row.
type Rendered<'a> = Vec<(&'a [u8], Cow<'a, [u8]>)>;

/// A resource's attributes and its `service.name`.
type ResourceParts<'a> = (Rendered<'a>, Option<Cow<'a, [u8]>>);

/// A `Resource`: its attributes, and `service.name` (the first one, as the decode path finds it).
fn resource(buf: &[u8]) -> Result<ResourceParts<'_>, Unusual> {
    let mut attrs = Vec::new();
    let mut service = None;
    for f in Fields::new(buf) {
        if let (1, w) = f? {
            let (k, v) = key_value(w.bytes())?;
            let r = render_owned(v);
            if service.is_none() && k == b"service.name" {
                service = Some(r.clone());
            }
            attrs.push((k, r));
        }
    }
    Ok((attrs, service))
}

/// An `InstrumentationScope`: name, version, attributes.
struct Scope<'a> {
    name: &'a [u8],
    version: &'a [u8],
    attrs: Rendered<'a>,
}

fn scope(buf: &[u8]) -> Result<Scope<'_>, Unusual> {
    let mut s = Scope {
        name: b"",
        version: b"",
        attrs: Vec::new(),
    };
    for f in Fields::new(buf) {
        match f? {
            (1, w) => s.name = w.bytes(),
            (2, w) => s.version = w.bytes(),
            (3, w) => {
                let (k, v) = key_value(w.bytes())?;
                s.attrs.push((k, render_owned(v)));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// The one occurrence of a singular sub-message field (`None` if absent); two are [`Unusual`].
fn single(buf: &[u8], field: u32) -> Result<Option<&[u8]>, Unusual> {
    let mut found = None;
    for f in Fields::new(buf) {
        if let (n, WireValue::Len(b)) = f? {
            if n == field {
                if found.is_some() {
                    return Err(Unusual);
                }
                found = Some(b);
            }
        }
    }
    Ok(found)
}

/// Appends a list of `KeyValue`s (one row of a map column) from the wire.
fn map_entry(map: &mut MapCol, kv: &[u8], scratch: &mut String) -> Result<(), Unusual> {
    if let Some((k, s)) = string_key_value(kv) {
        map.entry(k, s);
        return Ok(());
    }
    let (k, v) = key_value(kv)?;
    map.entry(k, render(v, scratch));
    Ok(())
}

fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The columns of `otel_traces`, filled row by row.
#[derive(Default)]
pub struct SpanColumns {
    timestamp: FixedCol<8>,
    trace_id: StrCol,
    span_id: StrCol,
    parent_span_id: StrCol,
    trace_state: StrCol,
    span_name: LcCol,
    span_kind: LcCol,
    service_name: LcCol,
    resource_attributes: MapCol,
    scope_name: StrCol,
    scope_version: StrCol,
    span_attributes: MapCol,
    duration: FixedCol<8>,
    status_code: LcCol,
    status_message: StrCol,
    events_timestamp: ArrayCol<FixedCol<8>>,
    events_name: ArrayCol<LcCol>,
    events_attributes: ArrayCol<MapCol>,
    links_trace_id: ArrayCol<StrCol>,
    links_span_id: ArrayCol<StrCol>,
    links_trace_state: ArrayCol<StrCol>,
    links_attributes: ArrayCol<MapCol>,
    scratch: String,
    /// The plan's resources as this block's columns know them.
    resources: Contexts,
}

/// Column names of `otel_traces` in the order [`SpanColumns`] writes them.
pub const SPAN_COLUMNS: &[&str] = &[
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
];

const MAP: &str = "Map(LowCardinality(String), String)";
const LC: &str = "LowCardinality(String)";

impl SpanColumns {
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.timestamp.len()
    }

    /// Heap bytes held: what an insert bounds its blocks by.
    pub fn heap_bytes(&self) -> usize {
        self.cols().iter().map(|(_, _, c)| c.heap_bytes()).sum()
    }

    fn cols(&self) -> [(&'static str, &'static str, &dyn Column); 22] {
        [
            ("Timestamp", "DateTime64(9)", &self.timestamp),
            ("TraceId", "String", &self.trace_id),
            ("SpanId", "String", &self.span_id),
            ("ParentSpanId", "String", &self.parent_span_id),
            ("TraceState", "String", &self.trace_state),
            ("SpanName", LC, &self.span_name),
            ("SpanKind", LC, &self.span_kind),
            ("ServiceName", LC, &self.service_name),
            ("ResourceAttributes", MAP, &self.resource_attributes),
            ("ScopeName", "String", &self.scope_name),
            ("ScopeVersion", "String", &self.scope_version),
            ("SpanAttributes", MAP, &self.span_attributes),
            ("Duration", "UInt64", &self.duration),
            ("StatusCode", LC, &self.status_code),
            ("StatusMessage", "String", &self.status_message),
            (
                "Events.Timestamp",
                "Array(DateTime64(9))",
                &self.events_timestamp,
            ),
            (
                "Events.Name",
                "Array(LowCardinality(String))",
                &self.events_name,
            ),
            (
                "Events.Attributes",
                "Array(Map(LowCardinality(String), String))",
                &self.events_attributes,
            ),
            ("Links.TraceId", "Array(String)", &self.links_trace_id),
            ("Links.SpanId", "Array(String)", &self.links_span_id),
            ("Links.TraceState", "Array(String)", &self.links_trace_state),
            (
                "Links.Attributes",
                "Array(Map(LowCardinality(String), String))",
                &self.links_attributes,
            ),
        ]
    }

    /// Appends the Native block of the rows held to `out`.
    /// The rows are written in the table's sort order, `(ServiceName, SpanName,
    /// toDateTime(Timestamp))`: the server then finds the block sorted instead of sorting it
    /// before writing the part.
    pub fn write_block(&self, out: &mut Vec<u8>) {
        let (services, names) = (self.service_name.ranks(), self.span_name.ranks());
        let rank = |ranks: &[u32], k: u32| ranks.get(k as usize).copied().unwrap_or(0);
        let perm = sort_order(self.rows(), |i| {
            (
                rank(&services, self.service_name.key(i)),
                rank(&names, self.span_name.key(i)),
                self.timestamp.get_i64(i).div_euclid(1_000_000_000),
            )
        });
        let cols = self.cols();
        write_block_header(out, cols.len(), self.rows());
        for (name, ty, c) in cols {
            write_column_sorted(out, name, ty, c, perm.as_deref());
        }
    }

    /// Forgets the rows, keeping allocations.
    pub fn clear(&mut self) {
        for c in self.cols_mut() {
            c.clear();
        }
        self.resources.forget();
    }

    /// Drops the rows from `rows` on (a row that failed half-way).
    fn truncate(&mut self, rows: usize) {
        for c in self.cols_mut() {
            c.truncate(rows);
        }
    }

    fn cols_mut(&mut self) -> [&mut dyn Column; 22] {
        [
            &mut self.timestamp,
            &mut self.trace_id,
            &mut self.span_id,
            &mut self.parent_span_id,
            &mut self.trace_state,
            &mut self.span_name,
            &mut self.span_kind,
            &mut self.service_name,
            &mut self.resource_attributes,
            &mut self.scope_name,
            &mut self.scope_version,
            &mut self.span_attributes,
            &mut self.duration,
            &mut self.status_code,
            &mut self.status_message,
            &mut self.events_timestamp,
            &mut self.events_name,
            &mut self.events_attributes,
            &mut self.links_trace_id,
            &mut self.links_span_id,
            &mut self.links_trace_state,
            &mut self.links_attributes,
        ]
    }

    /// Plans every span of one encoded `ExportTraceServiceRequest`: its resource and scope,
    /// and its key in the table's order `(ServiceName, SpanName, toDateTime(Timestamp))`.
    fn plan<'a>(buf: &'a [u8], plan: &mut Plan<'a>) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (1, w) = f? {
                let rs = w.bytes();
                let resource = plan.add_resource(rs, None)?;
                for f in Fields::new(rs) {
                    if let (2, w) = f? {
                        let ss = w.bytes();
                        let scope = plan.add_scope(resource, ss)?;
                        for f in Fields::new(ss) {
                            if let (2, w) = f? {
                                let span = w.bytes();
                                let (mut name, mut start, mut seen) = (&[][..], 0u64, 0u8);
                                // The key only orders rows: stop once both fields were read.
                                for f in Fields::new(span) {
                                    match f? {
                                        (5, w) => (name, seen) = (w.bytes(), seen | 1),
                                        (7, w) => (start, seen) = (w.fixed64(), seen | 2),
                                        _ => continue,
                                    }
                                    if seen == 3 {
                                        break;
                                    }
                                }
                                let seconds = nanos(start).div_euclid(1_000_000_000);
                                plan.add_row(scope, span, name, seconds);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends one planned span (`buf`, of the plan's scope `scope`).
    fn push_planned(&mut self, plan: &Plan<'_>, scope: u32, buf: &[u8]) -> Result<(), Unusual> {
        let sc = plan.scopes.get(scope as usize).ok_or(Unusual)?;
        let mut cache = std::mem::take(&mut self.resources);
        let r = match cache.resource(plan, sc.resource, &mut self.resource_attributes, &mut self.service_name, None) {
            Some(res) => self.span(buf, &res.attrs, res.service, &sc.scope),
            None => Err(Unusual),
        };
        self.resources = cache;
        r
    }

    fn span(
        &mut self,
        buf: &[u8],
        res: &MapRow,
        service: u32,
        sc: &Scope<'_>,
    ) -> Result<(), Unusual> {
        let (mut trace_id, mut span_id, mut parent, mut state, mut name) =
            (&[][..], &[][..], &[][..], &[][..], &[][..]);
        let (mut kind, mut start, mut end) = (0i32, 0u64, 0u64);
        let (mut code, mut message, mut statuses) = (0i32, &[][..], 0);
        for f in Fields::new(buf) {
            let (n, w) = f?;
            match n {
                1 => trace_id = w.bytes(),
                2 => span_id = w.bytes(),
                3 => state = w.bytes(),
                4 => parent = w.bytes(),
                5 => name = w.bytes(),
                6 => kind = w.varint() as i32,
                7 => start = w.fixed64(),
                8 => end = w.fixed64(),
                9 => map_entry(&mut self.span_attributes, w.bytes(), &mut self.scratch)?,
                11 => self.event(w.bytes())?,
                13 => self.link(w.bytes())?,
                15 => {
                    statuses += 1;
                    for f in Fields::new(w.bytes()) {
                        match f? {
                            (2, w) => message = w.bytes(),
                            (3, w) => code = w.varint() as i32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if statuses > 1 {
            return Err(Unusual);
        }
        self.timestamp.push_i64(nanos(start));
        self.trace_id.push_hex(trace_id);
        self.span_id.push_hex(span_id);
        self.parent_span_id.push_hex(parent);
        self.trace_state.push(state);
        self.span_name.push(name);
        self.span_kind.push(super::rows::span_kind(kind).as_bytes());
        self.service_name.push_index(service);
        self.resource_attributes.push_row(res);
        self.scope_name.push(sc.name);
        self.scope_version.push(sc.version);
        self.span_attributes.end_row();
        self.duration.push_u64(end.saturating_sub(start));
        self.status_code
            .push(super::rows::status_code(code).as_bytes());
        self.status_message.push(message);
        self.events_timestamp.end_row();
        self.events_name.end_row();
        self.events_attributes.end_row();
        self.links_trace_id.end_row();
        self.links_span_id.end_row();
        self.links_trace_state.end_row();
        self.links_attributes.end_row();
        Ok(())
    }

    fn event(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        let (mut time, mut name) = (0u64, &[][..]);
        for f in Fields::new(buf) {
            match f? {
                (1, w) => time = w.fixed64(),
                (2, w) => name = w.bytes(),
                (3, w) => map_entry(
                    &mut self.events_attributes.inner,
                    w.bytes(),
                    &mut self.scratch,
                )?,
                _ => {}
            }
        }
        self.events_timestamp.inner.push_i64(nanos(time));
        self.events_name.inner.push(name);
        self.events_attributes.inner.end_row();
        Ok(())
    }

    fn link(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        let (mut trace_id, mut span_id, mut state) = (&[][..], &[][..], &[][..]);
        for f in Fields::new(buf) {
            match f? {
                (1, w) => trace_id = w.bytes(),
                (2, w) => span_id = w.bytes(),
                (3, w) => state = w.bytes(),
                (4, w) => map_entry(
                    &mut self.links_attributes.inner,
                    w.bytes(),
                    &mut self.scratch,
                )?,
                _ => {}
            }
        }
        self.links_trace_id.inner.push_hex(trace_id);
        self.links_span_id.inner.push_hex(span_id);
        self.links_trace_state.inner.push(state);
        self.links_attributes.inner.end_row();
        Ok(())
    }
}

/// What every record of one scope shares, resolved once: dictionary indexes and prepared rows.
struct LogContext<'a> {
    res: &'a MapRow,
    service: u32,
    res_url: u32,
    scope_url: u32,
    scope_name: &'a [u8],
    scope_version: u32,
    scope_attrs: &'a MapRow,
}

/// The columns of `otel_logs`, filled row by row.
#[derive(Default)]
pub struct LogColumns {
    timestamp: FixedCol<8>,
    trace_id: StrCol,
    span_id: StrCol,
    trace_flags: FixedCol<1>,
    severity_text: LcCol,
    severity_number: FixedCol<1>,
    service_name: LcCol,
    body: StrCol,
    resource_schema_url: LcCol,
    resource_attributes: MapCol,
    scope_schema_url: LcCol,
    scope_name: StrCol,
    scope_version: LcCol,
    scope_attributes: MapCol,
    log_attributes: MapCol,
    event_name: StrCol,
    scratch: String,
    /// The plan's resources and scopes as this block's columns know them.
    resources: Contexts,
    scopes: Contexts,
}

/// Column names of `otel_logs` in the order [`LogColumns`] writes them.
pub const LOG_COLUMNS: &[&str] = &[
    "Timestamp",
    "TraceId",
    "SpanId",
    "TraceFlags",
    "SeverityText",
    "SeverityNumber",
    "ServiceName",
    "Body",
    "ResourceSchemaUrl",
    "ResourceAttributes",
    "ScopeSchemaUrl",
    "ScopeName",
    "ScopeVersion",
    "ScopeAttributes",
    "LogAttributes",
    "EventName",
];

impl LogColumns {
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.timestamp.len()
    }

    /// Heap bytes held: what an insert bounds its blocks by.
    pub fn heap_bytes(&self) -> usize {
        self.cols().iter().map(|(_, _, c)| c.heap_bytes()).sum()
    }

    fn cols(&self) -> [(&'static str, &'static str, &dyn Column); 16] {
        [
            ("Timestamp", "DateTime64(9)", &self.timestamp),
            ("TraceId", "String", &self.trace_id),
            ("SpanId", "String", &self.span_id),
            ("TraceFlags", "UInt8", &self.trace_flags),
            ("SeverityText", LC, &self.severity_text),
            ("SeverityNumber", "UInt8", &self.severity_number),
            ("ServiceName", LC, &self.service_name),
            ("Body", "String", &self.body),
            ("ResourceSchemaUrl", LC, &self.resource_schema_url),
            ("ResourceAttributes", MAP, &self.resource_attributes),
            ("ScopeSchemaUrl", LC, &self.scope_schema_url),
            ("ScopeName", "String", &self.scope_name),
            ("ScopeVersion", LC, &self.scope_version),
            ("ScopeAttributes", MAP, &self.scope_attributes),
            ("LogAttributes", MAP, &self.log_attributes),
            ("EventName", "String", &self.event_name),
        ]
    }

    /// Appends the Native block of the rows held to `out`.
    /// The rows are written in the table's sort order, `(ServiceName, TimestampTime,
    /// Timestamp)`: the server then finds the block sorted instead of sorting it.
    pub fn write_block(&self, out: &mut Vec<u8>) {
        let services = self.service_name.ranks();
        let perm = sort_order(self.rows(), |i| {
            let ts = self.timestamp.get_i64(i);
            (
                services
                    .get(self.service_name.key(i) as usize)
                    .copied()
                    .unwrap_or(0),
                ts.div_euclid(1_000_000_000),
                ts,
            )
        });
        let cols = self.cols();
        write_block_header(out, cols.len(), self.rows());
        for (name, ty, c) in cols {
            write_column_sorted(out, name, ty, c, perm.as_deref());
        }
    }

    /// Forgets the rows, keeping allocations.
    pub fn clear(&mut self) {
        for c in [
            &mut self.timestamp as &mut dyn Column,
            &mut self.trace_id,
            &mut self.span_id,
            &mut self.trace_flags,
            &mut self.severity_text,
            &mut self.severity_number,
            &mut self.service_name,
            &mut self.body,
            &mut self.resource_schema_url,
            &mut self.resource_attributes,
            &mut self.scope_schema_url,
            &mut self.scope_name,
            &mut self.scope_version,
            &mut self.scope_attributes,
            &mut self.log_attributes,
            &mut self.event_name,
        ] {
            c.clear();
        }
        self.resources.forget();
        self.scopes.forget();
    }

    /// Drops the rows from `rows` on (a row that failed half-way).
    fn truncate(&mut self, rows: usize) {
        for c in [
            &mut self.timestamp as &mut dyn Column,
            &mut self.trace_id,
            &mut self.span_id,
            &mut self.trace_flags,
            &mut self.severity_text,
            &mut self.severity_number,
            &mut self.service_name,
            &mut self.body,
            &mut self.resource_schema_url,
            &mut self.resource_attributes,
            &mut self.scope_schema_url,
            &mut self.scope_name,
            &mut self.scope_version,
            &mut self.scope_attributes,
            &mut self.log_attributes,
            &mut self.event_name,
        ] {
            c.truncate(rows);
        }
    }

    /// Plans every record of one encoded `ExportLogsServiceRequest`: its resource and scope,
    /// and its key in the table's order `(ServiceName, TimestampTime, Timestamp)`.
    fn plan<'a>(buf: &'a [u8], plan: &mut Plan<'a>) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (1, w) = f? {
                let rl = w.bytes();
                let resource = plan.add_resource(rl, Some(3))?;
                for f in Fields::new(rl) {
                    if let (2, w) = f? {
                        let sl = w.bytes();
                        let scope = plan.add_scope(resource, sl)?;
                        for f in Fields::new(sl) {
                            if let (2, w) = f? {
                                let record = w.bytes();
                                let (mut time, mut observed) = (0u64, 0u64);
                                for f in Fields::new(record) {
                                    match f? {
                                        (1, w) => time = w.fixed64(),
                                        (11, w) => observed = w.fixed64(),
                                        _ => {}
                                    }
                                }
                                let ts = nanos(if time != 0 { time } else { observed });
                                // `(TimestampTime, Timestamp)` orders as the nanoseconds alone do.
                                plan.add_row(scope, record, b"", ts);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends one planned record (`buf`, of the plan's scope `scope`).
    fn push_planned(&mut self, plan: &Plan<'_>, scope: u32, buf: &[u8]) -> Result<(), Unusual> {
        let sc = plan.scopes.get(scope as usize).ok_or(Unusual)?;
        let (mut resources, mut scopes) = (
            std::mem::take(&mut self.resources),
            std::mem::take(&mut self.scopes),
        );
        let res = resources.resource(
            plan,
            sc.resource,
            &mut self.resource_attributes,
            &mut self.service_name,
            Some(&mut self.resource_schema_url),
        );
        let scope_ctx = scopes.scope(
            plan,
            scope,
            &mut self.scope_attributes,
            &mut self.scope_schema_url,
            &mut self.scope_version,
        );
        let r = match (res, scope_ctx) {
            (Some(res), Some(sp)) => {
                let ctx = LogContext {
                    res: &res.attrs,
                    service: res.service,
                    res_url: res.url,
                    scope_url: sp.url,
                    scope_name: sc.scope.name,
                    scope_version: sp.version,
                    scope_attrs: &sp.attrs,
                };
                self.record(buf, &ctx)
            }
            _ => Err(Unusual),
        };
        self.resources = resources;
        self.scopes = scopes;
        r
    }

    fn record(&mut self, buf: &[u8], ctx: &LogContext<'_>) -> Result<(), Unusual> {
        let (mut time, mut observed, mut sev, mut flags) = (0u64, 0u64, 0i32, 0u32);
        let (mut sev_text, mut trace_id, mut span_id, mut event) =
            (&[][..], &[][..], &[][..], &[][..]);
        let (mut body, mut bodies) = (Val::Empty, 0);
        for f in Fields::new(buf) {
            let (n, w) = f?;
            match n {
                1 => time = w.fixed64(),
                2 => sev = w.varint() as i32,
                3 => sev_text = w.bytes(),
                5 => {
                    bodies += 1;
                    body = any_value(w.bytes())?;
                }
                6 => map_entry(&mut self.log_attributes, w.bytes(), &mut self.scratch)?,
                8 => flags = w.fixed32(),
                9 => trace_id = w.bytes(),
                10 => span_id = w.bytes(),
                11 => observed = w.fixed64(),
                12 => event = w.bytes(),
                _ => {}
            }
        }
        if bodies > 1 {
            return Err(Unusual);
        }
        let ts = if time != 0 { time } else { observed };
        self.timestamp.push_i64(nanos(ts));
        self.trace_id.push_hex(trace_id);
        self.span_id.push_hex(span_id);
        self.trace_flags.push_u8((flags & 0xff) as u8);
        self.severity_text.push(sev_text);
        self.severity_number.push_u8(u8::try_from(sev).unwrap_or(0));
        self.service_name.push_index(ctx.service);
        self.body.push(render(body, &mut self.scratch));
        self.resource_schema_url.push_index(ctx.res_url);
        self.resource_attributes.push_row(ctx.res);
        self.scope_schema_url.push_index(ctx.scope_url);
        self.scope_name.push(ctx.scope_name);
        self.scope_version.push_index(ctx.scope_version);
        self.scope_attributes.push_row(ctx.scope_attrs);
        self.log_attributes.end_row();
        self.event_name.push(event);
        Ok(())
    }
}

/// A table whose rows are built from the wire in the table's order over a whole insert.
pub trait Table: Default + Send {
    /// Column names, in the order the blocks write them.
    const COLUMNS: &'static [&'static str];
    /// Adds one encoded request's resources, scopes and rows to `plan`. `Err` leaves the plan
    /// partly filled (see [`Plan::new`]).
    fn plan<'a>(buf: &'a [u8], plan: &mut Plan<'a>) -> Result<(), Unusual>;
    /// Appends one planned row: `buf` is the row's message, of the plan's scope `scope`.
    fn push_planned(&mut self, plan: &Plan<'_>, scope: u32, buf: &[u8]) -> Result<(), Unusual>;
    /// The row's message decoded and encoded again by `prost` (repeated singular fields merged).
    fn canonical_row(buf: &[u8]) -> Option<Vec<u8>>;
    /// Rows held.
    fn rows(&self) -> usize;
    /// Heap bytes held: what an insert bounds its blocks by.
    fn heap_bytes(&self) -> usize;
    /// Appends the Native block of the rows held to `out`.
    fn write_block(&self, out: &mut Vec<u8>);
    /// Forgets the rows (and what was prepared for them), keeping allocations.
    fn clear(&mut self);
    /// Drops the rows from `rows` on.
    fn truncate(&mut self, rows: usize);
    /// Forgets what was prepared for another plan's resources and scopes.
    fn forget_contexts(&mut self);
}

impl Table for SpanColumns {
    const COLUMNS: &'static [&'static str] = SPAN_COLUMNS;
    fn plan<'a>(buf: &'a [u8], plan: &mut Plan<'a>) -> Result<(), Unusual> {
        Self::plan(buf, plan)
    }
    fn push_planned(&mut self, plan: &Plan<'_>, scope: u32, buf: &[u8]) -> Result<(), Unusual> {
        Self::push_planned(self, plan, scope, buf)
    }
    fn canonical_row(buf: &[u8]) -> Option<Vec<u8>> {
        opentelemetry_proto::tonic::trace::v1::Span::decode(buf)
            .ok()
            .map(|s| s.encode_to_vec())
    }
    fn rows(&self) -> usize {
        Self::rows(self)
    }
    fn heap_bytes(&self) -> usize {
        Self::heap_bytes(self)
    }
    fn write_block(&self, out: &mut Vec<u8>) {
        Self::write_block(self, out)
    }
    fn clear(&mut self) {
        Self::clear(self)
    }
    fn truncate(&mut self, rows: usize) {
        Self::truncate(self, rows)
    }
    fn forget_contexts(&mut self) {
        self.resources.forget();
    }
}

impl Table for LogColumns {
    const COLUMNS: &'static [&'static str] = LOG_COLUMNS;
    fn plan<'a>(buf: &'a [u8], plan: &mut Plan<'a>) -> Result<(), Unusual> {
        Self::plan(buf, plan)
    }
    fn push_planned(&mut self, plan: &Plan<'_>, scope: u32, buf: &[u8]) -> Result<(), Unusual> {
        Self::push_planned(self, plan, scope, buf)
    }
    fn canonical_row(buf: &[u8]) -> Option<Vec<u8>> {
        opentelemetry_proto::tonic::logs::v1::LogRecord::decode(buf)
            .ok()
            .map(|s| s.encode_to_vec())
    }
    fn rows(&self) -> usize {
        Self::rows(self)
    }
    fn heap_bytes(&self) -> usize {
        Self::heap_bytes(self)
    }
    fn write_block(&self, out: &mut Vec<u8>) {
        Self::write_block(self, out)
    }
    fn clear(&mut self) {
        Self::clear(self)
    }
    fn truncate(&mut self, rows: usize) {
        Self::truncate(self, rows)
    }
    fn forget_contexts(&mut self) {
        self.resources.forget();
        self.scopes.forget();
    }
}

/// A resource of the planned requests.
struct PlannedResource<'a> {
    attrs: Rendered<'a>,
    service: Cow<'a, [u8]>,
    url: &'a [u8],
}

/// A scope of the planned requests.
struct PlannedScope<'a> {
    resource: u32,
    scope: Scope<'a>,
    url: &'a [u8],
}

/// One row to write: its message, its scope, and its key in the table's order.
struct PlannedRow<'a> {
    buf: &'a [u8],
    scope: u32,
    /// (service, span name, time): the first two are a resource index and a name id until
    /// [`Plan::sort`] replaces them by the ranks of their bytes; the time is what the table
    /// orders by (seconds for spans, nanoseconds for logs).
    key: (u32, u32, i64),
    /// Arrival order, which rows with equal keys keep.
    seq: u32,
}

/// Every row of one insert's requests, in the table's `ORDER BY` order: the server finds the
/// whole insert sorted (not only each block), which is what costs it least to write. The rows
/// borrow from the requests; each block is then built by [`Plan::fill`] straight from the wire.
#[derive(Default)]
pub struct Plan<'a> {
    resources: Vec<PlannedResource<'a>>,
    scopes: Vec<PlannedScope<'a>>,
    rows: Vec<PlannedRow<'a>>,
    names: HashMap<&'a [u8], u32, foldhash::fast::RandomState>,
    next: usize,
}

impl<'a> Plan<'a> {
    /// Plans and sorts the rows of `bodies`. Bodies whose resource or scope `prost` would
    /// merge (a singular message repeated) are left out, their indexes returned: plan their
    /// canonical encoding separately.
    pub fn new<T: Table>(bodies: impl IntoIterator<Item = &'a [u8]>) -> (Self, Vec<usize>) {
        Self::with_rows::<T>(bodies, 0)
    }

    /// [`Plan::new`] with room for `rows` rows (the batch's item count) reserved up front: the
    /// row list is not grown, and copied, by doubling.
    pub fn with_rows<T: Table>(
        bodies: impl IntoIterator<Item = &'a [u8]>,
        rows: usize,
    ) -> (Self, Vec<usize>) {
        let mut plan = Plan::default();
        plan.rows.reserve(rows);
        let mut odd = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let mark = (plan.resources.len(), plan.scopes.len(), plan.rows.len());
            if T::plan(body, &mut plan).is_err() {
                plan.resources.truncate(mark.0);
                plan.scopes.truncate(mark.1);
                plan.rows.truncate(mark.2);
                odd.push(i);
            }
        }
        plan.sort();
        (plan, odd)
    }

    /// Rows planned.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is planned.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// True once every row went into a block.
    pub fn is_done(&self) -> bool {
        self.next >= self.rows.len()
    }

    /// Appends the next rows to `cols` until they hold `max_bytes` or the plan is done (checked
    /// every 32 rows, and whenever the rows since the last check span a sixteenth of `max_bytes`
    /// on the wire, so large rows cannot pile up between checks). A row the wire walk leaves to
    /// the decoder is re-encoded by `prost` and walked again; `Err` only if even that fails.
    pub fn fill<T: Table>(&mut self, cols: &mut T, max_bytes: usize) -> Result<(), Unusual> {
        if self.next == 0 {
            cols.forget_contexts();
        }
        let mut unchecked = 0usize;
        while let Some(row) = self.rows.get(self.next) {
            unchecked += row.buf.len();
            let before = cols.rows();
            if cols.push_planned(self, row.scope, row.buf).is_err() {
                cols.truncate(before);
                let canonical = T::canonical_row(row.buf).ok_or(Unusual)?;
                if let Err(e) = cols.push_planned(self, row.scope, &canonical) {
                    cols.truncate(before);
                    return Err(e);
                }
            }
            self.next += 1;
            if self.next.is_multiple_of(32) || unchecked >= max_bytes / 16 {
                unchecked = 0;
                if cols.heap_bytes() >= max_bytes {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Adds a `ResourceSpans`/`ResourceLogs` (its schema URL in field `url_field`, if wanted).
    fn add_resource(&mut self, buf: &'a [u8], url_field: Option<u32>) -> Result<u32, Unusual> {
        let (attrs, service) = match single(buf, 1)? {
            Some(r) => resource(r)?,
            None => (Vec::new(), None),
        };
        let mut url = &[][..];
        if let Some(n) = url_field {
            for f in Fields::new(buf) {
                let (m, w) = f?;
                if m == n {
                    url = w.bytes();
                }
            }
        }
        self.resources.push(PlannedResource {
            attrs,
            service: service.unwrap_or(Cow::Borrowed(b"")),
            url,
        });
        Ok(self.resources.len() as u32 - 1)
    }

    /// Adds a `ScopeSpans`/`ScopeLogs` of resource `resource`.
    fn add_scope(&mut self, resource: u32, buf: &'a [u8]) -> Result<u32, Unusual> {
        let scope = match single(buf, 1)? {
            Some(s) => scope(s)?,
            None => scope(b"")?,
        };
        let mut url = &[][..];
        for f in Fields::new(buf) {
            if let (3, w) = f? {
                url = w.bytes();
            }
        }
        self.scopes.push(PlannedScope {
            resource,
            scope,
            url,
        });
        Ok(self.scopes.len() as u32 - 1)
    }

    /// Adds a row of scope `scope` with its key.
    fn add_row(&mut self, scope: u32, buf: &'a [u8], name: &'a [u8], time: i64) {
        let resource = self.scopes.get(scope as usize).map_or(0, |s| s.resource);
        let next_id = self.names.len() as u32;
        let name = *self.names.entry(name).or_insert(next_id);
        self.rows.push(PlannedRow {
            buf,
            scope,
            key: (resource, name, time),
            seq: self.rows.len() as u32,
        });
    }

    /// Replaces resource indexes and name ids by the ranks of their bytes and sorts the rows
    /// (rows with equal keys keep their arrival order).
    fn sort(&mut self) {
        let mut services: Vec<(&[u8], usize)> = self
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (&r.service[..], i))
            .collect();
        services.sort_unstable();
        let mut service_rank = vec![0u32; services.len()];
        let mut rank = 0u32;
        for (j, &(bytes, i)) in services.iter().enumerate() {
            if j > 0 && services.get(j - 1).is_some_and(|p| p.0 != bytes) {
                rank += 1;
            }
            if let Some(r) = service_rank.get_mut(i) {
                *r = rank;
            }
        }
        let mut names: Vec<(&[u8], u32)> = self.names.iter().map(|(k, v)| (*k, *v)).collect();
        names.sort_unstable();
        let mut name_rank = vec![0u32; names.len()];
        for (rank, &(_, id)) in names.iter().enumerate() {
            if let Some(r) = name_rank.get_mut(id as usize) {
                *r = rank as u32;
            }
        }
        for row in &mut self.rows {
            let (res, name, ..) = row.key;
            row.key.0 = service_rank.get(res as usize).copied().unwrap_or(0);
            row.key.1 = name_rank.get(name as usize).copied().unwrap_or(0);
        }
        // In place (no scratch as large as the rows): the arrival order breaks ties.
        self.rows.sort_unstable_by_key(|r| (r.key, r.seq));
    }
}

/// What one block's columns prepared for the plan's resources or scopes: dictionary indexes
/// and map rows, made on a resource's first row in the block and valid until the columns are
/// cleared.
#[derive(Default)]
pub struct Contexts {
    slots: Vec<Option<Prepared>>,
}

/// One resource's or scope's values in the current block's dictionaries.
struct Prepared {
    attrs: MapRow,
    service: u32,
    url: u32,
    version: u32,
}

impl Contexts {
    fn forget(&mut self) {
        self.slots.clear();
    }

    fn slot(&mut self, i: u32) -> Option<&mut Option<Prepared>> {
        let i = i as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots.get_mut(i)
    }

    /// Resource `i` of `plan`, prepared for these columns.
    fn resource(
        &mut self,
        plan: &Plan<'_>,
        i: u32,
        attrs_col: &mut MapCol,
        service_col: &mut LcCol,
        url_col: Option<&mut LcCol>,
    ) -> Option<&Prepared> {
        let slot = self.slot(i)?;
        if slot.is_none() {
            let r = plan.resources.get(i as usize)?;
            let mut attrs = MapRow::default();
            attrs_col.prepare(r.attrs.iter().map(|(k, v)| (*k, &v[..])), &mut attrs);
            *slot = Some(Prepared {
                attrs,
                service: service_col.index(&r.service),
                url: url_col.map_or(0, |c| c.index(r.url)),
                version: 0,
            });
        }
        slot.as_ref()
    }

    /// Scope `i` of `plan` (its attributes, schema URL and version), prepared for these columns.
    fn scope(
        &mut self,
        plan: &Plan<'_>,
        i: u32,
        attrs_col: &mut MapCol,
        url_col: &mut LcCol,
        version_col: &mut LcCol,
    ) -> Option<&Prepared> {
        let slot = self.slot(i)?;
        if slot.is_none() {
            let s = plan.scopes.get(i as usize)?;
            let mut attrs = MapRow::default();
            attrs_col.prepare(s.scope.attrs.iter().map(|(k, v)| (*k, &v[..])), &mut attrs);
            *slot = Some(Prepared {
                attrs,
                service: 0,
                url: url_col.index(s.url),
                version: version_col.index(s.scope.version),
            });
        }
        slot.as_ref()
    }
}
