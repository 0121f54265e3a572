//! Splits an encoded traces or logs request into parts by trace id without decoding it: the walk
//! finds each span (log record) and its trace id on the wire, and every part is written as
//! resource and scope headers copied byte for byte plus the items routed to it. A part decodes to
//! exactly what splitting the decoded request would give (resources and scopes that get no item
//! in a part are left out of it).

use super::{take, varint, NeedsFullDecode};
use sluice_config::Signal;

/// One part of a split request: an OTLP protobuf request body and the items it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Part {
    /// The request, ready to send.
    pub body: Vec<u8>,
    /// Spans or log records in it.
    pub items: u64,
}

/// Field number of the trace id in a span (1) or a log record (9).
fn trace_id_field(signal: Signal) -> Option<u32> {
    match signal {
        Signal::Traces => Some(1),
        Signal::Logs => Some(9),
        Signal::Metrics | Signal::Profiles => None,
    }
}

/// One field as it sits on the wire: its number, wire type, whole bytes (key included) and, for
/// a length-delimited field, its payload.
struct Field<'a> {
    number: u32,
    raw: &'a [u8],
    payload: Option<&'a [u8]>,
}

/// Reads the next field of `buf` from `pos`.
fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Field<'a>, NeedsFullDecode> {
    let start = *pos;
    let key = varint(buf, pos)?;
    let key = u32::try_from(key).map_err(|_| NeedsFullDecode)?;
    let (number, wire) = (key >> 3, key & 7);
    if number == 0 {
        return Err(NeedsFullDecode);
    }
    let payload = match wire {
        0 => {
            varint(buf, pos)?;
            None
        }
        1 => {
            take(buf, pos, 8)?;
            None
        }
        5 => {
            take(buf, pos, 4)?;
            None
        }
        2 => {
            let len = varint(buf, pos)?;
            Some(take(buf, pos, len)?)
        }
        _ => return Err(NeedsFullDecode),
    };
    let raw = buf.get(start..*pos).ok_or(NeedsFullDecode)?;
    Ok(Field {
        number,
        raw,
        payload,
    })
}

/// The trace id of one item (`None` when absent or empty).
fn trace_id(item: &[u8], field: u32) -> Result<Option<&[u8]>, NeedsFullDecode> {
    let mut id = None;
    let mut pos = 0;
    while pos < item.len() {
        let f = next_field(item, &mut pos)?;
        if f.number == field {
            // proto3: the last occurrence wins.
            id = f.payload.filter(|p| !p.is_empty());
        }
    }
    Ok(id)
}

/// A resource or scope message taken apart: the fields kept as they are (`header`) and the
/// repeated children (field 2).
struct Parts<'a> {
    header: usize,
    header_fields: Vec<&'a [u8]>,
}

/// Takes `msg` apart; its field-2 children go to `children` as (whole field, payload).
fn header_of<'a>(
    msg: &'a [u8],
    children: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Result<Parts<'a>, NeedsFullDecode> {
    let mut header_fields = Vec::new();
    let mut header = 0;
    let mut pos = 0;
    while pos < msg.len() {
        let f = next_field(msg, &mut pos)?;
        match (f.number, f.payload) {
            (2, Some(p)) => children.push((f.raw, p)),
            (2, None) => return Err(NeedsFullDecode),
            _ => {
                header += f.raw.len();
                header_fields.push(f.raw);
            }
        }
    }
    Ok(Parts {
        header,
        header_fields,
    })
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

fn put_len_delimited_key(out: &mut Vec<u8>, field: u32, len: usize) {
    prost::encoding::encode_varint(u64::from(field << 3 | 2), out);
    prost::encoding::encode_varint(len as u64, out);
}

/// Routes every item of `body` (an OTLP traces or logs request) to `parts[route(trace_id)]`,
/// appending to the parts; `route` gets `None` for a log record without a trace id. On `Err`
/// nothing was appended: the caller splits the decoded request instead.
pub fn split(
    signal: Signal,
    body: &[u8],
    parts: &mut [Part],
    route: &mut dyn FnMut(Option<&[u8]>) -> usize,
) -> Result<(), NeedsFullDecode> {
    let id_field = trace_id_field(signal).ok_or(NeedsFullDecode)?;
    let n = parts.len();
    // First the whole plan (so an error leaves the parts untouched), then the writing.
    struct Scope<'a> {
        head: Parts<'a>,
        /// Each item's bytes (key included) and its part.
        items: Vec<(&'a [u8], usize)>,
        /// Per part: bytes of its items.
        sizes: Vec<usize>,
    }
    struct Resource<'a> {
        head: Parts<'a>,
        scopes: Vec<Scope<'a>>,
    }
    let mut resources = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let f = next_field(body, &mut pos)?;
        let rm = match (f.number, f.payload) {
            (1, Some(p)) => p,
            // Unknown request-level fields: let the decoder deal with them.
            _ => return Err(NeedsFullDecode),
        };
        let mut scope_bytes = Vec::new();
        let head = header_of(rm, &mut scope_bytes)?;
        let mut scopes = Vec::with_capacity(scope_bytes.len());
        for (_, sm) in scope_bytes {
            let mut children = Vec::new();
            let shead = header_of(sm, &mut children)?;
            let mut items = Vec::with_capacity(children.len());
            let mut sizes = vec![0usize; n];
            for (raw, payload) in children {
                let d = route(trace_id(payload, id_field)?);
                let size = sizes.get_mut(d).ok_or(NeedsFullDecode)?;
                *size += raw.len();
                items.push((raw, d));
            }
            scopes.push(Scope {
                head: shead,
                items,
                sizes,
            });
        }
        resources.push(Resource { head, scopes });
    }
    for (d, part) in parts.iter_mut().enumerate() {
        for r in &resources {
            let scope_len = |s: &Scope<'_>| s.head.header + s.sizes.get(d).copied().unwrap_or(0);
            let used = |s: &&Scope<'_>| s.sizes.get(d).is_some_and(|&b| b > 0);
            let body_len: usize = r
                .scopes
                .iter()
                .filter(used)
                .map(|s| {
                    let l = scope_len(s);
                    1 + varint_len(l as u64) + l
                })
                .sum();
            if body_len == 0 {
                continue;
            }
            let res_len = r.head.header + body_len;
            part.body.reserve(1 + varint_len(res_len as u64) + res_len);
            put_len_delimited_key(&mut part.body, 1, res_len);
            for h in &r.head.header_fields {
                part.body.extend_from_slice(h);
            }
            for s in r.scopes.iter().filter(used) {
                put_len_delimited_key(&mut part.body, 2, scope_len(s));
                for h in &s.head.header_fields {
                    part.body.extend_from_slice(h);
                }
                for (raw, _) in s.items.iter().filter(|(_, to)| *to == d) {
                    part.body.extend_from_slice(raw);
                    part.items += 1;
                }
            }
        }
    }
    Ok(())
}
