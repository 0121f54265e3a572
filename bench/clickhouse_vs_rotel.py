#!/usr/bin/env python3
"""Benchmark: Sluice and Rotel side by side into the same ClickHouse (chDB behind
tests/clickhouse/chfront.py), as a user runs them: OTLP/HTTP protobuf at a fixed offered rate
(512 spans x 10 attributes of 43 B per request), each collector pinned to core 0 in its own run,
the load generator and ClickHouse on core 1. Reported per collector: rows that landed in
ClickHouse (counted there), the collector's CPU seconds (/proc/PID/stat utime + stime), rows per
collector CPU-second, and peak RSS (VmHWM).

Rotel comes from PyPI: the `rotel` wheel ships the `rotel-agent` binary (the only Rotel build this
machine can get: GitHub is not reachable, and crates.io's index is not searchable from here).

    cargo build --profile ci -p sluice -p sluice-loadgen
    .venv/bin/pip download --no-deps --pre rotel -d /tmp/rotel && (cd /tmp/rotel && python -m zipfile -e rotel-*.whl x)
    ROTEL_BIN=/tmp/rotel/x/rotel/rotel-agent .venv/bin/python bench/clickhouse_vs_rotel.py [--rate 30000] [--duration 20]
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from chfront import ClickHouse  # noqa: E402
from conftest import Sluice, free_port  # noqa: E402

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
SLUICE = os.environ.get("SLUICE_BIN") or str(TARGET / "ci" / "sluice")
LOADGEN = os.environ.get("SLUICE_LOADGEN") or str(pathlib.Path(SLUICE).parent / "sluice-loadgen")
ROTEL = os.environ.get("ROTEL_BIN")


def pinned(core, cmd):
    return ["taskset", "-c", str(core), *cmd] if (os.cpu_count() or 1) > 1 else cmd


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def charged_sampler(admin_url):
    """Samples Sluice's `sluice_memory_bytes{kind="charged"}` every 50 ms; returns (stop, peak)."""
    import threading
    import urllib.request
    peak, now = [0.0], [0.0]
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                text = urllib.request.urlopen(admin_url, timeout=1).read().decode()
                for line in text.splitlines():
                    if line.startswith('sluice_memory_bytes{kind="charged"}'):
                        v = now[0] = float(line.split()[-1])
                        if v > peak[0] and os.environ.get("BENCH_METRICS_AT_PEAK"):
                            pathlib.Path(os.environ["BENCH_METRICS_AT_PEAK"]).write_text(text)
                        peak[0] = max(peak[0], v)
                    elif line.startswith('sluice_memory_bytes{kind="resident"}') and os.environ.get("BENCH_TIMELINE"):
                        with open(os.environ["BENCH_TIMELINE"], "a") as f:
                            f.write(f"{time.time():.2f} resident {float(line.split()[-1]) / 2**20:.1f} charged {now[0] / 2**20:.1f}\n")
            except OSError:
                pass
            stop.wait(0.05)

    threading.Thread(target=loop, daemon=True).start()
    return stop, peak


def drive(name, pid, http_port, ch, table, args, admin_url=None):
    """Offers the load, waits for the rows to stop arriving, returns the measurements."""
    rps = args.rate / 512
    cpu0 = cpu_of(pid)
    sampler = charged_sampler(admin_url) if admin_url else None
    lg = subprocess.run(pinned(1, [LOADGEN, "--endpoint", f"http://127.0.0.1:{http_port}", "--protocol", "http",
                                   "--spans-per-request", "512", "--attributes", "10", "--attribute-size", "43",
                                   "--rate", f"{rps}", "--connections", "4", "--duration", f"{args.duration}s"]),
                        capture_output=True, text=True)
    if lg.returncode != 0:
        raise RuntimeError(f"loadgen failed: {lg.stderr}")
    last, stable_since = -1, time.time()
    while time.time() - stable_since < 3 and time.time() - stable_since < 60:
        n = ch.count(table)
        if n != last:
            last, stable_since = n, time.time()
        time.sleep(0.5)
    cpu = cpu_of(pid) - cpu0
    extra = {}
    if sampler:
        sampler[0].set()
        extra["peak_charged_mib"] = round(sampler[1][0] / 2**20, 1)
    out = {"collector": name, "offered_spans_per_s": args.rate, "rows": last, "cpu_s": round(cpu, 2),
           "rows_per_cpu_s": round(last / cpu) if cpu else None, "peak_rss_mib": round(hwm_mib(pid), 1), **extra,
           "loadgen": lg.stdout.strip().splitlines()[-1] if lg.stdout.strip() else ""}
    print(json.dumps(out), flush=True)
    return out


