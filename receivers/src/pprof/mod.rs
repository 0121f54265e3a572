//! The pprof receiver: Pyroscope's push API `POST /push.v1.PusherService/Push` (connect protocol,
//! what current Pyroscope SDKs and Grafana Alloy send; see [`push`]), the older Pyroscope
//! `POST /ingest?name=app{k=v}&from=&until=&format=pprof` (raw body or multipart with a `profile`
//! field) and a plain `POST /v1/pprof?service=app&k=v`. Profiles are gzipped or raw pprof
//! protobuf (detected by magic bytes); they are converted to OTLP profiles and enter pipelines
//! like any other signal.

pub mod config;
pub mod convert;
pub mod proto;
pub mod push;

use crate::ingest::{Ingest, IngestError};
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use convert::{Meta, PprofError};
pub use config::PprofReceiverConfig;
use sluice_core::component::{Problems, Receiver, ReceiverContext, ReceiverError, ReceiverKind};
use sluice_core::{BoxFuture, Signal, Telemetry};
use std::net::SocketAddr;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Profile-type suffixes Pyroscope clients append to the application name.
const TYPE_SUFFIXES: &[&str] = &[
    ".cpu",
    ".itimer",
    ".wall",
    ".alloc_objects",
    ".alloc_space",
    ".inuse_objects",
    ".inuse_space",
    ".goroutines",
    ".mutex_count",
    ".mutex_duration",
    ".block_count",
    ".block_duration",
    ".alloc_in_new_tlab_objects",
    ".alloc_in_new_tlab_bytes",
    ".lock_count",
    ".lock_duration",
];

/// Splits Pyroscope's `name=app.cpu{env=prod,region=eu}` into a service name and labels.
pub fn parse_name(name: &str) -> (String, Vec<(String, String)>) {
    let (app, labels) = match name.split_once('{') {
        Some((app, rest)) => (app, rest.trim_end_matches('}')),
        None => (name, ""),
    };
    let app = TYPE_SUFFIXES
        .iter()
        .find_map(|s| app.strip_suffix(s))
        .unwrap_or(app);
    let labels = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty() && k != "__name__")
        .collect();
    (app.trim().to_owned(), labels)
}

struct Shared {
    ingest: Ingest,
    limit: usize,
}

/// The pprof routes, for serving and for handler tests.
pub fn app(ingest: Ingest, limit: usize) -> Router {
    Router::new()
        .route("/ingest", post(ingest_pyroscope))
        .route("/v1/pprof", post(ingest_raw))
        .route(push::PATH, post(push::push))
        .fallback(|s, m, u| unrouted(s, m, u, StatusCode::NOT_FOUND))
        .method_not_allowed_fallback(|s, m, u| unrouted(s, m, u, StatusCode::METHOD_NOT_ALLOWED))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(Arc::new(Shared { ingest, limit }))
}

/// What this receiver serves, told to a client that asked for something else.
const SERVES: &str = "this pprof receiver serves POST /push.v1.PusherService/Push (Pyroscope push API, connect protocol), POST /ingest (Pyroscope, format=pprof) and POST /v1/pprof";

async fn unrouted(
    State(st): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    code: StatusCode,
) -> Response {
    st.ingest.unrouted(method.as_str(), uri.path());
    crate::ingest::not_served(code, &method, uri.path(), SERVES)
}

fn error(code: StatusCode, msg: String) -> Response {
    let mut r = (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg + "\n",
    )
        .into_response();
    if code == StatusCode::SERVICE_UNAVAILABLE {
        // Retryable refusals (pipelines full, memory budget): tell the client when to come back.
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn accept(st: &Shared, body: &[u8], meta: Meta) -> Response {
    let handling = accept_inner(st, body, meta);
    match st
        .ingest
        .guard(Signal::Profiles, body.len(), "pprof", handling)
        .await
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error(e.http_status(), e.to_string()),
    }
}

async fn accept_inner(st: &Shared, body: &[u8], meta: Meta) -> Result<(), IngestError> {
    let refuse = |e: IngestError| {
        st.ingest.refused(Signal::Profiles, 0, &e);
        e
    };
    if !st.ingest.accepts(Signal::Profiles) {
        return Err(refuse(IngestError::NoPipeline(
            "no pipeline accepts profiles from this receiver".into(),
        )));
    }
    let mut charge = st
        .ingest
        .admit(Signal::Profiles, body.len())
        .map_err(refuse)?;
    let (profile, size) = convert::decode_sized(body, st.limit).map_err(|e| {
        refuse(match e {
            PprofError::TooLarge(_) => IngestError::TooLarge(e.to_string()),
            _ => IngestError::Malformed(e.to_string()),
        })
    })?;
    st.ingest
        .resize(
            Signal::Profiles,
            &mut charge,
            convert::memory_bound(size),
            "converted profile",
        )
        .map_err(refuse)?;
    let request = convert::to_otlp_sized(&profile, size, &meta)
        .map_err(|e| refuse(IngestError::Malformed(e.to_string())))?;
    drop(profile);
    st.ingest
        .ingest(Telemetry::Profiles(Box::new(request)), charge)
        .await
        .map(|_| ())
}

async fn ingest_pyroscope(
    State(st): State<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    if let Some(f) = q.get("format").filter(|f| !f.is_empty() && *f != "pprof") {
        let msg = format!("unsupported format {f:?}: this endpoint accepts format=pprof (gzipped or raw protobuf)");
        st.ingest
            .refused(Signal::Profiles, 0, &IngestError::Unsupported(msg.clone()));
        return error(StatusCode::BAD_REQUEST, msg);
    }
    let (service, labels) = parse_name(q.get("name").map(String::as_str).unwrap_or(""));
    let meta = Meta {
        service: if service.is_empty() {
            "unknown_service".into()
        } else {
            service
        },
        labels,
        from: q.get("from").and_then(|v| v.parse().ok()),
        until: q.get("until").and_then(|v| v.parse().ok()),
        spy_name: q.get("spyName").cloned(),
        sample_rate: q.get("sampleRate").and_then(|v| v.parse().ok()),
        ..Default::default()
    };
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let body = if multipart {
        let mut form = match Multipart::from_request(req, &()).await {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
        };
        let mut profile = None;
        loop {
            match form.next_field().await {
                Ok(Some(field)) if field.name() == Some("profile") => match field.bytes().await {
                    Ok(b) => profile = Some(b),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("cannot read the profile field: {e}"),
                        )
                    }
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}"))
                }
            }
        }
        match profile {
            Some(p) => p,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "multipart body has no `profile` field".into(),
                )
            }
        }
    } else {
        match axum::body::to_bytes(req.into_body(), st.limit).await {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body exceeds max_request_size ({} bytes)", st.limit),
                )
            }
        }
    };
    accept(&st, &body, meta).await
}

