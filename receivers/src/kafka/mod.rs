//! The Kafka receiver: a member of a consumer group reading OTLP export requests (what Sluice's
//! and the OpenTelemetry Collector's Kafka exporters write) from one topic per signal.
//!
//! **At-least-once.** Each record's offset is tracked in its partition's [`AckLog`]; the record's
//! data carries the log's token through the pipelines to every exporter, and an offset is
//! committed only once it and every record before it in the partition were delivered (or dropped
//! for a counted reason). A crash or a `SIGKILL` loses nothing: the group re-reads from the last
//! committed offset (records after it may arrive twice). A partition with `max_unacknowledged`
//! records in flight is paused until exporters catch up, so memory stays bounded while the group
//! keeps the partition. On a rebalance, what was delivered of a revoked partition is committed
//! first. A record that does not decode is counted, logged (rate-limited), optionally copied to
//! the `dead_letter_topic`, and committed: it never stops its partition.

pub mod config;

pub use config::{InitialOffset, KafkaReceiverConfig};

use crate::ingest::{Ingest, IngestError, LogEvery};
use crate::otlp::decode::{decode_charged, Format};
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::component::{Problems, Receiver, ReceiverContext, ReceiverError, ReceiverKind};
use sluice_core::{AckLog, BoxFuture, Lease, Metrics, SendError, Signal};
use sluice_kafka::{
    describe, is_missing_topic, validate_create_topics, validate_topic, Connection, KafkaEncoding,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for records in flight to be delivered before the last commit.
const DRAIN: Duration = Duration::from_secs(10);

impl ReceiverKind for KafkaReceiverConfig {
    const TYPE: &'static str = "kafka";

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        Vec::new()
    }

    fn validate(&self, problems: &mut Problems) {
        connection(self).validate("consumer", &self.consumer, problems);
        if self.group_id.is_empty() {
            problems.at("group_id", "is empty; gateways of one pool share a group id such as \"sluice-gateways\"");
        }
        for s in Signal::ALL {
            validate_topic(&format!("topics.{s}"), self.topics.of(s), problems);
        }
        if let Some(t) = &self.dead_letter_topic {
            validate_topic("dead_letter_topic", t, problems);
            if Signal::ALL.iter().any(|&s| self.topics.of(s) == t) {
                problems.at("dead_letter_topic", "is one of the topics this receiver reads; a record that does not decode would come back forever");
            }
        }
        if let Some(c) = &self.create_topics {
            validate_create_topics(c, problems);
        }
        if self.max_unacknowledged == 0 {
            problems.at("max_unacknowledged", "must be at least 1");
        }
        if self.commit_interval.0.is_zero() {
            problems.at("commit_interval", "must be greater than 0");
        }
        for k in ["group.id", "enable.auto.commit", "enable.auto.offset.store"] {
            if self.consumer.contains_key(k) {
                problems.at(
                    &format!("consumer.{k}"),
                    "is managed by the receiver (group_id; offsets are committed once data is delivered)",
                );
            }
        }
        // librdkafka checks every property name and value without a client.
        if let Err(e) = consumer_config(self).create_native_config() {
            problems.at("consumer", describe(&e));
        }
    }

    fn build(&self, ctx: &mut ReceiverContext<'_>) -> Result<Box<dyn Receiver>, String> {
        let shared = Arc::new(Shared {
            name: ctx.name.to_owned(),
            parts: Mutex::default(),
            metrics: ctx.metrics.clone(),
            commit_log: LogEvery::new(Duration::from_secs(10)),
        });
        let consumer: StreamConsumer<Ctx> = consumer_config(self)
            .create_with_context(Ctx(shared.clone()))
            .map_err(|e| format!("cannot create the Kafka consumer: {}", describe(&e)))?;
        let dead_letter = match &self.dead_letter_topic {
            None => None,
            Some(t) => {
                let producer: FutureProducer = connection(self)
                    .client_config()
                    .create()
                    .map_err(|e| format!("cannot create the dead-letter producer: {}", describe(&e)))?;
                Some((producer, t.clone()))
            }
        };
        Ok(Box::new(KafkaReceiver {
            cfg: self.clone(),
            shared,
            consumer: Arc::new(consumer),
            topics: Vec::new(),
            dead_letter,
            ingest: Ingest::new(
                ctx.name,
                ctx.routes.clone(),
                Duration::from_secs(1),
                ctx.metrics,
                ctx.budget.clone(),
            ),
            refused_log: LogEvery::new(Duration::from_secs(10)),
        }))
    }
}

fn connection(cfg: &KafkaReceiverConfig) -> Connection<'_> {
    Connection {
        brokers: &cfg.brokers,
        tls: cfg.tls.as_ref(),
        sasl: cfg.sasl.as_ref(),
    }
}

