//! A schema-driven check of OTLP protobuf that allocates nothing: it walks the wire format of a
//! traces or logs request, field by field, and accepts only what `prost` would decode without
//! error (and whose ids have the lengths OTLP requires). Requests that pass stay encoded in
//! [`Encoded`](crate::telemetry::Encoded) and are decoded only if a processor or exporter needs
//! their fields; anything unusual (a decode error, a bad id, a group, deep nesting) is left to
//! the full decoder, which then gives the definitive answer and error message.

use sluice_config::Signal;

pub mod fields;
pub mod rewrite;
pub mod size;
pub mod split;

/// How a field is encoded on the wire, and what its bytes must satisfy.
#[derive(Clone, Copy)]
enum Kind {
    /// int32/int64/uint32/bool/enum.
    Varint,
    /// fixed64/double.
    Fixed64,
    /// fixed32.
    Fixed32,
    /// bytes.
    Bytes,
    /// string: must be UTF-8.
    Str,
    /// An embedded message.
    Msg(&'static Schema),
}

/// What a message is, beyond its fields: spans and log records are the items Sluice counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    Span,
    LogRecord,
}

/// Highest field number in the schemas below, plus one.
const FIELDS: usize = 17;

struct Schema {
    /// The kind of each known field, indexed by field number.
    fields: [Option<Kind>; FIELDS],
    /// What to do for each one-byte key (fields 1–15): one dispatch per field on the hot path.
    steps: [Step; 128],
    role: Role,
}

/// What the walk does with a field, decided from its key byte alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Field 0, a known field with the wrong wire type, a group or an invalid wire type.
    Refuse,
    /// A varint to skip (known or unknown field).
    Varint,
    /// Eight bytes to skip.
    Fixed64,
    /// Four bytes to skip.
    Fixed32,
    /// An unknown length-delimited field to skip.
    Skip,
    /// A `bytes` field (an id, perhaps).
    Bytes,
    /// A `string` field.
    Str,
    /// An embedded message, whose schema is in `fields`.
    Msg,
}

/// The step for a field number and wire type under a field table.
const fn step(fields: &[Option<Kind>; FIELDS], field: u32, wire: u32) -> Step {
    if field == 0 {
        return Step::Refuse;
    }
    let kind = if (field as usize) < FIELDS {
        fields[field as usize]
    } else {
        None
    };
    match (kind, wire) {
        (Some(Varint) | None, 0) => Step::Varint,
        (Some(Fixed64) | None, 1) => Step::Fixed64,
        (Some(Fixed32) | None, 5) => Step::Fixed32,
        (None, 2) => Step::Skip,
        (Some(Bytes), 2) => Step::Bytes,
        (Some(Str), 2) => Step::Str,
        (Some(Msg(_)), 2) => Step::Msg,
        _ => Step::Refuse,
    }
}

/// A schema from its role and `(number, kind)` pairs, with its one-byte key table.
const fn schema<const N: usize>(role: Role, pairs: [(u32, Kind); N]) -> Schema {
    let fields = table(pairs);
    let mut steps = [Step::Refuse; 128];
    let mut key = 0;
    while key < 128 {
        steps[key] = step(&fields, key as u32 >> 3, key as u32 & 7);
        key += 1;
    }
    Schema {
        fields,
        steps,
        role,
    }
}

/// Builds a field table from `(number, kind)` pairs.
const fn table<const N: usize>(pairs: [(u32, Kind); N]) -> [Option<Kind>; FIELDS] {
    let mut t = [None; FIELDS];
    let mut i = 0;
    while i < N {
        t[pairs[i].0 as usize] = Some(pairs[i].1);
        i += 1;
    }
    t
}

use Kind::{Bytes, Fixed32, Fixed64, Msg, Str, Varint};

