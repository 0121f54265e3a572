//! Controller tests against a simulated backend: a queue drained at a fixed capacity.

use super::*;
use crate::sampler::config::{SamplerConfig, SamplerMode, SamplerTier};
use sluice_config::HumanDuration;

pub(crate) fn config(mode: SamplerMode) -> SamplerConfig {
    SamplerConfig {
        mode,
        min_probability: 0.0001,
        hold: HumanDuration::from_secs(10),
        ..SamplerConfig::default()
    }
}

/// A backend that absorbs `capacity` items/s behind a queue of `queue_max` items.
struct Backend {
    capacity: f64,
    queue: f64,
    queue_max: f64,
    overflowed: f64,
    exported_any: bool,
}

impl Backend {
    fn new(capacity: f64, queue_max: f64) -> Self {
        Self {
            capacity,
            queue: 0.0,
            queue_max,
            overflowed: 0.0,
            exported_any: false,
        }
    }

    /// Runs one second in 10 ms steps with `kept_rate` items/s arriving.
    fn run_second(&mut self, kept_rate: f64) {
        for _ in 0..100 {
            self.queue += kept_rate * 0.01;
            if self.queue > self.queue_max {
                self.overflowed += self.queue - self.queue_max;
                self.queue = self.queue_max;
            }
            let served = self.queue.min(self.capacity * 0.01);
            self.exported_any |= served > 0.0;
            self.queue -= served;
        }
    }

    fn measure(&self, input_rate: f64) -> Measurements {
        Measurements {
            input_rate,
            load: self.queue / self.queue_max,
            throttled: false,
            drain_rate: self.exported_any.then_some(self.capacity),
            queue_items: self.queue,
            queue_capacity: self.queue_max,
        }
    }
}

/// Drives controller and backend for `secs` seconds at `input` items/s; returns p after each second.
fn simulate(c: &mut Controller, b: &mut Backend, t0: u64, secs: u64, input: f64) -> Vec<f64> {
    let mut ps = Vec::new();
    for s in 0..secs {
        b.run_second(input * c.probability());
        let p = c.step(Duration::from_secs(t0 + s + 1), &b.measure(input));
        ps.push(p);
    }
    ps
}

#[test]
fn overload_settles_near_capacity_over_input_then_recovers() {
    let (cap, input) = (1000.0, 4000.0);
    let mut c = Controller::new(&config(SamplerMode::Adaptive));
    let mut b = Backend::new(cap, 10_000.0);
    let ps = simulate(&mut c, &mut b, 0, 30, input);
    let ideal = cap / input;
    let settled_at = ps
        .iter()
        .position(|p| (p / ideal - 1.0).abs() <= 0.25)
        .expect("never settled");
    assert!(settled_at < 30, "settled after {settled_at}s: {ps:?}");
    for p in &ps[20..] {
        assert!(
            (p / ideal - 1.0).abs() <= 0.25,
            "p = {p} outside C/R ± 25% late in the overload: {ps:?}"
        );
    }
    let tail = &ps[20..];
    let (lo, hi) = tail
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), p| (l.min(*p), h.max(*p)));
    assert!(hi / lo < 1.1, "p oscillates under constant load: {tail:?}");
    assert_eq!(b.overflowed, 0.0, "the exporter queue overflowed");

    // Overload ends: the input falls to half the capacity.
    let ps = simulate(&mut c, &mut b, 30, 60, cap / 2.0);
    let back = ps
        .iter()
        .position(|p| *p == 1.0)
        .expect("p never returned to max");
    assert!(back < 60, "{ps:?}");
    assert!(ps[back..].iter().all(|p| *p == 1.0), "{ps:?}");
}