async fn ingest_raw(
    State(st): State<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let service = q
        .get("service")
        .or_else(|| q.get("service.name"))
        .cloned()
        .unwrap_or_else(|| "unknown_service".into());
    let labels = q
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "service" | "service.name"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    accept(
        &st,
        &body,
        Meta {
            service,
            labels,
            ..Default::default()
        },
    )
    .await
}

/// A pprof receiver whose socket is bound.
pub struct PprofReceiver {
    name: String,
    listener: TcpListener,
    ingest: Ingest,
    limit: usize,
}

impl ReceiverKind for PprofReceiverConfig {
    const TYPE: &'static str = "pprof";

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Profiles]
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("http", self.http.0)]
    }

    fn validate(&self, problems: &mut Problems) {
        if self.max_request_size.0 == 0 {
            problems.at("max_request_size", "must be greater than 0");
        }
    }

    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String> {
        let listener = ctx
            .listen(self.http.0)
            .map_err(|e| format!("cannot listen on {} (http): {e}", self.http))?;
        Ok(Box::new(PprofReceiver {
            name: ctx.name.to_owned(),
            listener,
            ingest: Ingest::new(
                ctx.name,
                ctx.routes.clone(),
                self.accept_timeout.0,
                ctx.metrics,
                ctx.budget.clone(),
            ),
            limit: self.max_request_size.as_usize(),
        }))
    }
}

impl Receiver for PprofReceiver {
    fn run(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, Result<(), ReceiverError>> {
        Box::pin(async move { (*self).run(shutdown).await.map_err(Into::into) })
    }
}

impl PprofReceiver {
    /// Serves until `shutdown`; in-flight requests finish first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), crate::otlp::OtlpError> {
        tracing::info!(receiver = %self.name, addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "pprof HTTP listening");
        axum::serve(self.listener, app(self.ingest, self.limit))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| crate::otlp::OtlpError::Http(self.name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyroscope_names() {
        assert_eq!(
            parse_name("myapp.cpu{env=prod, region=eu}"),
            (
                "myapp".into(),
                vec![
                    ("env".into(), "prod".into()),
                    ("region".into(), "eu".into())
                ]
            )
        );
        assert_eq!(
            parse_name("simple.golang.app"),
            ("simple.golang.app".into(), vec![])
        );
        assert_eq!(parse_name("svc.inuse_space{}"), ("svc".into(), vec![]));
    }

    #[test]
    fn sample_cpu_converts_with_every_sample_and_value() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/pprof/sample.cpu"
        ))
        .unwrap();
        let p = convert::decode(&body, 64 << 20).unwrap();
        let req = convert::to_otlp(
            &p,
            &Meta {
                service: "s".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let profiles = &req.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(profiles.len(), 2);
        let totals: Vec<i64> = profiles
            .iter()
            .map(|p| p.samples.iter().map(|s| s.values[0]).sum())
            .collect();
        assert_eq!(totals, vec![176, 1_760_000_000]);
        assert!(profiles
            .iter()
            .all(|p| p.samples.len() == 76 && p.period == 10_000_000));
    }

    #[test]
    fn legacy_and_garbage_are_not_pprof() {
        for f in ["go.crc32.cpu", "gobench.heap", "cppbench.contention"] {
            let body = std::fs::read(format!(
                "{}/../tests/fixtures/pprof/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert!(
                matches!(
                    convert::decode(&body, 64 << 20),
                    Err(PprofError::NotPprof(_))
                ),
                "{f}"
            );
        }
        assert!(convert::decode(b"hello world", 1 << 20).is_err());
    }
}
