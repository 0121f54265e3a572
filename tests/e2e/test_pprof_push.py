"""Pyroscope's push API on the pprof receiver (issue 14): the real Pyroscope Python SDK
(`pyroscope-io`, which pushes `push.v1.PusherService/Push` with the connect protocol) profiling a
CPU-burning function, connect JSON and multi-series requests, connect errors, unknown paths, and
hostile uploads that must not hang, panic or balloon the process."""

import base64
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from chfront import ClickHouse
from conftest import FIXTURES, free_port, wait_for
from pprof_wire import parse, profile, push_request

PUSH = "/push.v1.PusherService/Push"
SAMPLE_CPU = (FIXTURES / "pprof" / "sample.cpu").read_bytes()  # gzipped; 76 samples, 2 sample types
SAMPLE_TOTALS = [176, 1_760_000_000]


def config(sl, port, ch_url=None):
    exporters = ["out"] + (["ch"] if ch_url else [])
    ch = f'''
[exporters.ch]
type = "clickhouse"
endpoint = "{ch_url}"
database = "otel"
retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "5m" }}
''' if ch_url else ""
    return sl.default_config() + ch + f'''
[receivers.pprof]
type = "pprof"
http = "127.0.0.1:{port}"

[pipelines.pprof]
signals = ["profiles"]
receivers = ["pprof"]
processors = ["batch"]
exporters = {json.dumps(exporters)}
'''