static ANY_VALUE: Schema = schema(
    Role::Plain,
    [
        (1, Str),
        (2, Varint),
        (3, Varint),
        (4, Fixed64),
        (5, Msg(&ARRAY_VALUE)),
        (6, Msg(&KEY_VALUE_LIST)),
        (7, Bytes),
        (8, Varint),
    ],
);
static ARRAY_VALUE: Schema = schema(Role::Plain, [(1, Msg(&ANY_VALUE))]);
static KEY_VALUE_LIST: Schema = schema(Role::Plain, [(1, Msg(&KEY_VALUE))]);
static KEY_VALUE: Schema = schema(Role::Plain, [(1, Str), (2, Msg(&ANY_VALUE)), (3, Varint)]);
static SCOPE: Schema = schema(
    Role::Plain,
    [(1, Str), (2, Str), (3, Msg(&KEY_VALUE)), (4, Varint)],
);
static ENTITY_REF: Schema = schema(Role::Plain, [(1, Str), (2, Str), (3, Str), (4, Str)]);
static RESOURCE: Schema = schema(
    Role::Plain,
    [(1, Msg(&KEY_VALUE)), (2, Varint), (3, Msg(&ENTITY_REF))],
);

static TRACES_REQUEST: Schema = schema(Role::Plain, [(1, Msg(&RESOURCE_SPANS))]);
static RESOURCE_SPANS: Schema = schema(
    Role::Plain,
    [(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_SPANS)), (3, Str)],
);
static SCOPE_SPANS: Schema = schema(Role::Plain, [(1, Msg(&SCOPE)), (2, Msg(&SPAN)), (3, Str)]);
static SPAN: Schema = schema(
    Role::Span,
    [
        (1, Bytes),
        (2, Bytes),
        (3, Str),
        (4, Bytes),
        (5, Str),
        (6, Varint),
        (7, Fixed64),
        (8, Fixed64),
        (9, Msg(&KEY_VALUE)),
        (10, Varint),
        (11, Msg(&EVENT)),
        (12, Varint),
        (13, Msg(&LINK)),
        (14, Varint),
        (15, Msg(&STATUS)),
        (16, Fixed32),
    ],
);
static EVENT: Schema = schema(
    Role::Plain,
    [(1, Fixed64), (2, Str), (3, Msg(&KEY_VALUE)), (4, Varint)],
);
static LINK: Schema = schema(
    Role::Plain,
    [
        (1, Bytes),
        (2, Bytes),
        (3, Str),
        (4, Msg(&KEY_VALUE)),
        (5, Varint),
        (6, Fixed32),
    ],
);
static STATUS: Schema = schema(Role::Plain, [(2, Str), (3, Varint)]);

static LOGS_REQUEST: Schema = schema(Role::Plain, [(1, Msg(&RESOURCE_LOGS))]);
static RESOURCE_LOGS: Schema = schema(
    Role::Plain,
    [(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_LOGS)), (3, Str)],
);
static SCOPE_LOGS: Schema = schema(
    Role::Plain,
    [(1, Msg(&SCOPE)), (2, Msg(&LOG_RECORD)), (3, Str)],
);
static LOG_RECORD: Schema = schema(
    Role::LogRecord,
    [
        (1, Fixed64),
        (2, Varint),
        (3, Str),
        (5, Msg(&ANY_VALUE)),
        (6, Msg(&KEY_VALUE)),
        (7, Varint),
        (8, Fixed32),
        (9, Bytes),
        (10, Bytes),
        (11, Fixed64),
        (12, Str),
    ],
);

/// Messages nested deeper than this go to the full decoder (prost's own limit is 100).
const MAX_DEPTH: u32 = 64;

/// Not decided here: the full decoder must look at this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsFullDecode;

/// Checks an encoded traces or logs request and counts its items (spans, log records).
///
/// `Ok(n)` promises that `prost` decodes `buf` and that every id has a valid length; `Err` only
/// says "ask the full decoder". Metrics and profiles always get `Err`.
pub fn check(signal: Signal, buf: &[u8]) -> Result<u64, NeedsFullDecode> {
    let schema = match signal {
        Signal::Traces => &TRACES_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
        Signal::Metrics | Signal::Profiles => return Err(NeedsFullDecode),
    };
    let mut items = 0;
    walk(buf, schema, 0, &mut items)?;
    Ok(items)
}

