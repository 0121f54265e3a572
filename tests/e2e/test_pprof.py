"""pprof ingestion (issue 5): real profiles from real profilers through the Pyroscope-compatible
`/ingest` and the plain `/v1/pprof` endpoints, converted to OTLP profiles without losing a sample."""

import csv
import gzip

import pytest
import requests
from conftest import FIXTURES, wait_for
from pprof_wire import parse, top_flat

PPROF = FIXTURES / "pprof"
EXPECTED = {row["file"]: row for row in csv.DictReader(open(PPROF / "EXPECTED.tsv"), delimiter="\t")}
PROTO_FILES = [f for f, row in EXPECTED.items() if row["format"] == "proto"]
LEGACY_FILES = [f for f, row in EXPECTED.items() if row["format"] != "proto"]


def pprof_config(sl, port):
    return sl.default_config() + f'''
[receivers.pprof]
type = "pprof"
http = "127.0.0.1:{port}"

[pipelines.pprof]
signals = ["profiles"]
receivers = ["pprof"]
processors = ["batch"]
exporters = ["out"]
'''


@pytest.fixture
def pprof_sluice(sluice):
    from conftest import free_port
    sluice.pprof_port = free_port()
    sluice.start(pprof_config(sluice, sluice.pprof_port))
    return sluice


def url(sl, path):
    return f"http://127.0.0.1:{sl.pprof_port}{path}"


def profiles_for(sl, service):
    """The OTLP profiles written for `service`, with their dictionary."""
    out = []
    for req in sl.output("profiles"):
        for rp in req["resourceProfiles"]:
            svc = next(a["value"]["stringValue"] for a in rp["resource"]["attributes"] if a["key"] == "service.name")
            if svc == service:
                for sp in rp["scopeProfiles"]:
                    out += [(p, req["dictionary"], rp) for p in sp["profiles"]]
    return out


def as_int(v):
    return int(v) if isinstance(v, (int, str)) else v


@pytest.mark.parametrize("fname", PROTO_FILES)
def test_every_real_profile_keeps_samples_and_totals(pprof_sluice, fname):
    sl = pprof_sluice
    exp = EXPECTED[fname]
    data = (PPROF / fname).read_bytes()
    service = fname.replace(".", "-")
    r = requests.post(url(sl, "/ingest"), params={"name": f"{service}.cpu{{env=test}}", "format": "pprof", "from": "1700000000", "until": "1700000010"},
                      data=data, timeout=30)
    assert r.status_code == 200, r.text
    types = exp["sample_types"].split(",")
    profiles = wait_for(lambda: (p := profiles_for(sl, service)) and len(p) == len(types) and p, what=f"{len(types)} profiles")
    totals = [int(t) for t in exp["totals"].split(",")]
    for (p, d, rp), want_type, want_total in zip(profiles, types, totals):
        strings = d["stringTable"]
        st = p["sampleType"]
        assert f'{strings[st.get("typeStrindex", 0)]}/{strings[st.get("unitStrindex", 0)]}' == want_type
        assert len(p["samples"]) == int(exp["samples"])
        assert sum(as_int(s["values"][0]) for s in p["samples"]) == want_total
        assert as_int(p.get("period", 0)) == int(exp["period"])
        pt = p.get("periodType") or {}
        assert f'{strings[pt.get("typeStrindex", 0)]}/{strings[pt.get("unitStrindex", 0)]}' == exp["period_type"]
    assert {a["key"]: a["value"].get("stringValue") for a in profiles[0][2]["resource"]["attributes"]}["env"] == "test"
    assert sl.metric("sluice_receiver_accepted_items_total", signal="profiles") == int(exp["samples"]) * len(types)


