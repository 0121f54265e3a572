//! OTLP/gRPC: the four collector services on one tonic server.
//!
//! The services are written out here rather than taken from `opentelemetry-proto`'s generated
//! servers, whose codec decodes every request in full: these take the message as bytes
//! ([`BytesCodec`]) and hand it to [`decode_protobuf`], which keeps checked traces and logs encoded.

use super::decode::{decode_charged, Format};
use crate::ingest::{responses, Ingest, IngestError};
use bytes::Bytes;
use prost::Message;
use sluice_core::grpc_codec::BytesCodec;
use sluice_core::Signal;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// Marks a status as the handler's own answer (already counted), so [`EarlyRefusals`] can tell
/// it from tonic's refusals without reading the message; removed before the response leaves.
const HANDLED: &str = "x-sluice-handled";

fn status(e: IngestError) -> Status {
    let mut s = Status::new(e.grpc_code(), e.to_string());
    s.metadata_mut()
        .insert(HANDLED, tonic::metadata::MetadataValue::from_static("1"));
    s
}

/// One OTLP collector service, named for tonic's router.
trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const EXPORT: &'static str;
    const SIGNAL: Signal;
}

macro_rules! otlp_service {
    ($ty:ident, $signal:ident, $name:literal) => {
        struct $ty;
        impl OtlpService for $ty {
            const NAME: &'static str = $name;
            const EXPORT: &'static str = concat!("/", $name, "/Export");
            const SIGNAL: Signal = Signal::$signal;
        }
    };
}
otlp_service!(
    TraceSvc,
    Traces,
    "opentelemetry.proto.collector.trace.v1.TraceService"
);
otlp_service!(
    MetricsSvc,
    Metrics,
    "opentelemetry.proto.collector.metrics.v1.MetricsService"
);
otlp_service!(
    LogsSvc,
    Logs,
    "opentelemetry.proto.collector.logs.v1.LogsService"
);
otlp_service!(
    ProfilesSvc,
    Profiles,
    "opentelemetry.proto.collector.profiles.v1development.ProfilesService"
);

/// The tower service behind one OTLP gRPC service path.
struct Server<S> {
    ingest: Ingest,
    max_request_size: usize,
    /// Request encodings taken (gzip, zstd) and the one responses may use (gzip), set up once.
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
    _service: PhantomData<fn() -> S>,
}

impl<S> Server<S> {
    fn new(ingest: &Ingest, max_request_size: usize) -> Self {
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Gzip);
        accept.enable(CompressionEncoding::Zstd);
        let mut send = EnabledCompressionEncodings::default();
        send.enable(CompressionEncoding::Gzip);
        Self {
            ingest: ingest.clone(),
            max_request_size,
            accept,
            send,
            _service: PhantomData,
        }
    }
}

impl<S> Clone for Server<S> {
    fn clone(&self) -> Self {
        Self {
            ingest: self.ingest.clone(),
            max_request_size: self.max_request_size,
            accept: self.accept,
            send: self.send,
            _service: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for Server<S> {
    const NAME: &'static str = S::NAME;
}

/// The `Export` call: bytes in, response bytes out.
struct Export {
    ingest: Ingest,
    signal: Signal,
}

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (ingest, signal) = (self.ingest.clone(), self.signal);
        Box::pin(async move {
            let body = req.into_inner();
            let size = body.len();
            let handling = async {
                let refuse = |e: IngestError| {
                    ingest.refused(signal, 0, &e);
                    e
                };
                let mut charge = ingest.admit(signal, body.len()).map_err(refuse)?;
                let data = decode_charged(&ingest, signal, Format::Protobuf, body, &mut charge)
                    .map_err(refuse)?;
                ingest.ingest(data, charge).await
            };
            let p = ingest
                .guard(signal, size, "OTLP/gRPC", handling)
                .await
                .map_err(status)?;
            let body = match signal {
                Signal::Traces => responses::traces(p).encode_to_vec(),
                Signal::Metrics => responses::metrics(p).encode_to_vec(),
                Signal::Logs => responses::logs(p).encode_to_vec(),
                Signal::Profiles => responses::profiles(p).encode_to_vec(),
            };
            Ok(Response::new(Bytes::from(body)))
        })
    }
}

impl<S, B> tower::Service<http::Request<B>> for Server<S>
where
    S: OtlpService,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != S::EXPORT {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let export = Export {
            ingest: self.ingest.clone(),
            signal: S::SIGNAL,
        };
        let (accept, send, max) = (self.accept, self.send, self.max_request_size);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec)
                .apply_compression_config(accept, send)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(export, req).await)
        })
    }
}

/// tonic refuses some messages before any handler runs: one over the size limit with OUT_OF_RANGE
/// (RESOURCE_EXHAUSTED when it inflates past the limit), one it cannot decompress or frame with
/// INTERNAL. OTLP clients expect RESOURCE_EXHAUSTED and INVALID_ARGUMENT (both: do not retry as
/// is). Returns the refusal to count, or `None` for the handler's own answers (marked
/// [`HANDLED`], counted where they were made) and for anything else.
fn tonic_refusal_as_otlp_expects(
    resp: &mut http::Response<tonic::body::Body>,
) -> Option<IngestError> {
    if resp.headers_mut().remove(HANDLED).is_some() {
        return None;
    }
    let (code, err) = match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"11" | b"8") => (
            "8",
            IngestError::TooLarge("gRPC message over max_request_size".into()),
        ),
        Some(b"13") => (
            "3",
            IngestError::Malformed("undecodable gRPC message".into()),
        ),
        _ => return None,
    };
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from_static(code));
    Some(err)
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
        let path = req.uri().path();
        let signal = match path {
            TraceSvc::EXPORT => Some(TraceSvc::SIGNAL),
            MetricsSvc::EXPORT => Some(MetricsSvc::SIGNAL),
            LogsSvc::EXPORT => Some(LogsSvc::SIGNAL),
            ProfilesSvc::EXPORT => Some(ProfilesSvc::SIGNAL),
            _ => None,
        };
        // A method this server does not have: tonic answers UNIMPLEMENTED; counted and logged
        // like an unknown HTTP path.
        let unknown = signal.is_none().then(|| path.to_owned());
        let fut = self.inner.call(req);
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(path) = unknown {
                if resp.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"12") {
                    ingest.unrouted("POST", &path);
                }
            }
            if let Some(err) = tonic_refusal_as_otlp_expects(&mut resp) {
                if let Some(signal) = signal {
                    ingest.refused(signal, 0, &err);
                }
            }
            Ok(resp)
        })
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown`; in-flight calls finish first.
pub async fn serve(
    listener: crate::listener::Listener,
    ingest: Ingest,
    max_request_size: usize,
    shutdown: CancellationToken,
) {
    // Every service is served whatever the routes are now: a reload may add a pipeline for a
    // signal later; until then its requests are refused as UNIMPLEMENTED (and counted).
    let routes = tonic::service::Routes::default()
        .add_service(Server::<TraceSvc>::new(&ingest, max_request_size))
        .add_service(Server::<MetricsSvc>::new(&ingest, max_request_size))
        .add_service(Server::<LogsSvc>::new(&ingest, max_request_size))
        .add_service(Server::<ProfilesSvc>::new(&ingest, max_request_size))
        .prepare();
    let svc = EarlyRefusals {
        inner: routes,
        ingest,
    };
    listener.serve(svc, shutdown).await;
}
