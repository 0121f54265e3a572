//! The ClickHouse exporter: writes the OpenTelemetry Collector ClickHouse exporter's tables with
//! the `clickhouse` crate's HTTP client (LZ4-compressed bodies), one `INSERT` per table per batch.
//! Spans and logs go as Native blocks built straight from the encoded requests
//! ([`wire_rows`]); metrics and profiles (and everything with `format = "row_binary"`) as
//! RowBinary rows of the decoded request ([`rows`]).
//!
//! The schema is created when the exporter is built, and before an insert if that has not
//! succeeded yet (or after a table went missing), so a ClickHouse that is down at start only
//! delays delivery: exports fail retryably, the queue holds the data, and it flows once the
//! server answers.

pub mod native;
mod retention;
pub mod rows;
pub mod schema;
pub mod wire_rows;

use clickhouse::{Client, Compression, Row, RowOwned, RowWrite};
pub mod config;
mod lz4_block;

pub use config::{ChCompression, ChFormat, ChTables, ClickhouseExporterConfig};
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use std::sync::Arc;
use sluice_core::{BoxFuture, Coalesce, Delivered, ExportError, Exporter, Signal, Telemetry};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;

/// Errors building the exporter from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClickhouseExporterError {
    /// The `tls` table does not make a TLS configuration.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The endpoint without the credentials written into it, and those credentials (percent-decoded):
