"""The Kafka receiver and end-to-end acknowledgements (issue 13) against a real Kafka-protocol
broker (tansu), with an independent client (confluent-kafka) producing records and reading the
consumer group's committed offsets: the OpenTelemetry SDK → sidecar → Kafka → two gateways in one
group; a gateway killed with SIGKILL mid-stream; an exporter down for 10 s; records that do not
decode; and the exporter's missing-topic handling."""

import gzip
import http.server
import re
import threading
import time

import pytest
from conftest import data_points, logs_of, metrics_of, spans_of, wait_for
from kafka import Kafka
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from test_sdk import exporters


@pytest.fixture
def kafka(tmp_path):
    k = Kafka(tmp_path / "kafka")
    yield k
    k.stop()


GROUP = "gateways"


def gateway_config(sl, kafka, exporter, extra="", signals='["traces", "metrics", "logs"]'):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "info"
shutdown_timeout = "10s"

[receivers.kafka]
type = "kafka"
brokers = ["{kafka.bootstrap}"]
group_id = "{GROUP}"
commit_interval = "200ms"
consumer = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{extra}

[processors.batch]
type = "batch"
timeout = "100ms"

[exporters.out]
{exporter}

[pipelines.all]
signals = {signals}
receivers = ["kafka"]
processors = ["batch"]
exporters = ["out"]
"""


def file_exporter(sl):
    return f'type = "file"\npath = "{sl.data}"'


class Sink:
    """An OTLP/HTTP trace backend that can be made slow or down (503); it records every span id it
    accepted, duplicates included."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.down = False
        self.span_ids = []
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if sink.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(sink.delay)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with sink.lock:
                    sink.span_ids += [s.span_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self):
        with self.lock:
            return list(self.span_ids)

    def exporter(self):
        return f"""type = "otlp"
endpoint = "http://127.0.0.1:{self.port}"
protocol = "http"
timeout = "5s"
retry = {{ initial_interval = "100ms", max_interval = "500ms", max_elapsed = "0s" }}"""

    def close(self):
        self.server.shutdown()


def span_request(record: int, per: int = 5) -> bytes:
    """One export request of `per` spans with ids that name the record: (record, i)."""
    spans = [Span(trace_id=record.to_bytes(8, "big") + b"\x01" * 8, span_id=(record * 100 + i + 1).to_bytes(8, "big"),
                  name=f"r{record}", start_time_unix_nano=1, end_time_unix_nano=2) for i in range(per)]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    return req.SerializeToString()


def expected_ids(records, per=5):
    return {(r * 100 + i + 1).to_bytes(8, "big").hex() for r in records for i in range(per)}


class Produced:
    """An independent producer (confluent-kafka) that remembers, per partition, the offset after
    the last record the broker acknowledged: what a fully committed group has committed.

    One record per produce request: tansu 0.6 reports a partition's high watermark as the base
    offset of its last record batch plus one, so batched records would hide lag from librdkafka's
    consumer_lag (and the test's own watermark reads)."""

    def __init__(self, kafka, partitions):
        from confluent_kafka import Producer
        self.p = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
        self.ends = [0] * partitions

    def _delivered(self, err, msg):
        assert err is None, err
        self.ends[msg.partition()] = max(self.ends[msg.partition()], msg.offset() + 1)

    def send(self, topic, value, key=None):
        self.p.produce(topic, key=key, value=value, on_delivery=self._delivered)
        self.p.poll(0)

    def flush(self):
        assert self.p.flush(30) == 0