def test_stacks_survive_and_top_function_matches_pprof(pprof_sluice):
    sl = pprof_sluice
    data = (PPROF / "sample.cpu").read_bytes()
    src = parse(data)
    r = requests.post(url(sl, "/ingest"), params={"name": "stacks"}, data=data, timeout=30)
    assert r.status_code == 200, r.text
    profiles = wait_for(lambda: (p := profiles_for(sl, "stacks")) and len(p) == 2 and p, what="profiles")
    cpu, d, _ = profiles[1]
    strings, stacks, locs, funcs = d["stringTable"], d["stackTable"], d["locationTable"], d["functionTable"]

    def frames(stack_index):
        out = []
        for li in stacks[stack_index].get("locationIndices", []):
            lines = locs[li].get("lines", [])
            out.append(strings[funcs[lines[0].get("functionIndex", 0)].get("nameStrindex", 0)] if lines else "")
        return out

    # Distinct stacks: same as in the input.
    assert len({s.get("stackIndex", 0) for s in cpu["samples"]}) == len({tuple(s["locations"]) for s in src["samples"]})
    # Every sample's stack, frame by frame, in the input's order.
    for s_in, s_out in zip(src["samples"], cpu["samples"]):
        assert frames(s_out.get("stackIndex", 0)) == [src["locations"][l][0] if src["locations"][l] else "" for l in s_in["locations"]]
    # `pprof -top`'s first line, computed from the input, and from what Sluice wrote.
    flat = {}
    for s in cpu["samples"]:
        f = frames(s.get("stackIndex", 0))
        flat[f[0]] = flat.get(f[0], 0) + as_int(s["values"][0])
    assert max(flat.items(), key=lambda kv: (kv[1], kv[0]))[0] == top_flat(src)


@pytest.mark.parametrize("fname", LEGACY_FILES)
def test_legacy_formats_are_rejected_clearly(pprof_sluice, fname):
    r = requests.post(url(pprof_sluice, "/ingest"), params={"name": "legacy"}, data=(PPROF / fname).read_bytes(), timeout=30)
    assert r.status_code == 400
    assert "not a pprof protobuf profile" in r.text and "legacy" in r.text
    assert requests.get(pprof_sluice.url("/healthz"), timeout=5).status_code == 200
    assert pprof_sluice.metric("sluice_receiver_refused_requests_total", reason="malformed") == 1


def test_both_endpoint_styles_with_and_without_gzip(pprof_sluice):
    sl = pprof_sluice
    raw = gzip.decompress((PPROF / "sample.cpu").read_bytes())
    gz = gzip.compress(raw)
    cases = {
        "ingest-raw": lambda: requests.post(url(sl, "/ingest"), params={"name": "ingest-raw.cpu"}, data=raw, timeout=30),
        "ingest-gz": lambda: requests.post(url(sl, "/ingest"), params={"name": "ingest-gz.cpu", "format": "pprof"}, data=gz, timeout=30),
        "multipart-raw": lambda: requests.post(url(sl, "/ingest"), params={"name": "multipart-raw.cpu"}, files={"profile": ("profile.pprof", raw)}, timeout=30),
        "multipart-gz": lambda: requests.post(url(sl, "/ingest"), params={"name": "multipart-gz"}, files={"profile": ("profile.pb.gz", gz), "sample_type_config": ("c.json", b"{}")}, timeout=30),
        "v1-raw": lambda: requests.post(url(sl, "/v1/pprof"), params={"service": "v1-raw", "region": "eu"}, data=raw, timeout=30),
        "v1-gz": lambda: requests.post(url(sl, "/v1/pprof"), params={"service": "v1-gz"}, data=gz, timeout=30),
    }
    for name, send in cases.items():
        r = send()
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text}"
    for name in cases:
        profiles = wait_for(lambda: (p := profiles_for(sl, name)) and len(p) == 2 and p, what=f"{name} profiles")
        assert [len(p["samples"]) for p, _, _ in profiles] == [76, 76]
    # Multipart without a profile field, and a format Sluice does not read, are clear 400s.
    r = requests.post(url(sl, "/ingest"), params={"name": "x"}, files={"other": ("x", b"123")}, timeout=30)
    assert r.status_code == 400 and "profile" in r.text
    r = requests.post(url(sl, "/ingest"), params={"name": "x", "format": "folded"}, data=b"a;b 1", timeout=30)
    assert r.status_code == 400 and "format" in r.text
