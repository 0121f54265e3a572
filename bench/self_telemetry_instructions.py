#!/usr/bin/env python3
"""What own telemetry costs, counted in instructions rather than CPU seconds (which vary by ±20% between
runs of one binary on a shared 2-core VM): Sluice runs under `valgrind --tool=callgrind` (instruction
counts are repeatable) on the blackhole pipeline of bench/run.py, with and without `[service.telemetry]`
(1 s interval, to a sink Sluice), while `sluice-loadgen` sends the same fixed-rate gRPC load
(100 spans × 10 attributes per request). Reports instructions per accepted span for each and the ratio.

The whole process is counted, start-up included, and valgrind slows Sluice ~50×, so the per-second cost
of own telemetry weighs ~50× more per span than at full speed: the ratio is an upper bound.

    .venv/bin/python bench/self_telemetry_instructions.py [--seconds 20] [--rate 50]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SLUICE = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "release" / "sluice")
LOADGEN = os.environ.get("SLUICE_LOADGEN") or str(pathlib.Path(SLUICE).parent / "sluice-loadgen")
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Sluice, wait_for  # noqa: E402


def run(work, name, telemetry, seconds, rate):
    sl = Sluice(work, name)
    out = sl.dir / "callgrind.out"
    extra = f'[service.telemetry]\nendpoint = "{telemetry}"\ninterval = "1s"' if telemetry else ""
    sl.start(sl.default_config(exporter='type = "blackhole"', service_extra=extra),
             prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], binary=SLUICE)
    load = subprocess.run(
        [LOADGEN, "--endpoint", f"http://127.0.0.1:{sl.grpc}", "--attributes", "10", "--attribute-size", "43",
         "--connections", "1", "--rate", str(rate), "--duration", f"{seconds}s"],
        capture_output=True, text=True, timeout=seconds * 10 + 60, check=True)
    report = json.loads(load.stdout.strip().splitlines()[-1])
    wait_for(lambda: sl.metric("sluice_exporter_sent_items_total") == report["items_ok"], timeout=60, what="drained")
    assert sl.stop(timeout=120) == 0
    totals = [line for line in out.read_text().splitlines() if line.startswith("totals:") or line.startswith("summary:")]
    instructions = int(totals[-1].split()[1])
    return {"telemetry": bool(telemetry), "spans": report["items_ok"], "instructions": instructions,
            "instructions_per_span": round(instructions / max(report["items_ok"], 1), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rate", type=int, default=50, help="requests/s of 100 spans")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        sink = Sluice(work, "sink").start()
        try:
            off = run(work, "off", None, a.seconds, a.rate)
            on = run(work, "on", f"http://127.0.0.1:{sink.grpc}", a.seconds, a.rate)
        finally:
            sink.stop()
    print(json.dumps(off))
    print(json.dumps(on))
    print(json.dumps({"on_over_off": round(on["instructions_per_span"] / off["instructions_per_span"], 4)}))


if __name__ == "__main__":
    main()