/// the `clickhouse` client sends credentials as headers, never in the URL, and the URL is logged.
pub fn split_credentials(endpoint: &str) -> (String, Option<String>, Option<String>) {
    let Ok(mut url) = url::Url::parse(endpoint) else {
        return (endpoint.to_owned(), None, None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
    let password = url.password().map(decode);
    if user.is_none() && password.is_none() {
        return (endpoint.to_owned(), None, None);
    }
    // Both only fail for URLs that cannot carry credentials, which this one did.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut clean = url.to_string();
    if !endpoint.ends_with('/') && url.path() == "/" && url.query().is_none() {
        clean.pop();
    }
    (clean, user, password)
}

/// Writes telemetry into ClickHouse.
pub struct ClickhouseExporter {
    client: Client,
    /// Native inserts: their blocks arrive compressed by [`lz4_block`] (`decompress=1`), so this
    /// client does not compress again.
    native_client: Client,
    /// Buffers of LZ4 frames sent, reused by the next blocks.
    frames: lz4_block::Frames,
    cfg: ClickhouseExporterConfig,
    schema_ready: AtomicBool,
    schema_lock: Mutex<()>,
    /// The user ClickHouse sees (the setting, the endpoint's `user@`, or its `default`): named
    /// when the server refuses the credentials.
    user: String,
    /// Refused credentials are logged loudly, once per 10 s however many batches retry.
    auth_log: sluice_core::LogEvery,
    /// Column sets and block buffers of finished inserts, kept for the next ones: an insert
    /// then fills memory already mapped instead of growing ~2 MiB of fresh buffers (page faults,
    /// reallocation copies) every time.
    buffers: std::sync::Mutex<Buffers>,
}

/// Reusable insert buffers (see [`ClickhouseExporter`]); at most [`POOLED`] of each.
#[derive(Default)]
struct Buffers {
    spans: Vec<wire_rows::SpanColumns>,
    logs: Vec<wire_rows::LogColumns>,
    blocks: Vec<Vec<u8>>,
}

/// Buffers kept per kind: enough for the inserts a few workers run at once.
const POOLED: usize = 4;

/// ClickHouse error codes that mean "back off", not "your data is wrong".
const THROTTLING_CODES: &[u32] = &[
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    241, // MEMORY_LIMIT_EXCEEDED
    252, // TOO_MANY_PARTS
    236, // ABORTED
];

/// Codes worth retrying as they are (transient server or network trouble).
const RETRYABLE_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut mid-insert)
    159, // TIMEOUT_EXCEEDED
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    242, // TABLE_IS_READ_ONLY
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// Codes that mean the schema is gone (a table or the database dropped under us): retried, and
/// the schema is created again first when `create_schema` is on.
const SCHEMA_LOST_CODES: &[u32] = &[
    60, // UNKNOWN_TABLE
    81, // UNKNOWN_DATABASE
];

/// Codes that mean our credentials are refused: an operator must act, but the data is kept and
/// retried with backoff rather than dropped.
const AUTH_CODES: &[u32] = &[
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// A failed ClickHouse call: the retry decision, plus what it says about the server's state.
struct Failure {
    error: ExportError,
    code: Option<u32>,
}

/// Turns a client error into a retry decision, keeping ClickHouse's own words.
pub fn classify(e: clickhouse::error::Error) -> ExportError {
    classify_code(e).error
}

fn classify_code(e: clickhouse::error::Error) -> Failure {
    use clickhouse::error::Error as E;
    match e {
        E::BadResponse(text) => {
            let code = text
                .strip_prefix("Code: ")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|c| c.parse::<u32>().ok());
            let msg = format!("ClickHouse: {}", text.trim());
            let error = match code {
                Some(c) if THROTTLING_CODES.contains(&c) => ExportError::throttled(msg),
                Some(c)
                    if RETRYABLE_CODES.contains(&c)
                        || SCHEMA_LOST_CODES.contains(&c)
                        || AUTH_CODES.contains(&c) =>
                {
                    ExportError::retryable(msg)
                }
                Some(_) => ExportError::permanent(msg),
                // No code: an HTTP-level failure (proxy, 5xx without body): try again.
                None => ExportError::retryable(msg),
            };
            Failure { error, code }
        }
        other => Failure {
            error: ExportError::retryable(format!("ClickHouse unreachable: {other}")),
            code: None,
        },
    }
}

impl ClickhouseExporter {
    /// Builds the client; nothing is contacted until the first export.
    pub fn new(cfg: &ClickhouseExporterConfig) -> Result<Self, ClickhouseExporterError> {
        let (endpoint, url_user, url_password) = split_credentials(&cfg.endpoint);
        let connector = crate::tls::https_or_http(&endpoint, cfg.tls.as_ref(), false)?;
        // ClickHouse closes idle keep-alive connections after 3 s: drop ours before that.
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build(connector);
        let mut client = Client::with_http_client(http)
            .with_url(endpoint.clone())
            .with_database(cfg.database.clone())
            .with_validation(false)
            .with_compression(match cfg.compression {
                ChCompression::Lz4 => Compression::Lz4,
                ChCompression::None => Compression::None,
            });
        let user = cfg.username.clone().or(url_user);
        if let Some(u) = user.clone() {
            client = client.with_user(u);
        }
        if let Some(p) = cfg.password.clone().or(url_password) {
            client = client.with_password(p);
        }
        if cfg.async_insert {
            client = client
                .with_setting("async_insert", "1")
                .with_setting("wait_for_async_insert", "1");
        }
        let mut cfg = cfg.clone();
        cfg.endpoint = endpoint;
        let native_client = match cfg.compression {
            ChCompression::Lz4 => client
                .clone()
                .with_compression(Compression::None)
                .with_setting("decompress", "1"),
            ChCompression::None => client.clone(),
        };
        Ok(Self {
            client,
            native_client,
            frames: lz4_block::Frames::default(),
            schema_ready: AtomicBool::new(!cfg.create_schema),
            schema_lock: Mutex::new(()),
            user: user.unwrap_or_else(|| "default".to_owned()),
            auth_log: sluice_core::LogEvery::new(std::time::Duration::from_secs(10)),
            buffers: std::sync::Mutex::default(),
            cfg,
        })
    }

    async fn ensure_schema(&self) -> Result<(), ExportError> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.schema_lock.lock().await;
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        // DDL runs against `default`: the target database may not exist yet.
        let admin = self.client.clone().with_database("default");
        for ddl in schema::statements(&self.cfg) {
            admin.query(&ddl).execute().await.map_err(|e| {
                let mut f = classify_code(e);
                f.error.message = format!("creating schema: {}", f.error.message);
                self.observe(f)
            })?;
        }
        self.reconcile_ttl(&admin).await?;
        tracing::info!(endpoint = %sluice_config::redact::url(&self.cfg.endpoint), database = %self.cfg.database, "ClickHouse schema ready");
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Streams rows into one `INSERT` (nothing is built up front): rows that borrow from the
    /// batch, or references to owned rows.
    async fn insert<'r, T, I, B>(&self, table: &str, rows: I) -> Result<(), ExportError>
    where
        T: Row + RowWrite,
        I: Iterator<Item = B> + Send,
        B: std::borrow::Borrow<T::Value<'r>> + Send,
    {
        let mut rows = rows.peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        let timeout = Some(self.cfg.timeout.0);
        let fail = |e| self.observe(classify_code(e));
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(fail)?
            .with_timeouts(timeout, timeout);
        for row in rows {
            insert.write(row.borrow()).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }

    /// Acts on what a failure says about the server: a lost schema is created again on the next
    /// attempt; refused credentials are logged loudly (the data stays queued and is retried).
    fn observe(&self, f: Failure) -> ExportError {
        match f.code {
            Some(c) if SCHEMA_LOST_CODES.contains(&c) && self.cfg.create_schema => {
                self.schema_ready.store(false, Ordering::Release);
            }
            Some(c) if AUTH_CODES.contains(&c) => {
                if let Some(skipped) = self.auth_log.check() {
                    tracing::error!(endpoint = %self.cfg.endpoint, user = %self.user, error = %f.error.message, skipped,
                        "ClickHouse refused our credentials; data stays queued and is retried with backoff until retry.max_elapsed (fix username/password)");
                }
            }
            _ => {}
        }
        f.error
    }

    /// Inserts spans or logs as Native blocks built from the encoded request bodies, one block
    /// per [`MAX_BLOCK_BYTES`] of columns so the memory an insert holds stays bounded.
    async fn insert_native<C: NativeRows>(
        &self,
        table: &str,
        signal: Signal,
        batch: &Telemetry,
    ) -> Result<(), ExportError> {
        let chunks: Vec<bytes::Bytes> = match batch {
            Telemetry::Encoded(e) => e.chunks_with_items().map(|(b, _)| b.clone()).collect(),
            // Decoded upstream (a processor read its fields): encode once and walk that.
            other => vec![other.encode_protobuf()],
        };
        // Spans and logs are one row per item.
        let rows = usize::try_from(batch.item_count()).unwrap_or(0);
        let mut sql = format!("INSERT INTO {}.{table} (", self.cfg.database);
        for (i, c) in C::COLUMNS.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('`');
            sql.push_str(c);
            sql.push('`');
        }
        sql.push_str(") FORMAT Native");
        let timeout = Some(self.cfg.timeout.0);
        let fail = |e| self.observe(classify_code(e));
        let mut insert = self
            .native_client
            .insert_formatted_with(sql)
            .with_timeouts(timeout, timeout);
        let mut cols = self.take_buffers(C::pool).unwrap_or_default();
        // One block's Native bytes, reused for every block of the insert.
        let mut out = self.take_buffers(|b| &mut b.blocks).unwrap_or_default();
        let unrenderable = || ExportError::permanent("cannot render a batch as ClickHouse rows");
        // The whole insert in the table's order; bodies whose resource or scope prost would
        // merge (rare) go after, re-encoded canonically.
        let (first, odd) = wire_rows::Plan::with_rows::<C>(chunks.iter().map(|c| &c[..]), rows);
        let canonical: Vec<bytes::Bytes> = odd
            .iter()
            .filter_map(|&i| chunks.get(i))
            .map(|c| canonical(signal, c))
            .collect::<Result<_, _>>()?;
        let (late, still_odd) = wire_rows::Plan::new::<C>(canonical.iter().map(|c| &c[..]));
        if !still_odd.is_empty() {
            return Err(unrenderable());
        }
        let (mut sent, mut oversized) = (false, false);
        for mut plan in [first, late] {
            while !plan.is_done() {
                plan.fill(&mut cols, MAX_BLOCK_BYTES).map_err(|_| unrenderable())?;
                if cols.rows() > 0 {
                    // A block far over the bound (one huge row) grew buffers not worth keeping.
                    oversized |= cols.heap_bytes() > 2 * MAX_BLOCK_BYTES;
                    cols.write_block(&mut out);
                    cols.clear();
                    self.send_block(&mut insert, &mut out).await.map_err(fail)?;
                    sent = true;
                }
            }
        }
        if !oversized {
            self.keep_buffers(C::pool, cols);
        }
        if out.capacity() <= 4 * MAX_BLOCK_BYTES {
            self.keep_buffers(|b| &mut b.blocks, out);
        }
        if !sent {
            return Ok(());
        }
        insert.end().await.map_err(fail)
    }

    /// A pooled buffer of one kind, if any is kept.
    fn take_buffers<T>(&self, kind: fn(&mut Buffers) -> &mut Vec<T>) -> Option<T> {
        let mut b = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        kind(&mut b).pop()
    }

    /// Keeps an emptied buffer for the next insert (dropped when [`POOLED`] are kept).
    fn keep_buffers<T>(&self, kind: fn(&mut Buffers) -> &mut Vec<T>, buffer: T) {
        let mut b = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let kept = kind(&mut b);
        if kept.len() < POOLED {
            kept.push(buffer);
        }
    }

    /// Sends one block (`out`, emptied for the next): LZ4-compressed here, so the block's
    /// uncompressed bytes are not held while the insert waits for the connection to take it.
    async fn send_block(
        &self,
        insert: &mut clickhouse::insert_formatted::InsertFormatted,
        out: &mut Vec<u8>,
    ) -> Result<(), clickhouse::error::Error> {
        match self.cfg.compression {
            ChCompression::Lz4 => {
                let frame = self
                    .frames
                    .lz4(out)
                    .map_err(|e| clickhouse::error::Error::Compression(Box::new(e)))?;
                out.clear();
                insert.send(frame).await
            }
            ChCompression::None => insert.send(std::mem::take(out).into()).await,
        }
    }

    /// RowBinary rows of a decoded request, one `INSERT` per table (see `export_resuming`).
    async fn insert_decoded(&self, batch: &Telemetry, progress: &mut u64) -> Result<(), ExportError> {
        let t = &self.cfg.tables;
            match batch {
                Telemetry::Traces(r) => {
                    self.insert::<rows::SpanRow<'static>, _, _>(&t.traces, rows::span_rows(r))
                        .await?
                }
                Telemetry::Logs(r) => {
                    self.insert::<rows::LogRow<'static>, _, _>(&t.logs, rows::log_rows(r))
                        .await?
                }
                Telemetry::Profiles(r) => {
                    let p = rows::profile_rows(r);
                    self.insert_owned(&t.profiles, &p).await?
                }
                Telemetry::Metrics(r) => {
                    let m = rows::metric_rows(r);
                    if *progress & 1 == 0 {
                        self.insert::<rows::GaugeRow<'static>, _, _>(&t.metrics_gauge, m.gauge.iter()).await?;
                        *progress |= 1;
                    }
                    if *progress & 2 == 0 {
                        self.insert::<rows::SumRow<'static>, _, _>(&t.metrics_sum, m.sum.iter()).await?;
                        *progress |= 2;
                    }
                    if *progress & 4 == 0 {
                        self.insert::<rows::HistogramRow<'static>, _, _>(&t.metrics_histogram, m.histogram.iter()).await?;
                        *progress |= 4;
                    }
                    if *progress & 8 == 0 {
                        self.insert::<rows::ExpHistogramRow<'static>, _, _>(&t.metrics_exp_histogram, m.exp_histogram.iter())
                            .await?;
                        *progress |= 8;
                    }
                    if *progress & 16 == 0 {
                        self.insert::<rows::SummaryRow<'static>, _, _>(&t.metrics_summary, m.summary.iter()).await?;
                        *progress |= 16;
                    }
                }
                // `export_resuming` decodes first.
                Telemetry::Encoded(_) => {
                    return Err(ExportError::permanent(
                        "internal error: batch reached the ClickHouse exporter undecoded",
                    ))
                }
            }
        Ok(())
    }

    async fn insert_owned<T>(&self, table: &str, rows: &[T]) -> Result<(), ExportError>
    where
        T: RowOwned + RowWrite + Sync,
    {
        self.insert::<T, _, _>(table, rows.iter()).await
    }
}

/// Columns of a Native block above this size are sent and a new block is started: what bounds the
/// memory one insert holds, whatever the batch size.
pub const MAX_BLOCK_BYTES: usize = 1 << 20;

/// A table built from encoded requests (spans or logs), with its place in the buffer pool.
trait NativeRows: wire_rows::Table {
    /// Where finished inserts keep this kind's column sets.
    fn pool(b: &mut Buffers) -> &mut Vec<Self>;
}

impl NativeRows for wire_rows::SpanColumns {
    fn pool(b: &mut Buffers) -> &mut Vec<Self> {
        &mut b.spans
    }
}

impl NativeRows for wire_rows::LogColumns {
    fn pool(b: &mut Buffers) -> &mut Vec<Self> {
        &mut b.logs
    }
}

/// One request body re-encoded by `prost` (repeated singular fields merged).
fn canonical(signal: Signal, body: &[u8]) -> Result<bytes::Bytes, ExportError> {
    use prost::Message;
    let bad = |e: prost::DecodeError| ExportError::permanent(format!("cannot decode batch: {e}"));
    Ok(match signal {
        Signal::Traces => opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
            .map_err(bad)?
            .encode_to_vec(),
        _ => opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(body)
            .map_err(bad)?
            .encode_to_vec(),
    }
    .into())
}

impl Exporter for ClickhouseExporter {
    /// Creates the schema as soon as the exporter is live rather than before the first insert:
    /// the first batches then do not wait for the DDL (queueing up memory meanwhile), and a
    /// reload that is rejected after building this exporter creates nothing. A failure here is
    /// only logged; the first export tries again and reports it.
    fn start(self: Arc<Self>) {
        if !self.cfg.create_schema {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = self.ensure_schema().await {
                    tracing::warn!(endpoint = %sluice_config::redact::url(&self.cfg.endpoint), error = %err.message,
                        "cannot create the ClickHouse schema at start; retried before the first insert");
                }
            });
        }
    }

    /// Native inserts read spans and logs from the wire; everything else is decoded in `export`.
    fn needs_decoded(&self) -> bool {
        self.cfg.format == ChFormat::RowBinary
    }

    fn coalesce(&self) -> Option<Coalesce> {
        (self.cfg.min_insert_rows > 1).then_some(Coalesce {
            min_items: self.cfg.min_insert_rows,
            max_bytes: self.cfg.max_insert_bytes.0,
            max_delay: self.cfg.max_insert_delay.0,
        })
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let mut progress = 0;
            self.export_resuming(batch, &mut progress).await
        })
    }

    /// Metrics go to five tables, one `INSERT` each: `progress` has a bit per table already
    /// written, so a retry inserts only the tables that failed (no duplicate rows in the others).
    fn export_resuming<'a>(
        &'a self,
        batch: &'a Telemetry,
        progress: &'a mut u64,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            self.ensure_schema().await?;
            let t = &self.cfg.tables;
            let native = self.cfg.format == ChFormat::Native;
            match batch.signal() {
                Signal::Traces if native => {
                    self.insert_native::<wire_rows::SpanColumns>(&t.traces, Signal::Traces, batch)
                        .await?
                }
                Signal::Logs if native => {
                    self.insert_native::<wire_rows::LogColumns>(&t.logs, Signal::Logs, batch)
                        .await?
                }
                _ => {
                    let decoded = batch.decoded().map_err(|e| {
                        ExportError::permanent(format!("cannot decode batch: {e}"))
                    })?;
                    self.insert_decoded(decoded.as_ref(), progress).await?
                }
            }
            Ok(Delivered::ALL)
        })
    }
}

