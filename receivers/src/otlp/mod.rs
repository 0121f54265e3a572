//! The OTLP receiver: gRPC (4317) and HTTP (4318) for traces, metrics, logs and profiles.

pub mod decode;
pub mod grpc;
pub mod http;

pub mod config;

pub use config::OtlpReceiverConfig;

use crate::ingest::Ingest;
use sluice_core::component::{Problems, Receiver, ReceiverContext, ReceiverError, ReceiverKind};
use sluice_core::{BoxFuture, Signal};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors starting or running an OTLP receiver.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The gRPC server failed.
    #[error("receiver {0}: gRPC server failed: {1}")]
    Grpc(String, tonic::transport::Error),
    /// The HTTP server failed.
    #[error("receiver {0}: HTTP server failed: {1}")]
    Http(String, std::io::Error),
}

/// An OTLP receiver whose sockets are bound (so address conflicts fail at start-up).
pub struct OtlpReceiver {
    name: String,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    ingest: Ingest,
    max_request_size: usize,
}

impl ReceiverKind for OtlpReceiverConfig {
    const TYPE: &'static str = "otlp";

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        [("grpc", self.grpc), ("http", self.http)]
            .into_iter()
            .filter_map(|(k, a)| a.map(|a| (k, a.0)))
            .collect()
    }

    fn validate(&self, problems: &mut Problems) {
        if self.grpc.is_none() && self.http.is_none() {
            problems.at(
                "",
                "an otlp receiver needs `grpc` and/or `http` listen addresses",
            );
        }
        if self.max_request_size.0 == 0 {
            problems.at("max_request_size", "must be greater than 0");
        }
    }

    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String> {
        let mut listen = |addr: Option<sluice_config::ListenAddr>, what: &str| {
            addr.map(|a| {
                ctx.listen(a.0)
                    .map_err(|e| format!("cannot listen on {a} ({what}): {e}"))
            })
            .transpose()
        };
        let grpc = listen(self.grpc, "grpc")?;
        let http = listen(self.http, "http")?;
        Ok(Box::new(OtlpReceiver {
            name: ctx.name.to_owned(),
            grpc,
            http,
            ingest: Ingest::new(
                ctx.name,
                ctx.routes.clone(),
                self.accept_timeout.0,
                ctx.metrics,
                ctx.budget.clone(),
            ),
            max_request_size: self.max_request_size.as_usize(),
        }))
    }
}

impl Receiver for OtlpReceiver {
    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, Result<(), ReceiverError>> {
        Box::pin(async move { (*self).run(shutdown).await.map_err(Into::into) })
    }
}

impl OtlpReceiver {
    /// Serves until `shutdown`, then lets in-flight requests finish; returns when both servers stopped.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OtlpError> {
        let Self {
            name,
            grpc,
            http,
            ingest,
            max_request_size,
        } = self;
        if let Some(l) = &grpc {
            tracing::info!(receiver = %name, addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "OTLP/gRPC listening");
        }
        if let Some(l) = &http {
            tracing::info!(receiver = %name, addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "OTLP/HTTP listening");
        }
        let g = {
            let (ingest, shutdown, name) = (ingest.clone(), shutdown.clone(), name.clone());
            async move {
                match grpc {
                    Some(l) => grpc::serve(l, ingest, max_request_size, shutdown)
                        .await
                        .map_err(|e| OtlpError::Grpc(name, e)),
                    None => Ok(()),
                }
            }
        };
        let h = {
            let name = name.clone();
            async move {
                match http {
                    Some(l) => http::serve(l, ingest, max_request_size, shutdown)
                        .await
                        .map_err(|e| OtlpError::Http(name, e)),
                    None => Ok(()),
                }
            }
        };
        let (a, b) = tokio::join!(g, h);
        a?;
        b
    }
}
