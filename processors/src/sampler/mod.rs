//! The adaptive sampler: OpenTelemetry consistent probability sampling of spans (and of logs,
//! following their trace) whose probability follows the load of the exporters downstream.
//!
//! Decisions are lock-free: the hot path reads one atomic threshold (and, with a per-service
//! floor, an `ArcSwap`ed map). A control task recomputes the probability every `interval` from
//! the input rate and the exporters' [`LoadSignal`]s. Metrics and profiles pass through untouched.
//!
//! Requests still encoded (checked at the door by the wire walker) are sampled on the wire with
//! `sluice_core::wire::rewrite` and stay encoded: the same `decide` per span, dropped spans
//! skipped unread, kept ones copied (re-stamped when their trace state changes).

pub mod controller;
pub mod threshold;

use arc_swap::ArcSwap;
use controller::{Controller, Measurements, Reason};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
pub mod config;

pub use config::{SamplerConfig, SamplerMode, SamplerTier};
use sluice_config::Signal;
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::{DownstreamLoad, Stateless};
use sluice_core::metrics::FloatGauge;
use sluice_core::{Encoded, LoadSignal, Metrics, Processor, Telemetry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use bytes::Bytes;
use sluice_core::wire::rewrite::{
    retain_logs, retain_spans, Counts, LogDecider, LogEdit, LogRef, ResourceRef, SpanDecider,
    SpanEdit, SpanRef,
};
use sluice_core::wire::NeedsFullDecode;
use threshold::{randomness_from_trace_id, read_ot, write_th, write_th_into, Threshold};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Log attribute that carries the threshold a kept log record was sampled at.
pub const SAMPLING_THRESHOLD_ATTR: &str = "sampling.threshold";

/// Most services tracked for the per-service floor; beyond this new services get the global p.
const MAX_SERVICES: usize = 10_000;

/// State shared by the hot path and the control task.
struct Shared {
    threshold: AtomicU64,
    probability: AtomicU64,
    reason: AtomicU8,
    input: AtomicU64,
    input_rate: AtomicU64,
    rng: AtomicU64,
    floors: ArcSwap<HashMap<String, Threshold>>,
    service_input: Mutex<HashMap<String, u64>>,
    last_loads: Mutex<Vec<(String, f64, bool)>>,
}

/// The `adaptive_sampler` processor.
pub struct AdaptiveSampler {
    name: String,
    cfg: SamplerConfig,
    shared: Arc<Shared>,
    // Indexed [signal: 0 traces, 1 logs][reason code].
    sampled_out: [[Counter; 4]; 2],
}

impl AdaptiveSampler {
    /// Builds the sampler at its starting probability.
    pub fn new(name: &str, cfg: &SamplerConfig, metrics: &Metrics) -> Self {
        let controller = Controller::new(cfg);
        let p = controller.probability();
        let shared = Arc::new(Shared {
            threshold: AtomicU64::new(Threshold::from_probability(p, cfg.precision).0),
            probability: AtomicU64::new(p.to_bits()),
            reason: AtomicU8::new(controller.reason().code()),
            input: AtomicU64::new(0),
            input_rate: AtomicU64::new(0f64.to_bits()),
            rng: AtomicU64::new(seed()),
            floors: ArcSwap::from_pointee(HashMap::new()),
            service_input: Mutex::new(HashMap::new()),
            last_loads: Mutex::new(Vec::new()),
        });
        let reasons = [
            Reason::Configured,
            Reason::Load,
            Reason::TargetRate,
            Reason::Tier,
        ];
        let per = |s: Signal| reasons.map(|r| metrics.sampler_sampled_out(name, s, r.as_str()));
        metrics.sampler_probability(name).set(p);
        Self {
            name: name.to_owned(),
            cfg: cfg.clone(),
            shared,
            sampled_out: [per(Signal::Traces), per(Signal::Logs)],
        }
    }

    /// Starts the control loop reading `loads` (the exporters downstream, by name). It stops by
    /// itself once the sampler is dropped.
    pub fn spawn_control(&self, downstream: DownstreamLoad, metrics: &Metrics) -> JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let cfg = self.cfg.clone();
        let gauge: FloatGauge = metrics.sampler_probability(&self.name);
        let rate_gauge: FloatGauge = metrics.sampler_input_rate(&self.name);
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut controller = Controller::new(&cfg);
            let start = Instant::now();
            let mut last = start;
            let mut rate_ewma: Option<f64> = None;
            let mut tick = tokio::time::interval(cfg.interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                let now = Instant::now();
                let dt = now.duration_since(last).as_secs_f64().max(1e-3);
                last = now;
                let rate = shared.input.swap(0, Ordering::Relaxed) as f64 / dt;
                let rate = match rate_ewma {
                    Some(old) => 0.5 * old + 0.5 * rate,
                    None => rate,
                };
                rate_ewma = Some(rate);
                let loads = downstream.get();
                let m = measure(rate, &loads);
                let old_p = controller.probability();
                let p = controller.step(now.duration_since(start), &m);
                if p != old_p {
                    tracing::info!(sampler = %name, probability = p, reason = controller.reason().as_str(), load = m.load, input_rate = rate, "sampling probability changed");
                }
                shared.threshold.store(
                    Threshold::from_probability(p, cfg.precision).0,
                    Ordering::Relaxed,
                );
                shared.probability.store(p.to_bits(), Ordering::Relaxed);
                shared
                    .reason
                    .store(controller.reason().code(), Ordering::Relaxed);
                shared.input_rate.store(rate.to_bits(), Ordering::Relaxed);
                gauge.set(p);
                rate_gauge.set(rate);
                if let Some(floor) = cfg.per_service_floor {
                    let counts = std::mem::take(
                        &mut *shared
                            .service_input
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                    let floors: HashMap<String, Threshold> = counts
                        .into_iter()
                        .filter_map(|(svc, n)| {
                            let svc_rate = n as f64 / dt;
                            let p_svc = (floor / svc_rate).min(1.0);
                            (p_svc > p)
                                .then(|| (svc, Threshold::from_probability(p_svc, cfg.precision)))
                        })
                        .collect();
                    shared.floors.store(Arc::new(floors));
                }
                *shared.last_loads.lock().unwrap_or_else(|e| e.into_inner()) = loads
                    .iter()
                    .map(|(n, l)| (n.clone(), l.load(), l.throttled()))
                    .collect();
            }
        })
    }

    /// The current probability.
    pub fn probability(&self) -> f64 {
        f64::from_bits(self.shared.probability.load(Ordering::Relaxed))
    }

    /// JSON for `/status`: probability, why, input rate and the loads it last read.
    pub fn status(&self) -> serde_json::Value {
        let loads = self
            .shared
            .last_loads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({
            "name": self.name,
            "mode": format!("{:?}", self.cfg.mode).to_lowercase(),
            "probability": self.probability(),
            "reason": Reason::from_code(self.shared.reason.load(Ordering::Relaxed)).as_str(),
            "input_rate": f64::from_bits(self.shared.input_rate.load(Ordering::Relaxed)),
            "exporter_loads": loads.iter().map(|(n, l, t)| json!({"exporter": n, "load": l, "throttled": t})).collect::<Vec<_>>(),
        })
    }

    /// Books one request: `seen` items in, `dropped` of them sampled out for `reason`.
    fn count(&self, slot: usize, reason: usize, seen: u64, dropped: u64) {
        self.shared.input.fetch_add(seen, Ordering::Relaxed);
        if dropped > 0 {
            self.sampled_out[slot][reason.min(3)].inc_by(dropped);
        }
    }

    fn next_random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough for log sampling draws.
        let mut z = self
            .shared
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) >> 8
    }

    /// The threshold for one resource: the global one, or its service's floor when higher p.
    fn resource_threshold(
        &self,
        global: Threshold,
        resource: Option<&Resource>,
        items: u64,
    ) -> Threshold {
        if self.cfg.per_service_floor.is_none() {
            return global;
        }
        let svc = service_name(resource).unwrap_or("");
        {
            let mut counts = self
                .shared
                .service_input
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(svc) {
                *n += items;
            } else if counts.len() < MAX_SERVICES {
                counts.insert(svc.to_owned(), items);
            }
        }
        match self.shared.floors.load().get(svc) {
            Some(t) if *t < global => *t,
            _ => global,
        }
    }

    /// Samples a request that is still encoded, on the wire: the same decisions, trace states,
    /// log attributes and removed empty containers as decoding and sampling it would give (the
    /// wire tests compare the two), without decoding a span. Returns the sampled request with the
    /// items seen and dropped, or `Err` when a body is not what the wire check promised (then the
    /// caller decodes).
    fn sample_encoded(
        &self,
        e: &Encoded,
        global: Threshold,
    ) -> Result<(Telemetry, u64, u64), NeedsFullDecode> {
        let signal = e.signal();
        let len: usize = e.chunks_with_items().map(|(c, _)| c.len()).sum();
        // About p of the bytes stay (plus a few per re-stamped span); a wrong guess costs a regrow.
        let guess = (len as f64 * global.probability() * 1.1) as usize + 256;
        let mut out = Vec::with_capacity(guess.min(len + 256));
        let mut counts = Counts::default();
        for (chunk, _) in e.chunks_with_items() {
            let c = match signal {
                Signal::Traces => retain_spans(chunk, &mut out, &mut WireSpans { s: self, global })?,
                Signal::Logs => retain_logs(chunk, &mut out, &mut WireLogs { s: self, global })?,
                Signal::Metrics | Signal::Profiles => return Err(NeedsFullDecode),
            };
            counts.seen += c.seen;
            counts.kept += c.kept;
        }
        if out.capacity() - out.len() > out.len() / 4 {
            // Queues hold these bytes: no more than they need.
            out.shrink_to_fit();
        }
        let data = Telemetry::Encoded(Encoded::new(signal, Bytes::from(out), counts.kept));
        Ok((data, counts.seen, counts.seen - counts.kept))
    }
}

