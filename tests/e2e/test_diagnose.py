"""`sluice diagnose memory-leak` (issue 18): heap profiles of a program whose in-use bytes grow at one
call site (built here as pprof protobuf: Go's heap profile sample types, one stack growing, two flat,
over several timestamps), ingested through the pprof receiver into ClickHouse (chDB behind chfront);
the growing site is the top row of the table and of --json, and a flat profile series reports nothing."""

import json
import subprocess
import time

import pytest
import requests
from chfront import ClickHouse
from conftest import BIN, free_port, wait_for
from pprof_wire import profile

MIB = 1 << 20
STRINGS = ["", "alloc_objects", "count", "alloc_space", "bytes", "inuse_objects", "inuse_space",
           "main", "cache.Put", "http.handle", "pool.Get", "config.Load", "/usr/bin/leaky-app"]
S = {s: i for i, s in enumerate(STRINGS)}
FUNCS = ["main", "cache.Put", "http.handle", "pool.Get", "config.Load"]
# Stacks, leaf first: location ids equal function ids.
LEAK = [2, 3, 1]      # main → http.handle → cache.Put: grows
POOL = [4, 3, 1]      # main → http.handle → pool.Get: flat
INIT = [5, 1]         # main → config.Load: flat


def heap_profile(t_ns, inuse):
    """A Go-style heap profile at t_ns; inuse maps stack → in-use bytes."""
    samples = [(stack, [b // 1024, b * 3, b // 1024, b], []) for stack, b in inuse]
    return profile(STRINGS, [(S["alloc_objects"], S["count"]), (S["alloc_space"], S["bytes"]),
                             (S["inuse_objects"], S["count"]), (S["inuse_space"], S["bytes"])],
                   samples=samples, mappings=[(1, S["/usr/bin/leaky-app"], 0)],
                   locations=[(i, 1, i) for i in range(1, 6)],
                   functions=[(i, S[f]) for i, f in enumerate(FUNCS, 1)],
                   time_nanos=t_ns, duration_nanos=10_000_000_000)


def config(sl, port, ch_url):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
shutdown_timeout = "10s"

[receivers.pprof]
type = "pprof"
http = "127.0.0.1:{port}"

[exporters.ch]
type = "clickhouse"
endpoint = "{ch_url}"
database = "otel"
retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "5m" }}

[pipelines.profiles]
signals = ["profiles"]
receivers = ["pprof"]
exporters = ["ch"]
"""


@pytest.fixture
def clickhouse(tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    yield ch
    ch.stop()


def diagnose(ch, service, *extra):
    r = subprocess.run([BIN, "diagnose", "memory-leak", "--clickhouse", ch.url, "--service", service,
                        "--since", "1h", "--baseline", "24h", *extra], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_growing_call_site_is_the_top_row_and_flat_series_report_nothing(clickhouse, sluice):
    port = free_port()
    sluice.start(config(sluice, port, clickhouse.url))
    now = time.time_ns()
    minute = 60 * 1_000_000_000
    sent = 0
    # Baseline (10 h and 9 h ago): the cache holds 0.5 MiB. Window (the last hour): it grows by
    # 1 MiB every 10 minutes while the pool and the config stay flat.
    series = [(now - 600 * minute, MIB // 2), (now - 540 * minute, MIB // 2)]
    series += [(now - (50 - 10 * i) * minute, (i + 1) * MIB) for i in range(5)]
    for t, leak in series:
        for service, inuse in (("leaky-app", [(LEAK, leak), (POOL, 8 * MIB), (INIT, 2 * MIB)]),
                               ("steady-app", [(LEAK, MIB), (POOL, 8 * MIB), (INIT, 2 * MIB)])):
            r = requests.post(f"http://127.0.0.1:{port}/v1/pprof", params={"service": service},
                              data=heap_profile(t, inuse), timeout=10)
            assert r.status_code == 200, r.text
            sent += 3 * 4  # samples × sample types
    wait_for(lambda: clickhouse.count("otel.otel_profiles") == sent, timeout=60, what=f"{sent} profile rows")

    report = json.loads(diagnose(clickhouse, "leaky-app", "--json"))
    assert report["window_profiles"] == 5 and report["baseline_profiles"] == 2, report
    assert len(report["leaks"]) == 1, report
    top = report["leaks"][0]
    assert top["frames"] == ["cache.Put", "http.handle", "main"], top
    # 1 MiB per 10 minutes, exactly linear.
    assert top["slope_bytes_per_hour"] == pytest.approx(6 * MIB)
    assert top["r2"] == pytest.approx(1.0)
    assert top["inuse_bytes_last"] == 5 * MIB and top["inuse_bytes_baseline"] == MIB // 2
    assert top["growth_ratio"] == pytest.approx(10.0)

    table = diagnose(clickhouse, "leaky-app").splitlines()
    assert table[0].startswith("service leaky-app: 5 heap profile(s) in the window, 2 in the baseline"), table
    header, first = table[1], table[2]
    assert "growth/hour" in header and "top frames" in header
    assert first.split()[0] == "1" and "6.0 MiB" in first and "10.0x" in first and first.endswith("cache.Put < http.handle < main"), first
    assert len(table) == 3, table

    flat = json.loads(diagnose(clickhouse, "steady-app", "--json"))
    assert flat["window_profiles"] == 5 and flat["leaks"] == [], flat
    assert "no stack grows steadily" in diagnose(clickhouse, "steady-app")
