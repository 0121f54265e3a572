"""Acceptance 6: broken configs make `sluice validate` exit non-zero with a message naming the file,
the TOML path and the line."""

import os
import subprocess

import pytest
from conftest import BIN

BASE = """\
[service]
admin = "127.0.0.1:13999"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:14317"
http = "127.0.0.1:14318"

[processors.batch]
type = "batch"
timeout = "200ms"

[processors.tag]
type = "attributes"
actions = [{ key = "env", action = "insert", value = "prod" }]

[exporters.out]
type = "file"
path = "/tmp/sluice-validate-test"

[pipelines.main]
signals = ["traces", "logs"]
receivers = ["otlp"]
processors = ["batch", "tag"]
exporters = ["out"]
"""

# name: (replace this, with that, expected line, expected path, words the message must contain)
BROKEN = {
    "unknown key": ('timeout = "200ms"', 'timeout = "200ms"\nmax_itemz = 5', 12, "processors.batch.max_itemz", "unknown field"),
    "unknown type": ('type = "file"', 'type = "s3"', 18, "exporters.out.type", "unknown type `s3`"),
    "undefined component": ('exporters = ["out"]', 'exporters = ["out", "kafka"]', 25, "pipelines.main.exporters[1]", "not defined"),
    "signal not carried": ('signals = ["traces", "logs"]', 'signals = ["traces", "logs", "profiles"]', 24, "pipelines.main.processors[1]", "cannot carry profiles"),
    "bad duration": ('timeout = "200ms"', 'timeout = "fast"', 11, "processors.batch.timeout", "duration"),
    "bad address": ('grpc = "127.0.0.1:14317"', 'grpc = "localhost"', 6, "receivers.otlp.grpc", "HOST:PORT"),
    "missing env var": ('path = "/tmp/sluice-validate-test"', 'path = "${SLUICE_TEST_UNSET_VAR}/data"', 19, "exporters.out.path", "SLUICE_TEST_UNSET_VAR is not set"),
    "toml syntax": ('[exporters.out]', '[exporters.out', 17, None, "syntax"),
    "bad size": ('http = "127.0.0.1:14318"', 'http = "127.0.0.1:14318"\nmax_request_size = "lots"', 8, "receivers.otlp.max_request_size", "size"),
    "duplicate address": ('http = "127.0.0.1:14318"', 'http = "127.0.0.1:14317"', 7, "receivers.otlp.http", "already used"),
    "wrong value type": ('timeout = "200ms"', 'timeout = "200ms"\nmax_items = "many"', 12, "processors.batch.max_items", "integer"),
    "bad kafka broker": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "kafka"\nbrokers = ["kafka-1:9092", "kafka-2"]', 19, "exporters.out.brokers[1]", "host:port"),
    "bad kafka topic": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "kafka"\nbrokers = ["k:9092"]\ntopics = { traces = "spans/all" }', 20, "exporters.out.topics.traces", "invalid topic"),
    "bad telemetry endpoint": ('admin = "127.0.0.1:13999"', 'admin = "127.0.0.1:13999"\n[service.telemetry]\nendpoint = "collector:4317"', 4, "service.telemetry.endpoint", "URL"),
    "bad telemetry protocol": ('admin = "127.0.0.1:13999"', 'admin = "127.0.0.1:13999"\n[service.telemetry]\nendpoint = "http://c:4317"\nprotocol = "udp"', 5, "service.telemetry.protocol", "expected `grpc` or `http`"),
    "short retention": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "clickhouse"\nendpoint = "http://ch:8123"\nttl = { traces = "7d", logs = "10m" }', 20, "exporters.out.ttl.logs", "at least 1h"),
    "bad retention key": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "clickhouse"\nendpoint = "http://ch:8123"\nttl = { spans = "7d" }', 20, "exporters.out.ttl.spans", "unknown field `spans`"),
    "kafka dead letter loop": ('[processors.batch]', '[receivers.k]\ntype = "kafka"\nbrokers = ["k:9092"]\ndead_letter_topic = "otlp_spans"\n\n[processors.batch]', 12, "receivers.k.dead_letter_topic", "come back forever"),
    "kafka zero partitions": ('[processors.batch]', '[receivers.k]\ntype = "kafka"\nbrokers = ["k:9092"]\ncreate_topics = { partitions = 0 }\n\n[processors.batch]', 12, "receivers.k.create_topics.partitions", "at least 1"),
    "delete with value": ('action = "insert"', 'action = "delete"', 15, "processors.tag.actions[0].value", "no `value`"),
    "endpoint and endpoints": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nendpoint = "http://gw:4317"\nendpoints = ["gw-1:4317", "gw-2:4317"]', 20, "exporters.out.endpoints", "exclude each other"),
    "no endpoint": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\ncompression = "none"', 17, "exporters.out", "missing `endpoint`"),
    "empty endpoints": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nendpoints = []', 19, "exporters.out.endpoints", "empty list"),
    "bad endpoints entry": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nendpoints = ["gw-1:4317", "gw-2"]', 19, "exporters.out.endpoints[1]", "host:port"),
    "duplicate endpoint": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nendpoints = ["gw-1:4317", "http://gw-1:4317"]', 19, "exporters.out.endpoints[1]", "same gateway as endpoints[0]"),
    "short resolve interval": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nresolver = { dns = "gw-headless:4317", interval = "1ms" }', 19, "exporters.out.resolver.interval", "too short"),
    "bad resolve interval": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nresolver = { dns = "gw-headless:4317", interval = "often" }', 19, "exporters.out.resolver.interval", "duration"),
    "resolver without port": ('type = "file"\npath = "/tmp/sluice-validate-test"', 'type = "otlp"\nresolver = { dns = "gw-headless" }', 19, "exporters.out.resolver.dns", "name:port"),
}


def validate(path):
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_TEST_UNSET_VAR"}
    return subprocess.run([BIN, "validate", "--config", str(path)], capture_output=True, text=True, env=env, timeout=30)


def test_base_config_is_valid(tmp_path):
    f = tmp_path / "good.toml"
    f.write_text(BASE)
    r = validate(f)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_config_is_reported_precisely(tmp_path, name):
    old, new, line, path, words = BROKEN[name]
    assert old in BASE
    f = tmp_path / "broken.toml"
    f.write_text(BASE.replace(old, new, 1))
    r = validate(f)
    assert r.returncode != 0, f"{name}: accepted:\n{r.stdout}"
    msg = r.stderr
    assert f"{f}:{line}:" in msg, f"{name}: expected {f}:{line}: in\n{msg}"
    if path:
        assert f"`{path}`" in msg, f"{name}: expected path {path} in\n{msg}"
    assert words in msg, f"{name}: expected {words!r} in\n{msg}"


def test_run_refuses_broken_config(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text(BASE.replace('type = "file"', 'type = "s3"'))
    r = subprocess.run([BIN, "--config", str(f)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "unknown type `s3`" in r.stderr


def test_embedded_default_validates():
    r = subprocess.run([BIN, "validate"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_readme_example_validates(tmp_path):
    import re
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    example = re.findall(r"```toml\n(.*?)```", readme, re.S)[0]
    f = tmp_path / "readme.toml"
    f.write_text(example)
    r = subprocess.run([BIN, "validate", "--config", str(f)], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "ENV": "ci"})
    assert r.returncode == 0, r.stderr
    assert "3 pipeline(s)" in r.stdout
