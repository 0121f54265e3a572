//! Measures Sluice's persistent-queue segment log (`sluice_core::disk_queue::DiskLog`) against
//! embedded stores from crates.io (redb, fjall, queue-file) on the exporter queue's access
//! pattern: append a batch, read it back (the worker does), acknowledge out of order with 4 in
//! flight, the store moving on only past a delivered prefix.
//!
//! `queue-storage-bench all DIR [--reps N] [--interval-mib N] [--always-mib N] [--replay-mib N]
//! [--no-cold] [--only STORE,STORE]` runs every case, each in a child process of its own (so
//! getrusage and /proc/self/io count one case), and prints the tables of BENCHMARKS.md. The
//! children are `run`, `fill`, `replay` and `damaged`; see `usage()`.

use anyhow::{bail, Context, Result};
use sluice_config::{Signal, SyncMode};
use sluice_core::disk_queue::{DiskLog, Reader};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `sync = "interval"`: durable at most this long after an append.
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Batches in flight (exported, not yet acknowledged).
const WINDOW: usize = 4;
/// DiskLog's segment size for a 1 GiB queue (what Sluice picks: max_bytes / 8, at most 64 MiB).
const SEGMENT: u64 = 64 << 20;
/// Records written before a damage test.
const DAMAGE_RECORDS: u64 = 64;

const STORES: [&str; 5] = ["disklog", "redb", "fjall", "fjall-kvsep", "queue-file"];

fn usage() -> &'static str {
    "usage:
  queue-storage-bench all DIR [--reps 3] [--interval-mib 1024] [--always-mib 128] [--replay-mib 1024] [--no-cold] [--only a,b]
  queue-storage-bench run STORE interval|always BODY_KIB MIB DIR
  queue-storage-bench fill STORE DIR MIB BODY_KIB
  queue-storage-bench replay STORE DIR
  queue-storage-bench damaged STORE DIR
STORE: disklog | redb | redb-checked | fjall | fjall-kvsep | queue-file"
}

/// The queue operations Sluice needs, on one store.
trait Queue {
    /// Appends record `seq`; with `sync = "always"` it is durable when this returns.
    fn append(&mut self, seq: u64, body: &[u8]) -> Result<()>;
    /// Reads record `seq` back (the export worker reads what was appended), returns its length.
    fn read(&mut self, seq: u64) -> Result<usize>;
    /// Marks `seq` delivered (not synced: a lost acknowledgement means a resend).
    fn ack(&mut self, seq: u64) -> Result<()>;
    /// Makes everything so far durable (the 100 ms timer of `sync = "interval"`).
    fn sync(&mut self) -> Result<()>;
    /// Hands every record not yet acknowledged to `each` (sequence, body), in order. Called
    /// right after open.
    fn replay(&mut self, each: &mut dyn FnMut(u64, &[u8])) -> Result<()>;
    /// Syncs and closes cleanly.
    fn close(self: Box<Self>) -> Result<()>;
    /// Damaged records the store reported on open, if it reports any.
    fn damaged(&self) -> Option<u64> {
        None
    }
}

fn open(store: &str, dir: &Path, always: bool) -> Result<Box<dyn Queue>> {
    fs::create_dir_all(dir)?;
    Ok(match store {
        "disklog" => Box::new(Disk::open(dir, always)?),
        "redb" => Box::new(Redb::open(dir, always, false)?),
        "redb-checked" => Box::new(Redb::open(dir, always, true)?),
        "fjall" => Box::new(Fjall::open(dir, always, false)?),
        "fjall-kvsep" => Box::new(Fjall::open(dir, always, true)?),
        "queue-file" => Box::new(Qf::open(dir, always)?),
        other => bail!("unknown store {other:?}\n{}", usage()),
    })
}

// ---------------------------------------------------------------------------------------------
// Sluice's segment log.

struct Disk {
    log: DiskLog,
    reader: Reader,
    found: u64,
    corrupt: u64,
}

