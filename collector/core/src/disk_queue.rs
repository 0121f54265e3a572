//! The on-disk half of a persistent exporter queue: an append-only segment log with a CRC32 per
//! record and a head pointer, so batches survive a crash and are deleted once delivered.
//!
//! Layout of a queue directory: segment files `<id:020>.seg` and a `head` file. A record is
//! `len: u32 LE | crc32(body): u32 LE | body`, where body = `signal: u8 | items: u64 LE | OTLP
//! protobuf`. Records are appended to the newest segment; a segment is closed once it grows past
//! the segment size. Acknowledgements may arrive out of order (several exports in flight): the
//! head moves past a record only once it and every record before it were acknowledged, and
//! segments entirely behind the head are deleted. On open, every segment from the head on is
//! scanned: a record whose checksum does not match is skipped and counted, a record cut short (a
//! torn write) or with an impossible length ends the segment there: the file is truncated and the
//! loss counted. Nothing in a damaged file makes opening fail.

use bytes::Bytes;
use sluice_config::{Signal, SyncMode};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes before each record's body: length and checksum.
const HEADER: usize = 8;
/// Bytes of body before the protobuf: signal and item count.
const META: usize = 9;
/// Largest record accepted on replay; a longer length field is garbage.
const MAX_RECORD: u32 = 512 * 1024 * 1024;
/// How often `sync = "interval"` calls fsync.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The batch is larger than a record may be.
    #[error("batch of {0} bytes is larger than a queue record may be")]
    TooLarge(usize),
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DiskQueueError + 'a {
    move |source| DiskQueueError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Bytes a record of a `body_len`-byte batch takes on disk.
pub fn record_size(body_len: usize) -> u64 {
    (HEADER + META + body_len) as u64
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its sequence number, for [`DiskLog::ack`].
    pub seq: u64,
    /// Which signal the protobuf is.
    pub signal: Signal,
    /// Items in it, as counted when it was queued.
    pub items: u64,
    /// The OTLP protobuf request.
    pub body: Bytes,
    /// Bytes it takes on disk (header included), which its acknowledgement frees.
    pub disk_bytes: u64,
}

/// What [`DiskLog::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Records waiting to be delivered, per signal: (records, items).
    pub items: [u64; 4],
    /// Their bytes on disk.
    pub bytes: u64,
    /// Records waiting.
    pub records: u64,
    /// Damaged records found (skipped or cut off).
    pub corrupt: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    seg: u64,
    off: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    start: Pos,
    acked: bool,
}

struct Inner {
    /// Appending here.
    active: File,
    active_id: u64,
    active_len: u64,
    /// Records not yet acknowledged through the head, in log order.
    pending: VecDeque<Entry>,
    next_seq: u64,
    /// Where the head was last written.
    head: Pos,
    dirty: bool,
    last_sync: Instant,
}

/// An append-only, checksummed segment log with acknowledgement from the head.
pub struct DiskLog {
    dir: PathBuf,
    segment_bytes: u64,
    sync: SyncMode,
    inner: Mutex<Inner>,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn signal_byte(s: Signal) -> u8 {
    s.index() as u8
}

fn signal_of(b: u8) -> Option<Signal> {
    [
        Signal::Traces,
        Signal::Metrics,
        Signal::Logs,
        Signal::Profiles,
    ]
    .into_iter()
    .find(|s| s.index() == usize::from(b))
}

/// Segment ids present in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<u64>, DiskQueueError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(io("cannot list", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn read_head(dir: &Path) -> Option<Pos> {
    let raw = fs::read(dir.join("head")).ok()?;
    let (data, crc) = raw.split_at_checked(16)?;
    let crc = u32::from_le_bytes(crc.get(..4)?.try_into().ok()?);
    if crc32fast::hash(data) != crc {
        return None;
    }
    Some(Pos {
        seg: u64::from_le_bytes(data.get(..8)?.try_into().ok()?),
        off: u64::from_le_bytes(data.get(8..16)?.try_into().ok()?),
    })
}

