//! The batch processor: merges requests of one signal until `max_items`, `max_bytes` or `timeout`.
//!
//! It is a state machine driven by the pipeline task (which owns the clock), so it needs no task
//! or lock of its own and is trivially testable.

pub mod config;

pub use config::BatchConfig;
use sluice_config::Signal;
use sluice_core::component::{Problems, ProcessorContext, ProcessorInstance, ProcessorKind};
use sluice_core::stage::{Out, Stage};
use sluice_core::{Envelope, Lease, Telemetry};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

struct Buffer {
    data: Telemetry,
    items: u64,
    lease: Lease,
    bytes: usize,
    deadline: Instant,
}

impl Buffer {
    fn into_envelope(self) -> Envelope {
        Envelope {
            data: self.data,
            items: self.items,
            lease: self.lease,
        }
    }
}

/// Per-signal buffers of one pipeline.
pub struct Batcher {
    max_items: u64,
    max_bytes: usize,
    timeout: Duration,
    buffers: [Option<Buffer>; 4],
}

impl Batcher {
    /// A batcher with the configured limits.
    pub fn new(cfg: &BatchConfig) -> Self {
        Self {
            max_items: cfg.max_items as u64,
            max_bytes: cfg.max_bytes.as_usize().max(1),
            timeout: cfg.timeout.0,
            buffers: [None, None, None, None],
        }
    }

    /// Adds a request; returns the batches that became full. A request that would take the batch
    /// past `max_bytes` flushes the batch first; one that is larger on its own goes out alone.
    /// Profiles pass straight through, since their samples index into a per-request dictionary.
    pub fn push(&mut self, env: Envelope, now: Instant) -> Vec<Envelope> {
        let signal = env.signal();
        if signal == Signal::Profiles {
            return vec![env];
        }
        let Envelope { data, items, lease } = env;
        let bytes = data.encoded_len();
        let slot = &mut self.buffers[signal.index()];
        let mut out = Vec::new();
        if slot
            .as_ref()
            .is_some_and(|buf| buf.bytes + bytes > self.max_bytes)
        {
            out.extend(slot.take().map(Buffer::into_envelope));
        }
        match slot {
            None => {
                *slot = Some(Buffer {
                    data,
                    items,
                    lease,
                    bytes,
                    deadline: now + self.timeout,
                });
            }
            Some(buf) => {
                if let Err(other) = buf.data.try_merge(data) {
                    // Cannot happen for traces, metrics and logs; pass it through rather than lose it.
                    out.push(Envelope {
                        data: other,
                        items,
                        lease,
                    });
                    return out;
                }
                buf.items += items;
                buf.lease.absorb(lease);
                buf.bytes += bytes;
            }
        }
        if slot
            .as_ref()
            .is_some_and(|buf| buf.items >= self.max_items || buf.bytes >= self.max_bytes)
        {
            out.extend(slot.take().map(Buffer::into_envelope));
        }
        out
    }

    /// Earliest time a buffer must be flushed, if any is non-empty.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.buffers.iter().flatten().map(|b| b.deadline).min()
    }

    /// Takes the buffers whose timeout passed.
    pub fn flush_due(&mut self, now: Instant) -> Vec<Envelope> {
        let mut out = Vec::new();
        for slot in &mut self.buffers {
            if slot.as_ref().is_some_and(|b| b.deadline <= now) {
                if let Some(b) = slot.take() {
                    out.push(b.into_envelope());
                }
            }
        }
        out
    }

    /// Takes every buffer (shutdown).
    pub fn flush_all(&mut self) -> Vec<Envelope> {
        self.buffers
            .iter_mut()
            .filter_map(Option::take)
            .map(Buffer::into_envelope)
            .collect()
    }

    /// Items currently buffered.
    pub fn buffered(&self) -> u64 {
        self.buffers.iter().flatten().map(|b| b.items).sum()
    }
}

impl Stage for Batcher {
    fn push(&mut self, env: Envelope, now: Instant, out: &mut Out) -> u64 {
        out.extend(Batcher::push(self, env, now));
        0
    }

    fn next_deadline(&self) -> Option<Instant> {
        Batcher::next_deadline(self)
    }

    fn flush(&mut self, now: Option<Instant>, out: &mut Out) {
        match now {
            Some(now) => out.extend(self.flush_due(now)),
            None => out.extend(self.flush_all()),
        }
    }
}

/// The built batch processor: every pipeline that lists it gets a batcher of its own.
struct BatchProcessor(BatchConfig);

impl ProcessorInstance for BatchProcessor {
    fn stage(&self) -> Box<dyn Stage> {
        Box::new(Batcher::new(&self.0))
    }
}

impl ProcessorKind for BatchConfig {
    const TYPE: &'static str = "batch";

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn validate(&self, problems: &mut Problems) {
        if self.max_items == 0 {
            problems.at("max_items", "must be at least 1");
        }
        if self.timeout.0.is_zero() {
            problems.at("timeout", "must be greater than 0 (e.g. \"200ms\")");
        }
    }

    fn build(&self, _ctx: &ProcessorContext<'_>) -> Result<Arc<dyn ProcessorInstance>, String> {
        Ok(Arc::new(BatchProcessor(self.clone())))
    }
}

#[cfg(test)]
mod tests;
