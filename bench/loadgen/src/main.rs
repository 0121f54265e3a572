//! `sluice-loadgen`: sends realistic OTLP traces (or logs, or metrics) to a collector over gRPC or
//! HTTP at a fixed or maximal rate from N connections, and reports the achieved rate, accepted and
//! refused counts and latency percentiles as one JSON line.
//!
//! ```sh
//! sluice-loadgen --endpoint http://127.0.0.1:4317 --protocol grpc --spans-per-request 100 \
//!     --attributes 10 --connections 4 --duration 10s            # max rate
//! sluice-loadgen --protocol http --endpoint http://127.0.0.1:4318 --rate 100   # 100 requests/s
//! sluice-loadgen --protocol http --endpoint https://127.0.0.1:4318 --ca-file ca.pem   # over TLS
//! ```

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_loadgen::{logs, metrics, traces, Rng, Shape};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Protocol {
    Grpc,
    Http,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Signal {
    Traces,
    Logs,
    /// Delta histograms of `http_request_duration_seconds`, one item per data point.
    Metrics,
}

/// OTLP load generator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Collector endpoint: `http://host:4317` (gRPC) or `http://host:4318` (HTTP).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Transport.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// What to send.
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// Spans (or log records) per request.
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Attributes per span.
    #[arg(long, default_value_t = 0)]
    attributes: usize,
    /// Bytes per attribute value.
    #[arg(long, default_value_t = 32)]
    attribute_size: usize,
    /// Distinct service names.
    #[arg(long, default_value_t = 5)]
    services: usize,
    /// Share of spans with an error status.
    #[arg(long, default_value_t = 0.01)]
    error_ratio: f64,
    /// Requests per second over all connections; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// PEM CA to verify the collector's certificate with: connect over TLS (`https://` endpoint).
    /// gRPC uses tonic's rustls; HTTP one HTTP/1.1 connection per task (hyper + tokio-rustls).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

/// One HTTP/1.1 connection over TLS to `endpoint`, verified against the PEM CAs in `ca`.
async fn tls_http1(
    endpoint: &str,
    ca: &[u8],
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    use rustls::pki_types::pem::PemObject;
    let uri: http::Uri = endpoint.parse()?;
    let host = uri.host().context("endpoint has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca) {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

impl Args {
    fn shape(&self) -> Shape {
        Shape {
            spans_per_request: self.spans_per_request,
            attributes: self.attributes,
            attribute_size: self.attribute_size,
            services: self.services,
            error_ratio: self.error_ratio,
        }
    }
}

/// Accepted (true), refused with a retryable status (false), or failed.
fn grpc_outcome<T>(r: Result<T, tonic::Status>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
            ) =>
        {
            Ok(false)
        }
        Err(s) => Err(anyhow::anyhow!("{s}")),
    }
}

/// One POST over the TLS HTTP/1.1 connection: accepted (true), refused retryably (false), failed.
async fn tls_post(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: &str,
    body: bytes::Bytes,
) -> Result<bool> {
    use http_body_util::BodyExt;
    send.ready().await?;
    let req = http::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(body))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    match status.as_u16() {
        200..=299 => Ok(true),
        429 | 503 => Ok(false),
        s => Err(anyhow::anyhow!("HTTP {s}")),
    }
}

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Arc::new(Args::parse());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let shape = a.shape();
    type Pool = (
        ExportTraceServiceRequest,
        ExportLogsServiceRequest,
        ExportMetricsServiceRequest,
    );
    let pool: Vec<Pool> = (0..16)
        .map(|k| {
            (
                traces(&shape, &mut rng, k),
                logs(&shape, &mut rng, k),
                metrics(&shape, &mut rng, k),
            )
        })
        .collect();
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        pool.iter()
            .map(|(t, l, m)| match a.signal {
                Signal::Traces => t.encode_to_vec().into(),
                Signal::Logs => l.encode_to_vec().into(),
                Signal::Metrics => m.encode_to_vec().into(),
            })
            .collect(),
    );
    let pool = Arc::new(pool);
    let bytes_per_item = bodies[0].len() as f64 / a.spans_per_request.max(1) as f64;
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let per_conn_interval =
        (a.rate > 0.0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate));
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let (a, bodies, pool, totals) = (a.clone(), bodies.clone(), pool.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let http = reqwest::Client::new();
            let path = match a.signal {
                Signal::Traces => "/v1/traces",
                Signal::Logs => "/v1/logs",
                Signal::Metrics => "/v1/metrics",
            };
            let url = format!("{}{path}", a.endpoint.trim_end_matches('/'));
            let ca = match &a.ca_file {
                Some(p) => Some(std::fs::read(p).context("ca-file")?),
                None => None,
            };
            let channel = match a.protocol {
                Protocol::Grpc => {
                    let mut ep = tonic::transport::Endpoint::from_shared(a.endpoint.clone())?;
                    if let Some(ca) = &ca {
                        ep = ep.tls_config(
                            tonic::transport::ClientTlsConfig::new()
                                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                        )?;
                    }
                    Some(ep.connect().await.context("connect")?)
                }
                Protocol::Http => None,
            };
            let mut tls_http = match (&ca, a.protocol) {
                (Some(ca), Protocol::Http) => Some(tls_http1(&a.endpoint, ca).await?),
                _ => None,
            };
            let mut i = c;
            let mut next = Instant::now();
            while start.elapsed() < a.duration {
                let t0 = Instant::now();
                let outcome: Result<bool> = match (&channel, a.signal) {
                    (Some(ch), Signal::Traces) => grpc_outcome(
                        TraceServiceClient::new(ch.clone())
                            .export(pool[i % pool.len()].0.clone())
                            .await,
                    ),
                    (Some(ch), Signal::Logs) => grpc_outcome(
                        LogsServiceClient::new(ch.clone())
                            .export(pool[i % pool.len()].1.clone())
                            .await,
                    ),
                    (Some(ch), Signal::Metrics) => grpc_outcome(
                        MetricsServiceClient::new(ch.clone())
                            .export(pool[i % pool.len()].2.clone())
                            .await,
                    ),
                    (None, _) if tls_http.is_some() => {
                        let body = bodies[i % bodies.len()].clone();
                        match tls_http.as_mut() {
                            Some(send) => tls_post(send, path, body).await,
                            None => Err(anyhow::anyhow!("no connection")),
                        }
                    }
                    (None, _) => match http
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => Ok(true),
                        Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                            Ok(false)
                        }
                        Ok(r) => Err(anyhow::anyhow!("HTTP {}", r.status())),
                        Err(e) => Err(e.into()),
                    },
                };
                latencies.push(t0.elapsed());
                match outcome {
                    Ok(true) => totals.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => totals.refused.fetch_add(1, Ordering::Relaxed),
                    Err(_) => totals.errors.fetch_add(1, Ordering::Relaxed),
                };
                i += a.connections;
                if let Some(iv) = per_conn_interval {
                    next += iv;
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let ok = totals.ok.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "requests_ok": ok,
        "requests_refused": totals.refused.load(Ordering::Relaxed),
        "requests_failed": totals.errors.load(Ordering::Relaxed),
        "items_ok": ok * a.spans_per_request as u64,
        "items_per_s": (ok * a.spans_per_request as u64) as f64 / secs,
        "bytes_per_item": bytes_per_item,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "seconds": secs,
    });
    println!("{report}");
    Ok(())
}
