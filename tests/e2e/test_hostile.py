"""Issue 11, acceptance 1 (request bodies): hostile requests against a Sluice with a 256 MiB memory
limit, on both transports, while a real SDK client sends legitimate traffic. Each attack gets the
right status; nothing panics; `/healthz` answers within a second throughout; the process's resident
memory stays below memory_limit + 64 MiB (the kernel's own high-water mark, VmHWM); every span the
SDK sent arrives. (Connection-level attacks — slowloris, HTTP/2 stream floods, idle connections —
are tested with the listener limits.)"""

import threading
import time

import requests
from conftest import spans_of, wait_for
from hostile import (Watch, empty_exp_histogram_points_request, empty_spans_request, field, grpc_raw, gz,
                     gzip_bomb, lying_length, nested_any_value, nested_json, varint, zstd_bomb)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

MiB = 1 << 20
LIMIT = 256 * MiB
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def config(sl, pprof_port):
    return sl.default_config(service_extra='memory_limit = "256MiB"') + f"""
[receivers.pprof]
type = "pprof"
http = "127.0.0.1:{pprof_port}"

[pipelines.pprof]
signals = ["profiles"]
receivers = ["pprof"]
processors = ["batch"]
exporters = ["out"]
"""


def post(sl, path, body, ctype="application/x-protobuf", encoding=None):
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    return requests.post(sl.otlp_http(path), data=body, headers=headers, timeout=30)


# --- pprof bodies, written field by field -------------------------------------------------------

def vint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value & ((1 << 64) - 1))


def packed(number: int, values) -> bytes:
    return field(number, b"".join(varint(v) for v in values))


def pprof(strings, samples=(), mappings=b"", comments=(), sample_type=(1, 2)) -> bytes:
    body = field(1, vint(1, sample_type[0]) + vint(2, sample_type[1]))
    for s in samples:
        body += field(2, s)
    body += mappings
    for s in strings:
        body += field(6, s.encode())
    if comments:
        body += packed(13, comments)
    return body


def pprof_post(port, body):
    return requests.post(f"http://127.0.0.1:{port}/ingest", params={"name": "hostile.cpu"}, data=body, timeout=30)


# --- the legitimate client ----------------------------------------------------------------------

class SdkTraffic:
    """A real OpenTelemetry SDK (gRPC and HTTP exporters) sending spans named `legit-N` in the
    background; its exporters retry on UNAVAILABLE / 503 as every OTLP client does."""

    def __init__(self, sl):
        res = Resource.create({"service.name": "legit"})
        self.providers = []
        for exp in (GrpcSpanExporter(endpoint=f"127.0.0.1:{sl.grpc}", insecure=True),
                    HttpSpanExporter(endpoint=sl.otlp_http("/v1/traces"))):
            tp = TracerProvider(resource=res)
            tp.add_span_processor(BatchSpanProcessor(exp, schedule_delay_millis=200))
            self.providers.append(tp)
        self.sent = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for tp in self.providers:
                with tp.get_tracer("legit").start_as_current_span(f"legit-{self.sent}"):
                    pass
                self.sent += 1
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        for tp in self.providers:
            tp.force_flush(30_000)
            tp.shutdown()


