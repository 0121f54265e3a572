//! Measures a persistent queue's start-up replay: writes `GIB` GiB of batches into a fresh log in
//! DIR, then times opening it (every record checked) and reading every record back.
//!
//! `cargo run --profile ci -p sluice-core --example queue_replay -- DIR [GIB] [BATCH_KIB]`
//! (GIB = 0 only replays what DIR holds, e.g. after dropping the page cache.)

use sluice_config::{Signal, SyncMode};
use sluice_core::disk_queue::DiskLog;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or("usage: queue_replay DIR [GIB] [BATCH_KIB]")?,
    );
    let gib: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let batch_kib: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let total = gib << 30;
    let body: Vec<u8> = (0..batch_kib * 1024)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let segment = (total.max(1 << 30) / 8).clamp(64 << 10, 64 << 20);
    if total > 0 {
        let (log, _) = DiskLog::open(&dir, segment, SyncMode::Interval)?;
        let start = Instant::now();
        let mut written = 0u64;
        while written < total {
            written += log.append(Signal::Traces, 100, &body)?.1;
        }
        log.sync_now()?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "write: {:.2} GiB in {secs:.2} s = {:.0} MB/s",
            written as f64 / (1u64 << 30) as f64,
            written as f64 / secs / 1e6
        );
    }
    let start = Instant::now();
    let (log, replay) = DiskLog::open(&dir, segment, SyncMode::Interval)?;
    let open = start.elapsed().as_secs_f64();
    let mut reader = log.reader();
    let mut records = 0u64;
    while reader.next(&log)?.is_some() {
        records += 1;
    }
    let all = start.elapsed().as_secs_f64();
    println!(
        "replay: open (checksum every record) {open:.2} s, open + read back {all:.2} s; {} records, {} items, {} corrupt",
        replay.records,
        replay.items[Signal::Traces.index()],
        replay.corrupt
    );
    assert_eq!(records, replay.records);
    Ok(())
}
