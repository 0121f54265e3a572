//! The OTLP receiver: gRPC (4317) and HTTP (4318) for traces, metrics, logs and profiles.

pub mod decode;
pub mod grpc;
pub mod http;

pub mod config;

pub use config::OtlpReceiverConfig;

use crate::ingest::Ingest;
use crate::listener::{Flavor, Listener, Security};
use sluice_core::component::{Problems, Receiver, ReceiverContext, ReceiverError, ReceiverKind};
use sluice_core::{BoxFuture, Signal};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Errors starting or running an OTLP receiver.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The HTTP server failed.
    #[error("receiver {0}: HTTP server failed: {1}")]
    Http(String, std::io::Error),
}

/// An OTLP receiver whose sockets are bound (so address conflicts fail at start-up).
pub struct OtlpReceiver {
    name: String,
    grpc: Option<Listener>,
    http: Option<Listener>,
    security: Arc<Security>,
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
        crate::listener::config::validate(
            &self.limits,
            self.tls.as_ref(),
            self.auth.as_ref(),
            self.accept_timeout.0,
            problems,
        );
    }

    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String> {
        let security = Security::new(self.tls.as_ref(), self.auth.as_ref())?;
        let mut listen = |addr: Option<sluice_config::ListenAddr>, what: &'static str, flavor| {
            addr.map(|a| {
                let tcp = ctx
                    .listen(a.0)
                    .map_err(|e| format!("cannot listen on {a} ({what}): {e}"))?;
                Ok::<_, String>(Listener::new(
                    tcp,
                    ctx.name,
                    what,
                    flavor,
                    &self.limits,
                    security.clone(),
                    ctx.metrics,
                ))
            })
            .transpose()
        };
        let grpc = listen(self.grpc, "grpc", Flavor::Grpc)?;
        let http = listen(self.http, "http", Flavor::Http)?;
        Ok(Box::new(OtlpReceiver {
            name: ctx.name.to_owned(),
            grpc,
            http,
            security,
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
            security,
            ingest,
            max_request_size,
        } = self;
        if let Some(l) = &grpc {
            tracing::info!(receiver = %name, addr = %l.local_addr(), tls = l.is_tls(), "OTLP/gRPC listening");
        }
        if let Some(l) = &http {
            tracing::info!(receiver = %name, addr = %l.local_addr(), tls = l.is_tls(), "OTLP/HTTP listening");
        }
        tokio::spawn(security.watch(name.clone(), shutdown.clone()));
        let g = {
            let (ingest, shutdown) = (ingest.clone(), shutdown.clone());
            async move {
                if let Some(l) = grpc {
                    grpc::serve(l, ingest, max_request_size, shutdown).await;
                }
                Ok::<(), OtlpError>(())
            }
        };
        let h = async move {
            if let Some(l) = http {
                http::serve(l, ingest, max_request_size, shutdown).await;
            }
            Ok::<(), OtlpError>(())
        };
        let (a, b) = tokio::join!(g, h);
        a?;
        b
    }
}
