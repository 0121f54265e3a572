//! Adaptive sampler settings.

use serde::Deserialize;
use sluice_config::HumanDuration;

/// How the sampler chooses its probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplerMode {
    /// Steer the probability by exporter load (AIMD with hysteresis), and `target_rate` if set.
    #[default]
    Adaptive,
    /// Always `probability`.
    Fixed,
    /// The most restrictive matching tier of `tiers`, with `hold` against flapping.
    Tiered,
}

/// One tier of a tiered sampling policy; it matches when all its conditions hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerTier {
    /// Matches when the sampler's input (spans + log records per second) is above this.
    pub when_input_rate_above: Option<f64>,
    /// Matches when the most loaded downstream exporter's load is above this.
    pub when_load_above: Option<f64>,
    /// Probability while this tier applies.
    pub probability: f64,
}

/// Adaptive sampler settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// adaptive (default), fixed or tiered.
    #[serde(default)]
    pub mode: SamplerMode,
    /// Fixed probability, or the starting one in adaptive mode.
    #[serde(default = "one")]
    pub probability: f64,
    /// Lowest probability adaptive mode may reach.
    #[serde(default = "default_min_probability")]
    pub min_probability: f64,
    /// Highest probability (the one used when the backends are idle).
    #[serde(default = "one")]
    pub max_probability: f64,
    /// Exporter load above which the probability is cut.
    #[serde(default = "default_high_watermark")]
    pub high_watermark: f64,
    /// Exporter load below which the probability may rise again.
    #[serde(default = "default_low_watermark")]
    pub low_watermark: f64,
    /// How often the probability is adjusted.
    #[serde(default = "default_sampler_interval")]
    pub interval: HumanDuration,
    /// Goal for kept items per second (spans + log records); lowered further under load.
    pub target_rate: Option<f64>,
    /// Items per second kept for every `service.name`, whatever the load, so quiet services are not starved.
    pub per_service_floor: Option<f64>,
    /// Hex digits of the `th` threshold written into trace state (1 to 14).
    #[serde(default = "default_precision")]
    pub precision: u8,
    /// Tiers for tiered mode.
    #[serde(default)]
    pub tiers: Vec<SamplerTier>,
    /// Tiered mode: how long a tier keeps applying after its condition stopped holding.
    #[serde(default = "default_hold")]
    pub hold: HumanDuration,
}

impl Default for SamplerConfig {
    /// The documented defaults: adaptive, p from 1 down to 0.001, watermarks 0.8/0.3, every 1s.
    fn default() -> Self {
        Self {
            mode: SamplerMode::default(),
            probability: one(),
            min_probability: default_min_probability(),
            max_probability: one(),
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            interval: default_sampler_interval(),
            target_rate: None,
            per_service_floor: None,
            precision: default_precision(),
            tiers: Vec::new(),
            hold: default_hold(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn default_min_probability() -> f64 {
    0.001
}
fn default_high_watermark() -> f64 {
    0.8
}
fn default_low_watermark() -> f64 {
    0.3
}
fn default_sampler_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_precision() -> u8 {
    4
}
fn default_hold() -> HumanDuration {
    HumanDuration::from_secs(30)
}
