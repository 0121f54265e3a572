//! The unit of data that flows through pipelines: one OTLP export request of one signal.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use sluice_config::Signal;

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
}

impl Telemetry {
    /// Which signal this is.
    pub fn signal(&self) -> Signal {
        match self {
            Self::Traces(_) => Signal::Traces,
            Self::Metrics(_) => Signal::Metrics,
            Self::Logs(_) => Signal::Logs,
            Self::Profiles(_) => Signal::Profiles,
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
        }
    }

    /// Appends `other` (same signal) to `self`; returns it back when the two cannot be merged.
    ///
    /// Profiles are never merged: their samples index into a request-wide dictionary.
    pub fn try_merge(&mut self, other: Telemetry) -> Result<(), Telemetry> {
        match (self, other) {
            (Self::Traces(a), Self::Traces(b)) => a.resource_spans.extend(b.resource_spans),
            (Self::Metrics(a), Self::Metrics(b)) => a.resource_metrics.extend(b.resource_metrics),
            (Self::Logs(a), Self::Logs(b)) => a.resource_logs.extend(b.resource_logs),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Serializes the request as one line of OTLP/JSON (ids in lowercase hex, 64-bit ints as strings).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Traces(r) => serde_json::to_vec(r),
            Self::Metrics(r) => serde_json::to_vec(r),
            Self::Logs(r) => serde_json::to_vec(r),
            Self::Profiles(r) => serde_json::to_vec(r),
        }
    }

    /// Encodes the request as OTLP protobuf.
    pub fn encode_protobuf(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Self::Traces(r) => r.encode_to_vec(),
            Self::Metrics(r) => r.encode_to_vec(),
            Self::Logs(r) => r.encode_to_vec(),
            Self::Profiles(r) => r.encode_to_vec(),
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
