"""Acceptance 3: the OTLP/JSON examples of opentelemetry-proto are accepted over HTTP/JSON and come
out equal in the file output (ids normalised to lowercase, 64-bit ints to numbers, defaults dropped)."""

import json

import requests
from conftest import FIXTURES, wait_for

ENUMS = {"kind", "code", "severityNumber", "aggregationTemporality"}
INT_KEYS = {"intValue", "asInt", "count", "timeUnixNano", "observedTimeUnixNano", "startTimeUnixNano",
            "endTimeUnixNano", "zeroCount"}
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def canon(v, key=None):
    """A canonical form: what the OTLP/JSON spec says is the same value compares equal."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            c = canon(x, k)
            if c in (None, "", 0, [], {}, False) and k not in ("stringValue", "intValue", "doubleValue", "boolValue"):
                continue  # proto3 defaults are the same as absent
            out[k] = c
        return out
    if isinstance(v, list):
        if key in ("bucketCounts",):
            return [int(x) for x in v]
        return [canon(x) for x in v]
    if key in ID_KEYS and isinstance(v, str):
        return v.lower()
    if key in INT_KEYS and isinstance(v, str):
        return int(v)
    return v


def post(sl, path, body):
    r = requests.post(sl.otlp_http(path), data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_json_examples_round_trip(sluice):
    sluice.start()
    cases = [("trace.json", "/v1/traces", "traces", "resourceSpans"),
             ("metrics.json", "/v1/metrics", "metrics", "resourceMetrics"),
             ("logs.json", "/v1/logs", "logs", "resourceLogs"),
             ("events.json", "/v1/logs", "logs", "resourceLogs")]
    expected = {"traces": [], "metrics": [], "logs": []}
    for fname, path, signal, top in cases:
        raw = (FIXTURES / "otlp" / fname).read_text()
        assert any(c.isupper() for c in json.loads(raw)[top][0].get("scopeSpans", [{}])[0].get("spans", [{}])[0].get("traceId", "A")), "fixture ids are uppercase"
        post(sluice, path, raw)
        expected[signal] += json.loads(raw)[top]
    for signal, top in (("traces", "resourceSpans"), ("metrics", "resourceMetrics"), ("logs", "resourceLogs")):
        want = canon(expected[signal])
        def got():
            rs = [r for req in sluice.output(signal) for r in req[top]]
            return rs if len(rs) >= len(expected[signal]) else None
        out = wait_for(got, what=f"{signal} output")
        assert canon(out) == want, f"{signal} differs:\n{json.dumps(canon(out), indent=1)[:3000]}\n---\n{json.dumps(want, indent=1)[:3000]}"


def test_json_profiles_may_omit_defaults(sluice):
    """OTLP/JSON profiles as a proto3 JSON encoder writes them: defaults omitted, 64-bit ints as strings."""
    sluice.start()
    body = {
        "resourceProfiles": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-prof"}}]},
            "scopeProfiles": [{"profiles": [{
                "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
                "timeUnixNano": "1700000000000000000",
                "samples": [{"stackIndex": 1, "values": ["5"]}, {"stackIndex": 1, "values": ["7"]}, {"values": ["0"]}],
            }]}],
        }],
        "dictionary": {
            "stringTable": ["", "cpu", "nanoseconds", "main"],
            "functionTable": [{}, {"nameStrindex": 3}],
            "locationTable": [{}, {"address": "4096", "lines": [{"functionIndex": 1, "line": "7"}]}],
            "stackTable": [{}, {"locationIndices": [1]}],
        },
    }
    r = requests.post(sluice.otlp_http("/v1development/profiles"), json=body, timeout=10)
    assert r.status_code == 200, r.text
    out = wait_for(lambda: sluice.output("profiles"), what="profiles output")
    samples = out[0]["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["samples"]
    assert [int(s["values"][0]) for s in samples] == [5, 7, 0]
    assert sluice.metric("sluice_receiver_accepted_items_total", signal="profiles") == 3
