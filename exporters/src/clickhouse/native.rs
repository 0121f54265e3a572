//! ClickHouse's Native format, written column by column: what `INSERT … FORMAT Native` reads
//! with the least work on the server (no per-row parsing, LowCardinality dictionaries already
//! built). Hand-written for the exporter's fixed schema: the `clickhouse` crate's own Native
//! builder needs a `HashMap` per `Map` value and type checks per value, which costs more than
//! the rows themselves.
//!
//! The layout (HTTP `FORMAT Native`, no block info, client revision 0): a block is
//! `varuint columns, varuint rows`, then per column `string name, string type` and its data.
//! Fixed-width types are little-endian values; `String` is `varuint length + bytes` per value;
//! `Array(T)` is the cumulative end offsets (`UInt64` per row) then `T`'s data for all elements;
//! `Map(K, V)` is `Array(Tuple(K, V))`: offsets, then all keys, then all values.
//! `LowCardinality(String)` has a state prefix (`UInt64` 1, "shared dictionaries with additional
//! keys"), written before everything else of its top-level column (so before an enclosing
//! array's offsets), and per block: `UInt64` serialization type (index width | has additional
//! keys | needs dictionary update), `UInt64` dictionary size, the dictionary as a `String`
//! column (index 0 is the default, the empty string, as ClickHouse writes it), `UInt64` rows,
//! then one index per row. A LowCardinality column with no rows writes nothing after its prefix.

use std::collections::HashMap;

/// Appends a LEB128 varint.
#[inline]
pub fn put_varuint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a `String` value: length, then bytes.
#[inline]
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_varuint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A column of the block being built.
pub trait Column {
    /// Values held (rows of a top-level column, elements of a nested one).
    fn len(&self) -> usize;
    /// True when no value is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the serialization state prefix (LowCardinality's version), if any.
    fn write_prefix(&self, _out: &mut Vec<u8>) {}
    /// Writes the values.
    fn write_data(&self, out: &mut Vec<u8>);
    /// Forgets the values, keeping allocations for the next block.
    fn clear(&mut self);
    /// Heap bytes held (what bounds a block).
    fn heap_bytes(&self) -> usize;
}

/// `String`: values already in their wire form.
#[derive(Default)]
pub struct StrCol {
    data: Vec<u8>,
    n: usize,
}

impl StrCol {
    /// Appends one value.
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        put_str(&mut self.data, s);
        self.n += 1;
    }

    /// Appends bytes as lowercase hex (trace and span ids), as the collector writes them.
    #[inline]
    pub fn push_hex(&mut self, b: &[u8]) {
        put_varuint(&mut self.data, (b.len() * 2) as u64);
        let start = self.data.len();
        self.data.resize(start + b.len() * 2, 0);
        if let Some(out) = self.data.get_mut(start..) {
            // Cannot fail: the output is exactly twice the input.
            let _ = const_hex::encode_to_slice(b, out);
        }
        self.n += 1;
    }
}

