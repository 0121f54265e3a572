//! `--watch`: reload when the configuration file's content changes. The folder holding the file
//! is watched, not the file, so an editor's save-by-rename and the atomic `..data` symlink swap of
//! a mounted Kubernetes ConfigMap are seen too; events are debounced and a reload is asked for
//! only when the bytes behind the path really changed, so one edit is one reload.

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher as _};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// A running watch; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

impl Watcher {
    /// Watches `path`; sends on `reload` once per change of its content.
    pub fn start(path: &Path, reload: mpsc::Sender<()>) -> Result<Self> {
        let path: PathBuf = path.to_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let (tx, mut events) = mpsc::unbounded_channel::<()>();
        let mut inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.send(());
            }
        })
        .context("--watch: cannot start a file watcher")?;
        inner
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("--watch: cannot watch {}", dir.display()))?;
        tracing::info!(path = %path.display(), "watching the configuration file for changes");
        let mut last = fingerprint(&path);
        let task = tokio::spawn(async move {
            while events.recv().await.is_some() {
                // Wait until the burst of events (create, rename, remove) is over.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                let now = fingerprint(&path);
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!(path = %path.display(), "configuration file changed: reloading");
                    if reload.send(()).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Self {
            _inner: inner,
            task,
        })
    }
}
