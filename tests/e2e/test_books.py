"""Acceptance 7: the books balance — per signal, accepted = sent + dropped + still queued."""

import json

import requests
from conftest import FIXTURES, wait_for
from test_malformed import grpc_call, spans_request

SIGNALS = ("traces", "metrics", "logs", "profiles")


def books(sl):
    m = sl.metrics()

    def total(name, signal):
        return sum(v for (n, ls), v in m.items() if n == name and ("signal", signal) in ls)

    out = {}
    for s in SIGNALS:
        out[s] = {
            "accepted": total("sluice_receiver_accepted_items_total", s),
            "sent": total("sluice_exporter_sent_items_total", s),
            "dropped": total("sluice_dropped_items_total", s),
            "queued": total("sluice_pipeline_queue_items", s) + total("sluice_exporter_queue_items", s),
        }
    return out


def balanced(b):
    return all(v["accepted"] == v["sent"] + v["dropped"] + v["queued"] for v in b.values())


def quiet(sl):
    b = books(sl)
    return b if all(v["queued"] == 0 for v in b.values()) else None


def send_mix(sl):
    for name, path in (("trace.json", "/v1/traces"), ("metrics.json", "/v1/metrics"), ("logs.json", "/v1/logs")):
        r = requests.post(sl.otlp_http(path), data=(FIXTURES / "otlp" / name).read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 200, r.text
    for _ in range(5):
        grpc_call(sl, spans_request(40))
        r = requests.post(sl.otlp_http("/v1/traces"), data=spans_request(25),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
    # Refused data must stay out of the books (it was never accepted).
    requests.post(sl.otlp_http("/v1/traces"), data=b"\xff\xff", headers={"Content-Type": "application/x-protobuf"}, timeout=10)


def test_books_balance_when_everything_is_delivered(sluice):
    sluice.start()
    send_mix(sluice)
    b = wait_for(lambda: (q := quiet(sluice)) and q["traces"]["sent"] >= 326 and q, what="delivery")
    assert balanced(b), json.dumps(b, indent=1)
    assert b["traces"]["accepted"] == 1 + 5 * 40 + 5 * 25
    assert b["traces"]["dropped"] == 0
    assert b["metrics"]["accepted"] > 0 and b["logs"]["accepted"] > 0


def test_books_balance_when_a_slow_backend_drops(sluice):
    exporter = """type = "blackhole"
max_rate = 2000.0
queue = { max_items = 300, when_full = "drop" }"""
    sluice.start(sluice.default_config(exporter=exporter, batch_items=200))
    for _ in range(15):
        r = requests.post(sluice.otlp_http("/v1/traces"), data=spans_request(200),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
    b = wait_for(lambda: quiet(sluice), timeout=30, what="queues to drain")
    t = b["traces"]
    assert t["accepted"] == 15 * 200
    assert t["dropped"] > 0, "the slow backend should have made the queue drop"
    assert t["sent"] > 0
    assert balanced(b), json.dumps(b, indent=1)
    assert sluice.metric("sluice_dropped_items_total", reason="queue_full", signal="traces") == t["dropped"]