def wait_schema(ch, db, timeout=30):
    """Waits until the database's tables stop appearing (the exporter's DDL is done)."""
    end, last, since = time.time() + timeout, -1, time.time()
    while time.time() < end:
        n = int(ch.value(f"SELECT count() FROM system.tables WHERE database = '{db}'") or 0)
        if n != last:
            last, since = n, time.time()
        elif n > 0 and time.time() - since > 1:
            return
        time.sleep(0.2)


def run_sluice(ch, work, args, fmt):
    sl = Sluice(work, name=f"sluice-{fmt}")
    db = f"sluice_{fmt}"
    sl.start(f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"
[processors.batch]
type = "batch"
{args.batch_extra}
[exporters.ch]
type = "clickhouse"
endpoint = "{ch.url}"
database = "{db}"
format = "{fmt}"
{args.exporter_extra}
[pipelines.traces]
signals = ["traces"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["ch"]
""", prefix=pinned(0, []))
    try:
        # Sluice creates its schema at start (Rotel's was created above it, before it started):
        # offer the load once the tables stand, so neither run counts DDL time.
        wait_schema(ch, db)
        return drive(f"sluice ({fmt})", sl.proc.pid, sl.http, ch, f"{db}.otel_traces", args,
                     admin_url=sl.url("/metrics"))
    finally:
        sl.stop()


def run_rotel(ch, work, args):
    # Rotel does not create tables: give it Sluice's (the OpenTelemetry Collector's) schema.
    ch.execute("CREATE DATABASE IF NOT EXISTS rotel")
    for t in ("otel_traces", "otel_traces_trace_id_ts"):
        ch.execute(f"CREATE TABLE IF NOT EXISTS rotel.{t} AS sluice_native.{t}")
    ch.execute("CREATE MATERIALIZED VIEW IF NOT EXISTS rotel.otel_traces_trace_id_ts_mv TO rotel.otel_traces_trace_id_ts "
               "AS SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End FROM rotel.otel_traces "
               "WHERE TraceId != '' GROUP BY TraceId")
    http, grpc = free_port(), free_port()
    log = open(work / "rotel.log", "wb")
    proc = subprocess.Popen(pinned(0, [ROTEL, "start", "--otlp-http-endpoint", f"127.0.0.1:{http}",
                                       "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}", "--pid-file", str(work / "rotel.pid"),
                                       "--exporter", "clickhouse", "--clickhouse-exporter-endpoint", ch.url,
                                       "--clickhouse-exporter-database", "rotel",
                                       "--clickhouse-exporter-async-insert", "false"]),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(http)
        return drive("rotel", proc.pid, http, ch, "rotel.otel_traces", args)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=30_000, help="offered spans/s")
    ap.add_argument("--duration", type=int, default=20, help="seconds of load per collector")
    ap.add_argument("--row-binary", action="store_true", help="also run Sluice with format = \"row_binary\"")
    ap.add_argument("--exporter-extra", default="", help="more TOML lines for Sluice's clickhouse exporter")
    ap.add_argument("--batch-extra", default="", help="more TOML lines for Sluice's batch processor")
    ap.add_argument("--no-rotel", action="store_true", help="Sluice only")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-bench-vs-rotel-"))
    ch = ClickHouse(work / "ch")
    results = []
    try:
        # ClickHouse (a Python process) on core 1 with the load generator.
        subprocess.run(["taskset", "-pc", "1", str(ch.proc.pid)], capture_output=True)
        results.append(run_sluice(ch, work, args, "native"))
        if args.row_binary:
            results.append(run_sluice(ch, work, args, "row_binary"))
        if ROTEL and not args.no_rotel:
            results.append(run_rotel(ch, work, args))
        else:
            print("ROTEL_BIN not set: Sluice only", file=sys.stderr)
    finally:
        ch.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
