//! Sluice processors: batching and attribute edits.

pub mod attributes;
pub mod batch;
pub mod sampler;

pub use attributes::AttributesProcessor;
pub use batch::Batcher;
