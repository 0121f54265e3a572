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
    /// Writes the values in the order `perm` gives (each entry the index of a held value;
    /// `perm` holds every index once).
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>);
    /// Forgets the values, keeping allocations for the next block.
    fn clear(&mut self);
    /// Bytes of the values held (what bounds a block). Counted from lengths, not capacities:
    /// a cleared column keeps its allocations for the next block, and counting those would
    /// cut every later block after its first request.
    fn heap_bytes(&self) -> usize;
}

/// `String`: values already in their wire form.
#[derive(Default)]
pub struct StrCol {
    data: Vec<u8>,
    n: usize,
}

/// Reads the LEB128 varint at the start of `b`: its value and its length in bytes.
#[inline]
fn get_varuint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, b.len())
}

impl StrCol {
    /// Where each value starts in `data`, plus the end: found by walking the length prefixes
    /// (kept out of the column so a block holds no per-value offsets it rarely needs).
    fn starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.n + 1);
        let mut pos = 0;
        while let Some(rest) = self.data.get(pos..).filter(|r| !r.is_empty()) {
            starts.push(pos);
            let (len, head) = get_varuint(rest);
            pos += head + len as usize;
        }
        starts.push(pos.min(self.data.len()));
        starts
    }

    /// The values (without their length prefixes), in order.
    pub fn values(&self) -> Vec<&[u8]> {
        let starts = self.starts();
        starts
            .windows(2)
            .map(|w| {
                let v = self.data.get(w[0]..w[1]).unwrap_or_default();
                let (_, head) = get_varuint(v);
                v.get(head..).unwrap_or_default()
            })
            .collect()
    }

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
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>) {
        let starts = self.starts();
        out.reserve(self.data.len());
        for &i in perm {
            let i = i as usize;
            if let (Some(&a), Some(&b)) = (starts.get(i), starts.get(i + 1)) {
                out.extend_from_slice(self.data.get(a..b).unwrap_or_default());
            }
        }
    }
    fn clear(&mut self) {
        self.data.clear();
        self.n = 0;
    }
    fn heap_bytes(&self) -> usize {
        self.data.len()
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

impl FixedCol<8> {
    /// The `Int64` value of row `i` (0 past the end).
    #[inline]
    pub fn get_i64(&self, i: usize) -> i64 {
        self.data
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }
}

impl<const W: usize> Column for FixedCol<W> {
    fn len(&self) -> usize {
        self.data.len() / W
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>) {
        out.reserve(self.data.len());
        for &i in perm {
            let i = i as usize;
            out.extend_from_slice(self.data.get(i * W..i * W + W).unwrap_or_default());
        }
    }
    fn clear(&mut self) {
        self.data.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.data.len()
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

    /// The dictionary index of row `i` (0, the empty string, past the end).
    #[inline]
    pub fn key(&self, i: usize) -> u32 {
        self.keys.get(i).copied().unwrap_or(0)
    }

    /// Each dictionary entry's place when the entries are sorted by their bytes (how ClickHouse
    /// orders `LowCardinality(String)`), indexed by dictionary index.
    pub fn ranks(&self) -> Vec<u32> {
        let values = self.dict.values();
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            values
                .get(a as usize)
                .cmp(&values.get(b as usize))
        });
        let mut ranks = vec![0u32; values.len()];
        for (rank, &idx) in order.iter().enumerate() {
            if let Some(r) = ranks.get_mut(idx as usize) {
                *r = rank as u32;
            }
        }
        ranks
    }

    /// Writes the block's dictionary, then the indexes `keys` yields (`n` of them).
    fn write_with_keys(&self, n: usize, keys: impl Iterator<Item = u32>, out: &mut Vec<u8>) {
        if n == 0 {
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
        out.extend_from_slice(&(n as u64).to_le_bytes());
        match width {
            0 => out.extend(keys.map(|k| k as u8)),
            1 => {
                out.reserve(n * 2);
                for k in keys {
                    out.extend_from_slice(&(k as u16).to_le_bytes());
                }
            }
            _ => {
                out.reserve(n * 4);
                for k in keys {
                    out.extend_from_slice(&k.to_le_bytes());
                }
            }
        }
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
        self.write_with_keys(self.keys.len(), self.keys.iter().copied(), out);
    }
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>) {
        self.write_with_keys(perm.len(), perm.iter().map(|&i| self.key(i as usize)), out);
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
            + self.keys.len() * 4
            + self.lookup.len() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
    }
}

/// Writes the end offsets of the rows in `perm` order and returns the permutation of their
/// elements (row `i`'s elements are `offsets[i - 1]..offsets[i]`).
fn write_offsets_perm(offsets: &[u64], perm: &[u32], out: &mut Vec<u8>) -> Vec<u32> {
    let start = |i: usize| match i.checked_sub(1) {
        Some(j) => offsets.get(j).copied().unwrap_or(0),
        None => 0,
    };
    let mut elems = Vec::with_capacity(offsets.last().copied().unwrap_or(0) as usize);
    out.reserve(perm.len() * 8);
    let mut end = 0u64;
    for &i in perm {
        let i = i as usize;
        let (a, b) = (start(i), offsets.get(i).copied().unwrap_or(0));
        end += b.saturating_sub(a);
        out.extend_from_slice(&end.to_le_bytes());
        elems.extend(a as u32..b as u32);
    }
    elems
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
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>) {
        let elems = write_offsets_perm(&self.offsets, perm, out);
        self.inner.write_data_perm(&elems, out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.inner.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.offsets.len() * 8 + self.inner.heap_bytes()
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
    fn write_data_perm(&self, perm: &[u32], out: &mut Vec<u8>) {
        let elems = write_offsets_perm(&self.offsets, perm, out);
        self.keys.write_data_perm(&elems, out);
        self.values.write_data_perm(&elems, out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.keys.clear();
        self.values.clear();
    }
    fn heap_bytes(&self) -> usize {
        self.offsets.len() * 8 + self.keys.heap_bytes() + self.values.heap_bytes()
    }
}

/// Writes one whole column: name, type, prefix, data.
pub fn write_column(out: &mut Vec<u8>, name: &str, ty: &str, c: &dyn Column) {
    put_str(out, name.as_bytes());
    put_str(out, ty.as_bytes());
    c.write_prefix(out);
    c.write_data(out);
}

/// Writes one whole column with its rows in `perm` order (all of them when `perm` is `None`).
pub fn write_column_perm(out: &mut Vec<u8>, name: &str, ty: &str, c: &dyn Column, perm: Option<&[u32]>) {
    match perm {
        None => write_column(out, name, ty, c),
        Some(perm) => {
            put_str(out, name.as_bytes());
            put_str(out, ty.as_bytes());
            c.write_prefix(out);
            c.write_data_perm(perm, out);
        }
    }
}

/// The order that sorts rows by `key` (ties keep their order), or `None` when they already are.
pub fn sort_order<K: Ord + Copy>(n: usize, key: impl Fn(usize) -> K) -> Option<Vec<u32>> {
    if (1..n).all(|i| key(i - 1) <= key(i)) {
        return None;
    }
    let mut keyed: Vec<(K, u32)> = (0..n).map(|i| (key(i), i as u32)).collect();
    keyed.sort_unstable();
    Some(keyed.into_iter().map(|(_, i)| i).collect())
}

/// Writes a block header.
pub fn write_block_header(out: &mut Vec<u8>, columns: usize, rows: usize) {
    put_varuint(out, columns as u64);
    put_varuint(out, rows as u64);
}