/// The consumer's librdkafka properties: the connection, Sluice's consumer settings, then the
/// user's `consumer` table.
fn consumer_config(cfg: &KafkaReceiverConfig) -> ClientConfig {
    let mut client = connection(cfg).client_config();
    client
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", cfg.initial_offset.as_str())
        // Lag per partition for /metrics.
        .set("statistics.interval.ms", "1000")
        // librdkafka's prefetch is bounded in bytes (its default is 64 MiB per client).
        .set("queued.max.messages.kbytes", "16384");
    for (k, v) in &cfg.consumer {
        client.set(k, v);
    }
    client
}

/// One partition this member reads.
struct Part {
    log: Arc<AckLog>,
    /// Highest offset delivered with everything before it.
    settled: Option<i64>,
    /// Highest `settled` committed so far.
    committed: Option<i64>,
    paused: bool,
}

impl Part {
    fn new() -> Self {
        Self {
            log: AckLog::new(),
            settled: None,
            committed: None,
            paused: false,
        }
    }
}

type PartKey = (String, i32);

/// What the consumer loop and librdkafka's callbacks share.
struct Shared {
    name: String,
    parts: Mutex<HashMap<PartKey, Part>>,
    metrics: Metrics,
    commit_log: LogEvery,
}

impl Shared {
    fn parts(&self) -> std::sync::MutexGuard<'_, HashMap<PartKey, Part>> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The offsets to commit now: for each partition (or only `only`), the record after the last
    /// one delivered with everything before it, if that moved since the last commit (or, with
    /// `again`, also if it did not: an asynchronous commit may have failed unseen).
    fn to_commit(&self, only: Option<&TopicPartitionList>, again: bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let mut parts = self.parts();
        let wanted: Option<Vec<PartKey>> = only.map(|l| {
            l.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        });
        for ((topic, partition), part) in parts.iter_mut() {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.iter().any(|(t, p)| t == topic && p == partition))
            {
                continue;
            }
            if let Some(x) = part.log.settled_through() {
                part.settled = Some(x);
            }
            self.metrics
                .kafka_unacked(&self.name, topic, *partition)
                .set(part.log.pending() as i64);
            if let Some(x) = part.settled {
                if (again || part.committed != Some(x))
                    && tpl
                        .add_partition_offset(topic, *partition, Offset::Offset(x + 1))
                        .is_ok()
                {
                    part.committed = Some(x);
                }
            }
        }
        tpl
    }

    fn commit_failed(&self, e: &rdkafka::error::KafkaError) {
        if let Some(skipped) = self.commit_log.check() {
            tracing::warn!(receiver = %self.name, error = %e, also_failed = skipped, "committing delivered offsets failed; they are committed with the next ones (a restart before that reads those records again)");
        }
    }
}

/// librdkafka's callbacks: lag from its statistics, commits on rebalance.
struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.0
                        .metrics
                        .kafka_lag(&self.0.name, topic, partition)
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            // What was delivered of the partitions leaving this member is committed before
            // another member starts on them.
            let tpl = self.0.to_commit(Some(revoked), true);
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    self.0.commit_failed(&e);
                }
            }
            let mut parts = self.0.parts();
            for e in revoked.elements() {
                parts.remove(&(e.topic().to_owned(), e.partition()));
                self.0
                    .metrics
                    .kafka_unacked(&self.0.name, e.topic(), e.partition())
                    .set(0);
            }
            tracing::info!(receiver = %self.0.name, partitions = revoked.count(), "Kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                // librdkafka keeps a partition paused across a revoke and a new assignment to
                // the same member; every assigned partition starts afresh here, unpaused.
                if let Err(e) = consumer.resume(assigned) {
                    tracing::warn!(receiver = %self.0.name, error = %e, "cannot resume newly assigned partitions");
                }
                let mut parts = self.0.parts();
                for e in assigned.elements() {
                    parts
                        .entry((e.topic().to_owned(), e.partition()))
                        .or_insert_with(Part::new);
                }
                let list: Vec<String> = assigned
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(receiver = %self.0.name, partitions = ?list, "Kafka partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::error!(receiver = %self.0.name, error = %e, "Kafka rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.0.commit_failed(&e);
        }
    }
}

/// A built Kafka receiver.
pub struct KafkaReceiver {
    cfg: KafkaReceiverConfig,
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<Ctx>>,
    topics: Vec<(Arc<str>, Signal)>,
    dead_letter: Option<(FutureProducer, String)>,
    ingest: Ingest,
    refused_log: LogEvery,
}

/// One record, copied out of librdkafka's buffer.
struct Record {
    topic: Arc<str>,
    signal: Signal,
    partition: i32,
    offset: i64,
    payload: Bytes,
}

