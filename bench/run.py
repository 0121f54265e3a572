#!/usr/bin/env python3
"""Sluice benchmark harness: builds release, runs each scenario with Sluice pinned to core 0 and
`sluice-loadgen` pinned to core 1, and reports items/s, items per Sluice CPU-second (from
/proc/PID/stat, so the figure holds on a noisy machine), peak RSS and client p50/p99 latency.

    bench/run.py                 # every scenario, 10 s each; writes bench/results.json
    bench/run.py --quick         # 1 s each: checks that everything still runs (CI)
    bench/run.py --only grpc-small
    bench/run.py --scenarios grpc-small-100,http-small-100   # exact names
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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Sluice, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
# With SLUICE_BIN set (the test command sets it), that binary and the load generator beside it are
# used as they are; otherwise the release build of this checkout, built first.
SLUICE = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "release" / "sluice")
LOADGEN = pathlib.Path(os.environ.get("SLUICE_LOADGEN") or pathlib.Path(SLUICE).parent / "sluice-loadgen")

SMALL = {"attributes": 2, "attribute_size": 31}  # 163 B/span encoded (the anchors: 162 B)
ATTRS10 = {"attributes": 10, "attribute_size": 43}  # 643 B/span (the anchors: 642 B)

SCENARIOS = [
    # name, protocol, spans per request, span shape, pipeline, loadgen rate (requests/s, 0 = max)
    ("grpc-small-100", "grpc", 100, SMALL, "blackhole", 0),
    ("grpc-attrs10-100", "grpc", 100, ATTRS10, "blackhole", 0),
    # One span per request, as an SDK exporting each span sends it: the batch holds thousands of
    # requests, so what each one keeps alive beyond its bytes shows in the peak RSS.
    ("grpc-small-1", "grpc", 1, SMALL, "blackhole", 0),
    ("http-small-100", "http", 100, SMALL, "blackhole", 0),
    ("http-attrs10-100", "http", 100, ATTRS10, "blackhole", 0),
    ("http-attrs10-512", "http", 512, ATTRS10, "blackhole", 0),
    # The same blackhole rows over TLS (rustls; the loadgen verifies a CA made for the run).
    ("grpc-tls-attrs10-100", "grpc", 100, ATTRS10, "blackhole-tls", 0),
    ("http-tls-attrs10-100", "http", 100, ATTRS10, "blackhole-tls", 0),
    ("grpc-attrs10-100-sampler", "grpc", 100, ATTRS10, "sampler", 0),
    # The sampler at a fixed p = 0.25: every request sampled on the wire, its kept spans re-stamped.
    ("grpc-attrs10-100-sampler-p25", "grpc", 100, ATTRS10, "sampler-p25", 0),
    ("grpc-attrs10-100-file", "grpc", 100, ATTRS10, "file", 0),
    # The blackhole behind a persistent queue (issue 12): every batch written to disk, read back, deleted.
    ("grpc-attrs10-100-persistent", "grpc", 100, ATTRS10, "persistent", 0),
    ("grpc-attrs10-100-persistent-always", "grpc", 100, ATTRS10, "persistent-always", 0),
    ("grpc-attrs10-100-otlp", "grpc", 100, ATTRS10, "otlp", 0),
    # Trace-aware load balancing (issue 13): `endpoints` = three blackhole gateway Sluices; every
    # span has its own trace id, so each request is split three ways on the wire.
    ("grpc-attrs10-100-otlp-balanced", "grpc", 100, ATTRS10, "otlp-balanced", 0),
    ("http-attrs10-512-clickhouse", "http", 512, ATTRS10, "clickhouse", 0),
    ("grpc-attrs10-100-kafka", "grpc", 100, ATTRS10, "kafka", 0),
    # Issue 13: the measured Sluice reads Kafka (consumer group, offsets committed once delivered,
    # so every record carries an acknowledgement) into a blackhole; the load generator feeds a
    # sidecar Sluice whose kafka exporter fills the topic (4 partitions).
    ("kafka-receiver-attrs10-100", "grpc", 100, ATTRS10, "kafka-receiver", 0),
    ("grpc-attrs10-fixed-10k", "grpc", 100, ATTRS10, "blackhole", 100),
    # 2× overload: 1,000 requests/s of 100 spans into a 50,000 spans/s backend, for 60 s (--overload).
    ("grpc-attrs10-overload-2x", "grpc", 100, ATTRS10, "overload", 1000),
    # Metrics (delta histograms, 100 points per request, items = data points): the plain pipeline,
    # then with the alert_rules and metric_transform processors (issue 18).
    ("grpc-metrics-small-100", "grpc", 100, SMALL, "metrics", 0),
    ("grpc-metrics-small-100-alert-rules", "grpc", 100, SMALL, "metrics-alerts", 0),
    ("grpc-metrics-small-100-metric-transform", "grpc", 100, SMALL, "metrics-transform", 0),
]

ALERT_RULES = '''[processors.alerts]
type = "alert_rules"
[[processors.alerts.rule]]
name = "p99_latency"
metric = "http_request_duration_seconds"
matchers = ["env='prod'", "service=~'svc-.*'"]
quantile = 0.99
threshold = 2000
unit = "ms"
duration = "1m"
labels = { severity = "critical" }
'''

METRIC_TRANSFORM = '''[processors.migrate]
type = "metric_transform"
[[processors.migrate.rule]]
metric_regex = "http_request_duration_(.+)"
rename = "http.server.request.duration"
rename_attributes = { "http.route" = "route" }
drop_attributes = ["attr.1"]
unit = "ms"
'''


# OTLP endpoint of a sink for the Sluices' own telemetry (--self-telemetry), else None.
SELF_TELEMETRY = None


def config(sl, kind, data_dir, downstream=None, ch_url=None, kafka=None, tls=None):
    processors = '["batch"]'
    exporter = 'type = "blackhole"'
    extra = ""
    receiver_tls = ""
    if tls:
        receiver_tls = f'tls = {{ cert_file = "{tls[0]}", key_file = "{tls[1]}" }}'
    signal = "metrics" if kind.startswith("metrics") else "traces"
    if kind == "metrics-alerts":
        processors = '["alerts", "batch"]'
        extra = ALERT_RULES
    elif kind == "metrics-transform":
        processors = '["migrate", "batch"]'
        extra = METRIC_TRANSFORM
    elif kind == "sampler":
        processors = '["sampler", "batch"]'
        extra = '[processors.sampler]\ntype = "adaptive_sampler"\n'
    elif kind == "sampler-p25":
        processors = '["sampler", "batch"]'
        extra = '[processors.sampler]\ntype = "adaptive_sampler"\nmode = "fixed"\nprobability = 0.25\n'
    elif kind == "file":
        exporter = f'type = "file"\npath = "{data_dir}"'
    elif kind == "otlp":
        exporter = f'type = "otlp"\nendpoint = "http://127.0.0.1:{downstream}"\ncompression = "none"'
    elif kind == "otlp-balanced":
        endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in downstream)
        exporter = f'type = "otlp"\nendpoints = [{endpoints}]\ncompression = "none"'
    elif kind == "overload":
        # A backend that absorbs 50,000 spans/s; the load generator offers about twice that.
        exporter = 'type = "blackhole"\nmax_rate = 50000.0'
    elif kind == "clickhouse":
        exporter = f'type = "clickhouse"\nendpoint = "{ch_url}"\ndatabase = "otel"'
    elif kind == "kafka":
        exporter = f'type = "kafka"\nbrokers = ["{kafka}"]'
    elif kind.startswith("persistent"):
        sync = "always" if kind == "persistent-always" else "interval"
        exporter = f'type = "blackhole"\nqueue = {{ persistent = true, max_bytes = "2GiB", sync = "{sync}" }}'
    receivers = '["otlp"]'
    if kind == "kafka-receiver":
        receivers = '["kafka"]'
        extra += f'[receivers.kafka]\ntype = "kafka"\nbrokers = ["{kafka}"]\ngroup_id = "bench"\n'
    storage = f'storage_dir = "{data_dir}"' if kind.startswith("persistent") else ""
    telemetry = ""
    if SELF_TELEMETRY:
        telemetry = f'[service.telemetry]\nendpoint = "{SELF_TELEMETRY}"\ninterval = "1s"\n'
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "warn"
{storage}
{telemetry}
[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"
{receiver_tls}
{extra}
[processors.batch]
type = "batch"
max_items = 8192
timeout = "200ms"
[exporters.out]
{exporter}
[pipelines.{signal}]
signals = ["{signal}"]
receivers = {receivers}
processors = {processors}
exporters = ["out"]
"""


