//! How the sampling probability is chosen each interval: a pure function of what the sampler and
//! its downstream exporters measured, so it can be tested against simulated backends.

use super::config::{SamplerConfig, SamplerMode, SamplerTier};
use std::time::Duration;

/// Exporters may be fed this share of their measured drain rate: headroom so queues drain.
const HEADROOM: f64 = 0.95;
/// A backlog above the low watermark is worked off over about this many seconds.
const BACKLOG_DRAIN_SECS: f64 = 5.0;
/// Largest cut in one interval (p may fall to p/8).
const MAX_CUT: f64 = 8.0;
/// Largest rise in one interval (×1.25): gentle, so a recovered backend is not flooded.
const MAX_RISE: f64 = 1.25;

/// What the control loop measured over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measurements {
    /// Items (spans + log records) per second arriving at the sampler.
    pub input_rate: f64,
    /// Load of the most loaded downstream exporter.
    pub load: f64,
    /// Whether any downstream exporter was throttled recently.
    pub throttled: bool,
    /// That exporter's drain rate (items/s while busy), if known.
    pub drain_rate: Option<f64>,
    /// That exporter's queued items.
    pub queue_items: f64,
    /// That exporter's queue capacity.
    pub queue_capacity: f64,
}

/// Why the probability is below its maximum; the `reason` label of sampled-out items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Fixed mode (or adaptive at max): the configured probability.
    Configured,
    /// Backend load.
    Load,
    /// The `target_rate` goal.
    TargetRate,
    /// A tier of the tiered policy.
    Tier,
}

impl Reason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Load => "load",
            Self::TargetRate => "target_rate",
            Self::Tier => "tier",
        }
    }

    /// Numeric code for lock-free publication.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From [`Reason::code`].
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Load,
            2 => Self::TargetRate,
            3 => Self::Tier,
            _ => Self::Configured,
        }
    }
}

/// The probability controller of one sampler.
#[derive(Debug, Clone)]
pub struct Controller {
    mode: SamplerMode,
    min: f64,
    max: f64,
    high: f64,
    low: f64,
    target_rate: Option<f64>,
    tiers: Vec<SamplerTier>,
    hold: Duration,
    /// Probability chosen by load (adaptive) or tiers (tiered).
    p_base: f64,
    /// Tiered mode: when the current level was last justified by a matching tier.
    justified_at: Duration,
    p: f64,
    reason: Reason,
}

impl Controller {
    /// A controller starting at the configured probability.
    pub fn new(cfg: &SamplerConfig) -> Self {
        let start = match cfg.mode {
            SamplerMode::Tiered => cfg.max_probability,
            _ => cfg
                .probability
                .clamp(cfg.min_probability, cfg.max_probability),
        };
        let start = if cfg.mode == SamplerMode::Fixed {
            cfg.probability
        } else {
            start
        };
        Self {
            mode: cfg.mode,
            min: cfg.min_probability,
            max: cfg.max_probability,
            high: cfg.high_watermark,
            low: cfg.low_watermark,
            target_rate: cfg.target_rate,
            tiers: cfg.tiers.clone(),
            hold: cfg.hold.0,
            p_base: start,
            justified_at: Duration::ZERO,
            p: start,
            reason: Reason::Configured,
        }
    }

    /// The current probability.
    pub fn probability(&self) -> f64 {
        self.p
    }

    /// Why it is what it is.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// One control step at time `now` (time since start) with this interval's measurements.
    pub fn step(&mut self, now: Duration, m: &Measurements) -> f64 {
        match self.mode {
            SamplerMode::Fixed => return self.p,
            SamplerMode::Adaptive => {
                self.p_base = self.adapt(m);
                self.reason = if self.p_base < self.max {
                    Reason::Load
                } else {
                    Reason::Configured
                };
            }
            SamplerMode::Tiered => {
                self.p_base = self.tier(now, m);
                self.reason = if self.p_base < self.max {
                    Reason::Tier
                } else {
                    Reason::Configured
                };
            }
        }
        self.p = self.p_base;
        if let Some(goal) = self.target_rate {
            if m.input_rate > 0.0 {
                let p_rate = (goal / m.input_rate).clamp(self.min, self.max);
                if p_rate < self.p {
                    self.p = p_rate;
                    self.reason = Reason::TargetRate;
                }
            }
        }
        self.p
    }

    /// AIMD with hysteresis, steered by the bottleneck exporter's drain rate when it is known.
    fn adapt(&self, m: &Measurements) -> f64 {
        let p = self.p_base;
        let overloaded = m.load > self.high || m.throttled;
        // What the bottleneck can absorb, minus what it takes to work off a backlog.
        let target = match m.drain_rate {
            Some(c) if m.input_rate > 0.0 => {
                let backlog = (m.queue_items - self.low * m.queue_capacity).max(0.0);
                let relief = (backlog / BACKLOG_DRAIN_SECS).min(0.5 * c);
                let t = (HEADROOM * c - relief) / m.input_rate;
                Some(if m.throttled { t.min(p * 0.5) } else { t })
            }
            _ => None,
        };
        let next = if overloaded {
            target.unwrap_or(p * 0.5).min(p)
        } else if m.load < self.low {
            let up = p * MAX_RISE;
            match target {
                Some(t) => up.min(t.max(p)),
                None => up,
            }
        } else {
            // Between the watermarks: never raise; follow the target down if the queue is climbing.
            target.map_or(p, |t| t.min(p))
        };
        next.max(p / MAX_CUT).clamp(self.min, self.max)
    }

    /// The most restrictive matching tier, loosening only after `hold`.
    fn tier(&mut self, now: Duration, m: &Measurements) -> f64 {
        let candidate = self
            .tiers
            .iter()
            .filter(|t| {
                t.when_input_rate_above.is_none_or(|r| m.input_rate > r)
                    && t.when_load_above.is_none_or(|l| m.load > l || m.throttled)
            })
            .map(|t| t.probability)
            .fold(self.max, f64::min);
        if candidate <= self.p_base || now.saturating_sub(self.justified_at) >= self.hold {
            self.justified_at = now;
            candidate
        } else {
            self.p_base
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
pub(crate) mod tests;