impl Column for StrCol {
    fn len(&self) -> usize {
        self.n
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
    fn clear(&mut self) {
        self.data.clear();
        self.n = 0;
    }
    fn heap_bytes(&self) -> usize {
        self.data.capacity()
    }
}

/// A fixed-width little-endian column (`Int64`, `DateTime64(9)`, `UInt64`, `UInt8`).
#[derive(Default)]
pub struct FixedCol<const W: usize> {
    data: Vec<u8>,
}

impl FixedCol<8> {
    /// Appends an `Int64` / `DateTime64(9)` value.
    #[inline]
    pub fn push_i64(&mut self, v: i64) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a `UInt64` value.
    #[inline]
    pub fn push_u64(&mut self, v: u64) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
}

impl FixedCol<1> {
    /// Appends a `UInt8` value.
    #[inline]
    pub fn push_u8(&mut self, v: u8) {
        self.data.push(v);
    }
}

impl<const W: usize> Column for FixedCol<W> {
    fn len(&self) -> usize {
        self.data.len() / W
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
    fn clear(&mut self) {
        self.data.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.data.capacity()
    }
}

/// Serialization version written in a LowCardinality column's prefix.
const LC_SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS: u64 = 1;
/// The block carries its own keys ("additional keys").
const LC_HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
/// The dictionary differs from the previous block's.
const LC_NEED_UPDATE_DICTIONARY: u64 = 1 << 10;

/// `LowCardinality(String)`: a dictionary of the distinct values and one index per value.
pub struct LcCol {
    lookup: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    /// The dictionary as a `String` column: `""` first, then values in first-seen order.
    dict: StrCol,
    keys: Vec<u32>,
}

impl Default for LcCol {
    fn default() -> Self {
        let mut c = Self {
            lookup: HashMap::default(),
            dict: StrCol::default(),
            keys: Vec::new(),
        };
        c.dict.push(b"");
        c
    }
}

impl LcCol {
    /// Appends one value (looked up in the dictionary; a new value is copied once).
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        let k = if s.is_empty() {
            0
        } else if let Some(&k) = self.lookup.get(s) {
            k
        } else {
            let k = self.dict.n as u32;
            self.dict.push(s);
            self.lookup.insert(s.into(), k);
            k
        };
        self.keys.push(k);
    }
}

impl Column for LcCol {
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn write_prefix(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&LC_SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS.to_le_bytes());
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        if self.keys.is_empty() {
            return;
        }
        let dict_len = self.dict.n;
        let width: u64 = if dict_len <= 1 << 8 {
            0
        } else if dict_len <= 1 << 16 {
            1
        } else {
            2
        };
        let ty = width | LC_HAS_ADDITIONAL_KEYS | LC_NEED_UPDATE_DICTIONARY;
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(dict_len as u64).to_le_bytes());
        self.dict.write_data(out);
        out.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        match width {
            0 => out.extend(self.keys.iter().map(|&k| k as u8)),
            1 => {
                out.reserve(self.keys.len() * 2);
                for &k in &self.keys {
                    out.extend_from_slice(&(k as u16).to_le_bytes());
                }
            }
            _ => {
                out.reserve(self.keys.len() * 4);
                for &k in &self.keys {
                    out.extend_from_slice(&k.to_le_bytes());
                }
            }
        }
    }
    fn clear(&mut self) {
        self.lookup.clear();
        self.dict.clear();
        self.dict.push(b"");
        self.keys.clear();
    }
    fn heap_bytes(&self) -> usize {
        // The lookup holds a second copy of every dictionary value.
        2 * self.dict.heap_bytes()
            + self.keys.capacity() * 4
            + self.lookup.capacity() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
    }
}

/// `Array(T)`: cumulative end offsets, then the elements.
#[derive(Default)]
pub struct ArrayCol<C> {
    offsets: Vec<u64>,
    /// The elements of every row.
    pub inner: C,
}

impl<C: Column> ArrayCol<C> {
    /// Ends the current row: its elements are those pushed to `inner` since the last call.
    #[inline]
    pub fn end_row(&mut self) {
        self.offsets.push(self.inner.len() as u64);
    }
}

impl<C: Column> Column for ArrayCol<C> {
    fn len(&self) -> usize {
        self.offsets.len()
    }
    fn write_prefix(&self, out: &mut Vec<u8>) {
        self.inner.write_prefix(out);
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.reserve(self.offsets.len() * 8);
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        self.inner.write_data(out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.inner.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 8 + self.inner.heap_bytes()
    }
}

/// `Map(LowCardinality(String), String)`: offsets, keys, values.
#[derive(Default)]
pub struct MapCol {
    offsets: Vec<u64>,
    keys: LcCol,
    values: StrCol,
}

impl MapCol {
    /// Adds one entry to the current row.
    #[inline]
    pub fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.keys.push(key);
        self.values.push(value);
    }

    /// Ends the current row.
    #[inline]
    pub fn end_row(&mut self) {
        self.offsets.push(self.keys.len() as u64);
    }
}

impl Column for MapCol {
    fn len(&self) -> usize {
        self.offsets.len()
    }
    fn write_prefix(&self, out: &mut Vec<u8>) {
        self.keys.write_prefix(out);
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.reserve(self.offsets.len() * 8);
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        self.keys.write_data(out);
        self.values.write_data(out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.keys.clear();
        self.values.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 8 + self.keys.heap_bytes() + self.values.heap_bytes()
    }
}

/// Writes one whole column: name, type, prefix, data.
pub fn write_column(out: &mut Vec<u8>, name: &str, ty: &str, c: &dyn Column) {
    put_str(out, name.as_bytes());
    put_str(out, ty.as_bytes());
    c.write_prefix(out);
    c.write_data(out);
}

/// Writes a block header.
pub fn write_block_header(out: &mut Vec<u8>, columns: usize, rows: usize) {
    put_varuint(out, columns as u64);
    put_varuint(out, rows as u64);
}
