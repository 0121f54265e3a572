"""Pipelines with fan-out, several pipelines sharing a receiver, processors in order, `/status`, and
back-pressure that reaches clients as a retryable refusal (HTTP 503 + Retry-After, gRPC UNAVAILABLE)."""

import json

import grpc
import pytest
import requests
from conftest import FIXTURES, attrs, logs_of, spans_of, wait_for
from test_malformed import grpc_call, spans_request


def test_fan_out_and_shared_receiver(sluice):
    d = sluice.dir
    cfg = f"""
[service]
admin = "127.0.0.1:{sluice.admin}"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sluice.grpc}"
http = "127.0.0.1:{sluice.http}"

[processors.batch]
type = "batch"
timeout = "50ms"

[processors.tag]
type = "attributes"
actions = [{{ key = "pipeline", action = "upsert", value = "tagged" }}, {{ key = "secret", action = "delete" }}]

[exporters.a]
type = "file"
path = "{d}/a"

[exporters.b]
type = "file"
path = "{d}/b"

[exporters.c]
type = "file"
path = "{d}/c"

[pipelines.plain]
signals = ["traces", "logs"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["a", "b"]

[pipelines.tagged]
signals = ["traces"]
receivers = ["otlp"]
processors = ["tag", "batch"]
exporters = ["c"]
"""
    sluice.start(cfg)
    body = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "secret", "value": {"stringValue": "pw"}})
    r = requests.post(sluice.otlp_http("/v1/traces"), json=body, timeout=10)
    assert r.status_code == 200, r.text
    grpc_call(sluice, spans_request(9))
    r = requests.post(sluice.otlp_http("/v1/logs"), data=(FIXTURES / "otlp" / "logs.json").read_bytes(),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200

    def out(exporter, signal):
        sluice.data = d / exporter
        return sluice.output(signal)

    for e in ("a", "b", "c"):
        wait_for(lambda: len(spans_of(out(e, "traces"))) == 10, what=f"10 spans in {e}")
    a, c = spans_of(out("a", "traces")), spans_of(out("c", "traces"))
    assert spans_of(out("b", "traces")) == a, "fan-out copies are identical"
    first_a = next(s for s in a if s["name"] == "I'm a server span")
    first_c = next(s for s in c if s["name"] == "I'm a server span")
    assert "secret" in attrs(first_a) and "pipeline" not in attrs(first_a), "the tag processor must not leak into another pipeline"
    assert attrs(first_c)["pipeline"] == "tagged" and "secret" not in attrs(first_c)
    assert all(attrs(s)["pipeline"] == "tagged" for s in c)
    wait_for(lambda: len(logs_of(out("a", "logs"))) == 1 and len(logs_of(out("b", "logs"))) == 1, what="logs in a and b")
    assert out("c", "logs") == [], "logs are not in the tagged pipeline"
    # A signal no pipeline carries is refused as not found.
    r = requests.post(sluice.otlp_http("/v1/metrics"), data=b"", headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 404

    status = requests.get(sluice.url("/status"), timeout=5).json()
    assert status["state"] == "running"
    assert {p["name"] for p in status["pipelines"]} == {"plain", "tagged"}
    assert {e["name"] for e in status["exporters"]} == {"a", "b", "c"}
    assert all(e["queue_items"] == 0 and e["queue_capacity"] == 100000 for e in status["exporters"])
    assert status["config"]["pipelines"]["tagged"]["processors"] == ["tag", "batch"]
    assert sluice.metric("sluice_receiver_accepted_items_total", signal="traces") == 10
    assert sluice.metric("sluice_exporter_sent_items_total", signal="traces", exporter="c") == 10


def test_full_pipeline_refuses_with_retryable_status(sluice):
    exporter = """type = "blackhole"
max_rate = 20.0
queue = { max_items = 10, when_full = "block" }"""
    sluice.start(sluice.default_config(exporter=exporter, batch_items=10, receiver_extra='accept_timeout = "100ms"',
                                      service_extra='shutdown_timeout = "1s"'))
    codes = []
    for _ in range(400):
        r = requests.post(sluice.otlp_http("/v1/traces"), data=spans_request(10),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        codes.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1"
            break
    assert 503 in codes, f"never refused: {set(codes)}"
    with pytest.raises(grpc.RpcError) as e:
        for _ in range(50):
            grpc_call(sluice, spans_request(10))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    refused = sluice.metric("sluice_receiver_refused_items_total", reason="unavailable", signal="traces")
    assert refused >= 20
    accepted = sluice.metric("sluice_receiver_accepted_items_total", signal="traces")
    assert accepted >= 10 * codes.count(200) and accepted % 10 == 0
    assert sluice.metric("sluice_dropped_items_total") == 0, "blocking queues never drop"
    # The slow backend cannot drain the backlog within the 1s shutdown deadline: the loss is said out loud.
    assert sluice.stop(timeout=20) == 0
    assert "shutdown deadline passed; undelivered items dropped" in sluice.log_text()
