#!/usr/bin/env python3
"""Instructions per span of two Sluice binaries on the five blackhole rows of bench/run.py, counted
under `valgrind --tool=callgrind` (instruction counts repeat to <1% between runs; CPU seconds on this
shared 2-core VM vary by ±15–30%, too much to see a 3% cost). Each binary runs the blackhole pipeline
twice, while `sluice-loadgen` sends the row's shape at a low and at a high fixed request rate for the
same time; the whole process is counted both times, so the difference divided by the difference in
spans is the **marginal** cost of a span — start-up and per-second costs (timers, samplers) cancel out.
The single-rate figure (whole process / spans at the high rate) is printed too.

    .venv/bin/python bench/instructions.py --before OLD/sluice --after NEW/sluice [--seconds 15] [--rates 10,40] [--only ROW,...]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
from conftest import Sluice, wait_for  # noqa: E402
from run import SCENARIOS  # noqa: E402

ROWS = [s for s in SCENARIOS if s[4] == "blackhole" and not s[5]]


def run(work, name, binary, loadgen, row, seconds, rate):
    _, protocol, spans, shape, _, _ = row
    sl = Sluice(work, name)
    out = sl.dir / "callgrind.out"
    sl.start(sl.default_config(exporter='type = "blackhole"'),
             prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], binary=binary)
    port = sl.grpc if protocol == "grpc" else sl.http
    load = subprocess.run(
        [loadgen, "--endpoint", f"http://127.0.0.1:{port}", "--protocol", protocol,
         "--spans-per-request", str(spans), "--attributes", str(shape["attributes"]),
         "--attribute-size", str(shape["attribute_size"]), "--connections", "1", "--rate", str(rate),
         "--duration", f"{seconds}s"],
        capture_output=True, text=True, timeout=seconds * 10 + 60, check=True)
    report = json.loads(load.stdout.strip().splitlines()[-1])
    wait_for(lambda: sl.metric("sluice_exporter_sent_items_total") == report["items_ok"], timeout=120, what="drained")
    assert sl.stop(timeout=120) == 0
    totals = [line for line in out.read_text().splitlines() if line.startswith(("totals:", "summary:"))]
    instructions = int(totals[-1].split()[1])
    return instructions, report["items_ok"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rates", default="10,40", help="low,high requests/s")
    ap.add_argument("--only", default="", help="comma-separated rows (default: all five)")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for row in ROWS:
            if only and row[0] not in only:
                continue
            per, whole = {}, {}
            lo, hi = (int(r) for r in a.rates.split(","))
            for label, binary in (("before", a.before), ("after", a.after)):
                loadgen = str(pathlib.Path(binary).parent / "sluice-loadgen")
                i_lo, s_lo = run(work, f"{row[0]}-{label}-lo", binary, loadgen, row, a.seconds, lo)
                i_hi, s_hi = run(work, f"{row[0]}-{label}-hi", binary, loadgen, row, a.seconds, hi)
                per[label] = (i_hi - i_lo) / max(s_hi - s_lo, 1)
                whole[label] = i_hi / max(s_hi, 1)
            change = per["after"] / per["before"] - 1
            rows.append({"row": row[0], "before": round(per["before"]), "after": round(per["after"]),
                         "change_percent": round(change * 100, 2),
                         "whole_process_per_span": {k: round(v) for k, v in whole.items()}})
            print(json.dumps(rows[-1]), flush=True)
    print("| row | marginal instructions/span before | after | change |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['before']:,} | {r['after']:,} | {r['change_percent']:+.2f}% |")


if __name__ == "__main__":
    main()
