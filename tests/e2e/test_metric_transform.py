"""Metric-name migration (issue 18): OpenTelemetry SDK metrics named the old way go through a
`metric_transform` processor with a versioned mapping file and an inline rule, and arrive renamed,
with renamed and dropped attributes and converted units, in ClickHouse (chDB behind chfront) and in
the file exporter; invalid regexes are validation errors with file and line."""

import subprocess

import pytest
from chfront import ClickHouse
from conftest import BIN, attrs, data_points, metrics_of, wait_for
from opentelemetry import metrics as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from test_sdk import exporters

MAPPING = """version = "v1.2-to-v2.0"

[[rule]]
metric = "http_req_total"
rename = "http_requests_total"
rename_attributes = { svc = "service" }
drop_attributes = ["debug"]

[[rule]]
metric_regex = "legacy_(.+)_seconds"
rename = "app_${1}_duration"
unit = "ms"
"""


def config(sl, mapping, ch_url, inline_regex="queue_(wait)"):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
shutdown_timeout = "10s"

[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"
grpc = "127.0.0.1:{sl.grpc}"

[processors.migrate]
type = "metric_transform"
mappings = ["{mapping}"]

[[processors.migrate.rule]]
metric_regex = "{inline_regex}"
rename = "queue_$1_ms"
from_unit = "s"
unit = "ms"

[exporters.out]
type = "file"
path = "{sl.data}"

[exporters.ch]
type = "clickhouse"
endpoint = "{ch_url}"
database = "otel"
retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "5m" }}

[pipelines.metrics]
signals = ["metrics"]
receivers = ["otlp"]
processors = ["migrate"]
exporters = ["out", "ch"]
"""


@pytest.fixture
def clickhouse(tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    yield ch
    ch.stop()


def test_old_names_arrive_migrated_in_clickhouse_and_files(clickhouse, sluice, tmp_path):
    # (clickhouse first: it is torn down after sluice, which flushes into it on stop)
    mapping = tmp_path / "migrations" / "v1.2-to-v2.0.toml"
    mapping.parent.mkdir()
    mapping.write_text(MAPPING)
    sluice.start(config(sluice, mapping, clickhouse.url))
    _, metric_exp, _ = exporters("http", sluice)
    mp = MeterProvider(resource=Resource.create({"service.name": "shop"}),
                       metric_readers=[PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)])
    meter = mp.get_meter("legacy")
    c = meter.create_counter("http_req_total")
    c.add(3, {"svc": "cart", "debug": "1", "code": "200"})
    c.add(4, {"svc": "pay", "debug": "1", "code": "500"})
    h = meter.create_histogram("legacy_db_seconds", unit="s")
    for v in (0.25, 1.5):
        h.record(v, {"op": "read"})
    # No unit on the instrument: the rule's `from_unit` says seconds.
    meter.create_observable_gauge("queue_wait", callbacks=[lambda _o: [metrics_api.Observation(2, {"q": "a"})]])
    meter.create_counter("untouched_total").add(1)
    mp.shutdown()

    def file_metrics():
        return {m["name"]: m for m in metrics_of(sluice.output("metrics"))}

    wait_for(lambda: len(file_metrics()) == 4, what="four metrics in the file")
    ms = file_metrics()
    assert set(ms) == {"http_requests_total", "app_db_duration", "queue_wait_ms", "untouched_total"}, set(ms)
    points = sorted((int(p["asInt"]), attrs(p)) for p in data_points(ms["http_requests_total"]))
    assert points == [(3, {"service": "cart", "code": "200"}), (4, {"service": "pay", "code": "500"})], points
    hist = ms["app_db_duration"]
    assert hist["unit"] == "ms"
    hp = data_points(hist)[0]
    assert hp["sum"] == pytest.approx(1750.0)
    # The SDK's default bounds (0, 5, 10, ... 10000 s) scaled to ms; counts unchanged.
    assert hp["explicitBounds"][:3] == [0.0, 5000.0, 10000.0]
    assert sum(int(c) for c in hp["bucketCounts"]) == 2
    gauge = ms["queue_wait_ms"]
    assert gauge["unit"] == "ms" and int(data_points(gauge)[0]["asInt"]) == 2000

    # The same in ClickHouse.
    wait_for(lambda: clickhouse.count("otel.otel_metrics_sum") == 3, what="sum rows")
    wait_for(lambda: clickhouse.count("otel.otel_metrics_histogram") == 1 and clickhouse.count("otel.otel_metrics_gauge") == 1,
             what="histogram and gauge rows")
    sums = clickhouse.rows("SELECT MetricName, Attributes, Value FROM otel.otel_metrics_sum ORDER BY MetricName, Value")
    assert [(r["MetricName"], r["Attributes"], r["Value"]) for r in sums] == [
        ("http_requests_total", {"service": "cart", "code": "200"}, 3),
        ("http_requests_total", {"service": "pay", "code": "500"}, 4),
        ("untouched_total", {}, 1),
    ], sums
    [hrow] = clickhouse.rows("SELECT MetricName, MetricUnit, Sum, ExplicitBounds FROM otel.otel_metrics_histogram")
    assert (hrow["MetricName"], hrow["MetricUnit"], hrow["Sum"]) == ("app_db_duration", "ms", 1750)
    assert hrow["ExplicitBounds"][:3] == [0, 5000, 10000]
    [grow] = clickhouse.rows("SELECT MetricName, MetricUnit, Value FROM otel.otel_metrics_gauge")
    assert (grow["MetricName"], grow["MetricUnit"], grow["Value"]) == ("queue_wait_ms", "ms", 2000)
    assert clickhouse.count("otel.otel_metrics_sum", "MetricName = 'http_req_total'") == 0


def line_of(text, prefix):
    return next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith(prefix))


def test_invalid_regexes_are_errors_with_file_and_line(sluice, tmp_path):
    mapping = tmp_path / "v2-to-v3.toml"
    mapping.write_text(MAPPING.replace('metric_regex = "legacy_(.+)_seconds"', 'metric_regex = "legacy_(.+_seconds"'))
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(config(sluice, mapping, "http://127.0.0.1:9", inline_regex="queue_[wait"))
    r = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    err = r.stdout + r.stderr
    assert r.returncode == 2, err
    text = cfg.read_text()
    # The inline rule: the config file's line of the key.
    assert f"sluice.toml:{line_of(text, 'metric_regex')}" in err and "processors.migrate.rule[0].metric_regex" in err, err
    # The mapping file: where it is referenced, and the mapping file's own line and key.
    mline = line_of(mapping.read_text(), "metric_regex")
    assert f"sluice.toml:{line_of(text, 'mappings')}" in err and f"v2-to-v3.toml:{mline}" in err, err
    assert "rule[1].metric_regex" in err and err.count("invalid regex") == 2, err
