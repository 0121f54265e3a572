"""Acceptance 5: gzip and zstd bodies work; oversized bodies get 413 / RESOURCE_EXHAUSTED; malformed
input of many kinds gets a 4xx / INVALID_ARGUMENT, and the process keeps serving."""

import gzip
import json

import grpc
import pytest
import requests
import zstandard
from conftest import FIXTURES, spans_of, wait_for
from hostile import grpc_raw
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

TRACE_JSON = (FIXTURES / "otlp" / "trace.json").read_text()
TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def spans_request(n, pad=0, tid=b"\x01" * 16):
    req = ExportTraceServiceRequest()
    ss = ScopeSpans()
    for i in range(n):
        ss.spans.append(Span(trace_id=tid, span_id=i.to_bytes(8, "big") if i else b"\x09" * 8, name="s" + "p" * pad,
                             start_time_unix_nano=1, end_time_unix_nano=2))
    req.resource_spans.append(ResourceSpans(scope_spans=[ss]))
    return req.SerializeToString()


def post(sl, body, ctype="application/x-protobuf", encoding=None, path="/v1/traces"):
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    return requests.post(sl.otlp_http(path), data=body, headers=headers, timeout=10)


def grpc_call(sl, body: bytes, compression=None):
    with grpc.insecure_channel(f"127.0.0.1:{sl.grpc}") as ch:
        call = ch.unary_unary(TRACES_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return call(body, timeout=10, compression=compression)


@pytest.fixture
def small_sluice(sluice):
    return sluice.start(sluice.default_config(receiver_extra='max_request_size = "64KiB"'))


def test_gzip_and_zstd_bodies(small_sluice):
    sl = small_sluice
    assert post(sl, gzip.compress(spans_request(3)), encoding="gzip").status_code == 200
    assert post(sl, zstandard.ZstdCompressor().compress(spans_request(4)), encoding="zstd").status_code == 200
    assert post(sl, gzip.compress(TRACE_JSON.encode()), ctype="application/json", encoding="gzip").status_code == 200
    grpc_call(sl, spans_request(5), compression=grpc.Compression.Gzip)
    wait_for(lambda: len(spans_of(sl.output("traces"))) == 3 + 4 + 1 + 5, what="13 spans")


def test_oversized_bodies(small_sluice):
    sl = small_sluice
    big = spans_request(200, pad=500)
    assert len(big) > 64 * 1024
    r = post(sl, big)
    assert r.status_code == 413, r.text
    # A small gzip body that inflates past the limit is also too large (no zip bombs).
    r = post(sl, gzip.compress(big), encoding="gzip")
    assert len(gzip.compress(big)) < 64 * 1024
    assert r.status_code == 413, r.text
    with pytest.raises(grpc.RpcError) as e:
        grpc_call(sl, big)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    # All three refusals are counted, the gRPC one too (tonic refuses it before any handler runs).
    assert sl.metric("sluice_receiver_refused_requests_total", reason="too_large") == 3
    assert post(sl, spans_request(1)).status_code == 200


def bad_hex():
    j = json.loads(TRACE_JSON)
    j["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "ZZ8EFFF798038103D269B633813FC60C"
    return json.dumps(j)


def odd_hex():
    j = json.loads(TRACE_JSON)
    j["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "EEE19B7EC3C1B17"
    return json.dumps(j)


def bad_enum():
    j = json.loads(TRACE_JSON)
    j["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SPAN_KIND_SIDEWAYS"
    return json.dumps(j)


def bad_int():
    j = json.loads(TRACE_JSON)
    j["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "soon"
    return json.dumps(j)


GOOD = spans_request(2)
MALFORMED = {
    "truncated protobuf": (GOOD[:-7], "application/x-protobuf", None),
    "garbage protobuf": (b"\xff\xff\xff\xff\x0f\x0a\x0b", "application/x-protobuf", None),
    "wrong content type": (GOOD, "text/plain", None),
    "bad json syntax": (TRACE_JSON[:-20], "application/json", None),
    "json not an object": ("[1, 2, 3]", "application/json", None),
    "json wrong field type": ('{"resourceSpans": "nope"}', "application/json", None),
    "bad hex id": (bad_hex(), "application/json", None),
    "odd-length hex id": (odd_hex(), "application/json", None),
    "unknown enum name": (bad_enum(), "application/json", None),
    "non-numeric 64-bit int": (bad_int(), "application/json", None),
    "bad gzip": (b"\x1f\x8b\x08\x00garbage-not-deflate", "application/x-protobuf", "gzip"),
    "bad zstd": (b"\x28\xb5\x2f\xfdgarbage", "application/x-protobuf", "zstd"),
    "unknown content encoding": (GOOD, "application/x-protobuf", "br"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_http_gets_4xx_and_server_keeps_serving(small_sluice, name):
    body, ctype, enc = MALFORMED[name]
    r = post(small_sluice, body, ctype=ctype, encoding=enc)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text}"
    assert r.status_code != 404
    assert small_sluice.metric("sluice_receiver_refused_requests_total", signal="traces") == 1
    assert requests.get(small_sluice.url("/healthz"), timeout=5).status_code == 200
    assert post(small_sluice, GOOD).status_code == 200
    wait_for(lambda: len(spans_of(small_sluice.output("traces"))) == 2, what="the good request's spans")


@pytest.mark.parametrize("body", [GOOD[:-7], b"\xff\xff\xff\xff\x0f"], ids=["truncated", "garbage"])
def test_malformed_grpc_gets_invalid_argument(small_sluice, body):
    with pytest.raises(grpc.RpcError) as e:
        grpc_call(small_sluice, body)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    grpc_call(small_sluice, GOOD)
    assert small_sluice.metric("sluice_receiver_refused_requests_total", reason="malformed", signal="traces") == 1


def test_grpc_refusals_before_and_in_the_handler_are_mapped_and_counted(small_sluice):
    """tonic refuses a message it cannot decompress before Sluice's handler runs (INTERNAL, mapped to
    INVALID_ARGUMENT); the handler refuses an undecodable one itself. Both are counted once, and the
    marker that tells them apart never reaches the client."""
    bad_gzip = grpc_raw(small_sluice.grpc, TRACES_METHOD, b"\x1f\x8b\x08\x00garbage", encoding="gzip", compressed=True)
    assert bad_gzip.get("grpc-status") == "3", bad_gzip
    undecodable = grpc_raw(small_sluice.grpc, TRACES_METHOD, b"\xff\xff\xff\xff\x0f")
    assert undecodable.get("grpc-status") == "3", undecodable
    for resp in (bad_gzip, undecodable):
        assert not any(k.startswith("x-sluice") for k in resp), resp
    assert small_sluice.metric("sluice_receiver_refused_requests_total", reason="malformed", signal="traces") == 2
    # A method no service has: UNIMPLEMENTED, counted as not found, logged once per path.
    for _ in range(2):
        nope = grpc_raw(small_sluice.grpc, "/opentelemetry.proto.collector.trace.v1.TraceService/Nope", GOOD)
        assert nope.get("grpc-status") == "12", nope
    assert small_sluice.metric("sluice_receiver_refused_requests_total", reason="not_found") == 2
    assert small_sluice.log_text().count("TraceService/Nope") == 1, small_sluice.log_text()[-2000:]
    assert small_sluice.metric("sluice_receiver_refused_requests_total", reason="malformed", signal="traces") == 2


def test_wrong_length_ids_are_partial_success(small_sluice):
    req = ExportTraceServiceRequest()
    req.ParseFromString(spans_request(3))
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01" * 15
    r = post(small_sluice, req.SerializeToString())
    assert r.status_code == 200
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "15 bytes" in resp.partial_success.error_message
    wait_for(lambda: len(spans_of(small_sluice.output("traces"))) == 2, what="2 valid spans")
    assert small_sluice.metric("sluice_receiver_refused_items_total", reason="invalid", signal="traces") == 1
    assert small_sluice.metric("sluice_receiver_accepted_items_total", signal="traces") == 2
