"""Issue 12, durability: a persistent queue that survives kill -9, a damaged queue tail, a full
persistent queue, backend flapping with the books balancing, fan-out with one stuck exporter.

The backend for the OTLP cases is a second Sluice (an OTLP gateway writing files), which the tests
stop and start; every span carries a unique (trace id, span id), so delivery is checked span by
span, duplicates included."""

import json
import os
import signal
import socket
import struct
import threading
import time

import requests
from conftest import free_port, wait_for
from test_malformed import spans_request

PROTO = {"Content-Type": "application/x-protobuf"}


def agent_config(sl, backend_grpc, queue, retry='{ initial_interval = "100ms", max_interval = "1s", max_elapsed = "0s" }',
                 extra_exporters="", exporters='["out"]', processors='["batch"]', service_extra=""):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
shutdown_timeout = "5s"
storage_dir = "{sl.dir / 'storage'}"
{service_extra}

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"
accept_timeout = "200ms"

[processors.batch]
type = "batch"
timeout = "50ms"
max_items = 2000

[exporters.out]
type = "otlp"
endpoint = "http://127.0.0.1:{backend_grpc}"
protocol = "grpc"
timeout = "2s"
queue = {queue}
retry = {retry}
{extra_exporters}

[pipelines.all]
signals = ["traces"]
receivers = ["otlp"]
processors = {processors}
exporters = {exporters}
"""


def span_keys(sl):
    """Every (trace id, span id) the backend Sluice wrote, duplicates kept."""
    keys = []
    for req in sl.output("traces"):
        for rs in req.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    keys.append((s["traceId"], s["spanId"]))
    return keys


def send(sl, n, tid):
    return requests.post(sl.otlp_http("/v1/traces"), data=spans_request(n, tid=tid), headers=PROTO, timeout=10)


def tid(i, prefix=0):
    return struct.pack(">QQ", prefix, i)


def queue_files(sl):
    return sorted((sl.dir / "storage").glob("queue-out/*.seg"))


def test_kill_9_loses_nothing_in_a_persistent_queue(make_sluice):
    """Acceptance 1: 50,000 spans queued on disk (backend down), kill -9, restart, backend up."""
    backend = make_sluice("backend")
    agent = make_sluice("agent")
    cfg = agent_config(agent, backend.grpc, '{ persistent = true, max_bytes = "256MiB", sync = "interval" }')
    agent.start(cfg)
    for i in range(100):
        assert send(agent, 500, tid(i)).status_code == 200
    wait_for(lambda: agent.metric("sluice_exporter_queue_items", exporter="out") == 50_000
             and agent.metric("sluice_pipeline_queue_items") == 0, what="50,000 spans in the persistent queue")
    assert queue_files(agent), "the queue is on disk"
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)

    agent.start(cfg)
    assert agent.metric("sluice_queue_replayed_items_total", exporter="out") == 50_000
    assert agent.metric("sluice_queue_corrupt_records_total") == 0
    backend.start()
    wait_for(lambda: agent.metric("sluice_exporter_sent_items_total", exporter="out") == 50_000, timeout=60,
             what="50,000 delivered")
    keys = wait_for(lambda: (k := span_keys(backend)) and len(k) >= 50_000 and k, what="backend files")
    assert len(set(keys)) == 50_000, "every span delivered"
    # The backend was down when the agent was killed: nothing was in flight, nothing is sent twice.
    assert len(keys) - len(set(keys)) == 0
    assert agent.metric("sluice_dropped_items_total") == 0
    wait_for(lambda: agent.metric("sluice_exporter_queue_items") == 0, what="queue empty")
    # Delivered batches are deleted: a restart replays nothing.
    assert agent.stop() == 0
    agent.start(cfg)
    assert agent.metric("sluice_queue_replayed_items_total") == 0


def test_a_torn_and_a_garbled_record_are_counted_and_the_rest_delivered(make_sluice):
    """Acceptance 3."""
    backend = make_sluice("backend")
    agent = make_sluice("agent")
    cfg = agent_config(agent, backend.grpc, '{ persistent = true, max_bytes = "64MiB" }')
    agent.start(cfg)
    for i in range(10):
        assert send(agent, 300, tid(i)).status_code == 200
    wait_for(lambda: agent.metric("sluice_exporter_queue_items", exporter="out") == 3000
             and agent.metric("sluice_pipeline_queue_items") == 0, what="3,000 spans queued")
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)
    last = queue_files(agent)[-1]
    with open(last, "ab") as f:
        body = os.urandom(200)
        f.write(struct.pack("<II", len(body), 0xDEADBEEF) + body)  # a whole record, wrong checksum
        f.write(struct.pack("<II", 4000, 0) + b"\x00" * 100)  # a write cut short
    size_before = last.stat().st_size
    agent.start(cfg)
    assert agent.metric("sluice_queue_corrupt_records_total", exporter="out") == 2
    assert agent.metric("sluice_queue_replayed_items_total", exporter="out") == 3000
    assert last.stat().st_size < size_before, "the torn tail was cut off"
    backend.start()
    wait_for(lambda: agent.metric("sluice_exporter_sent_items_total", exporter="out") == 3000, what="the rest delivered")
    keys = wait_for(lambda: (k := span_keys(backend)) and len(k) >= 3000 and k, what="backend files")
    assert len(set(keys)) == 3000
    assert agent.proc.poll() is None


def test_a_full_persistent_queue_refuses_retryably_or_drops_and_counts(make_sluice):
    """Acceptance 4: backend down, a 64KiB persistent queue."""
    down = free_port()
    block = make_sluice("block")
    block.start(agent_config(block, down, '{ persistent = true, max_bytes = "64KiB", when_full = "block" }', processors="[]"))
    drop = make_sluice("drop")
    drop.start(agent_config(drop, down, '{ persistent = true, max_bytes = "64KiB", when_full = "drop" }', processors="[]"))
    codes = {}
    for i in range(200):
        r = send(block, 100, tid(i))
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code != 200:
            break
    print("block-mode status codes:", codes)
    assert set(codes) - {200} <= {429, 503}, codes
    assert codes.get(429, 0) + codes.get(503, 0) >= 1, f"a full blocking queue refuses retryably: {codes}"
    assert block.metric("sluice_dropped_items_total") == 0
    assert block.metric("sluice_receiver_refused_items_total") >= 100

    for i in range(200):
        assert send(drop, 100, tid(i)).status_code == 200
    wait_for(lambda: drop.metric("sluice_pipeline_queue_items") == 0, what="pipeline drained")
    dropped = drop.metric("sluice_dropped_items_total", component="out", reason="queue_full")
    queued = drop.metric("sluice_exporter_queue_items", exporter="out")
    print("drop mode: dropped", dropped, "queued", queued)
    assert dropped > 0
    assert dropped + queued == 20_000, (dropped, queued)
    # The disk stays bounded: 64KiB plus at most one segment (64KiB at this size).
    assert sum(f.stat().st_size for f in queue_files(drop)) <= 2 * 64 * 1024


def test_backend_flapping_block_loses_nothing_accepted_drop_counts_every_loss(make_sluice):
    """Acceptance 2: the backend flaps down 5 s / up 5 s for 60 s under steady load. One agent in
    block mode and one in drop mode (a small in-memory queue) send to the same flapping backend."""
    backend = make_sluice("backend")
    backend.start()
    block = make_sluice("block")
    block.start(agent_config(block, backend.grpc, '{ max_items = 100000, when_full = "block" }'))
    drop = make_sluice("drop")
    drop.start(agent_config(drop, backend.grpc, '{ max_items = 3000, when_full = "drop" }'))
    stop = threading.Event()
    accepted = {"block": set(), "drop": set()}

    def client(sl, name, prefix):
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            t = tid(i, prefix)
            try:
                r = session.post(sl.otlp_http("/v1/traces"), data=spans_request(100, tid=t), headers=PROTO, timeout=10)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                accepted[name].add(t)
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(block, "block", 1)),
               threading.Thread(target=client, args=(drop, "drop", 2))]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            time.sleep(5)
            assert backend.stop() == 0
            time.sleep(5)
            backend.start()
    finally:
        stop.set()
        for t in threads:
            t.join()
    for sl in (block, drop):
        wait_for(lambda sl=sl: sl.metric("sluice_exporter_queue_items") == 0 and sl.metric("sluice_pipeline_queue_items") == 0,
                 timeout=60, what="queues drained")
    assert backend.stop() == 0
    delivered = set(span_keys(backend))

    def spans_of(tids):
        return {(t.hex(), i.to_bytes(8, "big").hex() if i else "09" * 8) for t in tids for i in range(100)}

    # Block: every span a client was told was accepted reached the backend.
    want = spans_of(accepted["block"])
    print("block: accepted", len(want), "delivered", len(want & delivered))
    assert len(want) >= 10_000
    assert want <= delivered, f"{len(want - delivered)} accepted spans lost"
    assert block.metric("sluice_dropped_items_total") == 0

    # Drop: what was lost is exactly what was counted, and the books balance.
    want = spans_of(accepted["drop"])
    got = want & delivered
    accepted_n = drop.metric("sluice_receiver_accepted_items_total")
    sent = drop.metric("sluice_exporter_sent_items_total")
    dropped = drop.metric("sluice_dropped_items_total")
    assert accepted_n == len(want)
    assert dropped > 0, "the small queue overflowed while the backend was down"
    assert dropped == drop.metric("sluice_dropped_items_total", reason="queue_full")
    assert accepted_n == sent + dropped
    print("drop: accepted", accepted_n, "sent", sent, "dropped", dropped, "delivered", len(got))
    assert len(got) == sent
    assert len(want) - len(got) == dropped


def hanging_server():
    """Accepts connections and never answers: an exporter writing to it hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns = []

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)

    threading.Thread(target=accept, daemon=True).start()
    return srv, conns


