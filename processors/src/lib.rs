//! Sluice processors: batching and attribute edits.

pub mod units;

sluice_core::components! {
    processor alert_rules::AlertRulesConfig,
    processor attributes::AttributesConfig,
    processor batch::BatchConfig,
    processor filter::FilterConfig,
    processor metric_transform::MetricTransformConfig,
    processor sampler::SamplerConfig,
}

pub use attributes::AttributesProcessor;
pub use batch::Batcher;