impl Disk {
    fn open(dir: &Path, always: bool) -> Result<Self> {
        let mode = if always {
            SyncMode::Always
        } else {
            SyncMode::Interval
        };
        let (log, replay) = DiskLog::open(dir, SEGMENT, mode)?;
        let reader = log.reader();
        Ok(Self {
            log,
            reader,
            found: replay.records,
            corrupt: replay.corrupt,
        })
    }
}

impl Queue for Disk {
    fn append(&mut self, _seq: u64, body: &[u8]) -> Result<()> {
        // DiskLog numbers records itself; `read` checks the numbers match.
        self.log.append(Signal::Traces, 1, body)?;
        Ok(())
    }
    fn read(&mut self, seq: u64) -> Result<usize> {
        let rec = self.reader.next(&self.log)?.context("record missing")?;
        if rec.seq != seq {
            bail!("disklog read {}, expected {seq}", rec.seq);
        }
        Ok(rec.body.len())
    }
    fn ack(&mut self, seq: u64) -> Result<()> {
        Ok(self.log.ack(seq)?)
    }
    fn sync(&mut self) -> Result<()> {
        // DiskLog's own interval is 1 s (`sync_if_due`); the bench syncs every 100 ms like the
        // other stores.
        Ok(self.log.sync_now()?)
    }
    fn replay(&mut self, each: &mut dyn FnMut(u64, &[u8])) -> Result<()> {
        let mut n = 0;
        while let Some(rec) = self.reader.next(&self.log)? {
            n += 1;
            each(rec.seq, &rec.body);
        }
        if n != self.found {
            bail!("disklog: open counted {} records, read {n}", self.found);
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.log.sync_now()?)
    }
    fn damaged(&self) -> Option<u64> {
        Some(self.corrupt)
    }
}

// ---------------------------------------------------------------------------------------------
// redb: one table seq -> body; one write transaction per append and per ack.

const TABLE: redb::TableDefinition<'static, u64, &'static [u8]> =
    redb::TableDefinition::new("queue");

struct Redb {
    db: redb::Database,
    always: bool,
}

impl Redb {
    /// `check`: verify every page's checksum on open (`check_integrity`); redb checks them by
    /// itself only after an unclean shutdown.
    fn open(dir: &Path, always: bool, check: bool) -> Result<Self> {
        let mut db = redb::Database::create(dir.join("queue.redb"))?;
        if check && !db.check_integrity()? {
            eprintln!("redb: check_integrity repaired the file");
        }
        Ok(Self { db, always })
    }