/// The sampler's span decisions, applied to encoded spans.
struct WireSpans<'a> {
    s: &'a AdaptiveSampler,
    global: Threshold,
}

impl SpanDecider for WireSpans<'_> {
    type Group = Decision;

    fn resource(&mut self, resource: ResourceRef<'_>) -> Result<Decision, NeedsFullDecode> {
        Ok(Decision::new(self.s.wire_resource_threshold(self.global, resource)?))
    }

    #[inline]
    fn span(&mut self, d: &Decision, span: SpanRef<'_>, state: &mut String) -> SpanEdit {
        match decide(span.trace_id, span.trace_state, d) {
            Verdict::Drop => SpanEdit::Drop,
            Verdict::Keep => SpanEdit::Keep,
            Verdict::Fresh => {
                state.clear();
                state.push_str(&d.fresh_state);
                SpanEdit::SetTraceState
            }
            Verdict::Merged(t) => {
                write_th_into(state, span.trace_state, t);
                SpanEdit::SetTraceState
            }
        }
    }
}

/// The sampler's log decisions, applied to encoded log records.
struct WireLogs<'a> {
    s: &'a AdaptiveSampler,
    global: Threshold,
}

impl LogDecider for WireLogs<'_> {
    type Group = (Threshold, String);

    fn attribute_key(&self) -> &str {
        SAMPLING_THRESHOLD_ATTR
    }

    fn resource(&mut self, resource: ResourceRef<'_>) -> Result<Self::Group, NeedsFullDecode> {
        let t = self.s.wire_resource_threshold(self.global, resource)?;
        Ok((t, t.encode()))
    }

    fn log(&mut self, (t, th): &Self::Group, log: LogRef<'_>, value: &mut String) -> LogEdit {
        if !keep_log(log.trace_id, *t, || self.s.next_random()) {
            return LogEdit::Drop;
        }
        if *t == Threshold::ALWAYS {
            return LogEdit::Keep;
        }
        value.clear();
        value.push_str(th);
        LogEdit::SetAttribute
    }
}