fn write_head(dir: &Path, head: Pos) -> Result<(), DiskQueueError> {
    let mut buf = Vec::with_capacity(20);
    buf.extend_from_slice(&head.seg.to_le_bytes());
    buf.extend_from_slice(&head.off.to_le_bytes());
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("head.tmp");
    fs::write(&tmp, &buf).map_err(io("cannot write", &tmp))?;
    let path = dir.join("head");
    fs::rename(&tmp, &path).map_err(io("cannot replace", &path))
}

/// What scanning one record found.
enum Scan {
    Ok(Record, u64),
    /// Checksum mismatch on a record whose frame is intact: skip `u64` bytes.
    Garbled(u64),
    /// Torn or impossible: the segment ends here.
    Torn,
    End,
}

/// Reads the record at the start of `buf` (a segment's remaining bytes).
fn scan(buf: &[u8]) -> Scan {
    if buf.is_empty() {
        return Scan::End;
    }
    let Some(header) = buf.get(..HEADER) else {
        return Scan::Torn;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if (len as usize) < META || len > MAX_RECORD {
        return Scan::Torn;
    }
    let total = HEADER + len as usize;
    let Some(body) = buf.get(HEADER..total) else {
        return Scan::Torn;
    };
    if crc32fast::hash(body) != crc {
        return Scan::Garbled(total as u64);
    }
    let Some(signal) = signal_of(body[0]) else {
        return Scan::Garbled(total as u64);
    };
    let mut items = [0u8; 8];
    items.copy_from_slice(&body[1..META]);
    Scan::Ok(
        Record {
            seq: 0,
            signal,
            items: u64::from_le_bytes(items),
            body: Bytes::copy_from_slice(&body[META..]),
            disk_bytes: total as u64,
        },
        total as u64,
    )
}

impl DiskLog {
    /// Opens (or creates) the log in `dir`, checks every record from the head on, cuts off a
    /// damaged tail and deletes segments already delivered. `segment_bytes` is the size at which
    /// a segment is closed and the next one started.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync: SyncMode,
    ) -> Result<(Self, Replay), DiskQueueError> {
        fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        let ids = segments(dir)?;
        let head = read_head(dir).unwrap_or(Pos {
            seg: ids.first().copied().unwrap_or(0),
            off: 0,
        });
        let mut replay = Replay::default();
        let mut pending = VecDeque::new();
        let mut next_seq = 0u64;
        let mut last = None;
        for &id in &ids {
            let path = seg_path(dir, id);
            if id < head.seg {
                fs::remove_file(&path).map_err(io("cannot delete", &path))?;
                continue;
            }
            let data = fs::read(&path).map_err(io("cannot read", &path))?;
            let mut off = if id == head.seg && head.off <= data.len() as u64 {
                head.off
            } else {
                0
            };
            let mut keep = data.len() as u64;
            while let Some(rest) = usize::try_from(off).ok().and_then(|o| data.get(o..)) {
                match scan(rest) {
                    Scan::End => break,
                    Scan::Ok(rec, n) => {
                        replay.items[rec.signal.index()] += rec.items;
                        replay.bytes += n;
                        replay.records += 1;
                        pending.push_back(Entry {
                            seq: next_seq,
                            start: Pos { seg: id, off },
                            acked: false,
                        });
                        next_seq += 1;
                        off += n;
                    }
                    Scan::Garbled(n) => {
                        replay.corrupt += 1;
                        tracing::error!(segment = %path.display(), offset = off, "persistent queue: a record's checksum does not match; skipped");
                        // Keep its place in the sequence so offsets stay right; it is acked at once.
                        pending.push_back(Entry {
                            seq: next_seq,
                            start: Pos { seg: id, off },
                            acked: true,
                        });
                        next_seq += 1;
                        off += n;
                    }
                    Scan::Torn => {
                        replay.corrupt += 1;
                        tracing::error!(segment = %path.display(), offset = off, bytes = data.len() as u64 - off, "persistent queue: a torn or damaged record ends this segment; cut off");
                        keep = off;
                        break;
                    }
                }
            }
            if keep < data.len() as u64 {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("cannot open", &path))?;
                f.set_len(keep).map_err(io("cannot truncate", &path))?;
            }
            last = Some((id, keep));
        }
        let (active_id, active_len) = last.unwrap_or((head.seg, 0));
        let active_path = seg_path(dir, active_id);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io("cannot open", &active_path))?;
        let log = Self {
            dir: dir.to_owned(),
            segment_bytes: segment_bytes.max(1024),
            sync,
            inner: Mutex::new(Inner {
                active,
                active_id,
                active_len,
                pending,
                next_seq,
                head,
                dirty: false,
                last_sync: Instant::now(),
            }),
        };
        // Garbled records at the head are acknowledged already.
        log.advance()?;
        Ok((log, replay))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one batch and (per the sync policy) makes it durable; returns its sequence number
    /// and the bytes it takes on disk.
    pub fn append(
        &self,
        signal: Signal,
        items: u64,
        body: &[u8],
    ) -> Result<(u64, u64), DiskQueueError> {
        let len = META + body.len();
        let len32 = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or(DiskQueueError::TooLarge(body.len()))?;
        let mut meta = [0u8; META];
        meta[0] = signal_byte(signal);
        meta[1..].copy_from_slice(&items.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&meta);
        hasher.update(body);
        let mut frame = Vec::with_capacity(HEADER + len);
        frame.extend_from_slice(&len32.to_le_bytes());
        frame.extend_from_slice(&hasher.finalize().to_le_bytes());
        frame.extend_from_slice(&meta);
        frame.extend_from_slice(body);
        let total = frame.len() as u64;

        let mut g = self.lock();
        if g.active_len > 0 && g.active_len + total > self.segment_bytes {
            self.roll(&mut g)?;
        }
        let path = seg_path(&self.dir, g.active_id);
        if let Err(e) = g.active.write_all(&frame) {
            // A partial write must not stay in front of the next record.
            let len = g.active_len;
            let _ = g.active.set_len(len);
            return Err(io("cannot write", &path)(e));
        }
        let start = Pos {
            seg: g.active_id,
            off: g.active_len,
        };
        g.active_len += total;
        let seq = g.next_seq;
        g.next_seq += 1;
        g.pending.push_back(Entry {
            seq,
            start,
            acked: false,
        });
        g.dirty = true;
        let due = match self.sync {
            SyncMode::Always => true,
            SyncMode::Interval => g.last_sync.elapsed() >= SYNC_INTERVAL,
        };
        if due {
            g.active.sync_data().map_err(io("cannot sync", &path))?;
            g.dirty = false;
            g.last_sync = Instant::now();
        }
        Ok((seq, total))
    }

    /// Calls fsync now if anything is unsynced (the queue is closing).
    pub fn sync_now(&self) -> Result<(), DiskQueueError> {
        let mut g = self.lock();
        if g.dirty {
            let path = seg_path(&self.dir, g.active_id);
            g.active.sync_data().map_err(io("cannot sync", &path))?;
            g.dirty = false;
            g.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Calls fsync if `sync = "interval"` left writes unsynced for a second (the worker calls it
    /// on a timer so a quiet queue is synced too).
    pub fn sync_if_due(&self) -> Result<(), DiskQueueError> {
        let mut g = self.lock();
        if g.dirty && g.last_sync.elapsed() >= SYNC_INTERVAL {
            let path = seg_path(&self.dir, g.active_id);
            g.active.sync_data().map_err(io("cannot sync", &path))?;
            g.dirty = false;
            g.last_sync = Instant::now();
        }
        Ok(())
    }

    fn roll(&self, g: &mut Inner) -> Result<(), DiskQueueError> {
        let old = seg_path(&self.dir, g.active_id);
        if g.dirty {
            g.active.sync_data().map_err(io("cannot sync", &old))?;
        }
        let id = g.active_id + 1;
        let path = seg_path(&self.dir, id);
        g.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("cannot create", &path))?;
        g.active_id = id;
        g.active_len = 0;
        Ok(())
    }

    /// Marks a record delivered; moves the head past every delivered record at the front and
    /// deletes segments left entirely behind it.
    pub fn ack(&self, seq: u64) -> Result<(), DiskQueueError> {
        {
            let mut g = self.lock();
            let first = g.pending.front().map_or(0, |e| e.seq);
            let Some(i) = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
                return Ok(());
            };
            if let Some(e) = g.pending.get_mut(i) {
                e.acked = true;
            }
        }
        self.advance()
    }

    fn advance(&self) -> Result<(), DiskQueueError> {
        let mut g = self.lock();
        let mut moved = false;
        while g.pending.front().is_some_and(|e| e.acked) {
            g.pending.pop_front();
            moved = true;
        }
        if !moved {
            return Ok(());
        }
        let head = g.pending.front().map_or(
            Pos {
                seg: g.active_id,
                off: g.active_len,
            },
            |e| e.start,
        );
        let old = g.head;
        g.head = head;
        drop(g);
        write_head(&self.dir, head)?;
        for seg in old.seg..head.seg {
            let path = seg_path(&self.dir, seg);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot delete", &path)(e)),
            }
        }
        Ok(())
    }

    /// A reader positioned at the first record not yet delivered.
    pub fn reader(&self) -> Reader {
        let g = self.lock();
        let (pos, seq) = g.pending.front().map_or(
            (
                Pos {
                    seg: g.active_id,
                    off: g.active_len,
                },
                g.next_seq,
            ),
            |e| (e.start, e.seq),
        );
        Reader {
            dir: self.dir.clone(),
            pos,
            next_seq: seq,
            file: None,
        }
    }

    /// Where the log has been written up to: (segment, length, next sequence number).
    fn end(&self) -> (Pos, u64) {
        let g = self.lock();
        (
            Pos {
                seg: g.active_id,
                off: g.active_len,
            },
            g.next_seq,
        )
    }
}