#[test]
fn overload_without_a_drain_rate_still_cuts_and_recovers() {
    let mut c = Controller::new(&config(SamplerMode::Adaptive));
    let hot = Measurements {
        input_rate: 100.0,
        load: 0.95,
        ..Default::default()
    };
    assert_eq!(c.step(Duration::from_secs(1), &hot), 0.5);
    assert_eq!(c.step(Duration::from_secs(2), &hot), 0.25);
    let calm = Measurements {
        input_rate: 100.0,
        load: 0.5,
        ..Default::default()
    };
    assert_eq!(
        c.step(Duration::from_secs(3), &calm),
        0.25,
        "hysteresis: hold between the watermarks"
    );
    let idle = Measurements {
        input_rate: 100.0,
        load: 0.0,
        ..Default::default()
    };
    let mut p = 0.25;
    for s in 4..20 {
        let next = c.step(Duration::from_secs(s), &idle);
        assert!(next <= p * 1.25 + 1e-12, "bounded rise");
        p = next;
    }
    assert_eq!(p, 1.0);
}

#[test]
fn throttling_cuts_even_with_an_empty_queue() {
    let mut c = Controller::new(&config(SamplerMode::Adaptive));
    let m = Measurements {
        input_rate: 1000.0,
        throttled: true,
        drain_rate: Some(5000.0),
        queue_capacity: 100.0,
        ..Default::default()
    };
    assert!(c.step(Duration::from_secs(1), &m) <= 0.5);
    assert_eq!(c.reason(), Reason::Load);
}

#[test]
fn target_rate_caps_the_kept_rate() {
    let mut cfg = config(SamplerMode::Adaptive);
    cfg.target_rate = Some(500.0);
    let mut c = Controller::new(&cfg);
    let m = Measurements {
        input_rate: 10_000.0,
        queue_capacity: 100.0,
        ..Default::default()
    };
    assert_eq!(c.step(Duration::from_secs(1), &m), 0.05);
    assert_eq!(c.reason(), Reason::TargetRate);
}

#[test]
fn fixed_never_moves() {
    let mut cfg = config(SamplerMode::Fixed);
    cfg.probability = 0.2;
    let mut c = Controller::new(&cfg);
    let m = Measurements {
        input_rate: 1.0,
        load: 5.0,
        throttled: true,
        ..Default::default()
    };
    assert_eq!(c.step(Duration::from_secs(1), &m), 0.2);
}

/// The classic policy: keep everything; 1:100 above 5,000 spans/s; 1:1000 when the backend's load > 0.85.
pub(crate) fn classic_tiers() -> SamplerConfig {
    let mut cfg = config(SamplerMode::Tiered);
    cfg.tiers = vec![
        SamplerTier {
            when_input_rate_above: Some(5000.0),
            when_load_above: None,
            probability: 0.01,
        },
        SamplerTier {
            when_input_rate_above: None,
            when_load_above: Some(0.85),
            probability: 0.001,
        },
    ];
    cfg
}

#[test]
fn tiered_policy_tightens_at_once_and_loosens_after_hold() {
    let mut c = Controller::new(&classic_tiers());
    let at = |s| Duration::from_secs(s);
    let quiet = Measurements {
        input_rate: 1000.0,
        load: 0.1,
        ..Default::default()
    };
    let busy = Measurements {
        input_rate: 8000.0,
        load: 0.1,
        ..Default::default()
    };
    let saturated = Measurements {
        input_rate: 8000.0,
        load: 0.95,
        ..Default::default()
    };
    assert_eq!(c.step(at(1), &quiet), 1.0);
    assert_eq!(c.step(at(2), &busy), 0.01);
    assert_eq!(c.reason(), Reason::Tier);
    assert_eq!(c.step(at(3), &saturated), 0.001);
    // Load gone but input still high: back to 1:100 only after the 10 s hold.
    for s in 4..13 {
        assert_eq!(c.step(at(s), &busy), 0.001, "t = {s}");
    }
    assert_eq!(c.step(at(13), &busy), 0.01);
    // Both gone: back to everything after another hold.
    for s in 14..23 {
        assert_eq!(c.step(at(s), &quiet), 0.01, "t = {s}");
    }
    assert_eq!(c.step(at(23), &quiet), 1.0);
    assert_eq!(c.reason(), Reason::Configured);
    // A brief flap within the hold does not loosen.
    assert_eq!(c.step(at(24), &busy), 0.01);
    assert_eq!(c.step(at(25), &quiet), 0.01);
}
