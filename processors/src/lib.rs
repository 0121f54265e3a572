//! Sluice processors: batching and attribute edits.

sluice_core::components! {
    processor attributes::AttributesConfig,
    processor batch::BatchConfig,
    processor filter::FilterConfig,
    processor sampler::SamplerConfig,
}

pub use attributes::AttributesProcessor;
pub use batch::Batcher;
