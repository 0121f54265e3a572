//! The file exporter: one OTLP/JSON request per line, one file per signal, rotated by size.
//!
//! Files are `traces.jsonl`, `metrics.jsonl`, `logs.jsonl`, `profiles.jsonl` in `path`; a file
//! that would grow past `max_file_size` is renamed `SIGNAL-<unix millis>-<seq>.jsonl` and a new one
//! started; only the newest `max_files` rotated files are kept.

pub mod config;

pub use config::FileExporterConfig;
use sluice_config::Signal;
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use std::sync::Arc;
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Telemetry};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

struct Open {
    writer: BufWriter<File>,
    size: u64,
}

/// Writes OTLP/JSON lines.
pub struct FileExporter {
    dir: PathBuf,
    max_file_size: u64,
    max_files: usize,
    files: Mutex<[Option<Open>; 4]>,
    seq: std::sync::atomic::AtomicU64,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ExportError {
    // Disk full or permission problems may clear up; keep retrying (bounded by the retry policy).
    ExportError::retryable(format!("{what} {}: {e}", path.display()))
}

impl FileExporter {
    /// Creates the directory if needed.
    pub fn new(cfg: &FileExporterConfig) -> Result<Self, std::io::Error> {
        let dir = PathBuf::from(&cfg.path);
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            max_file_size: cfg.max_file_size.0,
            max_files: cfg.max_files,
            files: Mutex::new([None, None, None, None]),
            seq: 0.into(),
        })
    }

    fn current_path(&self, s: Signal) -> PathBuf {
        self.dir.join(format!("{}.jsonl", s.as_str()))
    }

    fn write_line(&self, signal: Signal, line: &[u8]) -> Result<(), ExportError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut files[signal.index()];
        let path = self.current_path(signal);
        if let Some(open) = slot {
            if open.size > 0 && open.size + line.len() as u64 + 1 > self.max_file_size {
                open.writer
                    .flush()
                    .map_err(|e| io_err("cannot flush", &path, e))?;
                *slot = None;
                self.rotate(signal, &path)?;
            }
        }
        if slot.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err("cannot open", &path, e))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            *slot = Some(Open {
                writer: BufWriter::with_capacity(256 * 1024, f),
                size,
            });
        }
        let Some(open) = slot else {
            return Err(ExportError::retryable("file not open"));
        };
        let res = open
            .writer
            .write_all(line)
            .and_then(|_| open.writer.write_all(b"\n"))
            .and_then(|_| open.writer.flush());
        if let Err(e) = res {
            // A write cut short (disk full) must not leave half a line for the retry to append
            // to: drop what is still buffered (no flush on drop) and cut the file back.
            if let Some(open) = slot.take() {
                let (file, _unwritten) = open.writer.into_parts();
                if let Err(te) = file.set_len(open.size) {
                    tracing::error!(path = %path.display(), error = %te, "cannot cut a partly written line off; the file may hold a torn line");
                }
            }
            return Err(io_err("cannot write", &path, e));
        }
        open.size += line.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&self, signal: Signal, current: &Path) -> Result<(), ExportError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rotated = self
            .dir
            .join(format!("{}-{millis:013}-{seq:06}.jsonl", signal.as_str()));
        fs::rename(current, &rotated).map_err(|e| io_err("cannot rotate", current, e))?;
        let prefix = format!("{}-", signal.as_str());
        let mut old: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| io_err("cannot list", &self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
            })
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(self.max_files);
        for p in old.into_iter().take(excess) {
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot delete old rotated file");
            }
        }
        Ok(())
    }
}

impl Exporter for FileExporter {
    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let line = batch
                .to_json()
                .map_err(|e| ExportError::permanent(format!("cannot encode OTLP/JSON: {e}")))?;
            tokio::task::block_in_place(|| self.write_line(batch.signal(), &line))?;
            Ok(Delivered::ALL)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async move {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            for open in files.iter_mut().flatten() {
                open.writer
                    .flush()
                    .map_err(|e| io_err("cannot flush", &self.dir, e))?;
                let _ = open.writer.get_ref().sync_all();
            }
            Ok(())
        })
    }
}

impl ExporterKind for FileExporterConfig {
    const TYPE: &'static str = "file";
    const CONCURRENT: bool = false;

    fn validate(&self, problems: &mut Problems) {
        if self.path.trim().is_empty() {
            problems.at("path", "must name a directory");
        }
        if self.max_files == 0 {
            problems.at("max_files", "must be at least 1");
        }
        if self.max_file_size.0 < 1024 {
            problems.at("max_file_size", "must be at least 1KiB");
        }
    }

    fn build(&self, _ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        FileExporter::new(self)
            .map(|e| Arc::new(e) as Arc<dyn Exporter>)
            .map_err(|e| format!("cannot create directory {:?}: {e}", self.path))
    }
}

#[cfg(test)]
mod tests;
