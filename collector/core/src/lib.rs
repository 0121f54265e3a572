//! Sluice core: the data model ([`Telemetry`]), the component contracts, the channels between
//! receivers, pipelines and exporters, and self-metrics. Every other crate builds on this one.

pub mod ack;
pub mod component;
pub mod concurrency;
pub mod disk_queue;
pub mod exporter;
pub mod grpc_codec;
pub mod lease;
pub mod load;
pub mod log_every;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod stage;
pub mod telemetry;
pub mod wire;

pub use ack::AckLog;
pub use exporter::{
    spawn_exporter, BoxFuture, Coalesce, Delivered, ExportError, Exporter, ExporterQueue,
};
pub use lease::{Held, Lease};
pub use load::{DownstreamLoad, LoadSignal};
pub use log_every::LogEvery;
pub use memory::{Charge, MemoryBudget, OverBudget};
pub use metrics::{DropReason, Metrics, PerSignal};
pub use pipeline::{Envelope, PipelineInput, PipelineSender, Refused, Routes, SendError};
pub use sluice_config::Signal;
pub use stage::{Stage, Stateless};
pub use telemetry::{Encoded, Telemetry, TelemetryError};

/// A synchronous, cheap transform applied to every request in a pipeline; `None` drops it whole.
pub trait Processor: Send + Sync + 'static {
    /// Transforms one request.
    fn process(&self, data: Telemetry) -> Option<Telemetry>;

    /// True when the processor counts the items it removes itself (the sampler counts them as
    /// sampled out, by reason); otherwise the pipeline counts them as dropped (`filtered`).
    fn counts_own_drops(&self) -> bool {
        false
    }

    /// What `/status` shows about it, if anything (the sampler shows its probability and why).
    fn status(&self) -> Option<serde_json::Value> {
        None
    }
}
