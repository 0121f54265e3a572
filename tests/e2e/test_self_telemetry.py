"""Sluice's own telemetry over OTLP (issue 17): instance A with [service.telemetry] pointed at
instance B (file exporter). A's metrics arrive in B with the names and values `/metrics` shows
(within one interval), A's `tracing` events arrive as OTLP log records, and an export of A's that
fails arrives as a span carrying the error. Pointed at itself, A does not amplify its own data."""

import random
import time

import pytest
import requests
from conftest import attrs, data_points, free_port, logs_of, metrics_of, parse_metrics, spans_of, wait_for
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def a_config(a, target, protocol, dead_port):
    endpoint = f"http://127.0.0.1:{target.grpc if protocol == 'grpc' else target.http}"
    return f"""
[service]
admin = "127.0.0.1:{a.admin}"

[service.telemetry]
endpoint = "{endpoint}"
protocol = "{protocol}"
interval = "1s"
resource = {{ "deployment.environment" = "e2e" }}

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{a.grpc}"
http = "127.0.0.1:{a.http}"

[processors.batch]
type = "batch"
timeout = "50ms"

[exporters.archive]
type = "file"
path = "{a.data}"

[exporters.dead]
type = "otlp"
endpoint = "http://127.0.0.1:{dead_port}"
protocol = "http"
retry = {{ initial_interval = "50ms", max_interval = "100ms", max_elapsed = "300ms" }}

[pipelines.traces]
signals = ["traces", "metrics"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["archive"]

[pipelines.logs]
signals = ["logs"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["dead"]
"""


def post(sl, path, msg):
    r = requests.post(sl.otlp_http(path), data=msg.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


def exported_points(sl):
    """[(request index, metric name, attrs tuple, value)] of every data point B received."""
    out = []
    for i, req in enumerate(sl.output("metrics")):
        for m in metrics_of([req]):
            for dp in data_points(m):
                v = float(dp["asInt"]) if "asInt" in dp else float(dp.get("asDouble", 0.0))
                out.append((i, m["name"], tuple(sorted((k, str(x)) for k, x in attrs(dp).items())), v))
    return out


def latest(points):
    last = {}
    for i, name, a, v in points:
        last[(name, a)] = (i, v)
    return last


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_own_metrics_logs_and_failed_export_spans_reach_a_second_sluice(make_sluice, protocol):
    b = make_sluice("b").start()
    a = make_sluice("a")
    a.start(a_config(a, b, protocol, free_port()))
    now = time.time_ns()
    post(a, "/v1/traces", ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=random.randbytes(16), span_id=random.randbytes(8), name=f"s{i}", start_time_unix_nano=now, end_time_unix_nano=now + 1)
        for i in range(100)])])]))
    post(a, "/v1/logs", ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(time_unix_nano=now, body=AnyValue(string_value="to nowhere"))])])]))
    wait_for(lambda: a.metric("sluice_dropped_items_total", component="dead", reason="export_failed") == 1, timeout=20, what="dead export")

    def seen(name, value, **labels):
        want = tuple(sorted(labels.items()))
        return any(n == name and all(p in at for p in want) and v == value for _, n, at, v in exported_points(b))

    wait_for(lambda: seen("sluice_dropped_items_total", 1, component="dead", reason="export_failed"), timeout=20, what="own metrics in B")

    # Same names and values as /metrics at the same moment: read /metrics, wait for two more
    # exports, read /metrics again; every series exported last lies between the two readings.
    before = parse_metrics(requests.get(a.url("/metrics"), timeout=5).text)
    n0 = len(b.output("metrics"))
    wait_for(lambda: len(b.output("metrics")) >= n0 + 2, timeout=20, what="two more exports")
    after = parse_metrics(requests.get(a.url("/metrics"), timeout=5).text)
    exported = {k: v for k, (i, v) in latest(exported_points(b)).items() if i >= n0}
    shown_names = {n for (n, _) in after}
    assert {n for (n, _) in exported} == shown_names, (sorted({n for (n, _) in exported} ^ shown_names))
    for (name, labels), v in exported.items():
        lo, hi = before.get((name, labels)), after.get((name, labels))
        assert hi is not None, (name, labels)
        if name.endswith("_total"):
            assert (lo or 0) <= v <= hi, (name, labels, lo, v, hi)
        elif lo == hi:
            assert v == hi, (name, labels, v, hi)
    assert exported[("sluice_receiver_accepted_items_total", (("receiver", "otlp"), ("signal", "traces")))] == 100

    resources = [attrs(rm["resource"]) for r in b.output("metrics") for rm in r["resourceMetrics"]]
    assert all(r["service.name"] == "sluice" and r["deployment.environment"] == "e2e" for r in resources)

    # Logs: A's tracing events as OTLP log records, none from the SDK or its transport.
    wait_for(lambda: any(l.get("body", {}).get("stringValue") == "sluice started" for l in logs_of(b.output("logs"))), timeout=20, what="A's logs in B")
    records = logs_of(b.output("logs"))
    assert any("export failed" in l.get("body", {}).get("stringValue", "") and l.get("severityText") == "ERROR" for l in records), records
    scopes = {sl.get("scope", {}).get("name", "") for r in b.output("logs") for rl in r["resourceLogs"] for sl in rl["scopeLogs"]}
    assert not any(s.startswith(("opentelemetry", "tonic", "h2", "hyper", "reqwest")) for s in scopes), scopes

    # Spans: each failed attempt of the dead exporter, with the error.
    wait_for(lambda: any(s["name"] == "export dead" for s in spans_of(b.output("traces"))), timeout=20, what="failed-export span")
    span = next(s for s in spans_of(b.output("traces")) if s["name"] == "export dead")
    assert span["status"]["code"] in (2, "STATUS_CODE_ERROR"), span
    assert "127.0.0.1" in span["status"]["message"] or "connect" in span["status"]["message"].lower(), span
    sa = attrs(span)
    assert sa["sluice.exporter"] == "dead" and sa["sluice.signal"] == "logs" and sa["sluice.items"] == 1
    assert not any(s["name"].startswith("export archive") for s in spans_of(b.output("traces"))), "fast, successful exports are not spans"


def test_pointed_at_itself_it_does_not_amplify(make_sluice):
    a = make_sluice("a")
    cfg = a.default_config(service_extra=f'[service.telemetry]\nendpoint = "http://127.0.0.1:{a.grpc}"\ninterval = "500ms"')
    a.start(cfg)
    # Every interval adds one metrics request; logs come only from what Sluice itself logs.
    wait_for(lambda: len(a.output("metrics")) >= 4, timeout=20, what="own metrics exported to itself")
    time.sleep(3)
    n1, l1 = len(a.output("metrics")), len(logs_of(a.output("logs")))
    time.sleep(3)
    n2, l2 = len(a.output("metrics")), len(logs_of(a.output("logs")))
    assert n2 - n1 <= 8, (n1, n2)  # ~6 intervals of 500ms, not a growing stream
    assert l2 - l1 <= 2, (l1, l2)
    assert a.metric("sluice_receiver_refused_items_total") == 0