def fanout_config(sl, stuck_port=None):
    """One pipeline into a file exporter and, with `stuck_port`, a second exporter that hangs."""
    stuck = f"""
[exporters.stuck]
type = "otlp"
endpoint = "http://127.0.0.1:{stuck_port}"
protocol = "http"
timeout = "60s"
queue = {{ max_items = 2000, block_timeout = "500ms" }}
retry = {{ max_elapsed = "0s" }}
""" if stuck_port else ""
    exporters = '["file", "stuck"]' if stuck_port else '["file"]'
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
shutdown_timeout = "2s"

[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"

[processors.batch]
type = "batch"
timeout = "50ms"
max_items = 2000
{stuck}
[exporters.file]
type = "file"
path = "{sl.data}"

[pipelines.all]
signals = ["traces"]
receivers = ["otlp"]
processors = ["batch"]
exporters = {exporters}
"""


def test_one_hanging_exporter_does_not_stop_the_other(make_sluice):
    """Acceptance 5: two exporters in one pipeline; one writes to a server that never answers.
    The other gets every span the client sent at the rate it gets without the stuck one (a control
    Sluice with the file exporter alone takes the same requests, interleaved one by one, so both see
    the same machine), and the stuck one's losses are counted."""
    srv, _ = hanging_server()
    port = srv.getsockname()[1]
    sl = make_sluice("agent")
    sl.start(fanout_config(sl, port))
    control = make_sluice("control")
    control.start(fanout_config(control))
    try:
        statuses = []
        spent = {"agent": 0.0, "control": 0.0}
        # Fill the stuck exporter's queue first: the 500 ms block_timeout is paid once, here.
        for i in range(40):
            statuses.append(send(sl, 100, tid(i)).status_code)
            send(control, 100, tid(i))
        for i in range(40, 1040):
            for name, target in (("agent", sl), ("control", control)):
                t0 = time.monotonic()
                code = send(target, 100, tid(i)).status_code
                spent[name] += time.monotonic() - t0
                if target is sl:
                    statuses.append(code)
        assert statuses.count(200) == 1040, {c: statuses.count(c) for c in set(statuses)}
        wait_for(lambda: sl.metric("sluice_exporter_sent_items_total", exporter="file") == 104_000, what="file exporter got everything")
        wait_for(lambda: control.metric("sluice_exporter_sent_items_total", exporter="file") == 104_000, what="control got everything")
        rate = {k: 100_000 / v for k, v in spent.items()}
        print(f"spans/s accepted with the stuck exporter {rate['agent']:.0f}, without {rate['control']:.0f}")
        # "Full rate": a pipeline that waited on the stuck exporter would take 500 ms per batch
        # (block_timeout) or stop; here it must keep within 2x of the control (scheduling noise).
        assert rate["agent"] >= rate["control"] / 2, rate
        assert sl.metric("sluice_exporter_sent_items_total", exporter="stuck") == 0
        stuck_dropped = sl.metric("sluice_dropped_items_total", component="stuck", reason="queue_full")
        stuck_queued = sl.metric("sluice_exporter_queue_items", exporter="stuck")
        print("stuck exporter: dropped", stuck_dropped, "queued", stuck_queued)
        assert stuck_dropped > 0
        assert stuck_dropped + stuck_queued == 104_000
        assert "exporter queue stayed full" in sl.log_text()
    finally:
        srv.close()


def five_table_metrics(n, base):
    """A metrics request with `n` data points of each of the five types ClickHouse stores apart."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    t = 1_700_000_000_000_000_000
    def attrs(i):
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
        return [KeyValue(key="i", value=AnyValue(int_value=base + i))]
    metrics = [
        m.Metric(name="g", gauge=m.Gauge(data_points=[m.NumberDataPoint(time_unix_nano=t, as_double=1.0, attributes=attrs(i)) for i in range(n)])),
        m.Metric(name="s", sum=m.Sum(aggregation_temporality=2, is_monotonic=True,
                                     data_points=[m.NumberDataPoint(time_unix_nano=t, as_int=1, attributes=attrs(i)) for i in range(n)])),
        m.Metric(name="h", histogram=m.Histogram(aggregation_temporality=2, data_points=[
            m.HistogramDataPoint(time_unix_nano=t, count=1, sum=1.0, bucket_counts=[0, 1], explicit_bounds=[0.5], attributes=attrs(i)) for i in range(n)])),
        m.Metric(name="e", exponential_histogram=m.ExponentialHistogram(aggregation_temporality=2, data_points=[
            m.ExponentialHistogramDataPoint(time_unix_nano=t, count=1, sum=1.0, scale=0, attributes=attrs(i)) for i in range(n)])),
        m.Metric(name="q", summary=m.Summary(data_points=[
            m.SummaryDataPoint(time_unix_nano=t, count=1, sum=1.0, attributes=attrs(i)) for i in range(n)])),
    ]
    req = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(metrics=metrics)])])
    return req.SerializeToString()


TABLES = ("otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram",
          "otel_metrics_exponential_histogram", "otel_metrics_summary")


def test_a_failing_metrics_table_is_retried_alone(sluice, tmp_path):
    """Acceptance 6: the summary table goes missing (renamed away) while a batch is written; the
    exporter retries that table only, and once it is back every table holds each row once."""
    from chfront import ClickHouse
    from test_clickhouse import ch_config

    ch = ClickHouse(tmp_path / "ch")
    try:
        sluice.start(ch_config(sluice, ch.url, extra="min_insert_rows = 1\ncreate_schema = true"))
        r = requests.post(sluice.otlp_http("/v1/metrics"), data=five_table_metrics(3, 0), headers=PROTO, timeout=10)
        assert r.status_code == 200
        wait_for(lambda: all(ch.count(f"otel.{t}") == 3 for t in TABLES), timeout=30, what="first rows")
        # The schema exists now; hide the summary table so the next batch's last insert fails.
        ch.execute("RENAME TABLE otel.otel_metrics_summary TO otel.summary_away")
        r = requests.post(sluice.otlp_http("/v1/metrics"), data=five_table_metrics(5, 100), headers=PROTO, timeout=10)
        assert r.status_code == 200
        wait_for(lambda: sluice.metric("sluice_exporter_sent_items_total", signal="metrics") == 3 * 5 + 5 * 5,
                 timeout=30, what="second batch delivered")
        # The failed insert re-created the summary table; the retry wrote only that table.
        for t in TABLES[:4]:
            assert ch.count(f"otel.{t}") == 8, t
            assert int(ch.value(f"SELECT count(DISTINCT Attributes['i']) FROM otel.{t}")) == 8, t
        assert ch.count("otel.otel_metrics_summary") == 5
        assert ch.count("otel.summary_away") == 3
        assert "will retry" in sluice.log_text()
        assert sluice.metric("sluice_dropped_items_total") == 0
    finally:
        ch.stop()


def test_sigterm_with_a_stalled_client_flushes_and_exits(sluice):
    """A client sent half a request and stalls: shutdown cuts it off after half of
    shutdown_timeout, flushes what was accepted (sitting in a 30 s batch), and exits."""
    sluice.start(sluice.default_config(batch_timeout="30s", service_extra='shutdown_timeout = "4s"'))
    for i in range(5):
        assert send(sluice, 100, tid(i)).status_code == 200
    stalled = []
    for port in (sluice.http, sluice.grpc):
        s = socket.create_connection(("127.0.0.1", port))
        if port == sluice.http:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                      b"Content-Length: 100000\r\n\r\n" + b"\x0a" * 10)
        else:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # an HTTP/2 preface, then nothing
        stalled.append(s)
    time.sleep(0.5)
    started = time.monotonic()
    sluice.proc.send_signal(signal.SIGTERM)
    code = sluice.proc.wait(timeout=20)
    took = time.monotonic() - started
    for s in stalled:
        s.close()
    assert code == 0, sluice.log_text()
    assert took < 15, f"shutdown took {took:.1f}s"
    keys = span_keys(sluice)
    assert len(set(keys)) == 500 and len(keys) == 500, "accepted data flushed once"


def test_a_clickhouse_database_dropped_under_sluice_is_created_again(sluice, tmp_path):
    """Recoverable ClickHouse errors: the database is dropped while Sluice runs; the next batch meets
    UNKNOWN_DATABASE, the schema is created again and the batch lands — nothing dropped."""
    from chfront import ClickHouse
    from test_clickhouse import ch_config

    ch = ClickHouse(tmp_path / "ch")
    try:
        sluice.start(ch_config(sluice, ch.url, extra="min_insert_rows = 1"))
        assert send(sluice, 100, tid(1)).status_code == 200
        wait_for(lambda: ch.count("otel.otel_traces") == 100, timeout=30, what="first 100 rows")
        ch.execute("DROP DATABASE otel")
        for i in range(2, 5):
            assert send(sluice, 100, tid(i)).status_code == 200
        wait_for(lambda: ch.value("SELECT count() FROM system.databases WHERE name = 'otel'") == 1
                 and ch.count("otel.otel_traces") == 300, timeout=60, what="300 rows in the re-created database")
        assert sluice.metric("sluice_dropped_items_total") == 0
        assert sluice.metric("sluice_exporter_failed_items_total") == 0
        assert sluice.metric("sluice_exporter_sent_items_total", signal="traces") == 400
    finally:
        ch.stop()


def test_clickhouse_authentication_failures_keep_the_data_and_retry_until_fixed(sluice, tmp_path):
    """Recoverable ClickHouse errors: the server refuses Sluice's password (an operator rotated it on
    one side only). Batches stay queued and are retried with backoff, the failure is logged loudly,
    nothing is dropped; once the server takes the password again every span lands, once."""
    from chfront import ClickHouse
    from test_clickhouse import ch_config

    port = free_port()
    ch = ClickHouse(tmp_path / "ch", port=port, user="sluice", password="rotated")
    try:
        sluice.start(ch_config(sluice, f"http://sluice:pw-0r1g1nal@127.0.0.1:{port}", extra="min_insert_rows = 1"))
        for i in range(1, 6):
            assert send(sluice, 100, tid(i)).status_code == 200
        wait_for(lambda: "authentication" in sluice.log_text().lower() and " ERROR " in sluice.log_text(),
                 timeout=30, what="a loud authentication error in the log")
        time.sleep(3)  # several retry rounds while the password is wrong
        log = sluice.log_text()
        loud = [l for l in log.splitlines() if "refused our credentials" in l]
        assert len(loud) == 1 and "user=sluice" in loud[0], loud  # once per 10 s, naming the user
        assert "pw-0r1g1nal" not in log
        assert sluice.metric("sluice_dropped_items_total") == 0
        assert sluice.metric("sluice_exporter_failed_items_total") == 0
        assert sluice.metric("sluice_exporter_sent_items_total", signal="traces") == 0
        ch.stop()
        ch = ClickHouse(tmp_path / "ch", port=port, user="sluice", password="pw-0r1g1nal")
        wait_for(lambda: ch.count("otel.otel_traces") == 500, timeout=60, what="all 500 spans after the fix")
        wait_for(lambda: sluice.metric("sluice_exporter_sent_items_total", signal="traces") == 500, what="books")
        assert sluice.metric("sluice_dropped_items_total") == 0
        assert ch.value("SELECT count() FROM (SELECT SpanId FROM otel.otel_traces GROUP BY SpanId, TraceId HAVING count() > 1)") == 0
    finally:
        ch.stop()
