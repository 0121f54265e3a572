//! OTLP/gRPC: the four collector services on one tonic server.

use crate::ingest::{responses, Ingest, IngestError, Partial};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use sluice_core::Telemetry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// The gRPC side of an OTLP receiver.
#[derive(Clone)]
struct Grpc {
    ingest: Ingest,
}

fn status(e: IngestError) -> Status {
    match e {
        IngestError::Malformed(m) => Status::invalid_argument(m),
        IngestError::TooLarge(m) => Status::resource_exhausted(m),
        IngestError::Unsupported(m) => Status::invalid_argument(m),
        IngestError::NoPipeline(m) => Status::unimplemented(m),
        IngestError::Unavailable(m) => Status::unavailable(m),
    }
}

impl Grpc {
    async fn run(&self, data: Telemetry) -> Result<Partial, Status> {
        self.ingest.ingest(data).await.map_err(status)
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let p = self.run(Telemetry::Traces(req.into_inner())).await?;
        Ok(Response::new(responses::traces(p)))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let p = self.run(Telemetry::Metrics(req.into_inner())).await?;
        Ok(Response::new(responses::metrics(p)))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let p = self.run(Telemetry::Logs(req.into_inner())).await?;
        Ok(Response::new(responses::logs(p)))
    }
}

#[tonic::async_trait]
impl ProfilesService for Grpc {
    async fn export(
        &self,
        req: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        let p = self
            .run(Telemetry::Profiles(Box::new(req.into_inner())))
            .await?;
        Ok(Response::new(responses::profiles(p)))
    }
}

/// tonic answers an over-limit message with OUT_OF_RANGE and an undecodable one with INTERNAL;
/// OTLP clients expect RESOURCE_EXHAUSTED and INVALID_ARGUMENT (both: do not retry as is).
fn client_errors_as_otlp_expects(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let msg = resp
        .headers()
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    let rewrite = match resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        Some("11") if msg.contains("too%20large") || msg.contains("too large") => Some("8"),
        Some("13") if msg.contains("decode") => Some("3"),
        _ => None,
    };
    if let Some(code) = rewrite {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(code));
    }
    resp
}

/// Rewrites tonic's early errors (see above) and counts them as refused requests: tonic refuses
/// undecodable and oversize messages before any handler runs, so nothing else would.
#[derive(Clone)]
struct EarlyRefusals<S> {
    inner: S,
    ingest: Ingest,
}

impl<S, B> tower::Service<http::Request<B>> for EarlyRefusals<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use sluice_core::Signal;
        let path = req.uri().path();
        let signal = [
            ("TraceService", Signal::Traces),
            ("MetricsService", Signal::Metrics),
            ("LogsService", Signal::Logs),
            ("ProfilesService", Signal::Profiles),
        ]
        .into_iter()
        .find_map(|(svc, sig)| path.contains(svc).then_some(sig));
        let fut = self.inner.call(req);
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let resp = client_errors_as_otlp_expects(fut.await?);
            // Handlers only ever answer UNAVAILABLE/UNIMPLEMENTED (counted where they happen):
            // INVALID_ARGUMENT and RESOURCE_EXHAUSTED here come from tonic's decoding.
            let status = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok());
            if let (Some(signal), Some(code @ ("3" | "8"))) = (signal, status) {
                let err = if code == "3" {
                    IngestError::Malformed("undecodable gRPC message".into())
                } else {
                    IngestError::TooLarge("gRPC message over max_request_size".into())
                };
                ingest.refused(signal, 0, &err);
            }
            Ok(resp)
        })
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown`; in-flight calls finish first.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    max_request_size: usize,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = Grpc {
        ingest: ingest.clone(),
    };
    macro_rules! server {
        ($s:ident) => {
            $s::new(svc.clone())
                .max_decoding_message_size(max_request_size)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
        };
    }
    let early = ingest.clone();
    let layer = tower::layer::layer_fn(move |inner| EarlyRefusals {
        inner,
        ingest: early.clone(),
    });
    let mut router = tonic::transport::Server::builder()
        .layer(layer)
        .add_routes(tonic::service::Routes::default());
    use sluice_core::Signal;
    if ingest.accepts(Signal::Traces) {
        router = router.add_service(server!(TraceServiceServer));
    }
    if ingest.accepts(Signal::Metrics) {
        router = router.add_service(server!(MetricsServiceServer));
    }
    if ingest.accepts(Signal::Logs) {
        router = router.add_service(server!(LogsServiceServer));
    }
    if ingest.accepts(Signal::Profiles) {
        router = router.add_service(server!(ProfilesServiceServer));
    }
    drop(svc);
    drop(ingest);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