def test_hostile_bodies_are_refused_and_nothing_else_suffers(sluice):
    from conftest import free_port
    pprof_port = free_port()
    sl = sluice.start(config(sluice, pprof_port))
    statuses = {}
    with Watch(sl) as watch, SdkTraffic(sl) as sdk:
        # Compression bombs: 64 MiB of zeros in ~64 KiB; the limit (16 MiB decompressed) stops them.
        gzb, zsb = gzip_bomb(64 * MiB), zstd_bomb(64 * MiB)
        statuses["http gzip bomb"] = post(sl, "/v1/traces", gzb, encoding="gzip").status_code
        statuses["http zstd bomb"] = post(sl, "/v1/traces", zsb, encoding="zstd").status_code
        statuses["grpc gzip bomb"] = grpc_raw(sl.grpc, TRACES, gzb, encoding="gzip", compressed=True).get("grpc-status")
        statuses["grpc zstd bomb"] = grpc_raw(sl.grpc, TRACES, zsb, encoding="zstd", compressed=True).get("grpc-status")

        # Repeated-field amplification: 15 MiB of empty spans / empty exponential-histogram points
        # decode to gigabytes; refused before they are built (and a gzip copy of it, 15 KiB).
        spans = empty_spans_request(15 * MiB)
        points = empty_exp_histogram_points_request(15 * MiB)
        statuses["http empty spans"] = post(sl, "/v1/traces", spans).status_code
        statuses["http empty spans gzip"] = post(sl, "/v1/traces", gz(spans), encoding="gzip").status_code
        statuses["http empty points"] = post(sl, "/v1/metrics", points).status_code
        statuses["grpc empty spans"] = grpc_raw(sl.grpc, TRACES, spans).get("grpc-status")
        statuses["grpc empty points"] = grpc_raw(sl.grpc, METRICS, points).get("grpc-status")
        for _ in range(4):  # several at once, as an attacker would
            ts = [threading.Thread(target=post, args=(sl, "/v1/metrics", points)) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        # Deep nesting.
        statuses["http deep protobuf"] = post(sl, "/v1/traces", nested_any_value(5000)).status_code
        statuses["grpc deep protobuf"] = grpc_raw(sl.grpc, TRACES, nested_any_value(5000)).get("grpc-status")
        statuses["http deep json"] = post(sl, "/v1/traces", nested_json(5000), ctype="application/json").status_code
        statuses["http deep json arrays"] = post(sl, "/v1/traces", b"[" * 200_000, ctype="application/json").status_code

        # Length fields far beyond the body: in the protobuf, and in the gRPC frame prefix.
        statuses["http lying protobuf length"] = post(sl, "/v1/traces", lying_length()).status_code
        statuses["grpc lying protobuf length"] = grpc_raw(sl.grpc, TRACES, lying_length()).get("grpc-status")
        lying_frame = grpc_raw(sl.grpc, TRACES, b"\x0a\x00", declared_len=(1 << 31) - 1)
        statuses["grpc lying frame length"] = lying_frame.get("grpc-status") or ("reset" if lying_frame.get("reset") else None)

        # pprof: out-of-range indices, a multi-byte label, a huge comment table, thousands of mappings.
        statuses["pprof bad string index"] = pprof_post(pprof_port, pprof([""], sample_type=(999, 1000))).status_code
        loc = field(4, vint(1, 1) + field(4, vint(1, 77)))  # a location whose line names function 77
        statuses["pprof bad function id"] = pprof_post(pprof_port, pprof(["", "cpu", "ns"], mappings=loc,
                                                                         samples=[packed(1, [1]) + packed(2, [5])])).status_code
        label = field(3, vint(1, 3) + vint(2, 4))
        statuses["pprof multibyte label"] = pprof_post(pprof_port, pprof(["", "cpu", "ns", "ключ", "значение ✓"],
                                                                         samples=[packed(2, [5]) + label])).status_code
        statuses["pprof huge comments"] = pprof_post(pprof_port, pprof(["", "cpu", "ns", "c" * MiB],
                                                                       comments=[3] * 200_000)).status_code
        maps = b"".join(field(3, vint(1, i + 1) + vint(5, 3)) for i in range(5000))
        statuses["pprof 5000 mappings"] = pprof_post(pprof_port, pprof(["", "cpu", "ns", "libfoo.so"], mappings=maps,
                                                                       samples=[packed(2, [1])])).status_code
        statuses["pprof garbage"] = pprof_post(pprof_port, b"\xff" * 1000).status_code
        time.sleep(1)
    legit_sent = sdk.sent

    expected = {
        "http gzip bomb": 413, "http zstd bomb": 413, "grpc gzip bomb": "8", "grpc zstd bomb": "8",
        "http empty spans": 413, "http empty spans gzip": 413, "http empty points": 413,
        "grpc empty spans": "8", "grpc empty points": "8",
        "http deep protobuf": 400, "grpc deep protobuf": "3", "http deep json": 400, "http deep json arrays": 400,
        "http lying protobuf length": 400, "grpc lying protobuf length": "3",
        "pprof bad string index": 400, "pprof bad function id": 400, "pprof huge comments": 400, "pprof garbage": 400,
    }
    for k, want in expected.items():
        assert statuses[k] == want, f"{k}: got {statuses[k]!r}, want {want!r}; all: {statuses}"
    # A frame that promises 2 GiB is refused, or the stream reset: never waited on.
    assert statuses["grpc lying frame length"] in ("8", "3", "13", "reset"), statuses
    # Odd but legal profiles are taken (or refused with a client error), never a crash.
    assert statuses["pprof multibyte label"] == 200, statuses
    assert statuses["pprof 5000 mappings"] in (200, 400), statuses

    log = sl.log_text()
    assert "panicked" not in log and "panic" not in log.lower(), log[-3000:]
    assert not watch.health_failures, watch.health_failures
    assert watch.worst_health < 1.0, f"/healthz took {watch.worst_health:.2f}s"
    hwm = watch.hwm()
    assert hwm < LIMIT + 64 * MiB, f"peak RSS {hwm / MiB:.0f} MiB (sampled peak {watch.peak_rss / MiB:.0f} MiB)"
    print(f"peak RSS {hwm / MiB:.0f} MiB; worst /healthz {watch.worst_health * 1000:.0f} ms; {legit_sent} legit spans")

    # Every legitimate span arrived, exactly once.
    def legit():
        return [s for s in spans_of(sl.output("traces")) if s["name"].startswith("legit-")]
    wait_for(lambda: len(legit()) >= legit_sent, timeout=30, what=f"{legit_sent} legit spans")
    names = sorted(s["name"] for s in legit())
    assert len(names) == legit_sent == len(set(names)), (len(names), legit_sent)
    # The refusals were counted, by reason.
    assert sl.metric("sluice_receiver_refused_requests_total", reason="too_large") >= 9
    assert sl.metric("sluice_receiver_refused_requests_total", reason="malformed") >= 8
