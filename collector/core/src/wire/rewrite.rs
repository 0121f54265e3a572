//! Editing checked OTLP protobuf without decoding it: a traces or logs request is copied field by
//! field, each span or log record kept verbatim, dropped, or kept with one field replaced
//! (a span's `trace_state`, a log record's string attribute), and every enclosing length prefix is
//! written for what was kept. What is dropped is skipped by its length, never decoded; containers
//! left empty (a `ScopeSpans` without spans, a `ResourceSpans` without `ScopeSpans`) are removed,
//! as a decoded request's `retain` would leave them out.
//!
//! The output decodes with `prost` to exactly what decoding the input and editing the structs would
//! give (the sampler's tests compare them on mutated inputs); it is itself a request that
//! [`super::check`] accepts. The walk expects checked input but never panics on anything else: it
//! answers [`NeedsFullDecode`] and the caller decodes.

use super::{take, varint, NeedsFullDecode};
use opentelemetry_proto::tonic::resource::v1::Resource;

const LEN: u8 = 2;

/// One field of a message as it lies on the wire.
#[derive(Clone, Copy)]
struct Field<'a> {
    number: u32,
    wire: u8,
    /// Offset of the tag in the message.
    start: usize,
    /// Offset just past the field.
    end: usize,
    /// The payload of a length-delimited field (empty otherwise).
    body: &'a [u8],
}

impl Field<'_> {
    fn is(&self, number: u32) -> bool {
        self.number == number && self.wire == LEN
    }
}

/// Walks the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline]
    fn next(&mut self) -> Result<Option<Field<'a>>, NeedsFullDecode> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let key = varint(self.buf, &mut self.pos)?;
        let key = u32::try_from(key).map_err(|_| NeedsFullDecode)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let mut body: &[u8] = &[];
        match wire {
            0 => {
                varint(self.buf, &mut self.pos)?;
            }
            1 => {
                take(self.buf, &mut self.pos, 8)?;
            }
            5 => {
                take(self.buf, &mut self.pos, 4)?;
            }
            LEN => {
                let len = varint(self.buf, &mut self.pos)?;
                body = take(self.buf, &mut self.pos, len)?;
            }
            _ => return Err(NeedsFullDecode),
        }
        Ok(Some(Field {
            number,
            wire,
            start,
            end: self.pos,
            body,
        }))
    }
}

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a length-delimited field of `len` payload bytes takes (field numbers here are < 16).
#[inline]
fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

#[inline]
fn put_len_field(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_len_header(out, number, body.len());
    out.extend_from_slice(body);
}

#[inline]
fn put_len_header(out: &mut Vec<u8>, number: u32, len: usize) {
    put_varint(out, u64::from(number << 3 | u32::from(LEN)));
    put_varint(out, len as u64);
}

/// A length-delimited field being written whose length is known only at its end.
struct Open {
    tag_at: usize,
    room_at: usize,
    body_at: usize,
}

/// Writes the tag and room for a length prefix sized for `hint` bytes of payload.
fn open(out: &mut Vec<u8>, number: u32, hint: usize) -> Open {
    let tag_at = out.len();
    put_varint(out, u64::from(number << 3 | u32::from(LEN)));
    let room_at = out.len();
    out.resize(room_at + varint_len(hint as u64), 0);
    Open {
        tag_at,
        room_at,
        body_at: out.len(),
    }
}

/// The bytes of `v` as a varint.
fn varint_bytes(v: u64) -> impl Iterator<Item = u8> {
    let n = varint_len(v);
    (0..n).map(move |i| {
        let b = (v >> (7 * i)) as u8 & 0x7f;
        if i + 1 < n {
            b | 0x80
        } else {
            b
        }
    })
}

/// Writes the length prefix of `o`, moving its payload when the room left was not the right size.
fn close(out: &mut Vec<u8>, o: &Open) {
    let len = (out.len() - o.body_at) as u64;
    if varint_len(len) != o.body_at - o.room_at {
        // The payload's length needs a different number of bytes than the hint did (it shrank
        // or grew past a 7-bit boundary): the payload moves once.
        out.splice(o.room_at..o.body_at, varint_bytes(len));
    } else if let Some(room) = out.get_mut(o.room_at..o.body_at) {
        for (dst, b) in room.iter_mut().zip(varint_bytes(len)) {
            *dst = b;
        }
    }
}