@pytest.fixture
def clickhouse(tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    yield ch
    ch.stop()


def start(sl, ch=None):
    sl.pprof_port = free_port()
    sl.start(config(sl, sl.pprof_port, ch.url if ch else None))
    return sl


def url(sl, path):
    return f"http://127.0.0.1:{sl.pprof_port}{path}"


def str_attrs(kvs):
    return {a["key"]: a["value"].get("stringValue") for a in kvs or []}


def written(sl, service):
    """[(profile, dictionary, resource attributes)] the file exporter wrote for `service`."""
    out = []
    for req in sl.output("profiles"):
        for rp in req["resourceProfiles"]:
            res = str_attrs(rp["resource"]["attributes"])
            if res.get("service.name") == service:
                out += [(p, req["dictionary"], res) for sp in rp["scopeProfiles"] for p in sp["profiles"]]
    return out


def frames(p, d):
    """Every function name on any stack of profile `p`."""
    s, st, locs, funcs = d["stringTable"], d["stackTable"], d["locationTable"], d["functionTable"]
    names = set()
    for smp in p.get("samples", []):
        for li in st[smp.get("stackIndex", 0)].get("locationIndices", []):
            for line in locs[li].get("lines", []):
                names.add(s[funcs[line.get("functionIndex", 0)].get("nameStrindex", 0)])
    return names


def profile_attrs(p, d):
    s, at = d["stringTable"], d["attributeTable"]
    return {s[at[i].get("keyStrindex", 0)]: at[i]["value"].get("stringValue") for i in p.get("attributeIndices", [])}


SDK_APP = textwrap.dedent('''
    import sys, time
    import pyroscope

    def burn_cpu_for_sluice(seconds):
        end = time.time() + seconds
        x = 0
        while time.time() < end:
            for i in range(10000):
                x += i * i
        return x

    ok = pyroscope.configure(application_name="push-sdk-app", server_address=sys.argv[1],
                             tags={"env": "e2e", "region": "eu-west"}, upload_interval=1, sample_rate=100)
    burn_cpu_for_sluice(4)
    pyroscope.shutdown()
''')


def test_pyroscope_python_sdk_pushes_profiles_that_land_in_files_and_clickhouse(sluice, clickhouse, tmp_path):
    sl = start(sluice, clickhouse)
    app = tmp_path / "app.py"
    app.write_text(SDK_APP)
    run = subprocess.run([sys.executable, str(app), f"http://127.0.0.1:{sl.pprof_port}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = wait_for(lambda: (w := written(sl, "push-sdk-app")) and any("burn_cpu_for_sluice" in frames(p, d) for p, d, _ in w) and w,
                   timeout=30, what="profiles of push-sdk-app with the burner's frame")
    p, d, res = next((p, d, res) for p, d, res in got if "burn_cpu_for_sluice" in frames(p, d))
    assert res["env"] == "e2e" and res["region"] == "eu-west", res
    # Only the push API carries the profile type as `__name__`.
    assert profile_attrs(p, d).get("pyroscope.profile.name"), profile_attrs(p, d)
    assert sl.metric("sluice_receiver_refused_requests_total", receiver="pprof") == 0
    wait_for(lambda: clickhouse.rows("SELECT count() AS n FROM otel.otel_profiles WHERE ServiceName = 'push-sdk-app' "
                                     "AND has(FunctionNames, 'burn_cpu_for_sluice')")[0]["n"] > 0,
             timeout=30, what="ClickHouse rows with the burner's frame")
    row = clickhouse.rows("SELECT ResourceAttributes['env'] AS env, ResourceAttributes['region'] AS region, "
                          "ProfileAttributes['pyroscope.profile.name'] AS name FROM otel.otel_profiles "
                          "WHERE ServiceName = 'push-sdk-app' AND has(FunctionNames, 'burn_cpu_for_sluice') LIMIT 1")[0]
    assert row["env"] == "e2e" and row["region"] == "eu-west" and row["name"], row


def b64(b):
    return base64.b64encode(b).decode()


def test_json_and_protobuf_push_with_several_series(sluice, clickhouse):
    sl = start(sluice, clickhouse)
    raw = gzip.decompress(SAMPLE_CPU)
    body = {"series": [
        {"labels": [{"name": "__name__", "value": "process_cpu"}, {"name": "service_name", "value": "json-a"},
                    {"name": "env", "value": "prod"}],
         "samples": [{"rawProfile": b64(SAMPLE_CPU), "ID": "a1"}, {"rawProfile": b64(raw), "ID": "a2"}]},
        {"labels": [{"name": "service_name", "value": "json-b"}, {"name": "team", "value": "blue"}],
         "samples": [{"rawProfile": b64(raw)}]},
    ]}
    r = requests.post(url(sl, PUSH), json=body, headers={"Connect-Protocol-Version": "1"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}
    pb = push_request([({"service_name": "proto-a", "__name__": "process_cpu", "k": "v"}, [SAMPLE_CPU]),
                       ({"service_name": "proto-b"}, [raw, SAMPLE_CPU])])
    r = requests.post(url(sl, PUSH), data=gzip.compress(pb), timeout=30,
                      headers={"Content-Type": "application/proto", "Content-Encoding": "gzip", "Connect-Protocol-Version": "1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/proto" and r.content == b""

    src = parse(SAMPLE_CPU)
    want = {"json-a": (2, {"env": "prod"}), "json-b": (1, {"team": "blue"}), "proto-a": (1, {"k": "v"}), "proto-b": (2, {})}
    for service, (n, tags) in want.items():
        got = wait_for(lambda: (w := written(sl, service)) and len(w) == 2 * n and w, what=f"{2 * n} profiles of {service}")
        for i, (p, d, res) in enumerate(got):
            assert {k: res[k] for k in tags} == tags
            assert "__name__" not in res and "service_name" not in res
            assert len(p["samples"]) == len(src["samples"]) == 76
            assert sum(int(s["values"][0]) for s in p["samples"]) == SAMPLE_TOTALS[i % 2]
            assert frames(p, d) >= {name for fs in src["locations"].values() for name in fs}
            if service in ("json-a", "proto-a"):
                assert profile_attrs(p, d)["pyroscope.profile.name"] == "process_cpu"
    assert sl.metric("sluice_receiver_accepted_items_total", receiver="pprof") == 6 * 2 * 76
    wait_for(lambda: clickhouse.count("otel.otel_profiles") == 6 * 2 * 76, what="all sample rows in ClickHouse")
    rows = clickhouse.rows("SELECT ServiceName, SampleType, count() AS n, sum(Values[1]) AS total, any(ResourceAttributes['env']) AS env "
                           "FROM otel.otel_profiles GROUP BY ServiceName, SampleType ORDER BY ServiceName, SampleType")
    types = [t for t, _ in src["sample_types"]]
    assert rows == [{"ServiceName": s, "SampleType": t, "n": 76 * n, "total": SAMPLE_TOTALS[types.index(t)] * n,
                     "env": "prod" if s == "json-a" else ""}
                    for s, (n, _) in sorted(want.items()) for t in sorted(types)]


def test_connect_errors_are_json_with_codes_and_counted(sluice):
    sl = start(sluice)
    cases = [
        ({"Content-Type": "application/json"}, b'{"series": [{"samples": [{"rawProfile": "aGVsbG8="}]}]}', 400, "invalid_argument", "malformed"),
        ({"Content-Type": "application/json"}, b'{"series": 7}', 400, "invalid_argument", "malformed"),
        ({"Content-Type": "application/proto"}, b"\xff\xff\xff", 400, "invalid_argument", "malformed"),
        ({"Content-Type": "application/json", "Connect-Protocol-Version": "2"}, b"{}", 400, "invalid_argument", "malformed"),
        ({"Content-Type": "text/plain"}, b"{}", 415, "unimplemented", "unsupported"),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, b"{}", 415, "unimplemented", "unsupported"),
    ]
    for headers, body, status, code, reason in cases:
        before = sl.metric("sluice_receiver_refused_requests_total", receiver="pprof", reason=reason)
        r = requests.post(url(sl, PUSH), data=body, headers=headers, timeout=10)
        assert r.status_code == status, (headers, body, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["code"] == code and r.json()["message"], r.text
        assert sl.metric("sluice_receiver_refused_requests_total", receiver="pprof", reason=reason) == before + 1
    # The bad sample is named, and nothing of that request went on.
    r = requests.post(url(sl, PUSH), json={"series": [{"samples": [{"rawProfile": b64(SAMPLE_CPU)}, {"rawProfile": b64(b"junk")}]}]}, timeout=10)
    assert r.status_code == 400 and "series 0 sample 1" in r.json()["message"]
    r = requests.post(url(sl, PUSH), json={"series": []}, timeout=10)
    assert r.status_code == 200 and r.json() == {}
    time.sleep(0.5)
    assert sl.output("profiles") == []
    assert sl.metric("sluice_receiver_accepted_items_total", receiver="pprof") == 0


def test_unknown_paths_and_methods_get_a_helpful_answer_and_are_counted(sluice):
    sl = start(sluice)
    r = requests.post(url(sl, "/push.v1.PusherService/Pushh"), data=b"x", timeout=5)
    assert r.status_code == 404 and PUSH in r.text and "/ingest" in r.text, r.text
    r = requests.get(url(sl, "/ingest"), timeout=5)
    assert r.status_code == 405 and "/ingest" in r.text
    r = requests.post(sl.otlp_http("/v1/trace"), data=b"x", timeout=5)
    assert r.status_code == 404 and "/v1/traces" in r.text, r.text
    for _ in range(3):
        requests.post(url(sl, "/api/v1/push"), data=b"x", timeout=5)
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{sl.grpc}") as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Exprt")
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert sl.metric("sluice_receiver_refused_requests_total", receiver="pprof", reason="not_found") == 5
    assert sl.metric("sluice_receiver_refused_requests_total", receiver="otlp", reason="not_found") == 2
    assert "TraceService/Exprt" in sl.log_text()
    # Logged once per path, not once per request.
    assert sl.log_text().count("/api/v1/push") == 1, sl.log_text()


def vm_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def hostile_profiles():
    st = ["", "cpu", "nanoseconds", "main"]
    ok_sample = ([1], [1], [])
    base = dict(sample_types=[(1, 2)], samples=[ok_sample], locations=[(1, 0, 1)], functions=[(1, 3)])
    big = "x" * 30_000
    n_labels = 3000
    return {
        "drop_frames out of range": (profile(st, **base, drop_frames=99), {400}),
        "label value out of range": (profile(st, [(1, 2)], samples=[([1], [1], [(3, 1000)])], locations=[(1, 0, 1)], functions=[(1, 3)]), {400}),
        "comment out of range": (profile(st, **base, comment=[2, 77_777]), {400}),
        "location id unknown": (profile(st, [(1, 2)], samples=[([42], [1], [])]), {400}),
        "30k comments on one 30 KB string": (profile(st + [big], **base, comment=[4] * 30_000), {400}),
        "labels x sample types": (profile(st, [(1, 2)] * n_labels, samples=[([1], [1] * n_labels, [(3, 3)] * n_labels)] * 2,
                                          locations=[(1, 0, 1)], functions=[(1, 3)]), {400}),
        "3k distinct labels on one 30 KB value": (profile(st + [big] + [f"k{i}" for i in range(3000)], [(1, 2)],
                                                          samples=[([1], [1], [(5 + i, 4) for i in range(3000)])],
                                                          locations=[(1, 0, 1)], functions=[(1, 3)]), {400}),
        "20,000 mappings": (profile(st + [f"b{i}" for i in range(40_000)], [(1, 2)], samples=[([1], [1], [])],
                                    mappings=[(i + 1, 4 + 2 * i, 5 + 2 * i) for i in range(20_000)],
                                    locations=[(1, 1, 1)], functions=[(1, 3)]), {200}),
    }


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux `clear_refs` 5); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def quiet(sl):
    return sl.metric("sluice_pipeline_queue_items") == 0 and sl.metric("sluice_exporter_queue_items") == 0


def test_hostile_uploads_are_answered_quickly_without_panics_or_memory(sluice):
    sl = start(sluice)
    pid = sl.proc.pid
    # Warm up allocator arenas and code paths with one ordinary upload.
    assert requests.post(url(sl, "/ingest"), params={"name": "warm"}, data=SAMPLE_CPU, timeout=30).status_code == 200
    for name, (body, statuses) in hostile_profiles().items():
        if "mappings" not in name:
            assert len(body) <= 80_000, (name, len(body))
        for path, send in [
            ("/ingest", lambda: requests.post(url(sl, "/ingest"), params={"name": "hostile"}, data=body, timeout=1.0)),
            (PUSH, lambda: requests.post(url(sl, PUSH), data=push_request([({"service_name": "hostile"}, [body])]),
                                         headers={"Content-Type": "application/proto"}, timeout=1.0)),
        ]:
            wait_for(lambda: quiet(sl), what="pipelines empty")
            exact = reset_peak(pid)
            rss_before = vm_kib(pid, "VmRSS") if exact else vm_kib(pid, "VmHWM")
            r = send()  # the 1 s timeout is the budget: a request still running past it fails the test
            assert r.status_code in statuses, (name, path, r.status_code, r.text)
            wait_for(lambda: quiet(sl), what="pipelines empty")  # its export counts too
            jump = (vm_kib(pid, "VmHWM") - rss_before) / 1024
            assert jump < 64, f"{name} via {path}: peak RSS {jump:.0f} MiB above the RSS before it"
    assert requests.get(sl.url("/healthz"), timeout=5).status_code == 200
    assert "panicked" not in sl.log_text()
    assert sl.metric("sluice_receiver_refused_requests_total", receiver="pprof", reason="malformed") == 2 * 7
    assert sl.metric("sluice_receiver_accepted_items_total", receiver="pprof") == 2 * 1 + 2 * 76
