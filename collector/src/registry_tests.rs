//! The registry as `sluice validate` and reloads use it: every kind decodes its own table and
//! errors keep naming the file, the line and the TOML path.

use super::registry;
use sluice_config::{Config, ConfigError, WhenFull};
use sluice_core::component::Resolved;

fn env(name: &str) -> Option<String> {
    (name == "CH_HOST").then(|| "ch.example".to_owned())
}

fn resolve(text: &str) -> Result<Resolved, Vec<ConfigError>> {
    let cfg = Config::from_str_named("test.toml", text, &env).map_err(|e| e.0)?;
    registry().resolve(cfg).map_err(|e| e.0)
}

const GOOD: &str = r#"
[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:4317"
http = "127.0.0.1:4318"

[processors.batch]
type = "batch"
timeout = "50ms"

[exporters.out]
type = "otlp"
endpoint = "http://${CH_HOST}:4317"
queue = { max_items = 10, when_full = "drop" }

[pipelines.p]
signals = ["traces", "logs"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["out"]
"#;

fn first_err(text: &str) -> ConfigError {
    resolve(text).unwrap_err().remove(0)
}

#[test]
fn a_good_config_resolves_with_delivery_settings_parsed_once() {
    let r = resolve(GOOD).unwrap();
    let out = &r.exporters["out"];
    assert_eq!(out.kind, "otlp");
    assert_eq!(out.spec.delivery.queue.max_items, 10);
    assert_eq!(out.spec.delivery.queue.when_full, WhenFull::Drop);
    // The otlp exporter's own default concurrency.
    assert_eq!(out.spec.delivery.max_concurrency, 16);
    assert_eq!(r.processors["batch"].kind, "batch");
}

#[test]
fn embedded_default_is_valid() {
    registry()
        .resolve(Config::embedded_default().unwrap())
        .unwrap();
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = first_err(&GOOD.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nmax_itemz = 3"));
    assert_eq!(e.path.as_deref(), Some("processors.batch.max_itemz"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    assert!(e.to_string().starts_with("test.toml:10:"), "{e}");
}

#[test]
fn bad_duration_names_path() {
    let e = first_err(&GOOD.replace("\"50ms\"", "\"fifty\""));
    assert_eq!(e.path.as_deref(), Some("processors.batch.timeout"), "{e}");
    assert_eq!(e.line, Some(9));
    assert!(e.message.contains("duration"), "{e}");
}

#[test]
fn unknown_type_lists_the_kinds() {
    let e = first_err(&GOOD.replace("type = \"batch\"", "type = \"batchy\""));
    assert!(e.message.contains("unknown type `batchy`"), "{e}");
    assert!(e.message.contains("`adaptive_sampler`"), "{e}");
    assert_eq!(e.path.as_deref(), Some("processors.batch.type"), "{e}");
    assert_eq!(e.line, Some(8), "{e}");
}

#[test]
fn delivery_settings_are_checked_once_for_every_exporter() {
    let e = first_err(&GOOD.replace(
        "queue = { max_items = 10, when_full = \"drop\" }",
        "retry = { initial_interval = \"0s\" }",
    ));
    assert_eq!(
        e.path.as_deref(),
        Some("exporters.out.retry.initial_interval"),
        "{e}"
    );
    assert!(e.message.contains("hot loop"), "{e}");
    let e = first_err(&GOOD.replace("max_items = 10", "max_items = 0"));
    assert_eq!(
        e.path.as_deref(),
        Some("exporters.out.queue.max_items"),
        "{e}"
    );
    let e = first_err(&GOOD.replace(
        "queue = { max_items = 10, when_full = \"drop\" }",
        "queue = { max_itemz = 10 }",
    ));
    assert_eq!(
        e.path.as_deref(),
        Some("exporters.out.queue.max_itemz"),
        "{e}"
    );
    assert_eq!(e.line, Some(14), "{e}");
}

#[test]
fn a_sequential_exporter_refuses_max_concurrency() {
    let e = first_err(&GOOD.replace(
        "type = \"otlp\"\nendpoint = \"http://${CH_HOST}:4317\"",
        "type = \"file\"\npath = \"/tmp/x\"\nmax_concurrency = 4",
    ));
    assert_eq!(
        e.path.as_deref(),
        Some("exporters.out.max_concurrency"),
        "{e}"
    );
}

#[test]
fn signals_a_component_cannot_carry_are_rejected() {
    let text = GOOD.replace(
        "[exporters.out]",
        "[processors.tag]\ntype = \"attributes\"\nactions = [{ key = \"a\", action = \"delete\" }]\n\n[exporters.out]",
    )
    .replace("signals = [\"traces\", \"logs\"]", "signals = [\"traces\", \"profiles\"]")
    .replace("processors = [\"batch\"]", "processors = [\"batch\", \"tag\"]");
    let e = first_err(&text);
    assert_eq!(e.path.as_deref(), Some("pipelines.p.processors[1]"), "{e}");
    assert!(e.message.contains("cannot carry profiles"), "{e}");
}

#[test]
fn addresses_claimed_twice_are_rejected() {
    let e = first_err(&GOOD.replace("http = \"127.0.0.1:4318\"", "http = \"127.0.0.1:4317\""));
    assert_eq!(e.path.as_deref(), Some("receivers.otlp.http"), "{e}");
    assert!(e.message.contains("already used"), "{e}");
}

#[test]
fn clickhouse_ttl_shorter_than_an_hour_is_refused_at_its_line() {
    let e = first_err(&GOOD.replace(
        "type = \"otlp\"\nendpoint = \"http://${CH_HOST}:4317\"",
        "type = \"clickhouse\"\nendpoint = \"http://ch:8123\"\nttl = { traces = \"7d\", logs = \"10m\" }",
    ));
    assert_eq!(e.path.as_deref(), Some("exporters.out.ttl.logs"), "{e}");
    assert_eq!(e.line, Some(14), "{e}");
}
