//! Helpers for Rust end-to-end tests: run the real `sluice` binary on free ports and read what it wrote.
//!
//! The binary is `$SLUICE_BIN`, or `target/debug/sluice` of this workspace (build it first:
//! `cargo build -p sluice`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// The sluice binary under test.
pub fn sluice_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice");
    assert!(
        p.exists(),
        "{} does not exist: run `cargo build -p sluice` or set SLUICE_BIN",
        p.display()
    );
    p
}

/// A running sluice with OTLP → batch → file.
pub struct Sluice {
    /// Child process.
    pub child: Child,
    /// OTLP/gRPC port.
    pub grpc: u16,
    /// OTLP/HTTP port.
    pub http: u16,
    /// Admin port.
    pub admin: u16,
    /// File exporter directory.
    pub data: PathBuf,
    dir: PathBuf,
}

impl Sluice {
    /// Starts sluice (OTLP → batch → file) in a fresh temp directory and waits for `/readyz`.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, |_, _| String::new()).await
    }

    /// Like [`Sluice::start`], with extra TOML appended; `extra(dir, admin_port)` may add components.
    pub async fn start_with(name: &str, extra: impl FnOnce(&Path, u16) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let data = dir.join("data");
        let mut cfg = format!(
            r#"
[service]
admin = "127.0.0.1:{admin}"
[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
[processors.batch]
type = "batch"
timeout = "50ms"
[exporters.out]
type = "file"
path = "{}"
[pipelines.all]
signals = ["traces", "metrics", "logs", "profiles"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["out"]
"#,
            data.display()
        );
        cfg.push_str(&extra(&dir, admin));
        let cfg_path = dir.join("sluice.toml");
        std::fs::write(&cfg_path, cfg).expect("write config");
        let log = std::fs::File::create(dir.join("sluice.log")).expect("log file");
        let child = Command::new(sluice_bin())
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        let s = Self {
            child,
            grpc,
            http,
            admin,
            data,
            dir,
        };
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "sluice not ready:\n{}", s.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    /// The working directory of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sluice.log")).unwrap_or_default()
    }

    /// Every OTLP/JSON line written for `signal` so far.
    pub fn output(&self, signal: &str) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.data.join(format!("{signal}.jsonl"))).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls `output(signal)` until `done` holds or 15 s pass.
    pub async fn wait_output(
        &self,
        signal: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.output(signal);
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {signal} output; got {} lines\n{}",
                out.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let code = self
            .child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        let _ = std::fs::remove_dir_all(&self.dir);
        code
    }
}

/// A chfront (ClickHouse's HTTP interface over the real engine, chDB) for tests; needs the Python
/// environment of `tests/setup.sh` (`$SLUICE_PYTHON`, default `.venv/bin/python`).
pub struct ClickHouse {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ClickHouse {
    /// Starts chfront on a free port with its data in `dir`.
    pub fn start(dir: &Path) -> Self {
        use std::io::BufRead;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var("SLUICE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let mut child = Command::new(&python)
            .arg(root.join("tests/clickhouse/chfront.py"))
            .args(["--port", "0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chfront with {}: {e} (run tests/setup.sh)",
                    python.display()
                )
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("chfront stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("chfront ready line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("chfront said {line:?}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs a query and returns ClickHouse's text answer, or its error text.
    pub async fn try_query(&self, sql: &str) -> Result<String, String> {
        let r = reqwest::Client::new()
            .post(&self.url)
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let text = r.text().await.unwrap_or_default();
        if ok {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Runs a query that must succeed.
    pub async fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .await
            .unwrap_or_else(|e| panic!("ClickHouse error for {sql:?}: {e}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
