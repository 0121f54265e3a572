//! Reads the Prometheus/OpenMetrics text that `/metrics` serves back into samples, so `sluice top`
//! (over HTTP) and the own-telemetry exporter (in process) see exactly the numbers `/metrics`
//! shows, from the one registry that owns them. Only what `prometheus-client` writes is handled:
//! `# TYPE` lines, `name{label="value",…} number`, escaped label values.

/// What a metric family is, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; samples carry the `_total` suffix.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Anything else (not produced by Sluice today).
    Other,
}

/// One line of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name as `/metrics` prints it (counters end in `_total`).
    pub name: String,
    /// The family's kind.
    pub kind: Kind,
    /// Label pairs in printed order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`, if present.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample in `text`; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut kinds: Vec<(String, Kind)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let kind = match kind {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    _ => Kind::Other,
                };
                kinds.push((name.to_owned(), kind));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((name, labels, value)) = sample(line) {
            let family = name.strip_suffix("_total").unwrap_or(name);
            let kind = kinds
                .iter()
                .rev()
                .find(|(n, _)| n == name || n == family)
                .map_or(Kind::Other, |(_, k)| *k);
            out.push(Sample {
                name: name.to_owned(),
                kind,
                labels,
                value,
            });
        }
    }
    out
}

/// Every family in `text`: the name its samples carry (counters with `_total`), kind and help.
pub fn families(text: &str) -> Vec<(String, Kind, String)> {
    let mut helps: Vec<(&str, &str)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                helps.push((name, help));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let help = helps
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, h)| h)
                    .to_owned();
                let (sample_name, kind) = match kind {
                    "counter" => (format!("{name}_total"), Kind::Counter),
                    "gauge" => (name.to_owned(), Kind::Gauge),
                    _ => (name.to_owned(), Kind::Other),
                };
                out.push((sample_name, kind, help));
            }
        }
    }
    out
}

type Parsed<'a> = (&'a str, Vec<(String, String)>, f64);

fn sample(line: &str) -> Option<Parsed<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = line.get(..name_end)?;
    let mut rest = line.get(name_end..)?;
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            // key
            let mut key = String::new();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' => {
                        closed = true;
                        break;
                    }
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if closed {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => value.push(c),
                }
            }
            labels.push((key, value));
        }
        let consumed = chars.next().map_or(body.len(), |(i, _)| i);
        rest = body.get(consumed..)?;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_prometheus_client_writes() {
        let m = sluice_core::Metrics::new();
        m.receiver_accepted("otlp", sluice_config::Signal::Traces)
            .inc_by(42);
        m.exporter_load("out \"x\"").set(0.5);
        let s = parse(&m.render());
        let acc = s
            .iter()
            .find(|s| s.name == "sluice_receiver_accepted_items_total")
            .unwrap();
        assert_eq!(acc.kind, Kind::Counter);
        assert_eq!(acc.value, 42.0);
        assert_eq!(acc.label("receiver"), Some("otlp"));
        assert_eq!(acc.label("signal"), Some("traces"));
        let load = s.iter().find(|s| s.name == "sluice_exporter_load").unwrap();
        assert_eq!(load.kind, Kind::Gauge);
        assert_eq!(load.label("exporter"), Some("out \"x\""));
        assert_eq!(load.value, 0.5);
        let fams = families(&m.render());
        // Only families with a series are listed (the registry skips empty ones).
        assert!(fams
            .iter()
            .any(|(n, k, h)| n == "sluice_receiver_accepted_items_total"
                && *k == Kind::Counter
                && h.starts_with("Items (spans")));
        assert!(fams
            .iter()
            .any(|(n, k, _)| n == "sluice_exporter_load" && *k == Kind::Gauge));
        assert!(!fams
            .iter()
            .any(|(n, _, _)| n == "sluice_dropped_items_total"));
    }
}
