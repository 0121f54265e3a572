//! The OTLP receiver: gRPC (4317) and HTTP (4318) for traces, metrics, logs and profiles.

pub mod decode;
pub mod grpc;
pub mod http;

use crate::ingest::Ingest;
use sluice_config::OtlpReceiverConfig;
use sluice_core::{Metrics, PipelineInput};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors starting or running an OTLP receiver.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A listen address could not be bound.
    #[error("receiver {receiver}: cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Receiver name.
        receiver: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// grpc or http.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
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

impl OtlpReceiver {
    /// Binds the configured addresses.
    pub async fn bind(
        name: &str,
        cfg: &OtlpReceiverConfig,
        input: PipelineInput,
        metrics: &Metrics,
    ) -> Result<Self, OtlpError> {
        async fn listen(
            name: &str,
            addr: Option<sluice_config::ListenAddr>,
            what: &'static str,
        ) -> Result<Option<TcpListener>, OtlpError> {
            match addr {
                None => Ok(None),
                Some(a) => {
                    TcpListener::bind(a.0)
                        .await
                        .map(Some)
                        .map_err(|source| OtlpError::Bind {
                            receiver: name.to_owned(),
                            addr: a.0,
                            what,
                            source,
                        })
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            grpc: listen(name, cfg.grpc, "grpc").await?,
            http: listen(name, cfg.http, "http").await?,
            ingest: Ingest::new(name, input, cfg.accept_timeout.0, metrics),
            max_request_size: cfg.max_request_size.as_usize(),
        })
    }

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
