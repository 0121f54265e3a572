"""Per-signal retention (issue 17) against a real ClickHouse engine (chDB behind chfront): each
signal's tables carry their configured TTL, read back from `system.tables`; a changed TTL is applied
on the next start with ALTER TABLE … MODIFY TTL (rows kept, tables not recreated), and a restart with
the same TTL changes nothing."""

import random
import re
import time

import pytest
import requests
from chfront import ClickHouse
from conftest import wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from test_clickhouse import ch_config

DAY = 86400
TABLES = {
    "otel_traces": "traces", "otel_traces_trace_id_ts": "traces", "otel_logs": "logs",
    "otel_metrics_gauge": "metrics", "otel_metrics_sum": "metrics", "otel_metrics_histogram": "metrics",
    "otel_metrics_exponential_histogram": "metrics", "otel_metrics_summary": "metrics", "otel_profiles": "profiles",
}


@pytest.fixture
def clickhouse(tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    yield ch
    ch.stop()


def one_span(sl):
    now = time.time_ns()
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=random.randbytes(16), span_id=random.randbytes(8), name="s", start_time_unix_nano=now, end_time_unix_nano=now + 5)])])])
    r = requests.post(sl.otlp_http("/v1/traces"), data=req.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200


def ttls(ch):
    """{table: TTL seconds or None} from system.tables, for create_table_query and engine_full alike."""
    out = {}
    for r in ch.rows("SELECT name, create_table_query, engine_full FROM system.tables WHERE database = 'otel'"):
        if r["name"] not in TABLES:
            continue
        seen = [re.search(r"TTL .*?toIntervalSecond\((\d+)\)", r[k]) for k in ("create_table_query", "engine_full")]
        vals = {int(m.group(1)) if m else None for m in seen}
        assert len(vals) == 1, r
        out[r["name"]] = vals.pop()
    return out


def run_once(make_sluice, name, ch, ttl, expected_rows):
    sl = make_sluice(name)
    sl.start(ch_config(sl, ch.url, extra=f"ttl = {ttl}"))
    one_span(sl)
    wait_for(lambda: ch.count("otel.otel_traces") == expected_rows, what=f"{expected_rows} spans")
    assert sl.stop() == 0
    return sl.log_text()


def test_per_signal_ttl_applied_at_create_and_altered_on_change(make_sluice, clickhouse):
    first = '{ traces = "7d", logs = "30d", metrics = "24h", profiles = "3d" }'
    log = run_once(make_sluice, "first", clickhouse, first, 1)
    want = {"traces": 7 * DAY, "logs": 30 * DAY, "metrics": DAY, "profiles": 3 * DAY}
    assert ttls(clickhouse) == {t: want[s] for t, s in TABLES.items()}
    assert "retention changed" not in log, "freshly created tables need no ALTER"

    # Traces to 14 days, profiles kept forever: only those tables are altered, rows stay.
    second = '{ traces = "14d", logs = "30d", metrics = "24h" }'
    log = run_once(make_sluice, "second", clickhouse, second, 2)
    want = {"traces": 14 * DAY, "logs": 30 * DAY, "metrics": DAY, "profiles": None}
    assert ttls(clickhouse) == {t: want[s] for t, s in TABLES.items()}
    changed = sorted(re.findall(r"ClickHouse retention changed: (ALTER TABLE otel\.(\w+) (?:MODIFY|REMOVE) TTL)", log))
    assert [t for _, t in changed] == ["otel_profiles", "otel_traces", "otel_traces_trace_id_ts"], log
    assert "REMOVE TTL" in log and "toIntervalSecond(1209600)" in log

    # Same config again: nothing to do, nothing logged; a single duration still covers every table.
    log = run_once(make_sluice, "third", clickhouse, second, 3)
    assert "retention changed" not in log, log
    log = run_once(make_sluice, "fourth", clickhouse, '"48h"', 4)
    assert ttls(clickhouse) == {t: 2 * DAY for t in TABLES}
    assert len(re.findall("retention changed", log)) == len(TABLES), log
