"""The Kafka exporter against a real Kafka-protocol broker (tansu) and an independent consumer
(confluent-kafka): what the OpenTelemetry SDK sent is on the topics, message by message."""

import json

import pytest
from conftest import wait_for
from kafka import Kafka
from test_sdk import exporters
from opentelemetry._logs import LogRecord
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


@pytest.fixture
def kafka(tmp_path):
    k = Kafka(tmp_path / "kafka")
    yield k
    k.stop()


def spans_in(messages) -> list:
    out = []
    for m in messages:
        r = ExportTraceServiceRequest()
        r.ParseFromString(m.value())
        out += [s for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return out


def start_sluice(make_sluice, kafka, extra=""):
    sl = make_sluice("sidecar")
    sl.start(sl.default_config(exporter=f"""type = "kafka"
brokers = ["{kafka.bootstrap}"]
{extra}
"""))
    return sl


def send_spans(sl, n, traces=None, protocol="grpc"):
    """n spans; with `traces`, n spans spread over that many traces (children of one root each)."""
    span_exp, _, _ = exporters(protocol, sl)
    tp = TracerProvider(resource=Resource.create({"service.name": "kafka-test"}))
    tp.add_span_processor(BatchSpanProcessor(span_exp, max_export_batch_size=100))
    tracer = tp.get_tracer("kafka")
    ids = set()
    if traces:
        per = n // traces
        for t in range(traces):
            with tracer.start_as_current_span(f"root-{t}") as root:
                ids.add(f"{root.get_span_context().span_id:016x}")
                for i in range(per - 1):
                    with tracer.start_as_current_span(f"child-{i}") as s:
                        ids.add(f"{s.get_span_context().span_id:016x}")
    else:
        for i in range(n):
            with tracer.start_as_current_span(f"op-{i % 7}") as s:
                s.set_attribute("i", i)
                ids.add(f"{s.get_span_context().span_id:016x}")
    tp.shutdown()
    return ids


def test_spans_and_logs_land_on_their_topics(make_sluice, kafka):
    kafka.topic("otlp_spans")
    kafka.topic("otlp_logs")
    sl = start_sluice(make_sluice, kafka)
    ids = send_spans(sl, 300)
    _, _, log_exp = exporters("http", sl)
    lp = LoggerProvider()
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    logger = lp.get_logger("kafka")
    for i in range(77):
        logger.emit(LogRecord(body=f"to kafka {i}"))
    lp.shutdown()

    msgs = kafka.consume("otlp_spans", lambda got: len(spans_in(got)) >= 300)
    spans = spans_in(msgs)
    assert len(spans) == 300 and {s.span_id.hex() for s in spans} == ids
    assert all(m.key() is None for m in msgs)
    logs = kafka.consume("otlp_logs", lambda got: sum(len(ExportLogsServiceRequest.FromString(m.value()).resource_logs[0].scope_logs[0].log_records) for m in got) >= 77)
    bodies = sorted(
        lr.body.string_value
        for m in logs
        for rl in ExportLogsServiceRequest.FromString(m.value()).resource_logs
        for sl_ in rl.scope_logs
        for lr in sl_.log_records
    )
    assert bodies == sorted(f"to kafka {i}" for i in range(77))
    wait_for(lambda: sl.metric("sluice_exporter_sent_items_total", signal="traces") == 300, what="300 spans counted sent")
    assert sl.metric("sluice_exporter_sent_items_total", signal="logs") == 77
    assert sl.metric("sluice_dropped_items_total") == 0


def test_partition_by_trace_id_keeps_each_trace_in_one_partition(make_sluice, kafka):
    kafka.topic("otlp_spans", partitions=4)
    sl = start_sluice(make_sluice, kafka, "partition_by_trace_id = true")
    send_spans(sl, 200, traces=20)
    msgs = kafka.consume("otlp_spans", lambda got: len(spans_in(got)) >= 200)
    assert len(spans_in(msgs)) == 200
    partitions_of = {}
    for m in msgs:
        spans = spans_in([m])
        trace_ids = {s.trace_id.hex() for s in spans}
        assert trace_ids == {m.key().decode()}, "one trace per message, keyed by its trace id"
        partitions_of.setdefault(m.key().decode(), set()).add(m.partition())
    assert len(partitions_of) == 20
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "20 traces over 4 partitions use more than one"


def test_json_messages_never_exceed_max_message_bytes(make_sluice, kafka):
    kafka.topic("otlp_spans")
    sl = start_sluice(make_sluice, kafka, 'encoding = "otlp_json"\nmax_message_bytes = "4KiB"')
    ids = send_spans(sl, 500)

    def count(got):
        return sum(len(s["spans"]) for m in got for rs in json.loads(m.value())["resourceSpans"] for s in rs["scopeSpans"])

    msgs = kafka.consume("otlp_spans", lambda got: count(got) >= 500)
    assert count(msgs) == 500
    assert len(msgs) > 10 and all(len(m.value()) <= 4096 for m in msgs)
    got_ids = {s["spanId"] for m in msgs for rs in json.loads(m.value())["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
    assert got_ids == ids


def test_broker_down_at_start_delays_but_loses_nothing(make_sluice, tmp_path):
    """Sluice starts before the broker exists: exports fail retryably, the queue holds the spans,
    and they all arrive once the broker is up on that address."""
    from conftest import free_port
    port = free_port()
    sl = make_sluice("early")
    sl.start(sl.default_config(exporter=f"""type = "kafka"
brokers = ["127.0.0.1:{port}"]
timeout = "3s"
retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "60s" }}
"""))
    ids = send_spans(sl, 100)
    wait_for(lambda: sl.metric("sluice_exporter_queue_items") > 0 or sl.metric("sluice_exporter_failed_items_total") > 0,
             what="spans waiting for the broker", timeout=10)
    k = Kafka(tmp_path / "late-kafka", port=port)
    try:
        k.topic("otlp_spans")
        msgs = k.consume("otlp_spans", lambda got: len(spans_in(got)) >= 100, timeout=60)
        assert {s.span_id.hex() for s in spans_in(msgs)} >= ids
        wait_for(lambda: sl.metric("sluice_exporter_sent_items_total", signal="traces") == 100, what="100 sent", timeout=30)
        assert sl.metric("sluice_dropped_items_total") == 0
    finally:
        k.stop()


def test_kafka_over_tls(make_sluice, tmp_path):
    """`tls = { ca_file }` → security.protocol = ssl through librdkafka's OpenSSL: the broker (tansu,
    which has no TLS listener) sits behind a TLS terminator that it advertises, so every connection —
    Sluice's producer and the checking consumer — goes through TLS; a producer with a wrong CA fails,
    retries and counts every span."""
    from tlsproxy import Pki, TlsProxy
    from conftest import free_port
    pki = Pki(tmp_path / "pki")
    proxy_port = free_port()
    kafka = Kafka(tmp_path / "kafka", advertised_port=proxy_port)
    proxy = TlsProxy(pki, kafka.port, alpn=None, port=proxy_port)
    try:
        kafka.topic("otlp_spans")
        tls_bootstrap = f"127.0.0.1:{proxy_port}"
        sl = make_sluice("sidecar")
        sl.start(sl.default_config(exporter=f"""type = "kafka"
brokers = ["{tls_bootstrap}"]
tls = {{ ca_file = "{pki.ca_file}" }}
"""))
        ids = send_spans(sl, 200)
        got = kafka.consume("otlp_spans", lambda ms: len(spans_in(ms)) >= 200, **{
            "bootstrap.servers": tls_bootstrap, "security.protocol": "ssl", "ssl.ca.location": str(pki.ca_file)})
        assert {s.span_id.hex() for s in spans_in(got)} == ids
        wait_for(lambda: sl.metric("sluice_exporter_sent_items_total", signal="traces") == 200, what="200 sent")
        assert proxy.connections >= 2 and proxy.handshakes_failed == 0

        other = Pki(tmp_path / "other", name="other-ca")
        bad = make_sluice("wrong-ca")
        bad.start(bad.default_config(exporter=f"""type = "kafka"
brokers = ["{tls_bootstrap}"]
timeout = "2s"
tls = {{ ca_file = "{other.ca_file}" }}
retry = {{ initial_interval = "200ms", max_elapsed = "3s" }}
"""))
        send_spans(bad, 20)
        wait_for(lambda: bad.metric("sluice_exporter_failed_items_total", signal="traces") == 20,
                 timeout=30, what="20 spans counted as failed")
        assert bad.metric("sluice_exporter_sent_items_total", signal="traces") == 0
        assert proxy.handshakes_failed >= 1
    finally:
        proxy.stop()
        kafka.stop()