def committed(kafka, topic, partitions):
    """The gateways' group's committed offsets, read by an independent client (-1001: none)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)]
    finally:
        c.close()


def assigned(sl) -> list:
    """The partitions of the gateway's last assignment, from its log (an eager rebalance revokes
    everything, then assigns the new share)."""
    last = []
    for line in sl.log_text().splitlines():
        if "Kafka partitions revoked" in line:
            last = []
        elif "Kafka partitions assigned" in line:
            m = re.search(r"partitions=\[([^\]]*)\]", line)
            last = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    return last


def test_sdk_to_sidecar_to_kafka_to_two_gateways_in_one_group(kafka, make_sluice):
    gateways = [make_sluice(f"gateway{i}") for i in range(2)]
    for g in gateways:
        g.start(gateway_config(g, kafka, file_exporter(g), extra="create_topics = { partitions = 4 }"))
    # Both members hold partitions before data flows (the first one took all of them until the
    # second joined).
    wait_for(lambda: all(assigned(g) for g in gateways) and sum(len(assigned(g)) for g in gateways) == 12,
             timeout=60, what="12 partitions (3 topics x 4) shared by the two gateways")
    sidecar = make_sluice("sidecar")
    sidecar.start(sidecar.default_config(exporter=f"""type = "kafka"
