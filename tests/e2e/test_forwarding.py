"""Acceptance 9: a sidecar Sluice forwards to a gateway Sluice over the `otlp` exporter (gRPC and
HTTP); the counts at the gateway equal what the client sent."""

import pytest
from conftest import logs_of, spans_of, wait_for
from test_sdk import exporters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry._logs import LogRecord


@pytest.mark.parametrize("protocol,compression", [("grpc", "gzip"), ("http", "gzip"), ("grpc", "zstd"), ("http", "none")])
def test_sidecar_to_gateway(make_sluice, protocol, compression):
    gateway = make_sluice("gateway").start()
    sidecar = make_sluice("sidecar")
    port = gateway.grpc if protocol == "grpc" else gateway.http
    sidecar.start(sidecar.default_config(exporter=f"""type = "otlp"
endpoint = "http://127.0.0.1:{port}"
protocol = "{protocol}"
compression = "{compression}"
"""))
    span_exp, _, log_exp = exporters("grpc", sidecar)
    tp = TracerProvider(resource=Resource.create({"service.name": "fwd"}))
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    tracer = tp.get_tracer("fwd")
    ids = set()
    for i in range(300):
        with tracer.start_as_current_span(f"op-{i % 7}") as s:
            ids.add(f"{s.get_span_context().span_id:016x}")
    tp.shutdown()
    lp = LoggerProvider()
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    logger = lp.get_logger("fwd")
    for i in range(77):
        logger.emit(LogRecord(body=f"fwd {i}"))
    lp.shutdown()

    spans = wait_for(lambda: (s := spans_of(gateway.output("traces"))) and len(s) >= 300 and s, what="300 spans at the gateway")
    logs = wait_for(lambda: (l := logs_of(gateway.output("logs"))) and len(l) >= 77 and l, what="77 logs at the gateway")
    assert len(spans) == 300 and {s["spanId"] for s in spans} == ids
    assert len(logs) == 77
    assert sidecar.metric("sluice_exporter_sent_items_total", signal="traces") == 300
    assert gateway.metric("sluice_receiver_accepted_items_total", signal="traces") == 300
    assert gateway.metric("sluice_receiver_accepted_items_total", signal="logs") == 77
