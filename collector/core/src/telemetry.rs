//! The unit of data that flows through pipelines: one OTLP export request of one signal.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use sluice_config::Signal;

/// Why a request could not be turned into another form.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An encoded request did not decode (cannot happen for bodies that passed the check).
    #[error("cannot decode OTLP protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// JSON serialization failed.
    #[error("cannot write OTLP/JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One OTLP request, kept in the `opentelemetry-proto` types so nothing is translated twice.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
    /// Profiles (OTLP `v1development`).
    Profiles(Box<ExportProfilesServiceRequest>),
    /// A traces or logs request still in OTLP protobuf, checked at the door by [`crate::wire`]:
    /// forwarding and counting it needs no decode, and queues hold a fifth of the memory.
    Encoded(Encoded),
}

/// OTLP protobuf of one signal that `prost` is known to decode, with its items counted.
///
/// Concatenated protobuf messages decode as one message whose repeated fields are appended, so a
/// batch of encoded requests is just the list of their bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    signal: Signal,
    chunks: Vec<Bytes>,
    /// Items in each chunk.
    chunk_items: Vec<u64>,
    items: u64,
    len: usize,
}

impl Encoded {
    /// Wraps a request body the caller checked with [`crate::wire::check`], which counted `items`.
    pub fn new(signal: Signal, body: Bytes, items: u64) -> Self {
        Self {
            signal,
            len: body.len(),
            chunks: vec![body],
            chunk_items: vec![items],
            items,
        }
    }

    /// Checks `body` and keeps it encoded, or says that the full decoder must look at it.
    pub fn check(signal: Signal, body: Bytes) -> Result<Self, Bytes> {
        match crate::wire::check(signal, &body) {
            Ok(items) => Ok(Self::new(signal, body, items)),
            Err(_) => Err(body),
        }
    }

    /// Which signal the bodies carry.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The bodies, in order, with the items each holds; their concatenation is the request.
    pub fn chunks_with_items(&self) -> impl Iterator<Item = (&Bytes, u64)> {
        self.chunks.iter().zip(self.chunk_items.iter().copied())
    }

    fn decode(&self) -> Result<Telemetry, prost::DecodeError> {
        use prost::Message;
        fn merge<M: Message + Default>(chunks: &[Bytes]) -> Result<M, prost::DecodeError> {
            let mut m = M::default();
            for c in chunks {
                m.merge(c.as_ref())?;
            }
            Ok(m)
        }
        Ok(match self.signal {
            Signal::Traces => Telemetry::Traces(merge(&self.chunks)?),
            Signal::Metrics => Telemetry::Metrics(merge(&self.chunks)?),
            Signal::Logs => Telemetry::Logs(merge(&self.chunks)?),
            Signal::Profiles => Telemetry::Profiles(Box::new(merge(&self.chunks)?)),
        })
    }
}

impl Telemetry {
    /// Which signal this is.
    pub fn signal(&self) -> Signal {
        match self {
            Self::Traces(_) => Signal::Traces,
            Self::Metrics(_) => Signal::Metrics,
            Self::Logs(_) => Signal::Logs,
            Self::Profiles(_) => Signal::Profiles,
            Self::Encoded(e) => e.signal,
        }
    }

    /// The request in `opentelemetry-proto` types, decoding it if it is still encoded (processors
    /// and exporters that read fields call this; the decode cannot fail for checked bodies).
    pub fn into_decoded(self) -> Result<Self, prost::DecodeError> {
        match self {
            Self::Encoded(e) => e.decode(),
            other => Ok(other),
        }
    }

    /// Decodes an encoded request where it is; on error it stays encoded (and is still valid data).
    pub fn decode_in_place(&mut self) -> Result<(), prost::DecodeError> {
        if let Self::Encoded(e) = self {
            *self = e.decode()?;
        }
        Ok(())
    }

