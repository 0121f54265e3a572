//! Checks that need the whole configuration: references between components, signals, addresses.

use crate::source::{Seg, Source};
use crate::{
    AttributeActionKind, Config, ConfigError, ExporterConfig, ProcessorConfig, ReceiverConfig,
    Signal,
};
use std::collections::HashMap;
use std::net::SocketAddr;

fn key(s: &str) -> Seg {
    Seg::Key(s.to_owned())
}

pub(crate) fn validate(cfg: &Config, src: &Source) -> Result<(), Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut err = |path: Vec<Seg>, msg: String| errs.push(src.error_at(&path, msg));

    if cfg.pipelines.is_empty() {
        err(
            vec![],
            "no pipelines: add at least one [pipelines.NAME] with signals, receivers and exporters"
                .into(),
        );
    }

    // Listen addresses must be unique across receivers and the admin server.
    let mut addrs: HashMap<SocketAddr, Vec<Seg>> = HashMap::new();
    let mut claim = |addr: SocketAddr, path: Vec<Seg>, err: &mut dyn FnMut(Vec<Seg>, String)| {
        if let Some(prev) = addrs.get(&addr) {
            err(
                path,
                format!(
                    "address {addr} is already used by `{}`",
                    crate::source::render_path(prev)
                ),
            );
        } else {
            addrs.insert(addr, path);
        }
    };
    if let Some(t) = &cfg.service.telemetry {
        for (k, msg) in t.problems() {
            err(vec![key("service"), key("telemetry"), key(k)], msg);
        }
    }
    if let Some(a) = cfg.service.admin {
        claim(a.0, vec![key("service"), key("admin")], &mut err);
    }
    for (name, r) in &cfg.receivers {
        let base = vec![key("receivers"), key(name)];
        match r {
            ReceiverConfig::Otlp(o) => {
                if o.grpc.is_none() && o.http.is_none() {
                    err(
                        base.clone(),
                        "an otlp receiver needs `grpc` and/or `http` listen addresses".into(),
                    );
                }
                for (k, a) in [("grpc", o.grpc), ("http", o.http)] {
                    if let Some(a) = a {
                        let mut p = base.clone();
                        p.push(key(k));
                        claim(a.0, p, &mut err);
                    }
                }
                if o.max_request_size.0 == 0 {
                    err(
                        with(&base, "max_request_size"),
                        "must be greater than 0".into(),
                    );
                }
            }
            ReceiverConfig::Pprof(p) => {
                claim(p.http.0, with(&base, "http"), &mut err);
                if p.max_request_size.0 == 0 {
                    err(
                        with(&base, "max_request_size"),
                        "must be greater than 0".into(),
                    );
                }
            }
        }
    }

    for (name, p) in &cfg.processors {
        let base = vec![key("processors"), key(name)];
        match p {
            ProcessorConfig::Batch(b) => {
                if b.max_items == 0 {
                    err(with(&base, "max_items"), "must be at least 1".into());
                }
                if b.timeout.0.is_zero() {
                    err(
                        with(&base, "timeout"),
                        "must be greater than 0 (e.g. \"200ms\")".into(),
                    );
                }
            }
            ProcessorConfig::AdaptiveSampler(c) => {
                let prob = |k: &str, v: f64, err: &mut dyn FnMut(Vec<Seg>, String)| {
                    if !(v > 0.0 && v <= 1.0) {
                        err(
                            with(&base, k),
                            format!("must be a probability in (0, 1], got {v}"),
                        );
                    }
                };
                prob("probability", c.probability, &mut err);
                prob("min_probability", c.min_probability, &mut err);
                prob("max_probability", c.max_probability, &mut err);
                if c.min_probability > c.max_probability {
                    err(
                        with(&base, "min_probability"),
                        "must not exceed max_probability".into(),
                    );
                }
                if !(c.low_watermark >= 0.0 && c.low_watermark < c.high_watermark) {
                    err(
                        with(&base, "low_watermark"),
                        format!(
                            "must be at least 0 and below high_watermark ({})",
                            c.high_watermark
                        ),
                    );
                }
                if c.interval.0.is_zero() {
                    err(
                        with(&base, "interval"),
                        "must be greater than 0 (e.g. \"1s\")".into(),
                    );
                }
                if !(1..=14).contains(&c.precision) {
                    err(
                        with(&base, "precision"),
                        format!("must be 1 to 14 hex digits, got {}", c.precision),
                    );
                }
                for (k, v) in [
                    ("target_rate", c.target_rate),
                    ("per_service_floor", c.per_service_floor),
                ] {
                    if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                        err(
                            with(&base, k),
                            "must be a positive number of items per second".into(),
                        );
                    }
                }
                let tiered = c.mode == crate::SamplerMode::Tiered;
                if tiered && c.tiers.is_empty() {
                    err(
                        with(&base, "tiers"),
                        "tiered mode needs at least one [[tiers]] entry".into(),
                    );
                }
                if !tiered && !c.tiers.is_empty() {
                    err(
                        with(&base, "tiers"),
                        "tiers only apply with mode = \"tiered\"".into(),
                    );
                }
                for (i, t) in c.tiers.iter().enumerate() {
                    let p = at(&base, "tiers", i);
                    if t.when_input_rate_above.is_none() && t.when_load_above.is_none() {
                        err(
                            p.clone(),
                            "a tier needs when_input_rate_above and/or when_load_above".into(),
                        );
                    }
                    if !(t.probability > 0.0 && t.probability <= 1.0) {
                        err(
                            with(&p, "probability"),
                            format!("must be a probability in (0, 1], got {}", t.probability),
                        );
                    }
                }
            }
            ProcessorConfig::Attributes(a) => {
                if a.actions.is_empty() {
                    err(with(&base, "actions"), "needs at least one action".into());
                }
                for (i, act) in a.actions.iter().enumerate() {
                    let mut p = with(&base, "actions");
                    p.push(Seg::Index(i));
                    let needs_value = act.action != AttributeActionKind::Delete;
                    if needs_value && act.value.is_none() {
                        err(
                            p,
                            format!("action {:?} needs a `value`", act.action).to_lowercase(),
                        );
                    } else if !needs_value && act.value.is_some() {
                        err(with(&p, "value"), "a delete action takes no `value`".into());
                    }
                }
            }
        }
    }

    for (name, e) in &cfg.exporters {
        let base = vec![key("exporters"), key(name)];
        if e.queue().max_items == 0 {
            err(
                vec![key("exporters"), key(name), key("queue"), key("max_items")],
                "must be at least 1".into(),
            );
        }
        if !(1..=1024).contains(&e.max_concurrency()) {
            err(
                with(&base, "max_concurrency"),
                "must be between 1 and 1024".into(),
            );
        }
        match e {
            ExporterConfig::File(f) => {
                if f.path.trim().is_empty() {
                    err(with(&base, "path"), "must name a directory".into());
                }
                if f.max_files == 0 {
                    err(with(&base, "max_files"), "must be at least 1".into());
                }
                if f.max_file_size.0 < 1024 {
                    err(with(&base, "max_file_size"), "must be at least 1KiB".into());
                }
            }
            ExporterConfig::Blackhole(b) => {
                if let Some(r) = b.max_rate {
                    if !(r.is_finite() && r > 0.0) {
                        err(
                            with(&base, "max_rate"),
                            format!("must be a positive number of items per second, got {r}"),
                        );
                    }
                }
            }
            ExporterConfig::Clickhouse(c) => {
                if !(c.endpoint.starts_with("http://") || c.endpoint.starts_with("https://")) {
                    err(
                        with(&base, "endpoint"),
                        format!("invalid endpoint {:?}; expected a URL such as \"http://127.0.0.1:8123\"", c.endpoint),
                    );
                }
                let ident_ok = |s: &str| {
                    !s.is_empty() && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                };
                if !ident_ok(&c.database) {
                    err(
                        with(&base, "database"),
                        "must be a plain identifier (letters, digits, _)".into(),
                    );
                }
                if c.cluster.as_deref().is_some_and(|cl| !ident_ok(cl)) {
                    err(
                        with(&base, "cluster"),
                        "must be a plain identifier (letters, digits, _)".into(),
                    );
                }
                if !c.table_engine.contains("MergeTree") {
                    err(
                        with(&base, "table_engine"),
                        format!(
                            "expected a MergeTree-family engine, got {:?}",
                            c.table_engine
                        ),
                    );
                }
                for (signal, msg) in c.ttl.problems() {
                    let ttl = with(&base, "ttl");
                    err(signal.map_or(ttl.clone(), |s| with(&ttl, s.as_str())), msg);
                }
            }
            ExporterConfig::Kafka(k) => {
                if k.brokers.is_empty() {
                    err(
                        with(&base, "brokers"),
                        "lists no brokers; expected addresses such as [\"kafka-1:9092\"]".into(),
                    );
                }
                for (i, b) in k.brokers.iter().enumerate() {
                    let ok = b
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        err(
                            at(&base, "brokers", i),
                            format!(
                                "invalid broker {b:?}; expected host:port such as \"kafka-1:9092\""
                            ),
                        );
                    }
                }
                if k.max_message_bytes.0 < 1024 {
                    err(
                        with(&base, "max_message_bytes"),
                        "must be at least 1KiB".into(),
                    );
                }
                for s in &Signal::ALL {
                    let t = k.topics.of(*s);
                    let ok = !t.is_empty()
                        && t.len() <= 249
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                    if !ok {
                        err(
                            with(&with(&base, "topics"), &s.to_string()),
                            format!("invalid topic {t:?}; expected letters, digits, '.', '_' or '-' (at most 249)"),
                        );
                    }
                }
            }
            ExporterConfig::Otlp(o) => {
                if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://"))
                    || o.endpoint.len() <= "https://".len()
                {
                    err(
                        with(&base, "endpoint"),
                        format!(
                            "invalid endpoint {:?}; expected a URL such as \"http://gateway:4317\"",
                            o.endpoint
                        ),
                    );
                }
            }
        }
    }

    for (pname, p) in &cfg.pipelines {
        let base = vec![key("pipelines"), key(pname)];
        if p.signals.is_empty() {
            err(with(&base, "signals"), "lists no signals; expected some of \"traces\", \"metrics\", \"logs\", \"profiles\"".into());
        }
        for (i, s) in p.signals.iter().enumerate() {
            if p.signals[..i].contains(s) {
                err(
                    at(&base, "signals", i),
                    format!("signal {s} is listed twice"),
                );
            }
        }
        if p.receivers.is_empty() {
            err(with(&base, "receivers"), "lists no receivers".into());
        }
        if p.exporters.is_empty() {
            err(with(&base, "exporters"), "lists no exporters".into());
        }
        let mut check =
            |kind: &str, i: usize, name: &str, found: Option<(&'static str, &'static [Signal])>| {
                let path = at(&base, kind, i);
                match found {
                    None => err(
                        path,
                        format!(
                            "{} {name:?} is not defined; add a [{kind}.{name}] table",
                            singular(kind)
                        ),
                    ),
                    Some((ty, supported)) => {
                        for s in &p.signals {
                            if !supported.contains(s) {
                                err(
                                    path.clone(),
                                    format!(
                                        "{} {name:?} (type {ty}) cannot carry {s}; it supports {}",
                                        singular(kind),
                                        supported
                                            .iter()
                                            .map(|s| s.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
            };
        for (i, r) in p.receivers.iter().enumerate() {
            check(
                "receivers",
                i,
                r,
                cfg.receivers.get(r).map(|c| (c.kind(), c.signals())),
            );
        }
        for (i, r) in p.processors.iter().enumerate() {
            check(
                "processors",
                i,
                r,
                cfg.processors.get(r).map(|c| (c.kind(), c.signals())),
            );
        }
        for (i, r) in p.exporters.iter().enumerate() {
            check(
                "exporters",
                i,
                r,
                cfg.exporters.get(r).map(|c| (c.kind(), c.signals())),
            );
        }
        let batches: Vec<usize> = p
            .processors
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(cfg.processors.get(*n), Some(ProcessorConfig::Batch(_))))
            .map(|(i, _)| i)
            .collect();
        if batches.len() > 1 {
            err(
                at(&base, "processors", batches[1]),
                "a pipeline may hold at most one batch processor".into(),
            );
        }
        for kind in ["receivers", "processors", "exporters"] {
            let list = match kind {
                "receivers" => &p.receivers,
                "processors" => &p.processors,
                _ => &p.exporters,
            };
            for (i, n) in list.iter().enumerate() {
                if list[..i].contains(n) {
                    err(
                        at(&base, kind, i),
                        format!("{} {n:?} is listed twice", singular(kind)),
                    );
                }
            }
        }
    }

    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn with(base: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(key(k));
    p
}

fn at(base: &[Seg], k: &str, i: usize) -> Vec<Seg> {
    let mut p = with(base, k);
    p.push(Seg::Index(i));
    p
}

fn singular(kind: &str) -> &str {
    kind.strip_suffix('s').unwrap_or(kind)
}
