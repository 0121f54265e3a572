#!/usr/bin/env python3
"""Benchmark: spans per second from OTLP/HTTP clients through Sluice into ClickHouse (the real engine,
chDB behind tests/clickhouse/chfront.py). Rows are counted in ClickHouse, not in Sluice.

    cargo build --release -p sluice
    .venv/bin/python bench/clickhouse_rows.py [--spans 200000] [--per-request 1000] [--quick]
"""

import argparse
import pathlib
import random
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from chfront import ClickHouse  # noqa: E402
from conftest import Sluice, free_port  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span  # noqa: E402


def body(rng, n):
    now = time.time_ns()
    spans = [Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=f"op-{i % 20}", kind=2,
                  start_time_unix_nano=now, end_time_unix_nano=now + 1_000_000,
                  attributes=[KeyValue(key=f"attr.{a}", value=AnyValue(string_value="some-value-of-moderate-size")) for a in range(10)])
             for i in range(n)]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]),
        scope_spans=[ScopeSpans(spans=spans)])])
    return req.SerializeToString()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--per-request", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="20,000 spans: checks the benchmark runs")
    args = ap.parse_args()
    total = 20_000 if args.quick else args.spans
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-bench-ch-"))
    ch = ClickHouse(work / "ch")
    sl = Sluice(work)
    try:
        sl.start(f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"
[processors.batch]
type = "batch"
max_items = 10000
timeout = "200ms"
[exporters.ch]
type = "clickhouse"
endpoint = "{ch.url}"
database = "otel"
[pipelines.traces]
signals = ["traces"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["ch"]
""")
        rng = random.Random(1)
        bodies = [body(rng, args.per_request) for _ in range(20)]
        requests_needed = total // args.per_request
        # Warm-up: schema creation and the first insert are not part of the measurement.
        requests.post(sl.otlp_http("/v1/traces"), data=bodies[0], headers={"Content-Type": "application/x-protobuf"}, timeout=30)
        while ch.count("otel.otel_traces") < args.per_request:
            time.sleep(0.1)
        base = ch.count("otel.otel_traces")
        start = time.monotonic()

        def send(k):
            s = requests.Session()
            for i in range(k, requests_needed, 2):
                while s.post(sl.otlp_http("/v1/traces"), data=bodies[i % len(bodies)],
                             headers={"Content-Type": "application/x-protobuf"}, timeout=30).status_code != 200:
                    time.sleep(0.05)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent_at = time.monotonic() - start
        while ch.count("otel.otel_traces") < base + requests_needed * args.per_request:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        rows = requests_needed * args.per_request
        print(f"clickhouse: {rows} spans (10 attributes each) in {elapsed:.2f}s = {rows / elapsed:,.0f} rows/s "
              f"(clients done after {sent_at:.2f}s); failed={sl.metric('sluice_exporter_failed_items_total'):.0f}")
    finally:
        sl.stop()
        ch.stop()


if __name__ == "__main__":
    main()
