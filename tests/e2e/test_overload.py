"""Issue 11, acceptance 2: 4× overload against `memory_limit = "256MiB"`. The backend (an OTLP/HTTP
sink that takes 0.4 s per request) can take a few thousand spans a second; a load generator offers
four times that in large requests, with an exporter queue configured far bigger than memory
(1,000,000 items of ~1.7 KB). The memory budget, not the item counts, must bound the process: its
resident set never passes the limit (VmHWM), refusals are retryable (503 / UNAVAILABLE, none of the
load generator's requests fail otherwise), every accepted span reaches the backend exactly as
counted, a client that retries until accepted loses nothing, and once the load stops, throughput comes back
(requests are accepted again without refusals)."""

import json
import os
import pathlib
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from conftest import BIN, free_port, wait_for
from hostile import Watch
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

LOADGEN = os.environ.get("SLUICE_LOADGEN") or str(pathlib.Path(BIN).parent / "sluice-loadgen")
MiB = 1 << 20
LIMIT = 256 * MiB


class SlowSink:
    """An OTLP/HTTP backend that takes `delay` seconds per request and counts spans by name prefix."""

    def __init__(self, delay=0.4):
        self.spans = 0
        self.legit = []
        self.lock = threading.Lock()
        sink = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest.FromString(body)
                n, legit = 0, []
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        n += len(ss.spans)
                        legit += [s.name for s in ss.spans if s.name.startswith("legit-")]
                time.sleep(delay)
                with sink.lock:
                    sink.spans += n
                    sink.legit += legit
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def legit_request(name: str) -> bytes:
    n = int(name.rsplit("-", 1)[1])
    span = Span(trace_id=(n + 1).to_bytes(16, "big"), span_id=(n + 1).to_bytes(8, "big"), name=name,
                start_time_unix_nano=1, end_time_unix_nano=2)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()


def loadgen(sl, rate, seconds, protocol):
    endpoint = f"http://127.0.0.1:{sl.grpc if protocol == 'grpc' else sl.http}"
    out = subprocess.run([LOADGEN, "--endpoint", endpoint, "--protocol", protocol, "--spans-per-request", "200",
                          "--attributes", "20", "--attribute-size", "64", "--rate", str(rate), "--connections", "8",
                          "--duration", f"{seconds}s"], capture_output=True, text=True, timeout=seconds + 120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_times_overload_stays_inside_the_memory_limit_and_loses_nothing(sluice):
    sink = SlowSink()
    sl = sluice.start(sluice.default_config(
        service_extra='memory_limit = "256MiB"',
        batch_items=1000,
        exporter=f'''type = "otlp"
endpoint = "http://127.0.0.1:{sink.port}"
protocol = "http"
compression = "none"
max_concurrency = 4
queue = {{ max_items = 1000000, when_full = "block" }}''',
    ))
    try:
        # Capacity: 4 requests in flight × 1,000 spans / 0.4 s ≈ 10,000 spans/s. Offered: 2 × 100
        # requests/s × 200 spans = 40,000 spans/s.
        results = {}
        legit_sent = 0
        retries = 0
        with Watch(sl) as watch:
            threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, loadgen(sl, 100, 20, p)))
                       for p in ("grpc", "http")]
            for t in threads:
                t.start()
            # A client that retries until it is told "accepted" (the OpenTelemetry SDK's exporter gives
            # up after its 10 s export timeout, which under sustained overload is its own loss).
            while any(t.is_alive() for t in threads):
                body = legit_request(f"legit-{legit_sent}")
                while True:
                    r = requests.post(sl.otlp_http("/v1/traces"), data=body, timeout=30,
                                      headers={"Content-Type": "application/x-protobuf"})
                    if r.status_code == 200:
                        break
                    assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
                    retries += 1
                    time.sleep(0.2)
                legit_sent += 1
                time.sleep(0.05)
            for t in threads:
                t.join()
            peak_during_load = watch.hwm()
        refused = sum(r["requests_refused"] for r in results.values())
        ok_items = sum(r["items_ok"] for r in results.values())
        print(f"overload: {results}; peak RSS {peak_during_load / MiB:.0f} MiB (sampled {watch.peak_rss / MiB:.0f}); "
              f"retrying client: {legit_sent} spans, {retries} retries")
        assert all(r["requests_failed"] == 0 for r in results.values()), results
        assert refused > 0, f"the load never exceeded capacity: {results}"
        assert peak_during_load < LIMIT, f"peak RSS {peak_during_load / MiB:.0f} MiB"
        assert sl.metric("sluice_receiver_refused_requests_total", reason="memory_limit") + \
            sl.metric("sluice_receiver_refused_requests_total", reason="unavailable") >= refused

        # Everything accepted is delivered, exactly: the sink's count equals what was accepted.
        accepted = sl.metric("sluice_receiver_accepted_items_total")
        assert accepted == ok_items + legit_sent, (accepted, ok_items, legit_sent)
        wait_for(lambda: sink.spans >= accepted, timeout=120, interval=0.5,
                 what=f"{accepted:.0f} spans at the backend (has {sink.spans})")
        assert sink.spans == accepted
        assert sorted(sink.legit) == sorted(f"legit-{i}" for i in range(legit_sent))
        assert sl.metric("sluice_dropped_items_total") == 0

        # Load dropped: requests are taken again, without refusals.
        after = loadgen(sl, 10, 3, "http")
        assert after["requests_refused"] == 0 and after["requests_failed"] == 0 and after["requests_ok"] > 0, after
        assert watch.hwm() < LIMIT
    finally:
        sl.stop()
        sink.close()