    fn write(
        &self,
        durable: bool,
        f: impl FnOnce(&mut redb::Table<'_, u64, &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        {
            let mut t = tx.open_table(TABLE)?;
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Queue for Redb {
    fn append(&mut self, seq: u64, body: &[u8]) -> Result<()> {
        self.write(self.always, |t| {
            t.insert(seq, body)?;
            Ok(())
        })
    }
    fn read(&mut self, seq: u64) -> Result<usize> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        let v = t.get(seq)?.context("record missing")?;
        Ok(v.value().to_vec().len())
    }
    fn ack(&mut self, seq: u64) -> Result<()> {
        self.write(false, |t| {
            t.remove(seq)?;
            Ok(())
        })
    }
    fn sync(&mut self) -> Result<()> {
        // An empty durable commit makes the non-durable ones before it durable.
        self.write(true, |_| Ok(()))
    }
    fn replay(&mut self, each: &mut dyn FnMut(u64, &[u8])) -> Result<()> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for kv in t.iter()? {
            let (k, v) = kv?;
            // Copied out, as Sluice would hand the batch to an exporter.
            let owned = v.value().to_vec();
            each(k.value(), &owned);
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.write(true, |_| Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// fjall: one keyspace, big-endian seq -> body; `persist(SyncData)` makes the journal durable.

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
    always: bool,
}

impl Fjall {
    fn open(dir: &Path, always: bool, kv_separation: bool) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let ks = db.keyspace("queue", || {
            let o = fjall::KeyspaceCreateOptions::default();
            if kv_separation {
                o.with_kv_separation(Some(fjall::KvSeparationOptions::default()))
            } else {
                o
            }
        })?;
        Ok(Self { db, ks, always })
    }
}

impl Queue for Fjall {
    fn append(&mut self, seq: u64, body: &[u8]) -> Result<()> {
        self.ks.insert(seq.to_be_bytes(), body)?;
        if self.always {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }
    fn read(&mut self, seq: u64) -> Result<usize> {
        let v = self.ks.get(seq.to_be_bytes())?.context("record missing")?;
        Ok(v.len())
    }
    fn ack(&mut self, seq: u64) -> Result<()> {
        Ok(self.ks.remove(seq.to_be_bytes())?)
    }
    fn sync(&mut self) -> Result<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncData)?)
    }
    fn replay(&mut self, each: &mut dyn FnMut(u64, &[u8])) -> Result<()> {
        for kv in self.ks.iter() {
            let (k, v) = kv.into_inner()?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().context("key is not 8 bytes")?);
            each(seq, &v);
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }
}

// ---------------------------------------------------------------------------------------------
// queue-file: a ring-buffer FIFO with in-order `remove()`; out-of-order acks are kept aside
// until the front of the queue is delivered.

struct Qf {
    q: queue_file::QueueFile,
    always: bool,
    /// Sequence number of the record at the front of the file.
    front: u64,
    acked: BTreeSet<u64>,
}

impl Qf {
    fn open(dir: &Path, always: bool) -> Result<Self> {
        let mut q = queue_file::QueueFile::open(dir.join("queue.qf"))?;
        q.set_sync_writes(always);
        // Zeroing delivered records is extra writes the other stores do not make.
        q.set_overwrite_on_remove(false);
        Ok(Self {
            q,
            always,
            front: 0,
            acked: BTreeSet::new(),
        })
    }
}

impl Queue for Qf {
    fn append(&mut self, _seq: u64, body: &[u8]) -> Result<()> {
        Ok(self.q.add(body)?)
    }
    fn read(&mut self, seq: u64) -> Result<usize> {
        let i = usize::try_from(seq - self.front)?;
        let v = self.q.iter().nth(i).context("record missing")?;
        Ok(v.len())
    }
    fn ack(&mut self, seq: u64) -> Result<()> {
        self.acked.insert(seq);
        // Removing is an acknowledgement: not synced, as for the other stores.
        self.q.set_sync_writes(false);
        while self.acked.remove(&self.front) {
            self.q.remove()?;
            self.front += 1;
        }
        self.q.set_sync_writes(self.always);
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(self.q.sync_all()?)
    }
    fn replay(&mut self, each: &mut dyn FnMut(u64, &[u8])) -> Result<()> {
        let mut n = 0;
        for v in self.q.iter() {
            each(self.front + n, &v);
            n += 1;
        }
        if n != self.q.size() as u64 {
            bail!(
                "queue-file: header says {} records, read {n}",
                self.q.size()
            );
        }
        Ok(())
    }
    fn close(mut self: Box<Self>) -> Result<()> {
        Ok(self.q.sync_all()?)
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// CPU seconds of this process, all threads (getrusage user + system).
fn cpu_seconds() -> Result<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(s(u.user_time()) + s(u.system_time()))
}

/// `write_bytes` and `cancelled_write_bytes` of /proc/self/io.
fn io_written() -> Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/self/io")?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/self/io"))?;
        Ok(line.trim().parse()?)
    };
    Ok((field("write_bytes:")?, field("cancelled_write_bytes:")?))
}

/// Bytes allocated on disk under `dir` (st_blocks, so sparse and preallocated files count as
/// they really are).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// `count` distinct random bodies of `kib` KiB (the same for the same seed).
fn bodies(kib: usize, seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let mut b = vec![0u8; kib * 1024];
            rng.fill(&mut b);
            b
        })
        .collect()
}