impl AdaptiveSampler {
    /// [`Self::resource_threshold`] for an encoded resource: decodes only the `Resource` (for its
    /// service name), and only when per-service floors are on.
    fn wire_resource_threshold(
        &self,
        global: Threshold,
        resource: ResourceRef<'_>,
    ) -> Result<Threshold, NeedsFullDecode> {
        if self.cfg.per_service_floor.is_none() {
            return Ok(global);
        }
        let decoded = resource.decode()?;
        Ok(self.resource_threshold(global, decoded.as_ref(), resource.items()?))
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(32)
}

fn measure(input_rate: f64, loads: &[(String, Arc<LoadSignal>)]) -> Measurements {
    let bottleneck = loads
        .iter()
        .map(|(_, l)| l)
        .max_by(|a, b| a.load().total_cmp(&b.load()));
    Measurements {
        input_rate,
        load: bottleneck.map_or(0.0, |l| l.load()),
        throttled: loads.iter().any(|(_, l)| l.throttled()),
        drain_rate: bottleneck.and_then(|l| l.drain_rate()),
        queue_items: bottleneck.map_or(0.0, |l| l.queue_items() as f64),
        queue_capacity: bottleneck.map_or(1.0, |l| l.queue_capacity() as f64),
    }
}

fn service_name(resource: Option<&Resource>) -> Option<&str> {
    resource?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// A threshold with its ready-made trace state (`ot=th:…`), so kept spans cost one copy.
#[derive(Debug, Clone)]
pub struct Decision {
    t: Threshold,
    fresh_state: String,
}

impl Decision {
    /// Prepares decisions at threshold `t`.
    pub fn new(t: Threshold) -> Self {
        Self {
            t,
            fresh_state: write_th("", t),
        }
    }
}

/// The outcome of one span's decision, whatever form the span is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Sampled out.
    Drop,
    /// Kept with its trace state as it is.
    Keep,
    /// Kept; its (empty) trace state becomes the decision's fresh `ot=th:…`.
    Fresh,
    /// Kept; `th` in its trace state becomes this threshold, the rest merged in.
    Merged(Threshold),
}

/// Keep iff R ≥ max(our threshold, the one already in the trace state). The one decision both the
/// decoded and the wire path take.
#[inline]
fn decide(trace_id: &[u8], trace_state: &str, d: &Decision) -> Verdict {
    let t = d.t;
    // At p = 1 every span passes as it came (an upstream decision in its trace state stands), so
    // requests that are still encoded need no decode.
    if t == Threshold::ALWAYS {
        return Verdict::Keep;
    }
    if trace_state.is_empty() {
        let Some(r) = randomness_from_trace_id(trace_id) else {
            return Verdict::Keep;
        };
        return if t.keeps(r) {
            Verdict::Fresh
        } else {
            Verdict::Drop
        };
    }
    let st = read_ot(trace_state);
    let Some(r) = st.rv.or_else(|| randomness_from_trace_id(trace_id)) else {
        return Verdict::Keep;
    };
    let incoming = st.th.unwrap_or(Threshold::ALWAYS);
    let t_eff = t.max(incoming);
    if !t_eff.keeps(r) {
        return Verdict::Drop;
    }
    if t_eff != incoming {
        Verdict::Merged(t_eff)
    } else {
        Verdict::Keep
    }
}

/// Decides one span: keep iff R ≥ max(our threshold, the one already in its trace state).
#[inline]
pub fn decide_span(span: &mut Span, d: &Decision) -> bool {
    match decide(&span.trace_id, &span.trace_state, d) {
        Verdict::Drop => false,
        Verdict::Keep => true,
        Verdict::Fresh => {
            span.trace_state.clone_from(&d.fresh_state);
            true
        }
        Verdict::Merged(t) => {
            span.trace_state = write_th(&span.trace_state, t);
            true
        }
    }
}

/// Whether a log record is kept: its trace's randomness when it has a trace id, else a random draw.
#[inline]
fn keep_log(trace_id: &[u8], t: Threshold, random: impl FnOnce() -> u64) -> bool {
    if t == Threshold::ALWAYS {
        return true;
    }
    let r = randomness_from_trace_id(trace_id).unwrap_or_else(random);
    t.keeps(r)
}

/// Decides one log record and stamps a kept one with the threshold it was sampled at.
fn decide_log(log: &mut LogRecord, t: Threshold, random: impl FnOnce() -> u64) -> bool {
    if !keep_log(&log.trace_id, t, random) {
        return false;
    }
    if t == Threshold::ALWAYS {
        return true;
    }
    let value = Some(AnyValue {
        value: Some(any_value::Value::StringValue(t.encode())),
    });
    match log
        .attributes
        .iter_mut()
        .find(|kv| kv.key == SAMPLING_THRESHOLD_ATTR)
    {
        Some(kv) => kv.value = value,
        None => log.attributes.push(KeyValue {
            key: SAMPLING_THRESHOLD_ATTR.to_owned(),
            value,
            ..Default::default()
        }),
    }
    true
}

impl Processor for AdaptiveSampler {
    fn process(&self, mut data: Telemetry) -> Option<Telemetry> {
        let global = Threshold(self.shared.threshold.load(Ordering::Relaxed));
        let reason = self.shared.reason.load(Ordering::Relaxed) as usize;
        let (mut seen, mut dropped) = (0u64, 0u64);
        if let Telemetry::Encoded(e) = &data {
            if !matches!(e.signal(), Signal::Traces | Signal::Logs) {
                // Metrics are never sampled; profiles pass through.
                return Some(data);
            }
            // Per-service floors need the service names (read from each encoded resource).
            if global == Threshold::ALWAYS && self.cfg.per_service_floor.is_none() {
                self.shared
                    .input
                    .fetch_add(data.item_count(), Ordering::Relaxed);
                return Some(data);
            }
            match self.sample_encoded(e, global) {
                Ok((sampled, seen, dropped)) => {
                    let slot = usize::from(e.signal() == Signal::Logs);
                    self.count(slot, reason, seen, dropped);
                    return Some(sampled);
                }
                Err(NeedsFullDecode) => {
                    // Cannot happen for bodies the wire check accepted; the decoder decides.
                    tracing::error!("sampler: encoded request not as checked; decoding it");
                }
            }
            if let Err(e) = data.decode_in_place() {
                // Cannot happen for bodies the receiver checked; keep the data rather than lose it.
                tracing::error!(error = %e, "sampler: cannot decode request; passing it on unsampled");
                return Some(data);
            }
        }
        let slot = match &mut data {
            Telemetry::Traces(r) => {
                for rs in &mut r.resource_spans {
                    let n: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
                    let t = self.resource_threshold(global, rs.resource.as_ref(), n as u64);
                    let d = Decision::new(t);
                    for ss in &mut rs.scope_spans {
                        let before = ss.spans.len();
                        ss.spans.retain_mut(|s| decide_span(s, &d));
                        dropped += (before - ss.spans.len()) as u64;
                    }
                    rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                    seen += n as u64;
                }
                r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
                0
            }
            Telemetry::Logs(r) => {
                for rl in &mut r.resource_logs {
                    let n: usize = rl.scope_logs.iter().map(|s| s.log_records.len()).sum();
                    let t = self.resource_threshold(global, rl.resource.as_ref(), n as u64);
                    for sl in &mut rl.scope_logs {
                        let before = sl.log_records.len();
                        sl.log_records
                            .retain_mut(|l| decide_log(l, t, || self.next_random()));
                        dropped += (before - sl.log_records.len()) as u64;
                    }
                    rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
                    seen += n as u64;
                }
                r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
                1
            }
            // Metrics are never sampled; profiles pass through.
            Telemetry::Metrics(_) | Telemetry::Profiles(_) | Telemetry::Encoded(_) => {
                return Some(data)
            }
        };
        self.count(slot, reason, seen, dropped);
        Some(data)
    }

