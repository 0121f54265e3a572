"""Acceptance 2: the official OpenTelemetry Python SDK sends spans, metrics and logs over gRPC and
HTTP/protobuf; they arrive in the file exporter's output with exact counts and intact ids,
attributes and timestamps."""

import logging

import pytest
from conftest import attrs, data_points, logs_of, metrics_of, spans_of, wait_for
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry import metrics as metrics_api


def exporters(transport, sl):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        ep = f"127.0.0.1:{sl.grpc}"
        return (
            OTLPSpanExporter(endpoint=ep, insecure=True),
            OTLPMetricExporter(endpoint=ep, insecure=True),
            OTLPLogExporter(endpoint=ep, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return (
        OTLPSpanExporter(endpoint=sl.otlp_http("/v1/traces")),
        OTLPMetricExporter(endpoint=sl.otlp_http("/v1/metrics")),
        OTLPLogExporter(endpoint=sl.otlp_http("/v1/logs")),
    )


N_SPANS = 120
N_LOGS = 40


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_traces_metrics_logs(sluice, transport):
    sluice.start()
    span_exp, metric_exp, log_exp = exporters(transport, sluice)
    resource = Resource.create({"service.name": f"sdk-{transport}", "deployment.environment": "test"})

    # --- traces
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(span_exp, max_export_batch_size=50))
    tracer = tp.get_tracer("e2e.tracer", "1.2.3")
    sent = {}
    for i in range(N_SPANS // 4):
        with tracer.start_as_current_span("root", attributes={"i": i, "kind": "root", "ratio": i / 7, "ok": i % 2 == 0}) as root:
            for j in range(3):
                with tracer.start_as_current_span(f"child-{j}", attributes={"j": j, "text": "x" * j}) as child:
                    child.add_event("ev", {"n": j})
                    sent[child] = None
            sent[root] = None
    tp.force_flush()
    tp.shutdown()
    expected = {}
    for s in sent:
        ctx = s.get_span_context()
        expected[(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")] = s

    # --- metrics: one final collection at shutdown, so each series is exported exactly once.
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("e2e.meter")
    counter = meter.create_counter("requests")
    for route, n in (("a", 1), ("b", 2), ("c", 3)):
        counter.add(n, {"route": route})
    hist = meter.create_histogram("latency_ms")
    for v in (1, 7, 30, 300, 3000):
        hist.record(v, {"op": "read"})
    hist.record(42, {"op": "write"})
    updown = meter.create_up_down_counter("inflight")
    updown.add(5)
    updown.add(-2)

    def observe(_options):
        return [metrics_api.Observation(11.5, {"core": "0"}), metrics_api.Observation(12.5, {"core": "1"})]

    meter.create_observable_gauge("temperature", callbacks=[observe])
    mp.shutdown()
    expected_points = 3 + 2 + 1 + 2

    # --- logs
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp, max_export_batch_size=16))
    logger = logging.getLogger(f"e2e.{transport}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=lp)
    logger.addHandler(handler)
    tp2 = TracerProvider(resource=resource)
    with tp2.get_tracer("logs").start_as_current_span("with-logs") as span:
        log_trace = f"{span.get_span_context().trace_id:032x}"
        for i in range(N_LOGS):
            logger.warning("log line %d", i, extra={"line": i, "user": f"u{i}"})
    lp.force_flush()
    lp.shutdown()
    logger.removeHandler(handler)

    # --- what arrived
    got_spans = wait_for(lambda: (s := spans_of(sluice.output("traces"))) and len(s) >= N_SPANS and s, what="spans")
    got_logs = wait_for(lambda: (l := logs_of(sluice.output("logs"))) and len(l) >= N_LOGS and l, what="logs")
    got_metrics = wait_for(
        lambda: (m := metrics_of(sluice.output("metrics"))) and sum(len(data_points(x)) for x in m) >= expected_points and m,
        what="metric data points",
    )

    assert len(got_spans) == N_SPANS
    by_id = {(s["traceId"], s["spanId"]): s for s in got_spans}
    assert set(by_id) == set(expected), "trace/span ids differ"
    for key, sdk_span in expected.items():
        s = by_id[key]
        assert s["name"] == sdk_span.name
        assert int(s["startTimeUnixNano"]) == sdk_span.start_time
        assert int(s["endTimeUnixNano"]) == sdk_span.end_time
        parent = sdk_span.parent
        assert s.get("parentSpanId", "") == (f"{parent.span_id:016x}" if parent else "")
        assert attrs(s) == dict(sdk_span.attributes)
        if sdk_span.name.startswith("child"):
            assert [e["name"] for e in s["events"]] == ["ev"]
            assert attrs(s["events"][0]) == {"n": sdk_span.attributes["j"]}
    res_attrs = attrs(sluice.output("traces")[0]["resourceSpans"][0]["resource"])
    assert res_attrs["service.name"] == f"sdk-{transport}"
    assert res_attrs["deployment.environment"] == "test"

    assert sum(len(data_points(m)) for m in got_metrics) == expected_points
    by_name = {m["name"]: m for m in got_metrics}
    req = {attrs(p)["route"]: int(p["asInt"]) for p in data_points(by_name["requests"])}
    assert req == {"a": 1, "b": 2, "c": 3}
    assert by_name["requests"]["sum"]["isMonotonic"] is True
    hp = {attrs(p)["op"]: p for p in data_points(by_name["latency_ms"])}
    assert int(hp["read"]["count"]) == 5 and hp["read"]["sum"] == 3338
    assert sum(int(c) for c in hp["read"]["bucketCounts"]) == 5
    assert len(hp["read"]["bucketCounts"]) == len(hp["read"]["explicitBounds"]) + 1
    assert int(data_points(by_name["inflight"])[0]["asInt"]) == 3
    temps = sorted(p["asDouble"] for p in data_points(by_name["temperature"]))
    assert temps == [11.5, 12.5]

    assert len(got_logs) == N_LOGS
    bodies = sorted(l["body"]["stringValue"] for l in got_logs)
    assert bodies == sorted(f"log line {i}" for i in range(N_LOGS))
    for l in got_logs:
        a = attrs(l)
        i = int(l["body"]["stringValue"].split()[-1])
        assert a["line"] == i and a["user"] == f"u{i}"
        assert l["traceId"] == log_trace
        assert l["severityText"] == "WARN" and l["severityNumber"] == 13
        assert int(l["timeUnixNano"]) > 0

    m = sluice.metrics()
    assert sluice.metric("sluice_receiver_accepted_items_total", signal="traces") == N_SPANS
    assert sluice.metric("sluice_receiver_accepted_items_total", signal="logs") == N_LOGS
    assert sluice.metric("sluice_receiver_accepted_items_total", signal="metrics") == expected_points
    assert m  # metrics endpoint answered
