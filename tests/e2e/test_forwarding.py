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


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("batch_bytes,fits", [("48KiB", True), ("1MiB", False)])
def test_batches_are_sized_for_the_next_hops_limit(make_sluice, protocol, batch_bytes, fits):
    """Batches are cut by `max_bytes`, so a gateway with a 64 KiB request limit takes everything a
    sidecar batches for 1 s; the control run (1 MiB batches) shows the gateway refusing what is larger."""
    gateway = make_sluice("gateway")
    gateway.start(gateway.default_config(receiver_extra='max_request_size = "64KiB"'))
    sidecar = make_sluice("sidecar")
    port = gateway.grpc if protocol == "grpc" else gateway.http
    sidecar.start(sidecar.default_config(batch_timeout="1s", batch_bytes=batch_bytes, exporter=f"""type = "otlp"
endpoint = "http://127.0.0.1:{port}"
protocol = "{protocol}"
compression = "none"
retry = {{ max_elapsed = "2s" }}
"""))
    span_exp, _, _ = exporters("http", sidecar)
    tp = TracerProvider(resource=Resource.create({"service.name": "sized"}))
    # Small client requests (about 9 KB each), so only the sidecar's batching makes them large.
    tp.add_span_processor(BatchSpanProcessor(span_exp, max_export_batch_size=50))
    tracer = tp.get_tracer("sized")
    for i in range(2000):
        with tracer.start_as_current_span(f"op-{i}") as s:
            s.set_attribute("payload", "x" * 100)
    tp.shutdown()
    if fits:
        spans = wait_for(lambda: (s := spans_of(gateway.output("traces"))) and len(s) >= 2000 and s, what="2000 spans at the gateway")
        assert len(spans) == 2000
        assert sidecar.metric("sluice_exporter_sent_items_total", signal="traces") == 2000
        assert gateway.metric("sluice_receiver_refused_requests_total") == 0
    else:
        wait_for(lambda: sidecar.metric("sluice_exporter_failed_items_total", signal="traces") > 0, what="a refused batch")
        assert gateway.metric("sluice_receiver_refused_requests_total", reason="too_large") > 0
