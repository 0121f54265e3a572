//! ClickHouse's compressed block framing (`decompress=1` bodies), written into recycled buffers.
//!
//! The `clickhouse` crate compresses each block into a fresh buffer of the LZ4 worst case, zeroed
//! first, and the sent body keeps that whole allocation until the connection has written it: per
//! 1 MiB block, a megabyte of `memset` and of page faults once the allocator has returned the
//! pages. Here a block is compressed into a buffer that comes back to the exporter when the
//! connection drops the body, so the next block writes into memory already mapped.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// CityHash128 of the rest of the frame.
const CHECKSUM: usize = 16;
/// Method byte, compressed size (header included), uncompressed size.
const HEADER: usize = 9;
/// ClickHouse's method byte for LZ4.
const LZ4: u8 = 0x82;
/// Buffers kept for reuse: the blocks a few inserts have in flight at once.
const KEPT: usize = 4;
/// A buffer grown past this (a block far over the exporter's 1 MiB, one huge row) is not kept,
/// so what is kept stays at a few MiB.
const KEPT_MAX_BYTES: usize = 4 << 20;

/// Buffers of sent blocks, waiting for the next ones.
#[derive(Clone, Default)]
pub struct Frames {
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A framed block on its way to ClickHouse; its buffer returns to [`Frames`] when dropped.
struct Framed {
    buf: Vec<u8>,
    len: usize,
    home: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Framed {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Framed {
    fn drop(&mut self) {
        if self.buf.len() > KEPT_MAX_BYTES {
            return;
        }
        let mut spare = self.home.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < KEPT {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The frame is over ClickHouse's 4 GiB limit for one block.
#[derive(Debug, thiserror::Error)]
#[error("a block of {0} bytes is too large for one compressed frame")]
pub struct TooLarge(usize);

impl Frames {
    /// `block` as one LZ4 frame: checksum, header, compressed bytes.
    pub fn lz4(&self, block: &[u8]) -> Result<Bytes, TooLarge> {
        let taken = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = taken.unwrap_or_default();
        let need = CHECKSUM + HEADER + lz4_flex::block::get_maximum_output_size(block.len());
        if buf.len() < need {
            // Zeroes only what the buffer never held: a kept buffer is written over as it is.
            buf.resize(need, 0);
        }
        let too_large = || TooLarge(block.len());
        let uncompressed = u32::try_from(block.len()).map_err(|_| too_large())?;
        let data = buf.get_mut(CHECKSUM + HEADER..).unwrap_or_default();
        // The output has the worst-case size, so this cannot run out of room.
        let n = lz4_flex::block::compress_into(block, data).map_err(|_| too_large())?;
        let compressed = u32::try_from(HEADER + n).map_err(|_| too_large())?;
        let mut header = [LZ4, 0, 0, 0, 0, 0, 0, 0, 0];
        header[1..5].copy_from_slice(&compressed.to_le_bytes());
        header[5..].copy_from_slice(&uncompressed.to_le_bytes());
        let len = CHECKSUM + HEADER + n;
        if let Some(h) = buf.get_mut(CHECKSUM..CHECKSUM + HEADER) {
            h.copy_from_slice(&header);
        }
        // ClickHouse's CityHash128 (v1.0.2) of header and data, low half first.
        let hash = cityhash_rs::cityhash_102_128(buf.get(CHECKSUM..len).unwrap_or_default());
        if let Some(c) = buf.get_mut(..CHECKSUM) {
            c.copy_from_slice(&hash.rotate_right(64).to_le_bytes());
        }
        Ok(Bytes::from_owner(Framed {
            buf,
            len,
            home: self.spare.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a frame back as ClickHouse does: checksum, header, LZ4.
    fn unframe(frame: &[u8]) -> Vec<u8> {
        let (checksum, rest) = frame.split_at(CHECKSUM);
        let hash = cityhash_rs::cityhash_102_128(rest).rotate_right(64);
        assert_eq!(checksum, hash.to_le_bytes(), "checksum");
        assert_eq!(rest[0], LZ4);
        let compressed = u32::from_le_bytes(rest[1..5].try_into().unwrap()) as usize;
        let uncompressed = u32::from_le_bytes(rest[5..9].try_into().unwrap()) as usize;
        assert_eq!(compressed, rest.len(), "compressed size counts the header");
        lz4_flex::block::decompress(&rest[HEADER..], uncompressed).unwrap()
    }

    #[test]
    fn frames_decode_and_buffers_come_back() {
        let frames = Frames::default();
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let a = frames.lz4(&big).unwrap();
        assert_eq!(unframe(&a), big);
        assert!(frames.spare.lock().unwrap().is_empty());
        drop(a);
        assert_eq!(frames.spare.lock().unwrap().len(), 1, "the buffer is kept");
        // A smaller block reuses the larger buffer; stale bytes past its frame do not leak in.
        let small = b"hello hello hello hello".to_vec();
        let b = frames.lz4(&small).unwrap();
        assert!(frames.spare.lock().unwrap().is_empty());
        assert_eq!(unframe(&b), small);
        assert_eq!(b.len(), CHECKSUM + HEADER + lz4_flex::block::compress(&small).len());
        let empty = frames.lz4(b"").unwrap();
        assert_eq!(unframe(&empty), b"");
        drop((b, empty));
        // A frame far over the usual block is not kept: what is kept stays small.
        let kept = frames.spare.lock().unwrap().len();
        let huge = vec![7u8; KEPT_MAX_BYTES + 1];
        let h = frames.lz4(&huge).unwrap();
        assert_eq!(unframe(&h), huge);
        drop(h);
        assert_eq!(frames.spare.lock().unwrap().len(), kept - 1, "taken, used, not returned");
    }
}
