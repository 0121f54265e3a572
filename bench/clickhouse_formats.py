#!/usr/bin/env python3
"""Benchmark: what an otel_traces INSERT costs the ClickHouse server per row, by format.

Sluice (format = "native" and format = "row_binary") sends the same spans (HTTP/protobuf,
512 spans x 10 attributes per request) to a capture endpoint that keeps the INSERT bodies as
they arrive (LZ4 blocks undone); the bodies are then inserted, in-process, into ClickHouse's
engine (chDB, the engine behind tests/clickhouse/chfront.py) with Sluice's own DDL (the
otel_traces table and its trace-id materialized view), and the CPU time of the process during
the inserts is divided by the rows. ArrowStream (LZ4 frame) bodies of the same rows, written by
the engine itself, are measured alongside for reference. Sluice's own CPU for each format is
reported too (the whole process: receive + export).

    cargo build --profile ci -p sluice
    .venv/bin/python bench/clickhouse_formats.py [--spans 102400] [--repeat 5]
"""

import argparse
import json
import os
import pathlib
import random
import resource
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "clickhouse"))
from conftest import Sluice  # noqa: E402
from chfront import decompress_native  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span  # noqa: E402


def body(rng, k, n=512):
    now = time.time_ns()
    spans = [Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=f"GET /api/v1/items/{i % 20}", kind=2,
                  start_time_unix_nano=now + i, end_time_unix_nano=now + i + 1_000_000,
                  attributes=[KeyValue(key=f"attr.{a}", value=AnyValue(string_value="v" * 43)) for a in range(10)])
             for i in range(n)]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=f"svc-{k % 5}"))]),
        scope_spans=[ScopeSpans(spans=spans)])])
    return req.SerializeToString()