impl ExporterKind for ClickhouseExporterConfig {
    const TYPE: &'static str = "clickhouse";
    const DEFAULT_CONCURRENCY: usize = 4;

    fn validate(&self, problems: &mut Problems) {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            problems.at(
                "endpoint",
                format!(
                    "invalid endpoint {:?}; expected a URL such as \"http://127.0.0.1:8123\" (https:// for TLS)",
                    sluice_config::redact::url(&self.endpoint)
                ),
            );
        } else {
            let (endpoint, user, password) = split_credentials(&self.endpoint);
            if (user.is_some() && self.username.is_some())
                || (password.is_some() && self.password.is_some())
            {
                problems.at(
                    "endpoint",
                    "holds credentials and username/password are set too; give them once",
                );
            }
            for (key, msg) in crate::tls::problems(&endpoint, self.tls.as_ref()) {
                problems.at(&key, msg);
            }
        }
        let ident_ok =
            |s: &str| !s.is_empty() && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ident_ok(&self.database) {
            problems.at("database", "must be a plain identifier (letters, digits, _)");
        }
        if self.cluster.as_deref().is_some_and(|cl| !ident_ok(cl)) {
            problems.at("cluster", "must be a plain identifier (letters, digits, _)");
        }
        if !self.table_engine.contains("MergeTree") {
            problems.at(
                "table_engine",
                format!("expected a MergeTree-family engine, got {:?}", self.table_engine),
            );
        }
        for (signal, msg) in self.ttl.problems() {
            match signal {
                Some(s) => problems.at(&format!("ttl.{s}"), msg),
                None => problems.at("ttl", msg),
            }
        }
    }

    fn build(&self, _ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(ClickhouseExporter::new(self).map_err(|e| e.to_string())?))
    }
}

#[cfg(test)]
mod tests;