brokers = ["{kafka.bootstrap}"]
partition_by_trace_id = true"""))

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry._logs import LogRecord

    span_exp, metric_exp, log_exp = exporters("grpc", sidecar)
    resource = Resource.create({"service.name": "kafka-e2e"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(span_exp, max_export_batch_size=64))
    tracer = tp.get_tracer("e2e")
    traces, per_trace = 60, 7
    sent_spans = {}
    for t in range(traces):
        with tracer.start_as_current_span(f"root-{t}") as root:
            tid = f"{root.get_span_context().trace_id:032x}"
            for i in range(per_trace - 1):
                with tracer.start_as_current_span(f"child-{i}"):
                    pass
        sent_spans[tid] = per_trace
    tp.shutdown()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    logger = lp.get_logger("e2e")
    n_logs = 150
    for i in range(n_logs):
        logger.emit(LogRecord(body=f"log {i}"))
    lp.shutdown()
    mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)])
    counter = mp.get_meter("e2e").create_counter("kafka.e2e.requests")
    n_points = 25
    for i in range(n_points):
        counter.add(i + 1, {"route": f"/r{i}"})
    mp.shutdown()

    def got_spans():
        return [s for g in gateways for s in spans_of(g.output("traces"))]

    def got_logs():
        return [r for g in gateways for r in logs_of(g.output("logs"))]

    def got_points():
        return [p for g in gateways for m in metrics_of(g.output("metrics")) if m["name"] == "kafka.e2e.requests" for p in data_points(m)]

    total = traces * per_trace
    wait_for(lambda: len(got_spans()) >= total and len(got_logs()) >= n_logs and len(got_points()) >= n_points,
             timeout=60, what="every span, log record and data point at the gateways")
    spans = got_spans()
    per = {}
    for s in spans:
        per[s["traceId"]] = per.get(s["traceId"], 0) + 1
    assert per == sent_spans, "per-trace span counts differ from what the SDK sent"
    assert sorted(r["body"]["stringValue"] for r in got_logs()) == sorted(f"log {i}" for i in range(n_logs))
    values = sorted(int(p["asInt"]) for p in got_points())
    assert values == list(range(1, n_points + 1))
    # Both gateways got partitions, and data: traces are keyed by trace id over 4 partitions.
    for g in gateways:
        assert spans_of(g.output("traces")), f"{g.dir.name} received no spans"
        assert g.metric("sluice_receiver_accepted_items_total", receiver="kafka", signal="traces") > 0
    # A trace lives on one partition, so on one gateway.
    owners = {}
    for i, g in enumerate(gateways):
        for s in spans_of(g.output("traces")):
            owners.setdefault(s["traceId"], set()).add(i)
    assert all(len(o) == 1 for o in owners.values())


def test_sigkill_mid_stream_loses_nothing_and_duplicates_only_the_unacknowledged(kafka, make_sluice):
    kafka.topic("otlp_spans", partitions=4)
    sink = Sink(delay=0.03)
    try:
        gateways = [make_sluice(f"gateway{i}") for i in range(2)]
        cfg = lambda g: gateway_config(g, kafka, sink.exporter(), extra="max_unacknowledged = 200", signals='["traces"]')
        for g in gateways:
            g.start(cfg(g))
        wait_for(lambda: all(assigned(g) for g in gateways), timeout=60, what="both gateways hold partitions")
        p = Produced(kafka, 4)
        records = 3000
        done = threading.Event()

        def produce():
            for r in range(records):
                p.send("otlp_spans", span_request(r), key=str(r).encode())
                if r % 50 == 0:
                    time.sleep(0.05)
            p.flush()
            done.set()

        t = threading.Thread(target=produce)
        t.start()
        victim = gateways[0]
        wait_for(lambda: len(sink.ids()) > 2000 and victim.metric("sluice_receiver_kafka_unacknowledged") > 0,
                 timeout=60, what="records in flight at the victim")
        in_flight = victim.metric("sluice_receiver_kafka_unacknowledged")
        victim.stop(sig=9)
        time.sleep(2)
        victim.start(cfg(victim))
        t.join(60)
        assert done.is_set()
        want = expected_ids(range(records))
        try:
            wait_for(lambda: want <= set(sink.ids()), timeout=90, what="every span at the backend after the kill")
        except AssertionError:
            missing = sorted(int(i, 16) // 100 for i in want - set(sink.ids()))
            raise AssertionError(f"{len(missing)} spans missing, of records {sorted(set(missing))[:20]}…; committed "
                                 f"{committed(kafka, 'otlp_spans', 4)}, produced {p.ends}; accepted "
                                 f"{[g.metric('sluice_receiver_accepted_items_total') for g in gateways]}, unacknowledged "
                                 f"{[g.metric('sluice_receiver_kafka_unacknowledged') for g in gateways]}")
        ids = sink.ids()
        duplicates = len(ids) - len(set(ids))
        print(f"\nSIGKILL with {in_flight:.0f} records unacknowledged at the victim: {len(want)} spans, {duplicates} duplicates "
              f"({duplicates / 5:.0f} records)")
        assert set(ids) == want
        # Duplicates come only from what was read and not committed: at most the victim's window
        # (max_unacknowledged per partition, 4 partitions, 5 spans per record) plus what was
        # delivered between its last commit and the kill.
        assert duplicates <= 4 * 200 * 5 + 5 * 200, f"{duplicates} duplicates is more than the unacknowledged window"
        wait_for(lambda: committed(kafka, "otlp_spans", 4) == p.ends, timeout=20, what="all offsets committed")
    finally:
        sink.close()


def test_exporter_down_holds_commits_and_lag_grows_then_everything_arrives(kafka, make_sluice):
    kafka.topic("otlp_spans", partitions=2)
    sink = Sink()
    try:
        g = make_sluice("gateway")
        g.start(gateway_config(g, kafka, sink.exporter(), signals='["traces"]'))
        wait_for(lambda: assigned(g), timeout=60, what="partitions assigned")
        p = Produced(kafka, 2)
        for r in range(100):
            p.send("otlp_spans", span_request(r), key=str(r).encode())
        p.flush()
        wait_for(lambda: expected_ids(range(100)) <= set(sink.ids()), what="first 100 records delivered")
        wait_for(lambda: committed(kafka, "otlp_spans", 2) == p.ends, what="first records committed")
        before = committed(kafka, "otlp_spans", 2)

        sink.down = True
        for r in range(100, 400):
            p.send("otlp_spans", span_request(r), key=str(r).encode())
        p.flush()
        t0 = time.monotonic()
        max_lag = 0
        while time.monotonic() - t0 < 10:
            assert committed(kafka, "otlp_spans", 2) == before, "an offset was committed past undelivered data"
            max_lag = max(max_lag, g.metric("sluice_receiver_kafka_lag", receiver="kafka"))
            time.sleep(0.5)
        assert max_lag >= 300, f"lag in /metrics only reached {max_lag} while 300 records waited"
        assert g.metric("sluice_receiver_kafka_unacknowledged", receiver="kafka") > 0
        sink.down = False
        wait_for(lambda: expected_ids(range(400)) <= set(sink.ids()), timeout=30, what="everything delivered after recovery")
        wait_for(lambda: committed(kafka, "otlp_spans", 2) == p.ends, what="all offsets committed")
        wait_for(lambda: g.metric("sluice_receiver_kafka_lag", receiver="kafka") == 0, timeout=10, what="lag back to 0")
    finally:
        sink.close()


def test_records_that_do_not_decode_are_counted_skipped_committed_and_dead_lettered(kafka, make_sluice):
    kafka.topic("otlp_spans", partitions=1)
    kafka.topic("otlp_dead", partitions=1)
    g = make_sluice("gateway")
    g.start(gateway_config(g, kafka, file_exporter(g), signals='["traces"]', extra='dead_letter_topic = "otlp_dead"'))
    wait_for(lambda: assigned(g), timeout=60, what="partition assigned")
    p = Produced(kafka, 1)
    good = span_request(1)
    bad = [b"this is not protobuf \x00\x01\x02", good[: len(good) // 2], b"\x0a\xff\xff\xff\xff\x0f"]
    p.send("otlp_spans", span_request(0))
    for b in bad:
        p.send("otlp_spans", b)
    p.send("otlp_spans", good)
    p.flush()
    wait_for(lambda: {s["spanId"] for s in spans_of(g.output("traces"))} == expected_ids([0, 1]), what="the valid records around the bad ones")
    assert g.metric("sluice_receiver_refused_requests_total", receiver="kafka", reason="malformed") == len(bad)
    wait_for(lambda: committed(kafka, "otlp_spans", 1) == [2 + len(bad)], what="the bad records committed with the rest")
    # The partition keeps flowing.
    p.send("otlp_spans", span_request(2))
    p.flush()
    wait_for(lambda: {s["spanId"] for s in spans_of(g.output("traces"))} == expected_ids([0, 1, 2]), what="a record after the bad ones")
    assert g.proc.poll() is None
    dead = kafka.consume("otlp_dead", lambda got: len(got) >= len(bad))
    assert sorted(m.value() for m in dead) == sorted(bad)
    headers = dict(dead[0].headers())
    assert headers["sluice.source.topic"] == b"otlp_spans"
    assert b"sluice.error" in [k.encode() for k in headers]
    assert g.log_text().count("Kafka record does not decode") >= 1


def test_exporter_reports_a_missing_topic_once_keeps_data_and_creates_topics(kafka, make_sluice):
    sl = make_sluice("sidecar")
    sl.start(sl.default_config(exporter=f"""type = "kafka"
