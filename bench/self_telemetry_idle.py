#!/usr/bin/env python3
"""What own telemetry costs by itself: two idle Sluices, one with [service.telemetry] (1 s interval, to
a sink Sluice) and one without; their CPU time (/proc/PID/stat) over --seconds. The difference is the
fixed per-interval cost (render + parse of /metrics, OTLP export), which does not grow with the item
rate. Usage: .venv/bin/python bench/self_telemetry_idle.py [--seconds 60]"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("SLUICE_BIN", str(ROOT / "target" / "release" / "sluice"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Sluice  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    d = pathlib.Path(tempfile.mkdtemp(prefix="sluice-selftel-"))
    sink = Sluice(d, "sink").start()
    off = Sluice(d, "off")
    off.start(off.default_config(exporter='type = "blackhole"'))
    on = Sluice(d, "on")
    on.start(on.default_config(exporter='type = "blackhole"',
                               service_extra=f'[service.telemetry]\nendpoint = "http://127.0.0.1:{sink.grpc}"\ninterval = "1s"'))
    try:
        time.sleep(3)
        a0, b0 = cpu(off.proc.pid), cpu(on.proc.pid)
        time.sleep(args.seconds)
        a1, b1 = cpu(off.proc.pid), cpu(on.proc.pid)
    finally:
        for s in (on, off, sink):
            s.stop()
    print(f"idle CPU over {args.seconds}s: off {a1 - a0:.2f}s, on {b1 - b0:.2f}s; "
          f"own telemetry ≈ {(b1 - b0 - (a1 - a0)) / args.seconds * 1000:.2f} ms CPU per second")


if __name__ == "__main__":
    main()