/// Reads records in log order, never past what has been appended.
pub struct Reader {
    dir: PathBuf,
    pos: Pos,
    next_seq: u64,
    file: Option<(u64, File)>,
}

impl Reader {
    /// The next record written but not yet read, if any. Records whose checksum fails (found on
    /// replay) are skipped; they were counted when the log was opened.
    pub fn next(&mut self, log: &DiskLog) -> Result<Option<Record>, DiskQueueError> {
        loop {
            let (end, _) = log.end();
            if self.pos >= end {
                return Ok(None);
            }
            let path = seg_path(&self.dir, self.pos.seg);
            let seg_len = if self.pos.seg == end.seg {
                end.off
            } else {
                fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            };
            if self.pos.off >= seg_len {
                // A closed segment read to its end: on to the next.
                self.pos = Pos {
                    seg: self.pos.seg + 1,
                    off: 0,
                };
                self.file = None;
                continue;
            }
            if self.file.as_ref().is_none_or(|(id, _)| *id != self.pos.seg) {
                let f = File::open(&path).map_err(io("cannot open", &path))?;
                self.file = Some((self.pos.seg, f));
            }
            let Some((_, f)) = self.file.as_mut() else {
                return Ok(None);
            };
            f.seek(SeekFrom::Start(self.pos.off))
                .map_err(io("cannot seek", &path))?;
            let mut header = [0u8; HEADER];
            f.read_exact(&mut header)
                .map_err(io("cannot read", &path))?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let total = HEADER as u64 + u64::from(len);
            let mut frame = vec![0u8; usize::try_from(total).unwrap_or(usize::MAX)];
            frame[..HEADER].copy_from_slice(&header);
            f.read_exact(&mut frame[HEADER..])
                .map_err(io("cannot read", &path))?;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pos.off += total;
            match scan(&frame) {
                Scan::Ok(mut rec, _) => {
                    rec.seq = seq;
                    return Ok(Some(rec));
                }
                // Counted on open; its entry was acknowledged then.
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (DiskLog, Replay) {
        DiskLog::open(dir, 1024, SyncMode::Always).unwrap()
    }

    fn drain(log: &DiskLog) -> Vec<Record> {
        let mut r = log.reader();
        std::iter::from_fn(|| r.next(log).unwrap()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (log, replay) = open(dir.path());
        assert_eq!(replay, Replay::default());
        for i in 0..20u64 {
            log.append(Signal::Traces, i, &[i as u8; 200]).unwrap();
        }
        assert!(segments(dir.path()).unwrap().len() > 3, "rolled");
        let got = drain(&log);
        assert_eq!(got.len(), 20);
        for r in &got[..5] {
            log.ack(r.seq).unwrap();
        }
        drop(log);
        let (log, replay) = open(dir.path());
        assert_eq!(replay.records, 15);
        assert_eq!(replay.items[Signal::Traces.index()], (5..20).sum::<u64>());
        assert_eq!(replay.corrupt, 0);
        let got = drain(&log);
        assert_eq!(
            got.iter().map(|r| r.items).collect::<Vec<_>>(),
            (5..20).collect::<Vec<_>>()
        );
        assert_eq!(got[0].body, Bytes::from(vec![5u8; 200]));
    }

    #[test]
    fn out_of_order_acks_move_the_head_only_past_a_delivered_prefix_and_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path());
        for i in 0..12u64 {
            log.append(Signal::Logs, 1, &[i as u8; 300]).unwrap();
        }
        let got = drain(&log);
        // Ack everything but the first: nothing may be deleted, all 12 replay.
        for r in &got[1..] {
            log.ack(r.seq).unwrap();
        }
        let before = segments(dir.path()).unwrap().len();
        assert!(before > 2);
        log.ack(got[0].seq).unwrap();
        assert_eq!(
            segments(dir.path()).unwrap().len(),
            1,
            "delivered segments deleted"
        );
        drop(log);
        let (log, replay) = open(dir.path());
        assert_eq!(replay.records, 0);
        assert!(drain(&log).is_empty());
        // Appends after a restart keep working and come back.
        log.append(Signal::Logs, 7, b"x").unwrap();
        assert_eq!(drain(&log).len(), 1);
    }

    #[test]
    fn a_garbled_and_a_torn_tail_are_counted_cut_off_and_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = DiskLog::open(dir.path(), 1 << 20, SyncMode::Interval).unwrap();
        for _ in 0..3 {
            log.append(Signal::Traces, 10, &[1u8; 100]).unwrap();
        }
        drop(log);
        let seg = seg_path(dir.path(), segments(dir.path()).unwrap()[0]);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        // A record with a good frame and a wrong checksum, then half a record.
        let body = [0u8; 50];
        f.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&0xdead_beefu32.to_le_bytes()).unwrap();
        f.write_all(&body).unwrap();
        f.write_all(&500u32.to_le_bytes()).unwrap();
        f.write_all(&[7u8; 30]).unwrap();
        drop(f);
        let (log, replay) = DiskLog::open(dir.path(), 1 << 20, SyncMode::Interval).unwrap();
        assert_eq!(replay.corrupt, 2);
        assert_eq!(replay.records, 3);
        assert_eq!(replay.items[Signal::Traces.index()], 30);
        let got = drain(&log);
        assert_eq!(got.len(), 3);
        // New appends land after the cut, and a reopen finds no new damage.
        log.append(Signal::Traces, 1, b"new").unwrap();
        for r in drain(&log) {
            log.ack(r.seq).unwrap();
        }
        drop(log);
        let (_, replay) = DiskLog::open(dir.path(), 1 << 20, SyncMode::Interval).unwrap();
        assert_eq!((replay.records, replay.corrupt), (0, 0));
    }

    #[test]
    fn garbage_in_place_of_a_segment_never_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(seg_path(dir.path(), 3), [0xffu8; 5000]).unwrap();
        fs::write(dir.path().join("head"), b"nonsense").unwrap();
        let (log, replay) = open(dir.path());
        assert_eq!((replay.records, replay.corrupt), (0, 1));
        log.append(Signal::Metrics, 2, b"m").unwrap();
        assert_eq!(drain(&log)[0].items, 2);
    }
}