    /// Like [`Self::into_decoded`], borrowing when there is nothing to decode.
    pub fn decoded(&self) -> Result<std::borrow::Cow<'_, Self>, prost::DecodeError> {
        match self {
            Self::Encoded(e) => e.decode().map(std::borrow::Cow::Owned),
            other => Ok(std::borrow::Cow::Borrowed(other)),
        }
    }

    /// Size of the request in OTLP protobuf: what batches are limited by, so forwarded requests stay
    /// under the next hop's message limit.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Self::Traces(r) => r.encoded_len(),
            Self::Metrics(r) => r.encoded_len(),
            Self::Logs(r) => r.encoded_len(),
            Self::Profiles(r) => r.encoded_len(),
            Self::Encoded(e) => e.len,
        }
    }

    /// Items as Sluice counts them everywhere: spans, metric data points, log records, profile samples.
    pub fn item_count(&self) -> u64 {
        match self {
            Self::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len() as u64)
                .sum(),
            Self::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(data_point_count)
                .sum(),
            Self::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len() as u64)
                .sum(),
            Self::Profiles(r) => r
                .resource_profiles
                .iter()
                .flat_map(|rp| &rp.scope_profiles)
                .flat_map(|sp| &sp.profiles)
                .map(|p| p.samples.len() as u64)
                .sum(),
            Self::Encoded(e) => e.items,
        }
    }

    /// Appends `other` (same signal) to `self`; returns it back when the two cannot be merged.
    ///
    /// Profiles are never merged: their samples index into a request-wide dictionary.
    /// An encoded request merges with a decoded one by being decoded.
    pub fn try_merge(&mut self, other: Telemetry) -> Result<(), Telemetry> {
        if self.signal() != other.signal() || self.signal() == Signal::Profiles {
            return Err(other);
        }
        let other = match (&mut *self, other) {
            (Self::Encoded(a), Self::Encoded(b)) => {
                a.chunks.extend(b.chunks);
                a.chunk_items.extend(b.chunk_items);
                a.items += b.items;
                a.len += b.len;
                return Ok(());
            }
            (Self::Encoded(a), other) => match a.decode() {
                Ok(d) => {
                    *self = d;
                    other
                }
                Err(_) => return Err(other),
            },
            (_, Self::Encoded(b)) => match b.decode() {
                Ok(d) => d,
                Err(_) => return Err(Self::Encoded(b)),
            },
            (_, other) => other,
        };
        match (self, other) {
            (Self::Traces(a), Self::Traces(b)) => a.resource_spans.extend(b.resource_spans),
            (Self::Metrics(a), Self::Metrics(b)) => a.resource_metrics.extend(b.resource_metrics),
            (Self::Logs(a), Self::Logs(b)) => a.resource_logs.extend(b.resource_logs),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Serializes the request as one line of OTLP/JSON (ids in lowercase hex, 64-bit ints as strings).
    pub fn to_json(&self) -> Result<Vec<u8>, TelemetryError> {
        Ok(match self.decoded()?.as_ref() {
            Self::Traces(r) => serde_json::to_vec(r),
            Self::Metrics(r) => serde_json::to_vec(r),
            Self::Logs(r) => serde_json::to_vec(r),
            Self::Profiles(r) => serde_json::to_vec(r),
            Self::Encoded(_) => unreachable!("decoded() never returns Encoded"),
        }?)
    }

    /// The request as OTLP protobuf; an encoded single request is returned without a copy.
    pub fn encode_protobuf(&self) -> Bytes {
        use prost::Message;
        match self {
            Self::Traces(r) => r.encode_to_vec().into(),
            Self::Metrics(r) => r.encode_to_vec().into(),
            Self::Logs(r) => r.encode_to_vec().into(),
            Self::Profiles(r) => r.encode_to_vec().into(),
            Self::Encoded(e) => match e.chunks.as_slice() {
                [one] => one.clone(),
                many => {
                    let mut out = bytes::BytesMut::with_capacity(e.len);
                    for c in many {
                        out.extend_from_slice(c);
                    }
                    out.freeze()
                }
            },
        }
    }
}

/// Data points in one metric, whatever its type.
pub fn data_point_count(m: &Metric) -> u64 {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len() as u64,
        Some(Data::Sum(s)) => s.data_points.len() as u64,
        Some(Data::Histogram(h)) => h.data_points.len() as u64,
        Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(Data::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}

/// Keeps the data points of one metric, whatever its type, for which `keep` (given the point's
/// attributes, which it may edit) returns true: the one walk over the five data point kinds that
/// attribute edits and filters share.
pub fn retain_data_points(
    m: &mut Metric,
    mut keep: impl FnMut(&mut Vec<opentelemetry_proto::tonic::common::v1::KeyValue>) -> bool,
) {
    match &mut m.data {
        Some(Data::Gauge(g)) => g.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(Data::Sum(s)) => s.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(Data::Histogram(h)) => h.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.retain_mut(|p| keep(&mut p.attributes))
        }
        Some(Data::Summary(s)) => s.data_points.retain_mut(|p| keep(&mut p.attributes)),
        None => {}
    }
}
