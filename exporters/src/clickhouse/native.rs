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
    /// Writes the values of `ranges` (half-open ranges of value indexes), in that order: a
    /// block's rows in sorted order, and the elements those rows hold in nested columns. Ranges
    /// rather than single indexes, so a row's many elements (its attributes) copy in one go.
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>);
    /// Forgets the values, keeping allocations for the next block.
    fn clear(&mut self);
    /// Keeps the first `len` values (drops a row that failed half-way, with its elements).
    fn truncate(&mut self, len: usize);
    /// Bytes of the values held (what bounds a block). Counted from lengths, not capacities:
    /// a cleared column keeps its allocations for the next block, and counting those would
    /// cut every later block after its first request.
    fn heap_bytes(&self) -> usize;
}

/// `String`: values already in their wire form.
#[derive(Default)]
pub struct StrCol {
    data: Vec<u8>,
    /// Where each value ends in `data` (so a sorted write copies ranges without re-reading
    /// length prefixes).
    ends: Vec<usize>,
}

impl StrCol {
    /// Appends one value.
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        put_str(&mut self.data, s);
        self.ends.push(self.data.len());
    }

    /// Appends values already in their wire form (length-prefixed, back to back), whose ends
    /// relative to the start of `encoded` are `ends`.
    #[inline]
    pub fn push_encoded(&mut self, encoded: &[u8], ends: &[usize]) {
        let base = self.data.len();
        self.data.extend_from_slice(encoded);
        self.ends.extend(ends.iter().map(|e| base + e));
    }

    /// Appends bytes as lowercase hex (trace and span ids), as the collector writes them.
    #[inline]
    pub fn push_hex(&mut self, b: &[u8]) {
        put_varuint(&mut self.data, (b.len() * 2) as u64);
        // Ids (8 and 16 bytes) through a stack buffer: no zero-fill of the column first.
        let mut hex = [0u8; 32];
        if let Some(out) = hex.get_mut(..b.len() * 2) {
            if const_hex::encode_to_slice(b, out).is_ok() {
                self.data.extend_from_slice(out);
                self.ends.push(self.data.len());
                return;
            }
        }
        let start = self.data.len();
        self.data.resize(start + b.len() * 2, 0);
        if let Some(out) = self.data.get_mut(start..) {
            // Cannot fail: the output is exactly twice the input.
            let _ = const_hex::encode_to_slice(b, out);
        }
        self.ends.push(self.data.len());
    }

    /// The bytes of values `a..b` in their wire form.
    #[inline]
    fn span(&self, a: usize, b: usize) -> &[u8] {
        let end_of = |i: usize| match i.checked_sub(1) {
            Some(j) => self.ends.get(j).copied().unwrap_or(0),
            None => 0,
        };
        self.data.get(end_of(a)..end_of(b)).unwrap_or_default()
    }
}

impl Column for StrCol {
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn write_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>) {
        out.reserve(self.data.len());
        for &(a, b) in ranges {
            out.extend_from_slice(self.span(a, b));
        }
    }
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
    fn truncate(&mut self, len: usize) {
        self.ends.truncate(len);
        self.data.truncate(self.ends.last().copied().unwrap_or(0));
    }
    fn heap_bytes(&self) -> usize {
        self.data.len() + self.ends.len() * std::mem::size_of::<usize>()
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
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>) {
        out.reserve(self.data.len());
        for &(a, b) in ranges {
            out.extend_from_slice(self.data.get(a * W..b * W).unwrap_or_default());
        }
    }
    fn clear(&mut self) {
        self.data.clear();
    }
    fn truncate(&mut self, len: usize) {
        self.data.truncate(len * W);
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
    /// Where each dictionary value's bytes are in `dict` (start, length): compared before
    /// hashing when a value is likely the same as one seen before.
    at: Vec<(u32, u32)>,
    keys: Vec<u32>,
    /// The index the last [`LcCol::index`] returned: runs of one value skip the hash lookup.
    last: u32,
}

impl Default for LcCol {
    fn default() -> Self {
        let mut c = Self {
            lookup: HashMap::default(),
            dict: StrCol::default(),
            at: Vec::new(),
            keys: Vec::new(),
            last: 0,
        };
        c.dict.push(b"");
        c.at.push((1, 0));
        c
    }
}