/// The steady-state workload: append, read back, acknowledge out of order with `WINDOW` in
/// flight. Prints one `RESULT` line.
fn run(store: &str, always: bool, body_kib: usize, mib: u64, dir: &Path) -> Result<()> {
    let bodies = bodies(body_kib, 7, 16);
    let body_len = body_kib * 1024;
    let records = (mib << 20) / body_len as u64;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut q = open(store, dir, always)?;
    let (cpu0, (w0, c0)) = (cpu_seconds()?, io_written()?);
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut in_flight: Vec<u64> = Vec::with_capacity(WINDOW);
    let mut peak_disk = 0u64;
    for seq in 0..records {
        let body = &bodies[(seq % 16) as usize];
        q.append(seq, body)?;
        let n = q.read(seq)?;
        if n != body_len {
            bail!("{store}: record {seq} came back with {n} bytes");
        }
        in_flight.push(seq);
        if in_flight.len() == WINDOW {
            let done = in_flight.swap_remove(rng.usize(..WINDOW));
            q.ack(done)?;
        }
        if !always && last_sync.elapsed() >= SYNC_EVERY {
            q.sync()?;
            last_sync = Instant::now();
        }
        if seq % 16 == 0 {
            peak_disk = peak_disk.max(disk_usage(dir));
        }
    }
    rng.shuffle(&mut in_flight);
    for seq in in_flight {
        q.ack(seq)?;
    }
    q.close()?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    let (w1, c1) = io_written()?;
    let appended = (records * body_len as u64) as f64;
    let end_disk = disk_usage(dir);
    println!(
        "RESULT mbps={:.1} cpu_s_per_gb={:.3} written_per_gb={:.3} cancelled_per_gb={:.3} peak_disk_mib={:.1} end_disk_mib={:.1} secs={secs:.2} records={records}",
        appended / secs / 1e6,
        cpu / (appended / 1e9),
        (w1 - w0) as f64 / appended,
        (c1 - c0) as f64 / appended,
        peak_disk as f64 / (1 << 20) as f64,
        end_disk as f64 / (1 << 20) as f64,
    );
    Ok(())
}