class Capture:
    """An HTTP endpoint that answers every ClickHouse request with 200 and keeps what it got."""

    def __init__(self):
        self.queries, self.inserts, self.last = [], [], time.monotonic()
        cap = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                qs = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                data = self.rfile.read(int(self.headers.get("Content-Length", 0))) if "Content-Length" in self.headers else self._chunked()
                query = qs.get("query")
                if query is None:
                    query, data = data.decode(), b""
                if qs.get("decompress") == "1" and data:
                    data = decompress_native(data)
                if query.lstrip().upper().startswith("INSERT"):
                    cap.inserts.append((query, data))
                else:
                    cap.queries.append(query)
                cap.last = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _chunked(self):
                out = b""
                while True:
                    n = int(self.rfile.readline().strip(), 16)
                    if n == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(n)
                    self.rfile.readline()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def capture(fmt, bodies, work):
    cap = Capture()
    sl = Sluice(work / fmt)
    sl.start(f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"
[processors.batch]
type = "batch"
[exporters.ch]
type = "clickhouse"
endpoint = "{cap.url}"
format = "{fmt}"
[pipelines.traces]
signals = ["traces"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["ch"]
""")
    try:
        s = requests.Session()
        for b in bodies:
            r = s.post(f"http://127.0.0.1:{sl.http}/v1/traces", data=b, headers={"Content-Type": "application/x-protobuf"})
            r.raise_for_status()
        while time.monotonic() - cap.last < 2.0 or not cap.inserts:
            time.sleep(0.2)
        cpu = cpu_of(sl.proc.pid)
    finally:
        sl.stop()
        cap.server.shutdown()
    return cap, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=102_400)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import chdb

    rng = random.Random(1)
    bodies = [body(rng, k) for k in range(args.spans // 512)]
    rows = len(bodies) * 512
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-bench-chfmt-"))
    captured = {}
    for fmt in ("native", "row_binary"):
        cap, cpu = capture(fmt, bodies, work)
        captured[fmt] = cap
        print(f"sluice {fmt}: {len(cap.inserts)} inserts, {sum(len(d) for _, d in cap.inserts) / rows:.0f} B/row "
              f"uncompressed, Sluice process CPU {cpu:.2f} s = {cpu / rows * 1e6:.2f} us/row (receive + export)")
    ddl = [q for q in captured["native"].queries if q.lstrip().upper().startswith("CREATE")]
    conn = chdb.connect(str(work / "engine"))
    for q in ddl:
        conn._conn.query(q, "TabSeparated")

    conn._conn.query("USE otel", "TabSeparated")
    # Background merges would land in the measured CPU time.
    conn._conn.query("SYSTEM STOP MERGES", "TabSeparated")

    def insert_all(items, fmt_override=None):
        for sql, data in items:
            head, fmt = sql.rsplit(" FORMAT ", 1)
            ins = conn.send_insert(head, fmt_override or fmt.strip())
            ins.append(data)
            ins.finish()

    # ArrowStream bodies of the same rows, written by the engine (LZ4 frame compression inside).
    insert_all(captured["native"].inserts)
    cols = captured["native"].inserts[0][0].split("(", 1)[1].rsplit(")", 1)[0]
    arrow = conn._conn.query(
        f"SELECT {cols} FROM otel.otel_traces SETTINGS output_format_arrow_compression_method = 'lz4_frame' FORMAT ArrowStream",
        "ArrowStream").bytes()
    arrow_inserts = [(f"INSERT INTO otel.otel_traces ({cols}) FORMAT ArrowStream", arrow)]
    engine_native = conn._conn.query(f"SELECT {cols} FROM otel.otel_traces FORMAT Native", "Native").bytes()
    engine_native_inserts = [(f"INSERT INTO otel.otel_traces ({cols}) FORMAT Native", engine_native)]
    # The same, in arrival order instead of the table's sort order (what a collector sends).
    engine_unsorted = conn._conn.query(f"SELECT {cols} FROM otel.otel_traces ORDER BY Timestamp, SpanId FORMAT Native",
                                       "Native").bytes()
    engine_small = conn._conn.query(f"SELECT {cols} FROM otel.otel_traces SETTINGS max_block_size = 1700 FORMAT Native",
                                    "Native").bytes()
    engine_small_inserts = [(f"INSERT INTO otel.otel_traces ({cols}) FORMAT Native", engine_small)]
    engine_unsorted_inserts = [(f"INSERT INTO otel.otel_traces ({cols}) FORMAT Native", engine_unsorted)]

    if os.environ.get("DUMP"):
        open("/tmp/mine.native", "wb").write(b"".join(d for _, d in captured["native"].inserts))
        open("/tmp/engine.native", "wb").write(engine_native)

    def one(items):
        """The same bodies as one INSERT (blocks and rows concatenate)."""
        return [(items[0][0], b"".join(d for _, d in items))]
    results = {}
    cases = [("RowBinary (Sluice row_binary)", captured["row_binary"].inserts),
             ("Native (Sluice native)", captured["native"].inserts),
             ("RowBinary, one INSERT", one(captured["row_binary"].inserts)),
             ("Native, one INSERT", one(captured["native"].inserts)),
             ("Native (engine-written, same rows)", engine_native_inserts),
             ("Native (engine-written, rows not in the table's order)", engine_unsorted_inserts),
             ("Native (engine-written, 1,700-row blocks)", engine_small_inserts),
             ("ArrowStream lz4_frame (engine-written)", arrow_inserts)]
    # Rounds, each inserting every case once: load from other processes on the machine falls on
    # every case alike; the best round of each case is kept.
    best = {name: None for name, _ in cases}
    for _ in range(args.repeat):
        for name, items in cases:
            conn._conn.query("TRUNCATE TABLE otel.otel_traces", "TabSeparated")
            conn._conn.query("TRUNCATE TABLE otel.otel_traces_trace_id_ts", "TabSeparated")
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            insert_all(items)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            best[name] = cpu if best[name] is None else min(best[name], cpu)
            n = int(conn._conn.query("SELECT count() FROM otel.otel_traces", "TabSeparated").bytes())
            assert n == rows, (name, n, rows)
    results = {}
    for name, items in cases:
        results[name] = best[name] / rows * 1e6
        print(f"{name} ({len(items)} inserts, {sum(len(d) for _, d in items)} B): server CPU "
              f"{results[name]:.3f} us/row (best of {args.repeat} rounds; {rows} rows)")
    base = results["RowBinary (Sluice row_binary)"]
    for name, v in results.items():
        print(f"  {name}: {base / v:.2f}x cheaper than RowBinary")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
