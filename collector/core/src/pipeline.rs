//! The door from receivers into pipelines: bounded channels, all-or-nothing acceptance.

use crate::lease::Lease;
use crate::metrics::PerSignal;
use crate::telemetry::Telemetry;
use prometheus_client::metrics::gauge::Gauge;
use sluice_config::Signal;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a receiver sends through: the current routes, swapped whole by a reload while the
/// receiver keeps its sockets. A request in flight finishes on the routes it loaded.
pub type Routes = std::sync::Arc<arc_swap::ArcSwap<PipelineInput>>;

/// Requests buffered per pipeline before receivers start waiting (then refusing).
pub const PIPELINE_CHANNEL_REQUESTS: usize = 64;

/// The unit that moves through pipelines, stages and exporter queues: the data, its item count
/// (counted once, at the door) and the lease that must live exactly as long as the data does.
#[derive(Debug)]
pub struct Envelope {
    /// The request.
    pub data: Telemetry,
    /// Its items.
    pub items: u64,
    /// Released when the last holder of the data (the last exporter) is done with it.
    pub lease: Lease,
}

impl Envelope {
    /// Data with nothing leased (tests, internally generated data).
    pub fn new(data: Telemetry, items: u64) -> Self {
        Self {
            data,
            items,
            lease: Lease::none(),
        }
    }

    /// Which signal it carries.
    pub fn signal(&self) -> sluice_config::Signal {
        self.data.signal()
    }

    /// A copy for another consumer (fan-out): the lease is shared, not duplicated.
    pub fn share(&mut self) -> Self {
        Self {
            data: self.data.clone(),
            items: self.items,
            lease: self.lease.share(),
        }
    }
}

/// The sending side of one pipeline, as a receiver sees it.
#[derive(Clone, Debug)]
pub struct PipelineSender {
    /// Pipeline name, for logs.
    pub name: String,
    tx: mpsc::Sender<Envelope>,
    queued: PerSignal<Gauge>,
}

impl PipelineSender {
    /// Wraps a pipeline channel; `queued` tracks items in the pipeline until its exporters take them.
    pub fn new(name: String, tx: mpsc::Sender<Envelope>, queued: PerSignal<Gauge>) -> Self {
        Self { name, tx, queued }
    }
}

/// Why a receiver could not hand data over; each maps to a status the client understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No pipeline carries this signal from this receiver.
    #[error("no pipeline accepts {0} from this receiver")]
    NoPipeline(Signal),
    /// A pipeline stayed full for the whole accept timeout: retry later.
    #[error("pipeline {0} is full; retry later")]
    Full(String),
    /// The pipeline is shutting down.
    #[error("pipeline {0} is shutting down; retry later")]
    Closed(String),
}

/// A refused [`PipelineInput::offer`]: why, and the envelope, untouched.
#[derive(Debug)]
pub struct Refused {
    /// Why it was refused.
    pub error: SendError,
    /// What was offered.
    pub env: Envelope,
}

/// Everything one receiver feeds: per signal, the pipelines that take it.
#[derive(Clone, Debug, Default)]
pub struct PipelineInput {
    routes: [Vec<PipelineSender>; 4],
}

impl PipelineInput {
    /// Adds a pipeline for a signal.
    pub fn add(&mut self, signal: Signal, sender: PipelineSender) {
        self.routes[signal.index()].push(sender);
    }

    /// Whether any pipeline takes `signal`.
    pub fn accepts(&self, signal: Signal) -> bool {
        !self.routes[signal.index()].is_empty()
    }

    /// Hands `data` to every pipeline that carries its signal, or to none: room is reserved in all
    /// of them (waiting at most `timeout`) before anything is sent, so a refusal never duplicates.
    pub async fn send(&self, env: Envelope, timeout: Duration) -> Result<(), SendError> {
        self.offer(env, timeout).await.map_err(|r| r.error)
    }

    /// [`Self::send`], giving the envelope back when it was refused, so a receiver that must not
    /// let go of it (its lease carries an acknowledgement) can offer it again.
    pub async fn offer(&self, env: Envelope, timeout: Duration) -> Result<(), Refused> {
        let signal = env.signal();
        let routes = &self.routes[signal.index()];
        if routes.is_empty() {
            return Err(Refused {
                error: SendError::NoPipeline(signal),
                env,
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut permits = Vec::with_capacity(routes.len());
        for r in routes {
            let permit = match r.tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err(Refused {
                        error: SendError::Closed(r.name.clone()),
                        env,
                    })
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    match tokio::time::timeout_at(deadline, r.tx.reserve()).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(_)) => {
                            return Err(Refused {
                                error: SendError::Closed(r.name.clone()),
                                env,
                            })
                        }
                        Err(_) => {
                            return Err(Refused {
                                error: SendError::Full(r.name.clone()),
                                env,
                            })
                        }
                    }
                }
            };
            permits.push((permit, &r.queued));
        }
        let last = permits.len() - 1;
        let mut env = Some(env);
        for (i, (permit, queued)) in permits.into_iter().enumerate() {
            let e = if i == last {
                env.take()
            } else {
                env.as_mut().map(Envelope::share)
            };
            if let Some(e) = e {
                queued.get(signal).inc_by(e.items as i64);
                permit.send(e);
            }
        }
        Ok(())
    }
}
