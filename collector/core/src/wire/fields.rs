//! Reads the fields of one protobuf message in wire order, borrowing every string, bytes field
//! and embedded message from the buffer: what an exporter that renders rows straight from an
//! encoded request (ClickHouse) walks instead of a `prost` decode. Bodies that passed
//! [`crate::wire::check`] never fail here; malformed input ends the walk with [`Malformed`].

/// The input is not valid protobuf (or uses groups, which OTLP never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf")]
pub struct Malformed;

/// One field's payload as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue<'a> {
    /// Wire type 0: int32/int64/uint32/uint64/bool/enum.
    Varint(u64),
    /// Wire type 1: fixed64/sfixed64/double.
    Fixed64(u64),
    /// Wire type 5: fixed32/sfixed32/float.
    Fixed32(u32),
    /// Wire type 2: string, bytes, an embedded message or a packed array.
    Len(&'a [u8]),
}

impl<'a> WireValue<'a> {
    /// The varint, or 0 for another wire type (what `prost` would refuse anyway).
    pub fn varint(self) -> u64 {
        match self {
            Self::Varint(v) => v,
            _ => 0,
        }
    }

    /// The fixed64, or 0 for another wire type.
    pub fn fixed64(self) -> u64 {
        match self {
            Self::Fixed64(v) => v,
            _ => 0,
        }
    }

    /// The fixed32, or 0 for another wire type.
    pub fn fixed32(self) -> u32 {
        match self {
            Self::Fixed32(v) => v,
            _ => 0,
        }
    }

    /// The length-delimited bytes, or an empty slice for another wire type.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Self::Len(b) => b,
            _ => &[],
        }
    }

    /// The bytes as a string; `Malformed` if not UTF-8 (checked bodies are).
    pub fn str(self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()).map_err(|_| Malformed)
    }
}

/// Iterates `(field number, value)` over one message's bytes.
#[derive(Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Starts at the first field of `buf` (one message, without its own length prefix).
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline]
    fn next_field(&mut self) -> Result<(u32, WireValue<'a>), Malformed> {
        let key = varint(self.buf, &mut self.pos)?;
        let key = u32::try_from(key).map_err(|_| Malformed)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(Malformed);
        }
        let value = match wire {
            0 => WireValue::Varint(varint(self.buf, &mut self.pos)?),
            1 => {
                let b = take(self.buf, &mut self.pos, 8)?;
                WireValue::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| Malformed)?))
            }
            5 => {
                let b = take(self.buf, &mut self.pos, 4)?;
                WireValue::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| Malformed)?))
            }
            2 => {
                let len = varint(self.buf, &mut self.pos)?;
                WireValue::Len(take(self.buf, &mut self.pos, len)?)
            }
            _ => return Err(Malformed),
        };
        Ok((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_field();
        if r.is_err() {
            // Stop after the first error.
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

#[inline(always)]
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    if let Some(&b) = buf.get(*pos) {
        if b < 0x80 {
            *pos += 1;
            return Ok(u64::from(b));
        }
    }
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(Malformed);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

#[inline(always)]
fn take<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], Malformed> {
    let len = usize::try_from(len).map_err(|_| Malformed)?;
    let end = pos.checked_add(len).ok_or(Malformed)?;
    let s = buf.get(*pos..end).ok_or(Malformed)?;
    *pos = end;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_stops_on_garbage() {
        // field 1 varint 300, field 2 fixed64 7, field 3 len "hi", field 4 fixed32 9
        let buf = [
            0x08, 0xac, 0x02, 0x11, 7, 0, 0, 0, 0, 0, 0, 0, 0x1a, 2, b'h', b'i', 0x25, 9, 0, 0, 0,
        ];
        let got: Vec<_> = Fields::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                (1, WireValue::Varint(300)),
                (2, WireValue::Fixed64(7)),
                (3, WireValue::Len(b"hi")),
                (4, WireValue::Fixed32(9)),
            ]
        );
        // A length running past the end, then nothing more.
        let mut f = Fields::new(&[0x1a, 5, b'x']);
        assert_eq!(f.next(), Some(Err(Malformed)));
        assert_eq!(f.next(), None);
        // Groups (wire type 3) are refused.
        assert_eq!(Fields::new(&[0x0b]).next(), Some(Err(Malformed)));
    }
}