impl LcCol {
    /// Appends one value (looked up in the dictionary; a new value is copied once).
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        let k = self.index(s);
        self.keys.push(k);
    }

    /// Appends a value by its dictionary index (from [`LcCol::index`] since the last clear).
    #[inline]
    pub fn push_index(&mut self, k: u32) {
        self.keys.push(k);
    }

    /// The dictionary value at index `k` (empty past the end).
    #[inline]
    pub fn value(&self, k: u32) -> &[u8] {
        match self.at.get(k as usize) {
            Some(&(start, len)) => self
                .dict
                .data
                .get(start as usize..(start + len) as usize)
                .unwrap_or_default(),
            None => b"",
        }
    }

    /// The dictionary index of `s`, added if new; valid until the column is cleared.
    #[inline]
    pub fn index(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if self.value(self.last) == s {
            return self.last;
        }
        let k = self.lookup_index(s);
        self.last = k;
        k
    }

    /// The dictionary index of a non-empty `s` by hash lookup, added if new.
    #[inline]
    fn lookup_index(&mut self, s: &[u8]) -> u32 {
        if let Some(&k) = self.lookup.get(s) {
            return k;
        }
        let k = self.dict.len() as u32;
        self.dict.push(s);
        self.at
            .push(((self.dict.data.len() - s.len()) as u32, s.len() as u32));
        self.lookup.insert(s.into(), k);
        k
    }

    /// The dictionary index of row `i` (0, the empty string, past the end).
    #[inline]
    pub fn key(&self, i: usize) -> u32 {
        self.keys.get(i).copied().unwrap_or(0)
    }

    /// Each dictionary entry's place when the entries are sorted by their bytes (how ClickHouse
    /// orders `LowCardinality(String)`), indexed by dictionary index.
    pub fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.at.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.value(a).cmp(self.value(b)));
        let mut ranks = vec![0u32; self.at.len()];
        for (rank, &idx) in order.iter().enumerate() {
            if let Some(r) = ranks.get_mut(idx as usize) {
                *r = rank as u32;
            }
        }
        ranks
    }

    /// Writes the block's dictionary, then the indexes in the runs `keys` yields (`n` in all).
    fn write_with_keys<'k>(&self, n: usize, keys: impl Iterator<Item = &'k [u32]>, out: &mut Vec<u8>) {
        if n == 0 {
            return;
        }
        let dict_len = self.dict.len();
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
        out.reserve(n << width);
        for run in keys {
            match width {
                0 => out.extend(run.iter().map(|&k| k as u8)),
                1 => out.extend(run.iter().flat_map(|&k| (k as u16).to_le_bytes())),
                _ => out.extend(run.iter().flat_map(|&k| k.to_le_bytes())),
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
        self.write_with_keys(self.keys.len(), std::iter::once(&self.keys[..]), out);
    }
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>) {
        let n = ranges.iter().map(|&(a, b)| b.saturating_sub(a)).sum();
        let keys = ranges
            .iter()
            .map(|&(a, b)| self.keys.get(a..b).unwrap_or_default());
        self.write_with_keys(n, keys, out);
    }
    fn clear(&mut self) {
        self.lookup.clear();
        self.dict.clear();
        self.dict.push(b"");
        self.at.clear();
        self.at.push((1, 0));
        self.keys.clear();
        self.last = 0;
    }
    fn truncate(&mut self, len: usize) {
        // Dictionary entries no row uses any more are harmless.
        self.keys.truncate(len);
    }
    fn heap_bytes(&self) -> usize {
        // The lookup holds a second copy of every dictionary value.
        2 * self.dict.heap_bytes()
            + self.at.len() * 8
            + self.keys.len() * 4
            + self.lookup.len() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
    }
}

/// Writes the end offsets of the rows in `ranges` (in that order) and returns the ranges of
/// their elements (row `i`'s elements are `offsets[i - 1]..offsets[i]`, so a range of rows
/// holds one range of elements).
fn write_offsets_ranges(offsets: &[u64], ranges: &[(usize, usize)], out: &mut Vec<u8>) -> Vec<(usize, usize)> {
    let end_of = |i: usize| match i.checked_sub(1) {
        Some(j) => offsets.get(j).copied().unwrap_or(0),
        None => 0,
    };
    let mut elems = Vec::with_capacity(ranges.len());
    out.reserve(offsets.len() * 8);
    let mut end = 0u64;
    for &(a, b) in ranges {
        let base = end_of(a);
        for &o in offsets.get(a..b).unwrap_or_default() {
            out.extend_from_slice(&(end + o.saturating_sub(base)).to_le_bytes());
        }
        end += end_of(b).saturating_sub(base);
        let (ea, eb) = (base as usize, end_of(b) as usize);
        if eb > ea {
            match elems.last_mut() {
                Some((_, last)) if *last == ea => *last = eb,
                _ => elems.push((ea, eb)),
            }
        }
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
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>) {
        let elems = write_offsets_ranges(&self.offsets, ranges, out);
        self.inner.write_ranges(&elems, out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.inner.clear();
    }
    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len);
        self.inner
            .truncate(self.offsets.last().copied().unwrap_or(0) as usize);
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
    /// The key index found at each position of a row: rows of one shape (the attributes of
    /// spans from one instrumentation) find their keys by one comparison instead of a hash.
    hints: Vec<u32>,
}

