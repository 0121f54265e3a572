//! Sluice receivers: they decode client requests into [`sluice_core::Telemetry`], hand them to
//! pipelines, and answer only once the data is accepted (or refused with a retryable status).

pub mod ingest;
pub mod listener;

sluice_core::components! {
    receiver otlp::OtlpReceiverConfig,
    receiver pprof::PprofReceiverConfig,
    receiver kafka::KafkaReceiverConfig,
}

pub use otlp::OtlpReceiver;
pub use pprof::PprofReceiver;
