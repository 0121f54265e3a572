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

fn first_err(text: &str) -> ConfigError {
    parse(text).unwrap_err().0.remove(0)
}

#[test]
fn keeps_component_tables_raw_and_interpolated() {
    let cfg = parse(GOOD).unwrap();
    let out = &cfg.exporters["out"];
    assert_eq!(out.kind(), Some("otlp"));
    assert_eq!(
        out.0.get("endpoint").and_then(toml::Value::as_str),
        Some("http://ch.example:4317")
    );
    assert_eq!(
        cfg.pipelines["p"].signals,
        vec![Signal::Traces, Signal::Logs]
    );
}

#[test]
fn equal_text_hashes_equal_and_a_change_does_not() {
    let a = parse(GOOD).unwrap();
    let b = parse(GOOD).unwrap();
    let c = parse(&GOOD.replace("50ms", "60ms")).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
}

#[test]
fn decode_errors_name_the_inner_key_and_line() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        timeout: HumanDuration,
    }
    let cfg =
        parse(&GOOD.replace("timeout = \"50ms\"", "timeout = \"50ms\"\nmax_itemz = 3")).unwrap();
    let mut table = cfg.processors["batch"].0.clone();
    table.remove("type");
    let base = [Seg::Key("processors".into()), Seg::Key("batch".into())];
    let e = cfg
        .decode::<Batch>(&base, toml::Value::Table(table))
        .unwrap_err();
    assert_eq!(e.path.as_deref(), Some("processors.batch.max_itemz"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    assert!(e.to_string().starts_with("test.toml:10:"), "{e}");
}

#[test]
fn undefined_component_in_pipeline() {
    let e = first_err(&GOOD.replace("exporters = [\"out\"]", "exporters = [\"nope\"]"));
    assert_eq!(e.path.as_deref(), Some("pipelines.p.exporters[0]"), "{e}");
    assert_eq!(e.line, Some(20), "{e}");
    assert!(e.message.contains("not defined"), "{e}");
}

#[test]
fn listed_twice() {
    let e = first_err(&GOOD.replace("exporters = [\"out\"]", "exporters = [\"out\", \"out\"]"));
    assert_eq!(e.path.as_deref(), Some("pipelines.p.exporters[1]"), "{e}");
}

#[test]
fn missing_env_var() {
    let e = first_err(&GOOD.replace("${CH_HOST}", "${NOT_SET_ANYWHERE}"));
    assert_eq!(e.path.as_deref(), Some("exporters.out.endpoint"), "{e}");
    assert_eq!(e.line, Some(13));
}

#[test]
fn syntax_error_has_line() {
    let e = first_err("[receivers.otlp\ntype = 1\n");
    assert_eq!(e.line, Some(1), "{e}");
    assert!(e.message.contains("syntax"), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let e = first_err(&format!("{GOOD}\n[extras]\nx = 1\n"));
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn embedded_default_parses() {
    Config::embedded_default().unwrap();
}
