use super::*;

fn env(name: &str) -> Option<String> {
    (name == "CH_HOST").then(|| "ch.example".to_owned())
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_named("test.toml", text, &env)
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

#[test]
fn parses_a_good_config() {
    let cfg = parse(GOOD).unwrap();
    let ExporterConfig::Otlp(o) = &cfg.exporters["out"] else {
        panic!()
    };
    assert_eq!(o.endpoint, "http://ch.example:4317");
    assert_eq!(o.queue.max_items, 10);
    assert_eq!(o.queue.when_full, WhenFull::Drop);
    let ProcessorConfig::Batch(b) = &cfg.processors["batch"] else {
        panic!()
    };
    assert_eq!(b.timeout.0, std::time::Duration::from_millis(50));
    assert_eq!(b.max_items, 8192);
}

#[test]
fn embedded_default_is_valid() {
    Config::embedded_default().unwrap();
}

fn first_err(text: &str) -> ConfigError {
    parse(text).unwrap_err().0.remove(0)
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
fn undefined_component_in_pipeline() {
    let e = first_err(&GOOD.replace("exporters = [\"out\"]", "exporters = [\"nope\"]"));
    assert_eq!(e.path.as_deref(), Some("pipelines.p.exporters[0]"), "{e}");
    assert_eq!(e.line, Some(20), "{e}");
}

#[test]
fn missing_env_var() {
    let e = first_err(&GOOD.replace("${CH_HOST}", "${NOT_SET_ANYWHERE}"));
    assert_eq!(e.path.as_deref(), Some("exporters.out.endpoint"), "{e}");
    assert_eq!(e.line, Some(13));
}

#[test]
fn unknown_type() {
    let e = first_err(&GOOD.replace("type = \"batch\"", "type = \"batchy\""));
    assert!(e.message.contains("unknown type"), "{e}");
    assert_eq!(e.line, Some(8), "{e}");
}

#[test]
fn syntax_error_has_line() {
    let e = first_err("[receivers.otlp\ntype = 1\n");
    assert_eq!(e.line, Some(1), "{e}");
    assert!(e.message.contains("syntax"), "{e}");
}
