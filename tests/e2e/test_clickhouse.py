"""ClickHouse exporter (issue 3) against a real ClickHouse engine (chDB behind chfront): the
OpenTelemetry Collector's tables, all signals from the OpenTelemetry Python SDK, Grafana's trace
lookup, profiles, a ClickHouse that starts late, and a schema mismatch."""

import logging
import random
import socket
import threading
import time

import pytest
import requests
from chfront import ClickHouse
from conftest import free_port, wait_for
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from test_malformed import spans_request
from test_sdk import exporters


def ch_config(sl, endpoint, extra=""):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
shutdown_timeout = "10s"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"

[processors.batch]
type = "batch"
timeout = "200ms"
max_items = 10000

[exporters.ch]
type = "clickhouse"
endpoint = "{endpoint}"
database = "otel"
retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "5m" }}
{extra}

[pipelines.all]
signals = ["traces", "metrics", "logs", "profiles"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["ch"]
"""


@pytest.fixture
def clickhouse(tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    yield ch
    ch.stop()


def quiet(sl):
    return sl.metric("sluice_pipeline_queue_items") == 0 and sl.metric("sluice_exporter_queue_items") == 0


def databases(ch) -> set[str]:
    return set(ch.execute("SELECT name FROM system.databases FORMAT TabSeparated").split())


def test_a_rejected_reload_creates_no_schema_and_an_accepted_one_creates_it_at_once(sluice, clickhouse):
    """The exporter's schema is created when its configuration goes live, before any data: not
    for a reload that is then rejected (here: the new receiver's port is held by another
    process, so the build fails after the exporter was built)."""
    good = ch_config(sluice, clickhouse.url)
    sluice.start(good)
    wait_for(lambda: "otel" in databases(clickhouse), timeout=30, what="the schema created at start")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    path = sluice.dir / "sluice.toml"
    path.write_text(good.replace('database = "otel"', 'database = "rejected"')
                    .replace(f'http = "127.0.0.1:{sluice.http}"', f'http = "127.0.0.1:{taken}"'))
    r = requests.post(sluice.url("/reload"), timeout=30)
    assert r.status_code == 422 and "cannot listen" in r.json()["error"], r.text
    time.sleep(3)
    assert "rejected" not in databases(clickhouse)
    busy.close()
    path.write_text(good.replace('database = "otel"', 'database = "reloaded"'))
    r = requests.post(sluice.url("/reload"), timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "success", r.text
    wait_for(lambda: "reloaded" in databases(clickhouse), timeout=30, what="the reloaded exporter's schema, before any data")
    assert "otel_traces" in clickhouse.execute("SHOW TABLES FROM reloaded FORMAT TabSeparated").split()
    assert "rejected" not in databases(clickhouse)
    assert sluice.stop() == 0


def test_sdk_signals_land_in_the_collector_tables(sluice, clickhouse):
    sluice.start(ch_config(sluice, clickhouse.url))
    span_exp, metric_exp, log_exp = exporters("grpc", sluice)
    resource = Resource.create({"service.name": "checkout", "deployment.environment": "ch-test"})

    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    tracer = tp.get_tracer("ch.tracer", "2.0")
    spans = []
    link_ctx = None
    for i in range(40):
        with tracer.start_as_current_span("GET /cart", kind=trace_api.SpanKind.SERVER, attributes={"http.status": 200 + i % 3, "ratio": 0.5}) as root:
            links = [trace_api.Link(link_ctx, {"why": "retry"})] if link_ctx else []
            with tracer.start_as_current_span("db.query", kind=trace_api.SpanKind.CLIENT, links=links) as child:
                child.add_event("rows", {"n": i})
                if i % 10 == 0:
                    child.set_status(trace_api.Status(trace_api.StatusCode.ERROR, "boom"))
                spans.append(child)
            spans.append(root)
            link_ctx = root.get_span_context()
    tp.shutdown()

    views = [View(instrument_name="latency_exp", aggregation=ExponentialBucketHistogramAggregation())]
    mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)], views=views)
    meter = mp.get_meter("ch.meter")
    c = meter.create_counter("requests")
    for r in ("a", "b", "c"):
        c.add(2, {"route": r})
    meter.create_up_down_counter("inflight").add(7)
    h = meter.create_histogram("latency_ms")
    for v in (3, 30, 300):
        h.record(v, {"op": "read"})
    h.record(5, {"op": "write"})
    meter.create_histogram("latency_exp").record(12.5)
    meter.create_observable_gauge("temp", callbacks=[lambda _o: [metrics_api.Observation(21.5, {"room": "a"}), metrics_api.Observation(19.0, {"room": "b"})]])
    mp.shutdown()
    # The Python SDK has no summaries (a legacy Prometheus type): send one over OTLP/HTTP directly.
    summary = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[Metric(
        name="rpc_seconds", summary=Summary(data_points=[SummaryDataPoint(
            time_unix_nano=time.time_ns(), count=10, sum=4.5,
            quantile_values=[SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.4), SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=0.9)])]))])])])
    r = requests.post(sluice.otlp_http("/v1/metrics"), data=summary.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    logger = logging.getLogger("ch.logs")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=lp)
    logger.addHandler(handler)
    with TracerProvider(resource=resource).get_tracer("logs").start_as_current_span("with-logs") as s:
        log_trace = f"{s.get_span_context().trace_id:032x}"
        for i in range(25):
            logger.error("order %d failed", i, extra={"order": i})
    lp.shutdown()
    logger.removeHandler(handler)

    wait_for(lambda: clickhouse.count("otel.otel_traces") == 80 and clickhouse.count("otel.otel_logs") == 25 and quiet(sluice), timeout=30, what="rows in ClickHouse")
    # Spans: ids, durations, kinds, service, attributes, events, links, status.
    got = {(r["TraceId"], r["SpanId"]): r for r in clickhouse.rows(
        "SELECT TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Duration, SpanAttributes, ResourceAttributes, "
        "ScopeName, ScopeVersion, StatusCode, StatusMessage, Events.Name, Events.Attributes, Links.TraceId, Links.SpanId, Links.Attributes "
        "FROM otel.otel_traces")}
    assert len(got) == 80
    for s in spans:
        ctx = s.get_span_context()
        row = got[(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")]
        assert row["Duration"] == s.end_time - s.start_time
        assert row["ServiceName"] == "checkout" and row["ResourceAttributes"]["deployment.environment"] == "ch-test"
        assert row["ScopeName"] == "ch.tracer" and row["ScopeVersion"] == "2.0"
        if s.name == "GET /cart":
            assert row["SpanKind"] == "Server" and row["ParentSpanId"] == ""
            assert row["SpanAttributes"] == {"http.status": str(s.attributes["http.status"]), "ratio": "0.5"}
        else:
            assert row["SpanKind"] == "Client" and row["ParentSpanId"] == f"{s.parent.span_id:016x}"
            assert row["Events.Name"] == ["rows"] and row["Events.Attributes"][0]["n"] == str(s.events[0].attributes["n"])
            assert row["StatusCode"] == ("Error" if s.status.status_code == trace_api.StatusCode.ERROR else "Unset")
            if s.links:
                l = s.links[0].context
                assert row["Links.TraceId"] == [f"{l.trace_id:032x}"] and row["Links.SpanId"] == [f"{l.span_id:016x}"]
                assert row["Links.Attributes"] == [{"why": "retry"}]
    assert clickhouse.count("otel.otel_traces", "StatusCode = 'Error' AND StatusMessage = 'boom'") == 4

    # Grafana's trace lookup: the trace's window from otel_traces_trace_id_ts, then its spans.
    tid = f"{spans[5].get_span_context().trace_id:032x}"
    lookup = clickhouse.rows(f"""
        WITH '{tid}' AS trace_id,
             (SELECT min(Start) FROM otel.otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_start,
             (SELECT max(End) + 1 FROM otel.otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_end
        SELECT SpanId FROM otel.otel_traces
        WHERE TraceId = trace_id AND Timestamp >= trace_start AND Timestamp <= trace_end""")
    assert {r["SpanId"] for r in lookup} == {k[1] for k in got if k[0] == tid} and len(lookup) == 2

    # Logs.
    logs = clickhouse.rows("SELECT Body, TraceId, SeverityText, SeverityNumber, ServiceName, LogAttributes FROM otel.otel_logs")
    assert sorted(l["Body"] for l in logs) == sorted(f"order {i} failed" for i in range(25))
    assert all(l["TraceId"] == log_trace and l["SeverityText"] == "ERROR" and l["SeverityNumber"] == 17 and l["ServiceName"] == "checkout" for l in logs)
    assert sorted(int(l["LogAttributes"]["order"]) for l in logs) == list(range(25))

    # Metrics: exact data points of each of the five types.
    wait_for(lambda: clickhouse.count("otel.otel_metrics_summary") == 1, what="summary row")
    assert clickhouse.count("otel.otel_metrics_sum") == 4
    assert clickhouse.count("otel.otel_metrics_gauge") == 2
    assert clickhouse.count("otel.otel_metrics_histogram") == 2
    assert clickhouse.count("otel.otel_metrics_exponential_histogram") == 1
    sums = {(r["MetricName"], r["Attributes"].get("route")): r for r in clickhouse.rows("SELECT MetricName, Attributes, Value, IsMonotonic FROM otel.otel_metrics_sum")}
    assert sums[("requests", "a")]["Value"] == 2 and sums[("requests", "a")]["IsMonotonic"] is True
    assert sums[("inflight", None)]["Value"] == 7 and sums[("inflight", None)]["IsMonotonic"] is False
    hist = {r["Attributes"]["op"]: r for r in clickhouse.rows("SELECT Attributes, Count, Sum, BucketCounts, ExplicitBounds, Min, Max FROM otel.otel_metrics_histogram")}
    assert hist["read"]["Count"] == 3 and hist["read"]["Sum"] == 333 and sum(hist["read"]["BucketCounts"]) == 3
    assert len(hist["read"]["BucketCounts"]) == len(hist["read"]["ExplicitBounds"]) + 1
    assert hist["read"]["Min"] == 3 and hist["read"]["Max"] == 300
    exp = clickhouse.rows("SELECT Count, Sum, Scale, PositiveBucketCounts FROM otel.otel_metrics_exponential_histogram")[0]
    assert exp["Count"] == 1 and exp["Sum"] == 12.5 and sum(exp["PositiveBucketCounts"]) == 1
    temps = sorted(r["Value"] for r in clickhouse.rows("SELECT Value FROM otel.otel_metrics_gauge"))
    assert temps == [19.0, 21.5]
    s = clickhouse.rows("SELECT Count, Sum, ValueAtQuantiles.Quantile AS q, ValueAtQuantiles.Value AS v FROM otel.otel_metrics_summary")[0]
    assert s["Count"] == 10 and s["q"] == [0.5, 0.99] and s["v"] == [0.4, 0.9]
    assert sluice.metric("sluice_exporter_failed_items_total") == 0


def profile_request(service, values):
    """An OTLP profiles request (protobuf): one CPU profile whose samples have the given values."""
    from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import ExportProfilesServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.profiles.v1development import profiles_pb2 as pp
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource

    dictionary = pp.ProfilesDictionary(
        string_table=["", "cpu", "nanoseconds", "main", "main.go", "work", "work.go"],
        function_table=[pp.Function(), pp.Function(name_strindex=3, filename_strindex=4), pp.Function(name_strindex=5, filename_strindex=6)],
        location_table=[pp.Location(), pp.Location(address=4096, lines=[pp.Line(function_index=1, line=10)]),
                        pp.Location(address=8192, lines=[pp.Line(function_index=2, line=42)])],
        stack_table=[pp.Stack(), pp.Stack(location_indices=[1]), pp.Stack(location_indices=[2, 1])],
    )
    profile = pp.Profile(
        sample_type=pp.ValueType(type_strindex=1, unit_strindex=2),
        period_type=pp.ValueType(type_strindex=1, unit_strindex=2),
        period=10_000_000, time_unix_nano=time.time_ns(), duration_nano=10_000_000_000,
        samples=[pp.Sample(stack_index=1 if i % 3 == 0 else 2, values=[v]) for i, v in enumerate(values)],
    )
    resource = PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportProfilesServiceRequest(
        resource_profiles=[pp.ResourceProfiles(resource=resource, scope_profiles=[pp.ScopeProfiles(profiles=[profile])])],
        dictionary=dictionary,
    ).SerializeToString()


def test_profiles_land_with_equal_totals(sluice, clickhouse):
    sluice.start(ch_config(sluice, clickhouse.url))
    values = list(range(1, 301))
    r = requests.post(sluice.otlp_http("/v1development/profiles"), data=profile_request("prof-svc", values),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text
    wait_for(lambda: clickhouse.count("otel.otel_profiles") == 300, what="300 profile rows")
    row = clickhouse.rows("SELECT ServiceName, SampleType, SampleUnit, sum(Values[1]) AS total, count() AS n, "
                          "countIf(FunctionNames = ['work', 'main']) AS deep FROM otel.otel_profiles GROUP BY ServiceName, SampleType, SampleUnit")
    assert row == [{"ServiceName": "prof-svc", "SampleType": "cpu", "SampleUnit": "nanoseconds", "total": sum(values), "n": 300, "deep": 200}]
    one = clickhouse.rows("SELECT FileNames, LineNumbers, Addresses, Period, PeriodType FROM otel.otel_profiles WHERE length(FunctionNames) = 2 LIMIT 1")[0]
    assert one == {"FileNames": ["work.go", "main.go"], "LineNumbers": [42, 10], "Addresses": [8192, 4096], "Period": 10000000, "PeriodType": "cpu"}


def test_clickhouse_starting_late_loses_nothing(sluice, tmp_path):
    port = free_port()
    sluice.start(ch_config(sluice, f"http://127.0.0.1:{port}"))
    sent, stop = [0], threading.Event()

    def send():
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            r = session.post(sluice.otlp_http("/v1/traces"), data=spans_request(100, tid=i.to_bytes(16, "big")),
                             headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert r.status_code == 200
            sent[0] += 100
            time.sleep(0.05)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(10)
    assert sluice.proc.poll() is None
    assert sluice.metric("sluice_exporter_sent_items_total") == 0
    ch = ClickHouse(tmp_path / "late", port=port)
    try:
        time.sleep(3)
        stop.set()
        t.join()
        wait_for(lambda: ch.count("otel.otel_traces") == sent[0], timeout=60, what=f"all {sent[0]} spans")
        assert sent[0] >= 1000
        assert sluice.metric("sluice_exporter_failed_items_total") == 0
        assert sluice.metric("sluice_dropped_items_total") == 0
        assert sluice.proc.poll() is None
        assert "ClickHouse unreachable" in sluice.log_text()
    finally:
        ch.stop()


def test_schema_mismatch_is_reported_once_per_batch_and_not_retried(sluice, clickhouse):
    clickhouse.execute("CREATE DATABASE otel")
    clickhouse.execute("CREATE TABLE otel.otel_traces (Timestamp DateTime64(9), TraceId String) ENGINE = MergeTree ORDER BY Timestamp")
    # One insert per batch here (no merging of queued batches), so each batch reports once.
    sluice.start(ch_config(sluice, clickhouse.url, extra="min_insert_rows = 1"))
    for i in range(3):
        r = requests.post(sluice.otlp_http("/v1/traces"), data=spans_request(50, tid=(i + 1).to_bytes(16, "big")),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
        time.sleep(0.6)
    wait_for(lambda: sluice.metric("sluice_exporter_failed_items_total", signal="traces") == 150, what="3 failed batches")
    time.sleep(2)  # a hot retry loop would show up as more attempts here
    log = sluice.log_text()
    failures = [l for l in log.splitlines() if "export failed; batch dropped" in l]
    assert len(failures) == 3, log
    assert all("NO_SUCH_COLUMN_IN_TABLE" in l or "No such column" in l for l in failures), failures[0]
    assert "will retry" not in log
    assert sluice.metric("sluice_dropped_items_total", reason="export_failed") == 150
    assert clickhouse.count("otel.otel_traces") == 0


def test_schema_is_idempotent_and_has_the_ttl(sluice, clickhouse, make_sluice):
    def one_span(sl, name):
        now = time.time_ns()
        req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
            Span(trace_id=random.randbytes(16), span_id=random.randbytes(8), name=name, start_time_unix_nano=now, end_time_unix_nano=now + 5)])])])
        r = requests.post(sl.otlp_http("/v1/traces"), data=req.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200

    cfg = lambda sl: ch_config(sl, clickhouse.url, extra='ttl = "72h"')
    sluice.start(cfg(sluice))
    one_span(sluice, "first")
    wait_for(lambda: clickhouse.count("otel.otel_traces") == 1, what="first span")
    assert sluice.stop() == 0
    # A second collector (or a restart) runs the same DDL against the existing schema.
    again = make_sluice("again")
    again.start(cfg(again))
    one_span(again, "second")
    wait_for(lambda: clickhouse.count("otel.otel_traces") == 2, what="second span")
    assert "ClickHouse schema ready" in again.log_text()
    ddl = clickhouse.value("SHOW CREATE TABLE otel.otel_traces")
    assert "TTL toDateTime(Timestamp) + toIntervalSecond(259200)" in ddl
    assert "ttl_only_drop_parts = 1" in ddl
    tables = {r["name"] for r in clickhouse.rows("SELECT name FROM system.tables WHERE database = 'otel'")}
    assert tables == {"otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv", "otel_logs", "otel_metrics_gauge",
                      "otel_metrics_sum", "otel_metrics_histogram", "otel_metrics_exponential_histogram", "otel_metrics_summary", "otel_profiles"}