    fn counts_own_drops(&self) -> bool {
        true
    }

    fn status(&self) -> Option<serde_json::Value> {
        Some(AdaptiveSampler::status(self))
    }
}

impl ProcessorKind for SamplerConfig {
    const TYPE: &'static str = "adaptive_sampler";

    fn signals(&self) -> &'static [Signal] {
        // Metrics and profiles pass through untouched.
        &Signal::ALL
    }

    fn validate(&self, problems: &mut Problems) {
        for (k, v) in [
            ("probability", self.probability),
            ("min_probability", self.min_probability),
            ("max_probability", self.max_probability),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                problems.at(k, format!("must be a probability in (0, 1], got {v}"));
            }
        }
        if self.min_probability > self.max_probability {
            problems.at("min_probability", "must not exceed max_probability");
        }
        if !(self.low_watermark >= 0.0 && self.low_watermark < self.high_watermark) {
            problems.at(
                "low_watermark",
                format!(
                    "must be at least 0 and below high_watermark ({})",
                    self.high_watermark
                ),
            );
        }
        if self.interval.0.is_zero() {
            problems.at("interval", "must be greater than 0 (e.g. \"1s\")");
        }
        if !(1..=14).contains(&self.precision) {
            problems.at(
                "precision",
                format!("must be 1 to 14 hex digits, got {}", self.precision),
            );
        }
        for (k, v) in [
            ("target_rate", self.target_rate),
            ("per_service_floor", self.per_service_floor),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                problems.at(k, "must be a positive number of items per second");
            }
        }
        let tiered = self.mode == SamplerMode::Tiered;
        if tiered && self.tiers.is_empty() {
            problems.at("tiers", "tiered mode needs at least one [[tiers]] entry");
        }
        if !tiered && !self.tiers.is_empty() {
            problems.at("tiers", "tiers only apply with mode = \"tiered\"");
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.when_input_rate_above.is_none() && t.when_load_above.is_none() {
                problems.at(
                    &format!("tiers[{i}]"),
                    "a tier needs when_input_rate_above and/or when_load_above",
                );
            }
            if !(t.probability > 0.0 && t.probability <= 1.0) {
                problems.at(
                    &format!("tiers[{i}].probability"),
                    format!("must be a probability in (0, 1], got {}", t.probability),
                );
            }
        }
    }

    fn build(&self, ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        let sampler = Arc::new(AdaptiveSampler::new(ctx.name, self, ctx.metrics));
        // A fixed sampler needs the loop only to measure per-service rates for floors.
        if self.mode != SamplerMode::Fixed || self.per_service_floor.is_some() {
            sampler.spawn_control(ctx.downstream.clone(), ctx.metrics);
        }
        Ok(Stateless::new(ctx.name, sampler, ctx.metrics))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