/// Reads a varint as prost does: at most 10 bytes, the 10th at most 1.
#[inline(always)]
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, NeedsFullDecode> {
    // Tags and short lengths fit in one byte.
    if let Some(&b) = buf.get(*pos) {
        if b < 0x80 {
            *pos += 1;
            return Ok(u64::from(b));
        }
    }
    varint_slow(buf, pos)
}

#[inline(never)]
fn varint_slow(buf: &[u8], pos: &mut usize) -> Result<u64, NeedsFullDecode> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(NeedsFullDecode)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(NeedsFullDecode);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(NeedsFullDecode)
}

#[inline(always)]
fn take<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], NeedsFullDecode> {
    let len = usize::try_from(len).map_err(|_| NeedsFullDecode)?;
    let end = pos.checked_add(len).ok_or(NeedsFullDecode)?;
    let s = buf.get(*pos..end).ok_or(NeedsFullDecode)?;
    *pos = end;
    Ok(s)
}

/// Whether a string field is valid UTF-8. OTLP's strings are nearly always ASCII, and short:
/// the inlined word-at-a-time ASCII test is several times cheaper than `from_utf8`'s call and
/// byte loop on them, which it only falls back to for the rest.
#[inline(always)]
fn utf8(s: &[u8]) -> bool {
    s.is_ascii() || std::str::from_utf8(s).is_ok()
}

fn walk(buf: &[u8], schema: &Schema, depth: u32, items: &mut u64) -> Result<(), NeedsFullDecode> {
    if depth > MAX_DEPTH {
        return Err(NeedsFullDecode);
    }
    // Last length seen of the id fields (proto3: the last occurrence wins).
    let (mut trace_id, mut span_id, mut parent) = (None::<usize>, None::<usize>, None::<usize>);
    let mut pos = 0;
    while let Some(&first) = buf.get(pos) {
        let (field, step) = match schema.steps.get(usize::from(first)) {
            Some(&step) => {
                pos += 1;
                (u32::from(first >> 3), step)
            }
            None => {
                let key = varint_slow(buf, &mut pos)?;
                let key = u32::try_from(key).map_err(|_| NeedsFullDecode)?;
                (key >> 3, self::step(&schema.fields, key >> 3, key & 7))
            }
        };
        match step {
            Step::Varint => {
                varint(buf, &mut pos)?;
            }
            Step::Fixed64 => {
                take(buf, &mut pos, 8)?;
            }
            Step::Fixed32 => {
                take(buf, &mut pos, 4)?;
            }
            Step::Skip => {
                let len = varint(buf, &mut pos)?;
                take(buf, &mut pos, len)?;
            }
            Step::Bytes => {
                let len = varint(buf, &mut pos)?;
                let b = take(buf, &mut pos, len)?;
                match (schema.role, field) {
                    (Role::Span, 1) | (Role::LogRecord, 9) => trace_id = Some(b.len()),
                    (Role::Span, 2) | (Role::LogRecord, 10) => span_id = Some(b.len()),
                    (Role::Span, 4) => parent = Some(b.len()),
                    _ => {}
                }
            }
            Step::Str => {
                let len = varint(buf, &mut pos)?;
                let s = take(buf, &mut pos, len)?;
                if !utf8(s) {
                    return Err(NeedsFullDecode);
                }
            }
            Step::Msg => {
                let Some(Some(Msg(inner))) = schema.fields.get(field as usize).copied() else {
                    return Err(NeedsFullDecode);
                };
                let len = varint(buf, &mut pos)?;
                let m = take(buf, &mut pos, len)?;
                walk(m, inner, depth + 1, items)?;
            }
            Step::Refuse => return Err(NeedsFullDecode),
        }
    }
    let ids_ok = match schema.role {
        Role::Plain => return Ok(()),
        Role::Span => {
            trace_id == Some(16) && span_id == Some(8) && matches!(parent, None | Some(0) | Some(8))
        }
        Role::LogRecord => {
            matches!(trace_id, None | Some(0) | Some(16))
                && matches!(span_id, None | Some(0) | Some(8))
        }
    };
    if !ids_ok {
        return Err(NeedsFullDecode);
    }
    *items += 1;
    Ok(())
}

#[cfg(test)]
mod tests;
