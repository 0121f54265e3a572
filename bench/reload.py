#!/usr/bin/env python3
"""Reload latency under load: Sluice (pinned to core 0) takes `sluice-loadgen` traffic (core 1,
gRPC, 100 spans × 10 attributes per request at a fixed rate) into a blackhole while the config is
reloaded N times, alternating a change of the batch size and of an attribute action. Reports, over
the N reloads, the time from the request (`POST /reload`) to its answer — sent once the new topology
serves — and Sluice's own `duration_ms` (read, check, build, swap), p50 and p99.

    bench/reload.py               # 20 reloads at 20,000 spans/s
    bench/reload.py --quick       # 3 reloads: checks that it still runs (CI)
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Sluice, wait_for  # noqa: E402

SLUICE = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "release" / "sluice")
LOADGEN = os.environ.get("SLUICE_LOADGEN") or str(pathlib.Path(SLUICE).parent / "sluice-loadgen")


def config(sl, k):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"

[processors.tag]
type = "attributes"
actions = [{{ key = "generation", action = "upsert", value = "g{k // 2}" }}]

[processors.batch]
type = "batch"
max_items = {8192 if k % 2 == 0 else 4096}

[exporters.null]
type = "blackhole"

[pipelines.traces]
signals = ["traces"]
receivers = ["otlp"]
processors = ["tag", "batch"]
exporters = ["null"]
"""


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * q)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--rate", type=int, default=200, help="requests/s of 100 spans")
    a = ap.parse_args()
    n = 3 if a.quick else a.reloads
    with tempfile.TemporaryDirectory() as tmp:
        sl = Sluice(pathlib.Path(tmp), "reload-bench")
        sl.start(config(sl, 0), prefix=["taskset", "-c", "0"], binary=SLUICE)
        path = sl.dir / "sluice.toml"
        load = subprocess.Popen(
            ["taskset", "-c", "1", LOADGEN, "--endpoint", f"http://127.0.0.1:{sl.grpc}", "--attributes", "10",
             "--attribute-size", "43", "--rate", str(a.rate), "--duration", f"{n * 0.6 + 4:.0f}s"],
            stdout=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: sl.metric("sluice_receiver_accepted_items_total") > 0, timeout=15, what="load")
            client_ms, server_ms = [], []
            for k in range(1, n + 1):
                time.sleep(0.5)
                tmp_path = path.with_suffix(".tmp")
                tmp_path.write_text(config(sl, k))
                os.replace(tmp_path, path)
                t0 = time.perf_counter()
                r = requests.post(sl.url("/reload"), timeout=30)
                client_ms.append((time.perf_counter() - t0) * 1e3)
                body = r.json()
                assert r.status_code == 200, body
                server_ms.append(body["duration_ms"])
            report = json.loads(load.communicate(timeout=120)[0].strip().splitlines()[-1])
        finally:
            load.kill()
            sl.stop()
    out = {
        "reloads": n,
        "offered_spans_per_s": a.rate * 100,
        "spans_accepted": report["items_ok"],
        "requests_refused": report["requests_refused"],
        "client_ms_p50": round(pct(client_ms, 0.5), 2),
        "client_ms_p99": round(pct(client_ms, 0.99), 2),
        "sluice_ms_p50": round(pct(server_ms, 0.5), 2),
        "sluice_ms_p99": round(pct(server_ms, 0.99), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
