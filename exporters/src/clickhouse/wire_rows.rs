//! `otel_traces` and `otel_logs` columns built straight from encoded OTLP requests: the wire
//! walker reads each field once and appends it to its Native column, with no `prost` decode and
//! no per-row allocation (strings are copied once, into the column). Values render exactly as
//! [`super::rows`] renders them for RowBinary (the collector's rendering), which a test checks
//! on the load generator's shapes and the OTLP JSON fixtures.
//!
//! Anything a checked body may hold but this walk does not mirror field for field (a singular
//! sub-message repeated, which `prost` would merge) returns [`Unusual`]: the caller then
//! renders that batch from the decoded request instead.

use super::native::{
    sort_order, write_block_header, write_column_sorted, ArrayCol, Column, FixedCol, LcCol, MapCol,
    MapRow, StrCol,
};
use base64::Engine as _;
use prost::Message;
use sluice_core::wire::fields::{Fields, Malformed, WireValue};
use std::borrow::Cow;
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
    /// The current resource's attributes, prepared once for all its spans.
    res_row: MapRow,
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

    /// Appends every span of one encoded `ExportTraceServiceRequest`. On `Err` the columns hold
    /// a partial row: clear them.
    pub fn push_request(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (1, w) = f? {
                self.resource_spans(w.bytes())?;
            }
        }
        Ok(())
    }

    fn resource_spans(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        let (res, service) = match single(buf, 1)? {
            Some(r) => resource(r)?,
            None => (Vec::new(), None),
        };
        let service = self.service_name.index(service.as_deref().unwrap_or(b""));
        let mut res_row = std::mem::take(&mut self.res_row);
        self.resource_attributes
            .prepare(res.iter().map(|(k, v)| (*k, &v[..])), &mut res_row);
        let r = self.scope_spans(buf, &res_row, service);
        self.res_row = res_row;
        r
    }

    fn scope_spans(&mut self, buf: &[u8], res: &MapRow, service: u32) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (2, w) = f? {
                let ss = w.bytes();
                let sc = match single(ss, 1)? {
                    Some(s) => scope(s)?,
                    None => scope(b"")?,
                };
                for f in Fields::new(ss) {
                    if let (2, w) = f? {
                        self.span(w.bytes(), res, service, &sc)?;
                    }
                }
            }
        }
        Ok(())
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
    /// The current resource's and scope's attributes, prepared once for all their records.
    res_row: MapRow,
    scope_row: MapRow,
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
    }

    /// Appends every record of one encoded `ExportLogsServiceRequest`. On `Err` the columns hold
    /// a partial row: clear them.
    pub fn push_request(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (1, w) = f? {
                self.resource_logs(w.bytes())?;
            }
        }
        Ok(())
    }

    fn resource_logs(&mut self, buf: &[u8]) -> Result<(), Unusual> {
        let (res, service) = match single(buf, 1)? {
            Some(r) => resource(r)?,
            None => (Vec::new(), None),
        };
        let mut res_url = &[][..];
        for f in Fields::new(buf) {
            if let (3, w) = f? {
                res_url = w.bytes();
            }
        }
        let service = self.service_name.index(service.as_deref().unwrap_or(b""));
        let res_url = self.resource_schema_url.index(res_url);
        let mut res_row = std::mem::take(&mut self.res_row);
        let mut scope_row = std::mem::take(&mut self.scope_row);
        self.resource_attributes
            .prepare(res.iter().map(|(k, v)| (*k, &v[..])), &mut res_row);
        let r = self.scope_logs(buf, &res_row, service, res_url, &mut scope_row);
        self.res_row = res_row;
        self.scope_row = scope_row;
        r
    }

    fn scope_logs(
        &mut self,
        buf: &[u8],
        res: &MapRow,
        service: u32,
        res_url: u32,
        scope_row: &mut MapRow,
    ) -> Result<(), Unusual> {
        for f in Fields::new(buf) {
            if let (2, w) = f? {
                let sl = w.bytes();
                let sc = match single(sl, 1)? {
                    Some(s) => scope(s)?,
                    None => scope(b"")?,
                };
                let mut scope_url = &[][..];
                for f in Fields::new(sl) {
                    if let (3, w) = f? {
                        scope_url = w.bytes();
                    }
                }
                self.scope_attributes
                    .prepare(sc.attrs.iter().map(|(k, v)| (*k, &v[..])), scope_row);
                let ctx = LogContext {
                    res,
                    service,
                    res_url,
                    scope_url: self.scope_schema_url.index(scope_url),
                    scope_name: sc.name,
                    scope_version: self.scope_version.index(sc.version),
                    scope_attrs: scope_row,
                };
                for f in Fields::new(sl) {
                    if let (2, w) = f? {
                        self.record(w.bytes(), &ctx)?;
                    }
                }
            }
        }
        Ok(())
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