def written_bytes(pid):
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pinned(cmd, core):
    return ["taskset", "-c", str(core), *cmd] if os.cpu_count() and os.cpu_count() > 1 else cmd


def run(name, protocol, per_req, shape, kind, rate, seconds, work):
    extra_procs = []
    ch = None
    sl = Sluice(work, name)
    downstream = None
    if kind == "otlp":
        gw = Sluice(work, name + "-gateway")
        gw.start(config(gw, "blackhole", None), binary=SLUICE)
        extra_procs.append(gw)
        downstream = gw.grpc
    if kind == "otlp-balanced":
        downstream = []
        for i in range(3):
            gw = Sluice(work, f"{name}-gateway{i}")
            gw.start(config(gw, "blackhole", None), binary=SLUICE)
            extra_procs.append(gw)
            downstream.append(gw.grpc)
    if kind == "clickhouse":
        from chfront import ClickHouse
        ch = ClickHouse(work / (name + "-ch"))
    feed = None
    if kind in ("kafka", "kafka-receiver"):
        from kafka import Kafka
        kf = Kafka(work / (name + "-kafka"))
        kf.topic("otlp_spans", partitions=4)
        extra_procs.append(kf)
    if kind == "kafka-receiver":
        feed = Sluice(work, name + "-sidecar")
        feed.start(config(feed, "kafka", None, kafka=kf.bootstrap), prefix=pinned([], 1), binary=SLUICE)
        extra_procs.insert(0, feed)
    ca = tls = None
    if kind == "blackhole-tls":
        from listener_certs import CA
        ca = CA(work / (name + "-pki"))
        tls = ca.issue("server")[:2]
    cfg = config(sl, kind, sl.dir / "data", downstream, ch.url if ch else None,
                 kf.bootstrap if kind in ("kafka", "kafka-receiver") else None, tls)
    # Sluice on core 0; taskset execs it, so the pid is Sluice's own.
    sl.start(cfg, prefix=pinned([], 0), binary=SLUICE)
    pid = sl.proc.pid
    target = feed or sl
    endpoint = f"{'https' if ca else 'http'}://127.0.0.1:{target.grpc if protocol == 'grpc' else target.http}"
    before_cpu, before_items = cpu_seconds(pid), sl.metric("sluice_receiver_accepted_items_total")
    before_written = written_bytes(pid)
    signal = "metrics" if kind.startswith("metrics") else "traces"
    cmd = pinned([str(LOADGEN), "--endpoint", endpoint, "--protocol", protocol, "--signal", signal, "--spans-per-request", str(per_req),
                  "--attributes", str(shape["attributes"]), "--attribute-size", str(shape["attribute_size"]),
                  "--connections", "64" if kind == "overload" else "8", "--duration", f"{seconds}s", "--rate", str(rate),
                  *(["--ca-file", str(ca.path)] if ca else [])], 1)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss_trace = []
    while proc.poll() is None:
        rss_trace.append(round(current_rss_mib(pid), 1))
        time.sleep(1)
    stdout, stderr = proc.communicate(timeout=60)
    out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr}")
    lg = json.loads(out.stdout.strip().splitlines()[-1])
    if feed:
        # Until the measured Sluice took everything the sidecar put on the topic.
        produced = feed.metric("sluice_exporter_sent_items_total")
        deadline = time.time() + 120
        while time.time() < deadline and sl.metric("sluice_receiver_accepted_items_total") - before_items < produced:
            time.sleep(0.2)
            produced = feed.metric("sluice_exporter_sent_items_total")
    cpu = cpu_seconds(pid) - before_cpu
    items = sl.metric("sluice_receiver_accepted_items_total") - before_items
    rss = peak_rss_mib(pid)
    written = written_bytes(pid) - before_written
    result = {
        "scenario": name,
        "items_per_s": round(items / lg["seconds"]),
        "items_per_cpu_s": round(items / cpu) if cpu > 0 else None,
        "cpu_share": round(cpu / lg["seconds"], 3),
        "peak_rss_mib": round(rss, 1),
        "p50_ms": round(lg["p50_ms"], 2),
        "p99_ms": round(lg["p99_ms"], 2),
        "bytes_per_span": round(lg["bytes_per_item"]),
        "refused_requests": lg["requests_refused"],
        "failed_requests": lg["requests_failed"],
        "seconds": round(lg["seconds"], 1),
        "rss_mib_each_second": rss_trace,
        "disk_mb_written_per_s": round(written / lg["seconds"] / 1e6, 1),
    }
    sl.stop()
    for p in extra_procs:
        p.stop()
    if ch:
        ch.stop()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--only", default="", help="run the scenarios whose name contains this")
    ap.add_argument("--scenarios", default="", help="comma-separated exact scenario names to run")
    ap.add_argument("--overload-seconds", type=int, default=60)
    ap.add_argument("--self-telemetry", action="store_true",
                    help="every Sluice under test exports its own telemetry (1s interval) to a separate sink Sluice")
    ap.add_argument("--blackhole", action="store_true", help="only the scenarios into a plain blackhole")
    args = ap.parse_args()
    if not os.environ.get("SLUICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "sluice", "-p", "sluice-loadgen"], cwd=ROOT, check=True)
    seconds = 1 if args.quick else args.seconds
    work = pathlib.Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    global SELF_TELEMETRY
    sink = None
    if args.self_telemetry:
        sink = Sluice(work, "telemetry-sink")
        sink.start(config(sink, "blackhole", None), binary=SLUICE)
        SELF_TELEMETRY = f"http://127.0.0.1:{sink.grpc}"
    results = []
    for sc in SCENARIOS:
        if args.only and args.only not in sc[0]:
            continue
        if args.scenarios and sc[0] not in args.scenarios.split(","):
            continue
        if args.blackhole and (sc[4] != "blackhole" or sc[5]):
            continue
        secs = args.overload_seconds if sc[4] == "overload" and not args.quick else seconds
        r = run(*sc, secs, work)
        results.append(r)
        print(json.dumps(r), flush=True)
    if sink:
        sink.stop()
    if not args.quick and not args.only and not args.scenarios and not args.blackhole and not args.self_telemetry:
        (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n| scenario | items/s | items per Sluice CPU-s | Sluice CPU | peak RSS MiB | p50 ms | p99 ms | B/span | refused / failed requests |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scenario']} | {r['items_per_s']:,} | {r['items_per_cpu_s'] or 0:,} | {r['cpu_share']:.0%} | {r['peak_rss_mib']} | {r['p50_ms']} | {r['p99_ms']} | {r['bytes_per_span']} | {r['refused_requests']} / {r['failed_requests']} |")


if __name__ == "__main__":
    main()
