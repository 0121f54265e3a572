"""Acceptance 8: SIGTERM during a stream of data — everything accepted before the signal is in the
output, and the process exits 0. The batch timeout is long, so accepted data sits in the batch
buffer and exporter queue when the signal arrives: only a real flush-on-shutdown saves it."""

import signal
import threading
import time

import grpc
import requests
from conftest import spans_of
from test_malformed import grpc_call, spans_request


def stream(sl, acked, stop, transport, worker):
    n = 0
    while not stop.is_set():
        n += 1
        tid = bytes([worker]) + n.to_bytes(15, "big")
        body = spans_request(10, tid=tid)
        try:
            if transport == "http":
                r = requests.post(sl.otlp_http("/v1/traces"), data=body,
                                  headers={"Content-Type": "application/x-protobuf"}, timeout=10)
                ok = r.status_code == 200
            else:
                grpc_call(sl, body)
                ok = True
        except (requests.RequestException, grpc.RpcError):
            ok = False
        if ok:
            acked.add(tid.hex())
        elif sl.proc.poll() is not None:
            return
        else:
            time.sleep(0.01)


def test_sigterm_flushes_everything_accepted(sluice):
    sluice.start(sluice.default_config(batch_timeout="30s", batch_items=100_000))
    acked, stop = set(), threading.Event()
    workers = [threading.Thread(target=stream, args=(sluice, acked, stop, t, i + 1))
               for i, t in enumerate(["http", "http", "grpc", "grpc"])]
    for w in workers:
        w.start()
    time.sleep(1.5)
    before = len(acked)
    sluice.proc.send_signal(signal.SIGTERM)
    code = sluice.proc.wait(timeout=30)
    stop.set()
    for w in workers:
        w.join(timeout=15)
    assert code == 0, sluice.log_text()
    assert before > 20, f"only {before} requests were acknowledged before SIGTERM"
    spans = spans_of(sluice.output("traces"))
    written = {s["traceId"] for s in spans}
    missing = acked - written
    assert not missing, f"{len(missing)} acknowledged requests missing from the output"
    # No duplicates: every written request was sent once, 10 spans each.
    assert len(spans) == 10 * len(written)
    assert "SIGTERM received" in sluice.log_text()