/// One row of a map column prepared once and appended to many rows (resource attributes):
/// the keys' dictionary indexes and the values in their wire form.
#[derive(Default)]
pub struct MapRow {
    keys: Vec<u32>,
    values: Vec<u8>,
    /// Where each value ends in `values`.
    ends: Vec<usize>,
}

impl MapCol {
    /// Adds one entry to the current row.
    #[inline]
    pub fn entry(&mut self, key: &[u8], value: &[u8]) {
        let row_start = self.offsets.last().copied().unwrap_or(0) as usize;
        let pos = self.keys.len().saturating_sub(row_start);
        let k = match self.hints.get(pos) {
            Some(&h) if self.keys.value(h) == key => h,
            _ => {
                let k = if key.is_empty() {
                    0
                } else {
                    self.keys.lookup_index(key)
                };
                match self.hints.get_mut(pos) {
                    Some(h) => *h = k,
                    None => self.hints.push(k),
                }
                k
            }
        };
        self.keys.push_index(k);
        self.values.push(value);
    }

    /// Prepares `entries` as one row for [`MapCol::push_row`]; valid until the column is cleared.
    pub fn prepare<'a>(&mut self, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, row: &mut MapRow) {
        row.keys.clear();
        row.values.clear();
        row.ends.clear();
        for (k, v) in entries {
            row.keys.push(self.keys.index(k));
            put_str(&mut row.values, v);
            row.ends.push(row.values.len());
        }
    }

    /// Appends a prepared row and ends it.
    #[inline]
    pub fn push_row(&mut self, row: &MapRow) {
        self.keys.keys.extend_from_slice(&row.keys);
        self.values.push_encoded(&row.values, &row.ends);
        self.end_row();
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
    fn write_ranges(&self, ranges: &[(usize, usize)], out: &mut Vec<u8>) {
        let elems = write_offsets_ranges(&self.offsets, ranges, out);
        self.keys.write_ranges(&elems, out);
        self.values.write_ranges(&elems, out);
    }
    fn clear(&mut self) {
        self.offsets.clear();
        self.keys.clear();
        self.values.clear();
        self.hints.clear();
    }
    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len);
        let elems = self.offsets.last().copied().unwrap_or(0) as usize;
        self.keys.truncate(elems);
        self.values.truncate(elems);
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

/// Writes one whole column with its rows in the order of `rows` (ranges of row indexes, from
/// [`sort_order`]; all rows in order when `None`).
pub fn write_column_sorted(
    out: &mut Vec<u8>,
    name: &str,
    ty: &str,
    c: &dyn Column,
    rows: Option<&[(usize, usize)]>,
) {
    match rows {
        None => write_column(out, name, ty, c),
        Some(rows) => {
            put_str(out, name.as_bytes());
            put_str(out, ty.as_bytes());
            c.write_prefix(out);
            c.write_ranges(rows, out);
        }
    }
}

/// The order that sorts rows by `key` (ties keep their order) as ranges of row indexes (runs
/// already in order stay one range), or `None` when the rows already are sorted.
pub fn sort_order<K: Ord + Copy>(n: usize, key: impl Fn(usize) -> K) -> Option<Vec<(usize, usize)>> {
    if (1..n).all(|i| key(i - 1) <= key(i)) {
        return None;
    }
    let mut keyed: Vec<(K, u32)> = (0..n).map(|i| (key(i), i as u32)).collect();
    keyed.sort_unstable();
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(n);
    for (_, i) in keyed {
        let i = i as usize;
        match ranges.last_mut() {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => ranges.push((i, i + 1)),
        }
    }
    Some(ranges)
}

/// Writes a block header.
pub fn write_block_header(out: &mut Vec<u8>, columns: usize, rows: usize) {
    put_varuint(out, columns as u64);
    put_varuint(out, rows as u64);
}