/// Appends `mib` MiB of records and closes cleanly, acknowledging nothing.
fn fill(store: &str, dir: &Path, mib: u64, body_kib: usize) -> Result<()> {
    // Distinct bodies, so the damage test can find the newest record's bytes in the files.
    let bodies = bodies(body_kib, 9, DAMAGE_RECORDS as usize);
    let records = (mib << 20) / (body_kib as u64 * 1024);
    let mut q = open(store, dir, false)?;
    let cpu0 = cpu_seconds()?;
    let start = Instant::now();
    let mut last_sync = Instant::now();
    for seq in 0..records {
        q.append(seq, &bodies[(seq % DAMAGE_RECORDS) as usize])?;
        if last_sync.elapsed() >= SYNC_EVERY {
            q.sync()?;
            last_sync = Instant::now();
        }
    }
    q.close()?;
    let secs = start.elapsed().as_secs_f64();
    let gb = (records * body_kib as u64 * 1024) as f64 / 1e9;
    println!(
        "RESULT fill_secs={secs:.3} fill_mbps={:.1} fill_cpu_s_per_gb={:.3} records={records} disk_mib={:.1}",
        gb * 1e3 / secs,
        (cpu_seconds()? - cpu0) / gb,
        disk_usage(dir) as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Opens what `fill` left and reads every record back.
fn replay(store: &str, dir: &Path) -> Result<()> {
    let start = Instant::now();
    let mut q = open(store, dir, false)?;
    let opened = start.elapsed().as_secs_f64();
    let (mut n, mut bytes) = (0u64, 0u64);
    q.replay(&mut |_, body| {
        n += 1;
        bytes += body.len() as u64;
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!("RESULT open_secs={opened:.3} replay_secs={secs:.3} records={n} bytes={bytes}");
    // Closing is not part of the measurement; a read-only replay leaves the files as they were
    // for the next round (the stores may write on close, which is fine).
    drop(q);
    Ok(())
}

/// Opens a store whose data file was damaged after a clean close, and reads what it can.
fn damaged(store: &str, dir: &Path) -> Result<()> {
    let mut q = match open(store, dir, false) {
        Ok(q) => q,
        Err(e) => {
            println!("RESULT outcome=open-error error={:?}", format!("{e:#}"));
            return Ok(());
        }
    };
    let want = bodies(64, 9, DAMAGE_RECORDS as usize);
    let (mut n, mut wrong) = (0u64, 0u64);
    let read = q.replay(&mut |seq, body| {
        n += 1;
        if want.get(seq as usize).is_none_or(|w| w.as_slice() != body) {
            wrong += 1;
        }
    });
    match read {
        Ok(()) => {
            // Can the queue take new records after that?
            let appended = q.append(1 << 40, &[1u8; 100]).and_then(|_| q.sync());
            let counted = q.damaged().map_or("-".to_string(), |d| d.to_string());
            println!(
                "RESULT outcome=opened records={n} wrong={wrong} counted={counted} append_after={}",
                if appended.is_ok() { "ok" } else { "fails" }
            );
        }
        Err(e) => println!(
            "RESULT outcome=read-error records={n} wrong={wrong} error={:?}",
            format!("{e:#}")
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The driver.

fn child(args: &[String]) -> Result<BTreeMap<String, String>> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut m = BTreeMap::new();
    if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        for kv in line.split(' ') {
            if let Some((k, v)) = kv.split_once('=') {
                m.insert(k.to_owned(), v.to_owned());
            }
        }
        // Errors were printed with Debug quoting and may contain spaces: keep the raw tail.
        if let Some((_, e)) = line.split_once("error=") {
            m.insert("error".into(), e.to_owned());
        }
    }
    if !out.status.success() || m.is_empty() {
        let first = stderr
            .lines()
            .find(|l| l.contains("panicked") || l.starts_with("Error"))
            .unwrap_or_else(|| stderr.lines().next().unwrap_or(""));
        m.insert(
            "failed".into(),
            format!("{} ({})", first.trim(), out.status),
        );
    }
    if !stderr.trim().is_empty() {
        m.insert(
            "stderr".into(),
            stderr.lines().take(3).collect::<Vec<_>>().join(" | "),
        );
    }
    Ok(m)
}

fn num(m: &BTreeMap<String, String>, k: &str) -> Result<f64> {
    m.get(k)
        .with_context(|| format!("no {k} in {m:?}"))?
        .parse()
        .with_context(|| format!("{k} in {m:?}"))
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn drop_caches() -> Result<()> {
    let ok = Command::new("sync").status()?.success();
    if !ok {
        bail!("sync failed");
    }
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop_caches (needs root)")
}

/// best (by `higher_is_better`) and the range of three or more numbers, formatted.
fn best_range(v: &[f64], higher_is_better: bool, digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let best = if higher_is_better { max } else { min };
    if v.len() < 2 {
        format!("{best:.digits$}")
    } else {
        format!("**{best:.digits$}** ({min:.digits$}–{max:.digits$})")
    }
}

struct Opts {
    dir: PathBuf,
    reps: usize,
    interval_mib: u64,
    always_mib: u64,
    replay_mib: u64,
    cold: bool,
    only: Vec<String>,
}

fn parse_all(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        dir: PathBuf::from(args.first().context(usage())?),
        reps: 3,
        interval_mib: 1024,
        always_mib: 128,
        replay_mib: 1024,
        cold: true,
        only: STORES.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().context(usage());
        match a.as_str() {
            "--reps" => o.reps = val()?.parse()?,
            "--interval-mib" => o.interval_mib = val()?.parse()?,
            "--always-mib" => o.always_mib = val()?.parse()?,
            "--replay-mib" => o.replay_mib = val()?.parse()?,
            "--no-cold" => o.cold = false,
            "--only" => o.only = val()?.split(',').map(str::to_owned).collect(),
            other => bail!("unknown option {other}\n{}", usage()),
        }
    }
    Ok(o)
}

fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

fn all(o: &Opts) -> Result<()> {
    let mut loads = vec![load_average()];
    let mut report = String::new();
    let started = Instant::now();

    // 1. Steady state: append + read + out-of-order ack.
    writeln!(
        report,
        "\n### Append + read back + ack (4 in flight), {} runs each: best (range)\n",
        o.reps
    )?;
    writeln!(report, "| store | sync | body | MB/s appended | CPU s per GB | written / appended (write_bytes − cancelled) | peak disk MiB | disk after all acked MiB |")?;
    writeln!(report, "|---|---|---|---:|---:|---:|---:|---:|")?;
    for sync in ["interval", "always"] {
        let mib = if sync == "always" {
            o.always_mib
        } else {
            o.interval_mib
        };
        for kib in [64usize, 330] {
            // Round-robin over the stores, so a busy moment on the shared machine does not fall
            // on one store's runs only.
            let mut by_store: BTreeMap<&str, Vec<BTreeMap<String, String>>> = BTreeMap::new();
            for rep in 0..o.reps {
                for store in &o.only {
                    let dir = o.dir.join(format!("run-{store}"));
                    fresh(&dir)?;
                    let m = child(&[
                        "run".into(),
                        store.clone(),
                        sync.into(),
                        kib.to_string(),
                        mib.to_string(),
                        dir.display().to_string(),
                    ])?;
                    eprintln!(
                        "run {store} {sync} {kib} KiB #{rep}: {m:?}  load {}",
                        load_average()
                    );
                    by_store.entry(store).or_default().push(m);
                    fs::remove_dir_all(&dir)?;
                    loads.push(load_average());
                }
            }
            for store in &o.only {
                let rows = by_store.remove(store.as_str()).unwrap_or_default();
                if let Some(f) = rows.iter().find_map(|m| m.get("failed")) {
                    writeln!(
                        report,
                        "| {store} | {sync} | {kib} KiB | failed: {f} | | | | |"
                    )?;
                    continue;
                }
                let col = |k: &str| rows.iter().map(|m| num(m, k)).collect::<Result<Vec<_>>>();
                let net: Vec<f64> = col("written_per_gb")?
                    .iter()
                    .zip(col("cancelled_per_gb")?)
                    .map(|(w, c)| w - c)
                    .collect();
                writeln!(
                    report,
                    "| {store} | {sync} | {kib} KiB | {} | {} | {} | {} | {} |",
                    best_range(&col("mbps")?, true, 0),
                    best_range(&col("cpu_s_per_gb")?, false, 2),
                    best_range(&net, false, 2),
                    best_range(&col("peak_disk_mib")?, false, 1),
                    best_range(&col("end_disk_mib")?, false, 1),
                )?;
            }
        }
    }

    // 2. Replay of a full queue, page cache warm and dropped.
    writeln!(report, "\n### Reopen and read back {} MiB of unacknowledged 64 KiB records, {} runs each: best (range), seconds\n", o.replay_mib, o.reps)?;
    writeln!(report, "| store | fill: MB/s (append only, interval sync) | fill: CPU s per GB | disk MiB | first reopen after fill: open + read all | warm: open | warm: open + read all | cold: open | cold: open + read all |")?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    // The fill (a backlog: the exporter is down) is measured `reps` times, round-robin; the
    // replays read what the last fill left.
    let mut fills: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for rep in 0..o.reps {
        for store in &with_checked(&o.only) {
            let dir = o.dir.join(format!("replay-{store}"));
            fresh(&dir)?;
            let f = child(&[
                "fill".into(),
                store.clone(),
                dir.display().to_string(),
                o.replay_mib.to_string(),
                "64".into(),
            ])?;
            eprintln!("fill {store} #{rep}: {f:?}");
            fills.entry(store.clone()).or_default().push(f);
            loads.push(load_average());
        }
    }
    for store in &with_checked(&o.only) {
        let dir = o.dir.join(format!("replay-{store}"));
        let fs_ = fills.remove(store).unwrap_or_default();
        if let Some(e) = fs_.iter().find_map(|f| f.get("failed")) {
            writeln!(report, "| {store} | failed: {e} | | | | | | | |")?;
            continue;
        }
        let Some(f) = fs_.last() else { continue };
        let fcol = |k: &str| fs_.iter().map(|m| num(m, k)).collect::<Result<Vec<_>>>();
        let want = num(f, "records")?;
        let first = child(&["replay".into(), store.clone(), dir.display().to_string()])?;
        eprintln!("first replay {store}: {first:?}");
        if let Some(e) = first.get("failed") {
            bail!("replay {store}: {e}");
        }
        let mut cells = vec![format!("{:.2}", num(&first, "replay_secs")?)];
        for cold in [false, true] {
            if cold && !o.cold {
                cells.extend(["—".to_string(), "—".to_string()]);
                continue;
            }
            let (mut open_s, mut all_s) = (Vec::new(), Vec::new());
            for rep in 0..o.reps {
                if cold {
                    drop_caches()?;
                }
                let m = child(&["replay".into(), store.clone(), dir.display().to_string()])?;
                eprintln!("replay {store} cold={cold} #{rep}: {m:?}");
                if let Some(e) = m.get("failed") {
                    bail!("replay {store}: {e}");
                }
                if num(&m, "records")? != want {
                    bail!("replay {store}: {m:?}, {want} records were written");
                }
                open_s.push(num(&m, "open_secs")?);
                all_s.push(num(&m, "replay_secs")?);
            }
            cells.push(best_range(&open_s, false, 2));
            cells.push(best_range(&all_s, false, 2));
        }
        loads.push(load_average());
        writeln!(
            report,
            "| {store} | {} | {} | {:.0} | {} |",
            best_range(&fcol("fill_mbps")?, true, 0),
            best_range(&fcol("fill_cpu_s_per_gb")?, false, 2),
            num(f, "disk_mib")?,
            cells.join(" | ")
        )?;
        fs::remove_dir_all(&dir)?;
    }

    // 3. Damage after a clean close.
    writeln!(report, "\n### {DAMAGE_RECORDS} records of 64 KiB, clean close, then the file holding the last record is damaged; reopen\n")?;
    writeln!(report, "| store | damaged file | last 4 KiB cut off | cut inside the newest record (torn write) | 64 bytes inside the newest record flipped | 64 bytes at end − 4 KiB flipped |")?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    for store in &with_checked(&o.only) {
        let mut cells = Vec::new();
        let mut which = String::new();
        for damage in ["cut-end", "cut-record", "flip-record", "flip-end"] {
            let dir = o.dir.join(format!("damage-{store}"));
            fresh(&dir)?;
            let f = child(&[
                "fill".into(),
                store.clone(),
                dir.display().to_string(),
                (DAMAGE_RECORDS * 64 / 1024).to_string(),
                "64".into(),
            ])?;
            if let Some(e) = f.get("failed") {
                bail!("fill {store}: {e}");
            }
            let (file, len) = damage_file(&dir, damage)?;
            which = format!(
                "{} ({:.1} MiB)",
                file.strip_prefix(&dir).unwrap_or(&file).display(),
                len as f64 / (1 << 20) as f64
            );
            let m = child(&["damaged".into(), store.clone(), dir.display().to_string()])?;
            eprintln!("damaged {store} {damage}: {m:?}");
            cells.push(describe_damage(&m));
            fs::remove_dir_all(&dir)?;
        }
        writeln!(report, "| {store} | {which} | {} |", cells.join(" | "))?;
    }
    loads.push(load_average());

    println!("{report}");
    let one_min: Vec<f64> = loads
        .iter()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    println!(
        "Total {:.0} s. Load average (1, 5, 15 min): {} at the start, {} at the end; 1-minute load sampled after each case {:.2}–{:.2}",
        started.elapsed().as_secs_f64(),
        loads.first().map_or("?", String::as_str),
        loads.last().map_or("?", String::as_str),
        one_min.iter().copied().fold(f64::INFINITY, f64::min),
        one_min.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    Ok(())
}

/// The stores, with redb's checked open added next to redb (for replay and damage only).
fn with_checked(stores: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for s in stores {
        v.push(s.clone());
        if s == "redb" {
            v.push("redb-checked".into());
        }
    }
    v
}

fn describe_damage(m: &BTreeMap<String, String>) -> String {
    if let Some(f) = m.get("failed") {
        return format!("crash: {f}");
    }
    let err = m.get("error").map(|e| short(e)).unwrap_or_default();
    match m.get("outcome").map(String::as_str) {
        Some("open-error") => format!("open fails: {err}"),
        Some("read-error") => {
            let n = m.get("records").map_or("?", String::as_str);
            format!("opens, {n} back, then reading fails: {err}")
        }
        Some("opened") => {
            let n = m.get("records").map_or("?", String::as_str);
            let after = m.get("append_after").map_or("?", String::as_str);
            let counted = match m.get("counted").map(String::as_str) {
                Some("-") | None => String::new(),
                Some(c) => format!(", counts {c} damaged"),
            };
            let wrong = match m.get("wrong").map(String::as_str) {
                Some("0") | None => String::new(),
                Some(w) => format!(" (**{w} with wrong bytes**)"),
            };
            format!("opens, {n} of {DAMAGE_RECORDS} back{wrong}{counted}, append after: {after}")
        }
        _ => format!("{m:?}"),
    }
}

fn short(e: &str) -> String {
    let e = e.trim_matches('"');
    let cut: String = e.chars().take(90).collect();
    if cut.len() < e.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

/// Damages the file holding the newest record (the largest file; the stores write one big file
/// or journal) and returns it with its length before the damage.
fn damage_file(dir: &Path, damage: &str) -> Result<(PathBuf, u64)> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let (path, len) = files
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .context("no files")?;
    let mut data = fs::read(&path)?;
    // The fill's bodies are random and distinct: find where the newest record's bytes sit.
    let newest = || -> Result<usize> {
        let all = bodies(64, 9, DAMAGE_RECORDS as usize);
        let last = all.last().context("no bodies")?;
        let needle = last.get(30_000..30_064).context("body too short")?;
        data.windows(needle.len())
            .rposition(|w| w == needle)
            .with_context(|| format!("newest record not found in {}", path.display()))
    };
    match damage {
        "cut-end" => {
            data.truncate(data.len().saturating_sub(4096));
        }
        "cut-record" => {
            let at = newest()?;
            data.truncate(at);
        }
        "flip-record" => {
            let at = newest()?;
            for b in data.iter_mut().skip(at).take(64) {
                *b ^= 0xff;
            }
        }
        "flip-end" => {
            let at = data.len().saturating_sub(4096);
            for b in data.iter_mut().skip(at).take(64) {
                *b ^= 0xff;
            }
        }
        other => bail!("unknown damage {other}"),
    }
    fs::write(&path, &data)?;
    Ok((path, len))
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        if m.is_dir() {
            walk(&e.path(), out)?;
        } else {
            out.push((e.path(), m.len()));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).context(usage());
    match arg(0)? {
        "all" => all(&parse_all(&args[1..])?),
        "run" => run(
            arg(1)?,
            match arg(2)? {
                "always" => true,
                "interval" => false,
                other => bail!("sync {other:?}\n{}", usage()),
            },
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            Path::new(arg(5)?),
        ),
        "fill" => fill(
            arg(1)?,
            Path::new(arg(2)?),
            arg(3)?.parse()?,
            arg(4)?.parse()?,
        ),
        "replay" => replay(arg(1)?, Path::new(arg(2)?)),
        "damaged" => damaged(arg(1)?, Path::new(arg(2)?)),
        _ => bail!("{}", usage()),
    }
}