/// Forgets `o` and everything written into it.
fn abandon(out: &mut Vec<u8>, o: &Open) {
    out.truncate(o.tag_at);
}

/// The resource of one `ResourceSpans` / `ResourceLogs`, read only if asked for.
#[derive(Clone, Copy)]
pub struct ResourceRef<'a> {
    /// The `ResourceSpans` / `ResourceLogs` message.
    body: &'a [u8],
}

impl ResourceRef<'_> {
    /// The resource as `prost` decodes it (every occurrence of the field merged), `None` when absent.
    pub fn decode(&self) -> Result<Option<Resource>, NeedsFullDecode> {
        use prost::Message;
        let mut resource: Option<Resource> = None;
        let mut fields = Fields::new(self.body);
        while let Some(f) = fields.next()? {
            if f.is(1) {
                resource
                    .get_or_insert_with(Resource::default)
                    .merge(f.body)
                    .map_err(|_| NeedsFullDecode)?;
            }
        }
        Ok(resource)
    }

    /// Items (spans or log records) under this resource, in all its scopes.
    pub fn items(&self) -> Result<u64, NeedsFullDecode> {
        let mut n = 0;
        let mut fields = Fields::new(self.body);
        while let Some(f) = fields.next()? {
            if f.is(2) {
                let mut inner = Fields::new(f.body);
                while let Some(item) = inner.next()? {
                    if item.is(2) {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }
}

/// What a span's sampler needs to decide: the fields as `prost` would decode them.
#[derive(Debug, Clone, Copy)]
pub struct SpanRef<'a> {
    /// `trace_id` (the last occurrence, as decoded).
    pub trace_id: &'a [u8],
    /// `trace_state` (empty when absent).
    pub trace_state: &'a str,
}

/// What to do with one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanEdit {
    /// Leave it out.
    Drop,
    /// Copy it as it is.
    Keep,
    /// Copy it with `trace_state` set to the string the decider wrote into its buffer.
    SetTraceState,
}

/// Decides spans, one resource at a time.
pub trait SpanDecider {
    /// What the decider needs to know about one resource (e.g. its threshold).
    type Group;
    /// Called once per `ResourceSpans`, before its spans.
    fn resource(&mut self, resource: ResourceRef<'_>) -> Result<Self::Group, NeedsFullDecode>;
    /// Decides one span; for [`SpanEdit::SetTraceState`] writes the new state into `state`.
    fn span(&mut self, group: &Self::Group, span: SpanRef<'_>, state: &mut String) -> SpanEdit;
}

/// What a log record's sampler needs to decide.
#[derive(Debug, Clone, Copy)]
pub struct LogRef<'a> {
    /// `trace_id` (the last occurrence; empty when absent).
    pub trace_id: &'a [u8],
}

/// What to do with one log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEdit {
    /// Leave it out.
    Drop,
    /// Copy it as it is.
    Keep,
    /// Copy it with the string attribute [`LogDecider::attribute_key`] set to what the decider
    /// wrote into its buffer: the first attribute with that key gets the value, or one is appended.
    SetAttribute,
}

/// Decides log records, one resource at a time.
pub trait LogDecider {
    /// What the decider needs to know about one resource.
    type Group;
    /// The attribute [`LogEdit::SetAttribute`] sets.
    fn attribute_key(&self) -> &str;
    /// Called once per `ResourceLogs`, before its records.
    fn resource(&mut self, resource: ResourceRef<'_>) -> Result<Self::Group, NeedsFullDecode>;
    /// Decides one log record; for [`LogEdit::SetAttribute`] writes the value into `value`.
    fn log(&mut self, group: &Self::Group, log: LogRef<'_>, value: &mut String) -> LogEdit;
}

/// Items seen and kept by one rewrite.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Spans or log records in the input.
    pub seen: u64,
    /// Spans or log records written to the output.
    pub kept: u64,
}

/// Copies the traces request `request` into `out` with each span decided by `decider`.
pub fn retain_spans<D: SpanDecider>(
    request: &[u8],
    out: &mut Vec<u8>,
    decider: &mut D,
) -> Result<Counts, NeedsFullDecode> {
    let mut counts = Counts::default();
    let mut scratch = String::new();
    let mut fields = Fields::new(request);
    while let Some(f) = fields.next()? {
        if !f.is(1) {
            // Unknown fields at the top level: kept as they came (prost skips them).
            out.extend_from_slice(request.get(f.start..f.end).ok_or(NeedsFullDecode)?);
            continue;
        }
        let rs = f.body;
        let group = decider.resource(ResourceRef { body: rs })?;
        let rs_open = open(out, 1, rs.len());
        let mut scopes = 0u32;
        let mut rs_fields = Fields::new(rs);
        while let Some(g) = rs_fields.next()? {
            if !g.is(2) {
                out.extend_from_slice(rs.get(g.start..g.end).ok_or(NeedsFullDecode)?);
                continue;
            }
            let ss = g.body;
            let ss_open = open(out, 2, ss.len());
            let mut kept = 0u64;
            let mut ss_fields = Fields::new(ss);
            while let Some(h) = ss_fields.next()? {
                if !h.is(2) {
                    out.extend_from_slice(ss.get(h.start..h.end).ok_or(NeedsFullDecode)?);
                    continue;
                }
                counts.seen += 1;
                if write_span(h.body, out, decider, &group, &mut scratch)? {
                    kept += 1;
                }
            }
            if kept == 0 {
                abandon(out, &ss_open);
            } else {
                close(out, &ss_open);
                scopes += 1;
                counts.kept += kept;
            }
        }
        if scopes == 0 {
            abandon(out, &rs_open);
        } else {
            close(out, &rs_open);
        }
    }
    Ok(counts)
}

/// Decides one span and writes it (as field 2 of its `ScopeSpans`) if kept.
#[inline]
fn write_span<D: SpanDecider>(
    span: &[u8],
    out: &mut Vec<u8>,
    decider: &mut D,
    group: &D::Group,
    scratch: &mut String,
) -> Result<bool, NeedsFullDecode> {
    const TRACE_STATE: u32 = 3;
    let mut trace_id: &[u8] = &[];
    let mut state: Option<Field<'_>> = None;
    let mut states = 0u32;
    let mut first_after: Option<usize> = None;
    let mut fields = Fields::new(span);
    while let Some(f) = fields.next()? {
        if f.is(1) {
            trace_id = f.body;
        } else if f.is(TRACE_STATE) {
            state = Some(f);
            states += 1;
        } else if f.number > TRACE_STATE && first_after.is_none() {
            first_after = Some(f.start);
        }
    }
    let trace_state = match &state {
        Some(f) => std::str::from_utf8(f.body).map_err(|_| NeedsFullDecode)?,
        None => "",
    };
    let edit = decider.span(
        group,
        SpanRef {
            trace_id,
            trace_state,
        },
        scratch,
    );
    match edit {
        SpanEdit::Drop => return Ok(false),
        SpanEdit::Keep => {
            put_len_field(out, 2, span);
            return Ok(true);
        }
        SpanEdit::SetTraceState => {}
    }
    let new_field = scratch.as_bytes();
    match (state, states) {
        (None, _) => {
            // Placed where an encoder puts it: before the first higher-numbered field.
            let at = first_after.unwrap_or(span.len());
            put_len_header(out, 2, span.len() + len_field_size(new_field.len()));
            out.extend_from_slice(span.get(..at).ok_or(NeedsFullDecode)?);
            put_len_field(out, TRACE_STATE, new_field);
            out.extend_from_slice(span.get(at..).ok_or(NeedsFullDecode)?);
        }
        (Some(f), 1) => {
            let len = span.len() - (f.end - f.start) + len_field_size(new_field.len());
            put_len_header(out, 2, len);
            out.extend_from_slice(span.get(..f.start).ok_or(NeedsFullDecode)?);
            put_len_field(out, TRACE_STATE, new_field);
            out.extend_from_slice(span.get(f.end..).ok_or(NeedsFullDecode)?);
        }
        (Some(last), _) => {
            // Several occurrences (the last one wins when decoded): all of them give way to one.
            let o = open(out, 2, span.len());
            let mut fields = Fields::new(span);
            while let Some(f) = fields.next()? {
                if f.start == last.start {
                    put_len_field(out, TRACE_STATE, new_field);
                } else if !f.is(TRACE_STATE) {
                    out.extend_from_slice(span.get(f.start..f.end).ok_or(NeedsFullDecode)?);
                }
            }
            close(out, &o);
        }
    }
    Ok(true)
}

/// Copies the logs request `request` into `out` with each log record decided by `decider`.
pub fn retain_logs<D: LogDecider>(
    request: &[u8],
    out: &mut Vec<u8>,
    decider: &mut D,
) -> Result<Counts, NeedsFullDecode> {
    let mut counts = Counts::default();
    let mut scratch = String::new();
    let mut fields = Fields::new(request);
    while let Some(f) = fields.next()? {
        if !f.is(1) {
            out.extend_from_slice(request.get(f.start..f.end).ok_or(NeedsFullDecode)?);
            continue;
        }
        let rl = f.body;
        let group = decider.resource(ResourceRef { body: rl })?;
        let rl_open = open(out, 1, rl.len());
        let mut scopes = 0u32;
        let mut rl_fields = Fields::new(rl);
        while let Some(g) = rl_fields.next()? {
            if !g.is(2) {
                out.extend_from_slice(rl.get(g.start..g.end).ok_or(NeedsFullDecode)?);
                continue;
            }
            let sl = g.body;
            let sl_open = open(out, 2, sl.len());
            let mut kept = 0u64;
            let mut sl_fields = Fields::new(sl);
            while let Some(h) = sl_fields.next()? {
                if !h.is(2) {
                    out.extend_from_slice(sl.get(h.start..h.end).ok_or(NeedsFullDecode)?);
                    continue;
                }
                counts.seen += 1;
                if write_log(h.body, out, decider, &group, &mut scratch)? {
                    kept += 1;
                }
            }
            if kept == 0 {
                abandon(out, &sl_open);
            } else {
                close(out, &sl_open);
                scopes += 1;
                counts.kept += kept;
            }
        }
        if scopes == 0 {
            abandon(out, &rl_open);
        } else {
            close(out, &rl_open);
        }
    }
    Ok(counts)
}

/// The key of a `KeyValue` as decoded (the last occurrence of field 1).
fn key_of(kv: &[u8]) -> Result<&[u8], NeedsFullDecode> {
    let mut key: &[u8] = &[];
    let mut fields = Fields::new(kv);
    while let Some(f) = fields.next()? {
        if f.is(1) {
            key = f.body;
        }
    }
    Ok(key)
}

/// Decides one log record and writes it (as field 2 of its `ScopeLogs`) if kept.
fn write_log<D: LogDecider>(
    log: &[u8],
    out: &mut Vec<u8>,
    decider: &mut D,
    group: &D::Group,
    scratch: &mut String,
) -> Result<bool, NeedsFullDecode> {
    const ATTRIBUTES: u32 = 6;
    const TRACE_ID: u32 = 9;
    let mut trace_id: &[u8] = &[];
    let mut fields = Fields::new(log);
    while let Some(f) = fields.next()? {
        if f.is(TRACE_ID) {
            trace_id = f.body;
        }
    }
    match decider.log(group, LogRef { trace_id }, scratch) {
        LogEdit::Drop => return Ok(false),
        LogEdit::Keep => {
            put_len_field(out, 2, log);
            return Ok(true);
        }
        LogEdit::SetAttribute => {}
    }
    let key = decider.attribute_key().as_bytes();
    let value = scratch.as_bytes();
    // AnyValue { string_value (1) = value }.
    let any_len = len_field_size(value.len());
    // The first attribute with the key, and where a new one would go.
    let mut found: Option<Field<'_>> = None;
    let mut insert_at: Option<usize> = None;
    let mut after_last_attr: Option<usize> = None;
    let mut fields = Fields::new(log);
    while let Some(f) = fields.next()? {
        if f.is(ATTRIBUTES) {
            if key_of(f.body)? == key {
                found = Some(f);
                break;
            }
            after_last_attr = Some(f.end);
        } else if f.number > ATTRIBUTES && insert_at.is_none() {
            insert_at = Some(f.start);
        }
    }
    match found {
        Some(f) => {
            // The same KeyValue with its value (every occurrence of field 2) replaced.
            let kv = f.body;
            let mut kv_len = len_field_size(any_len);
            let mut kv_fields = Fields::new(kv);
            while let Some(g) = kv_fields.next()? {
                if !g.is(2) {
                    kv_len += g.end - g.start;
                }
            }
            let len = log.len() - (f.end - f.start) + len_field_size(kv_len);
            put_len_header(out, 2, len);
            out.extend_from_slice(log.get(..f.start).ok_or(NeedsFullDecode)?);
            put_len_header(out, ATTRIBUTES, kv_len);
            let mut kv_fields = Fields::new(kv);
            while let Some(g) = kv_fields.next()? {
                if !g.is(2) {
                    out.extend_from_slice(kv.get(g.start..g.end).ok_or(NeedsFullDecode)?);
                }
            }
            put_len_header(out, 2, any_len);
            put_len_field(out, 1, value);
            out.extend_from_slice(log.get(f.end..).ok_or(NeedsFullDecode)?);
        }
        None => {
            // A new KeyValue after the existing attributes: decoded, it is the last one.
            let at = after_last_attr.or(insert_at).unwrap_or(log.len());
            let kv_len = len_field_size(key.len()) + len_field_size(any_len);
            put_len_header(out, 2, log.len() + len_field_size(kv_len));
            out.extend_from_slice(log.get(..at).ok_or(NeedsFullDecode)?);
            put_len_header(out, ATTRIBUTES, kv_len);
            put_len_field(out, 1, key);
            put_len_header(out, 2, any_len);
            put_len_field(out, 1, value);
            out.extend_from_slice(log.get(at..).ok_or(NeedsFullDecode)?);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    /// Keeps spans whose trace id starts with an even byte, setting their state to "s<byte>".
    struct Even;
    impl SpanDecider for Even {
        type Group = ();
        fn resource(&mut self, _: ResourceRef<'_>) -> Result<(), NeedsFullDecode> {
            Ok(())
        }
        fn span(&mut self, _: &(), span: SpanRef<'_>, state: &mut String) -> SpanEdit {
            match span.trace_id.first() {
                Some(b) if b % 2 == 0 => {
                    *state = format!("s{b}");
                    SpanEdit::SetTraceState
                }
                _ => SpanEdit::Drop,
            }
        }
    }

    #[test]
    fn kept_spans_are_restamped_and_emptied_containers_removed() {
        let span = |i: u8, state: &str| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            trace_state: state.into(),
            name: "x".repeat(usize::from(i) * 10),
            kind: 1,
            ..Default::default()
        };
        let rs = |spans: Vec<Span>| ResourceSpans {
            scope_spans: vec![
                ScopeSpans {
                    spans,
                    ..Default::default()
                },
                ScopeSpans::default(),
            ],
            schema_url: "r".into(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                rs((0..30)
                    .map(|i| span(i, if i % 3 == 0 { "" } else { "a=b" }))
                    .collect()),
                rs(vec![span(1, ""), span(3, "")]),
            ],
        };
        let mut out = Vec::new();
        let counts = retain_spans(&req.encode_to_vec(), &mut out, &mut Even).unwrap();
        assert_eq!(counts, Counts { seen: 32, kept: 15 });
        assert_eq!(
            super::super::check(sluice_config::Signal::Traces, &out),
            Ok(15)
        );
        let got = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..30)
                        .filter(|i| i % 2 == 0)
                        .map(|i| span(i, &format!("s{i}")))
                        .collect(),
                    ..Default::default()
                }],
                schema_url: "r".into(),
                ..Default::default()
            }],
        };
        assert_eq!(got, expected);
        // Canonical field order is kept: re-encoding the decoded result gives the same bytes.
        assert_eq!(got.encode_to_vec(), out);
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(varint(&b, &mut pos), Ok(v));
        }
    }

    #[test]
    fn a_length_prefix_moves_its_payload_when_the_hint_was_wrong() {
        for (hint, len) in [(10, 300), (300, 10), (100_000, 5), (5, 100_000), (50, 50)] {
            let mut out = vec![0xaa];
            let o = open(&mut out, 2, hint);
            out.extend(std::iter::repeat_n(7u8, len));
            close(&mut out, &o);
            let mut pos = 1;
            assert_eq!(varint(&out, &mut pos), Ok(0x12));
            assert_eq!(varint(&out, &mut pos), Ok(len as u64));
            assert_eq!(out.len() - pos, len);
            assert!(out[pos..].iter().all(|b| *b == 7));
        }
    }
}