brokers = ["{kafka.bootstrap}"]
timeout = "1s"
retry = {{ initial_interval = "100ms", max_interval = "300ms", max_elapsed = "0s" }}"""))
    import requests
    r = requests.post(sl.otlp_http("/v1/traces"), data=span_request(7), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: "does not exist" in sl.log_text(), timeout=30, what="the missing topic reported")
    time.sleep(4)  # several more attempts
    assert sl.log_text().count("does not exist and the brokers do not create topics") == 1
    assert sl.metric("sluice_exporter_queue_items", signal="traces") == 5, "the data stays queued"
    kafka.topic("otlp_spans")
    got = kafka.consume("otlp_spans", lambda m: len(m) >= 1, timeout=30)
    ids = {s.span_id.hex() for m in got for s in ExportTraceServiceRequest.FromString(m.value()).resource_spans[0].scope_spans[0].spans}
    assert ids == expected_ids([7])
    sl.stop()

    # With create_topics the exporter creates what is missing before the first message.
    sl2 = make_sluice("creator")
    sl2.start(sl2.default_config(exporter=f"""type = "kafka"
brokers = ["{kafka.bootstrap}"]
topics = {{ traces = "created_spans" }}
create_topics = {{ partitions = 3 }}"""))
    r = requests.post(sl2.otlp_http("/v1/traces"), data=span_request(8), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    wait_for(lambda: "created_spans" in admin.list_topics(timeout=5).topics, what="the exporter created its topic")
    got = kafka.consume("created_spans", lambda m: len(m) >= 1, timeout=30)
    ids = {s.span_id.hex() for m in got for s in ExportTraceServiceRequest.FromString(m.value()).resource_spans[0].scope_spans[0].spans}
    assert ids == expected_ids([8])
    topics = admin.list_topics(timeout=5).topics
    assert len(topics["created_spans"].partitions) == 3
    assert "does not exist" not in sl2.log_text()