impl Receiver for KafkaReceiver {
    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ReceiverError>> {
        Box::pin(async move {
            (*self).run(shutdown).await;
            Ok(())
        })
    }
}

impl KafkaReceiver {
    /// Reads until `shutdown`; then waits (at most [`DRAIN`]) for records in flight to be
    /// delivered, commits, and leaves the group.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.shared.name.clone();
        // The topics of the signals pipelines take from this receiver; a reload that changes
        // them changes the subscription at the next tick.
        self.topics = self.wanted_topics();
        if !self.create_topics(&shutdown).await {
            return;
        }
        self.subscribe();
        let mut tick = tokio::time::interval(self.cfg.commit_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut missing_reported = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    self.commit(CommitMode::Async);
                    let wanted = self.wanted_topics();
                    if wanted != self.topics {
                        self.topics = wanted;
                        if !self.create_topics(&shutdown).await {
                            break;
                        }
                        self.subscribe();
                    }
                }
                msg = self.consumer.recv(), if !self.topics.is_empty() => {
                    let record = match msg {
                        Ok(m) => self.record(&m),
                        Err(e) => {
                            if is_missing_topic(&e) {
                                if !missing_reported {
                                    missing_reported = true;
                                    tracing::error!(receiver = %name, topics = ?self.topic_names(), error = %e, "a Kafka topic this receiver reads does not exist; create it, or set create_topics = {{ partitions = N, replication_factor = R }} on this receiver");
                                }
                            } else if let Some(skipped) = self.refused_log.check() {
                                tracing::warn!(receiver = %name, error = %e, also_failed = skipped, "Kafka consumer error (librdkafka retries)");
                            }
                            continue;
                        }
                    };
                    if let Some(record) = record {
                        if !self.take(record, &shutdown).await {
                            break;
                        }
                    }
                }
            }
        }
        self.drain().await;
        self.consumer.unsubscribe();
        tracing::info!(receiver = %name, "Kafka receiver stopped");
    }

    fn wanted_topics(&self) -> Vec<(Arc<str>, Signal)> {
        let routes = self.ingest.routes();
        Signal::ALL
            .into_iter()
            .filter(|&s| routes.accepts(s))
            .map(|s| (Arc::from(self.cfg.topics.of(s)), s))
            .collect()
    }

    fn topic_names(&self) -> Vec<&str> {
        self.topics.iter().map(|(t, _)| &**t).collect()
    }

    fn subscribe(&self) {
        let name = &self.shared.name;
        let names = self.topic_names();
        if names.is_empty() {
            self.consumer.unsubscribe();
            tracing::warn!(receiver = %name, "no pipeline takes data from this Kafka receiver; it reads nothing");
            return;
        }
        match self.consumer.subscribe(&names) {
            Ok(()) => tracing::info!(receiver = %name, topics = ?names, group = %self.cfg.group_id, "Kafka receiver subscribed"),
            Err(e) => tracing::error!(receiver = %name, error = %describe(&e), "cannot subscribe to the Kafka topics"),
        }
    }

    /// Copies a record out and registers its offset; `None` for a topic not read here.
    fn record(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Record> {
        let (topic, signal) = self.topics.iter().find(|(t, _)| **t == *m.topic())?;
        Some(Record {
            topic: topic.clone(),
            signal: *signal,
            partition: m.partition(),
            offset: m.offset(),
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        })
    }

    /// Decodes a record and hands it to the pipelines, waiting while they (or the memory
    /// budget) have no room. False when shutdown came first (the record stays uncommitted).
    async fn take(&self, r: Record, shutdown: &CancellationToken) -> bool {
        let log = {
            let mut parts = self.shared.parts();
            parts
                .entry((r.topic.to_string(), r.partition))
                .or_insert_with(Part::new)
                .log
                .clone()
        };
        let token = log.track(r.offset);
        if log.pending() > self.cfg.max_unacknowledged {
            self.pause(&r.topic, r.partition);
        }
        let format = match self.cfg.encoding {
            KafkaEncoding::OtlpProto => Format::Protobuf,
            KafkaEncoding::OtlpJson => Format::Json,
        };
        let mut backoff = Duration::from_millis(10);
        let data = loop {
            let attempt = self
                .ingest
                .admit(r.signal, r.payload.len())
                .and_then(|mut charge| {
                    decode_charged(&self.ingest, r.signal, format, r.payload.clone(), &mut charge)
                        .map(|data| (data, charge))
                });
            match attempt {
                Ok(ok) => break ok,
                Err(e) if e.retryable() => {
                    // Over the memory budget: wait for exporters, do not refuse.
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            log.hold_back(r.offset);
                            return false;
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    self.skip(&r, &e).await;
                    return true;
                }
            }
        };
        let (data, charge) = data;
        let mut lease = Lease::charged(charge);
        lease.hold(token);
        let (mut env, _) = self.ingest.prepare(data, lease);
        let (signal, items) = (r.signal, env.items);
        loop {
            match self.ingest.routes().offer(env, self.ingest.timeout()).await {
                Ok(()) => {
                    self.ingest.accepted(signal, items);
                    return true;
                }
                Err(refused) => {
                    if let SendError::NoPipeline(_) = refused.error {
                        // A reload removed the pipeline: counted, and the record committed.
                        let e = IngestError::NoPipeline(refused.error.to_string());
                        self.ingest.refused(signal, items, &e);
                        return true;
                    }
                    if shutdown.is_cancelled() {
                        log.hold_back(r.offset);
                        return false;
                    }
                    env = refused.env;
                    if let SendError::Closed(_) = refused.error {
                        // A reload is swapping the pipelines.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }

    /// A record that does not decode: counted, logged (rate-limited), copied to the dead-letter
    /// topic if there is one; its offset is committed with the next ones.
    async fn skip(&self, r: &Record, e: &IngestError) {
        self.ingest.refused(r.signal, 0, e);
        if let Some(skipped) = self.refused_log.check() {
            tracing::warn!(receiver = %self.shared.name, topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, also_skipped = skipped, "Kafka record does not decode; skipped (counted in sluice_receiver_refused_requests_total)");
        }
        let Some((producer, topic)) = &self.dead_letter else {
            return;
        };
        let (partition, offset, error) = (r.partition.to_string(), r.offset.to_string(), e.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: "sluice.source.topic", value: Some(&*r.topic) })
            .insert(Header { key: "sluice.source.partition", value: Some(&partition) })
            .insert(Header { key: "sluice.source.offset", value: Some(&offset) })
            .insert(Header { key: "sluice.error", value: Some(&error) });
        let record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&r.payload[..])
            .headers(headers);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::error!(receiver = %self.shared.name, dead_letter_topic = %topic, error = %describe(&e), "cannot copy an undecodable record to the dead-letter topic; it is skipped anyway");
        }
    }

    fn pause(&self, topic: &str, partition: i32) {
        let mut parts = self.shared.parts();
        let Some(part) = parts.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if part.paused {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        match self.consumer.pause(&tpl) {
            Ok(()) => {
                part.paused = true;
                tracing::debug!(receiver = %self.shared.name, %topic, partition, "partition paused until exporters catch up");
            }
            Err(e) => tracing::warn!(receiver = %self.shared.name, %topic, partition, error = %e, "cannot pause a partition"),
        }
    }

    /// Commits what was delivered since the last commit, and resumes paused partitions whose
    /// records in flight fell to half the limit.
    fn commit(&self, mode: CommitMode) {
        let tpl = self.shared.to_commit(None, matches!(mode, CommitMode::Sync));
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, mode) {
                self.shared.commit_failed(&e);
            }
        }
        let mut parts = self.shared.parts();
        let mut resume = TopicPartitionList::new();
        for ((topic, partition), part) in parts.iter_mut() {
            if part.paused && part.log.pending() <= self.cfg.max_unacknowledged / 2 {
                resume.add_partition(topic, *partition);
                part.paused = false;
            }
        }
        if resume.count() > 0 {
            if let Err(e) = self.consumer.resume(&resume) {
                tracing::warn!(receiver = %self.shared.name, error = %e, "cannot resume partitions");
            }
        }
    }

    /// At shutdown: waits until what is in flight was delivered (or [`DRAIN`] passed), commits.
    async fn drain(&self) {
        let until = tokio::time::Instant::now() + DRAIN;
        loop {
            let pending: usize = self.shared.parts().values().map(|p| p.log.pending()).sum();
            if pending == 0 || tokio::time::Instant::now() >= until {
                if pending > 0 {
                    tracing::warn!(receiver = %self.shared.name, records = pending, "records still in flight at shutdown are not committed; the group reads them again");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.commit(CommitMode::Sync);
    }

    /// With `create_topics`, creates the topics (and the dead-letter topic) that are missing,
    /// retrying until the brokers answer. False when shutdown came first.
    async fn create_topics(&self, shutdown: &CancellationToken) -> bool {
        let Some(spec) = self.cfg.create_topics else {
            return true;
        };
        let mut topics = self.topic_names();
        if topics.is_empty() {
            return true;
        }
        if let Some(d) = &self.cfg.dead_letter_topic {
            topics.push(d);
        }
        let client = connection(&self.cfg).client_config();
        loop {
            match sluice_kafka::create_topics(&client, &topics, spec).await {
                Ok(()) => return true,
                Err(e) => {
                    if let Some(skipped) = self.refused_log.check() {
                        tracing::error!(receiver = %self.shared.name, error = %e, also_failed = skipped, "cannot create the Kafka topics; retrying");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}
