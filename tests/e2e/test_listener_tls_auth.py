"""Issue 11, receiver listeners: TLS (rustls) and bearer/mTLS authentication on OTLP gRPC, OTLP HTTP
and pprof. Certificates are generated here (cryptography); the clients are the OpenTelemetry Python
SDK's exporters, grpcio, requests and the `ssl` module."""

import os
import socket
import ssl
import time

import grpc
import pytest
import requests
from conftest import FIXTURES, spans_of, wait_for
from cryptography import x509
from listener_certs import CA
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TOKENS = ["tok-alpha-0123456789", "tok-beta-9876543210"]


@pytest.fixture(autouse=True)
def no_ca_bundle_override(monkeypatch):
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify` (the SDK's
    HTTP exporter sets the CA on its session), so the test CA would be ignored where they are set."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def make_spans(tag: str, n: int):
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": f"listener-{tag}"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("listener")
    for i in range(n):
        with tracer.start_as_current_span(f"{tag}-{i}"):
            pass
    return mem.get_finished_spans()


def exporter(transport, sl, scheme="https", ca=None, client=None, token=None, timeout=3):
    headers = {"authorization": f"Bearer {token}"} if token else None
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if scheme == "http":
            return OTLPSpanExporter(endpoint=f"127.0.0.1:{sl.grpc}", insecure=True, headers=headers, timeout=timeout)
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca.pem,
            private_key=client[1].read_bytes() if client else None,
            certificate_chain=client[0].read_bytes() if client else None,
        )
        return OTLPSpanExporter(endpoint=f"127.0.0.1:{sl.grpc}", insecure=False, credentials=creds, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=f"{scheme}://127.0.0.1:{sl.http}/v1/traces",
        certificate_file=str(ca.path) if ca else None,
        client_certificate_file=str(client[0]) if client else None,
        client_key_file=str(client[1]) if client else None,
        headers=headers,
        timeout=timeout,
    )


def send(transport, sl, tag, n=10, **kw) -> bool:
    exp = exporter(transport, sl, **kw)
    try:
        return exp.export(make_spans(tag, n)) == SpanExportResult.SUCCESS
    finally:
        exp.shutdown()


def names(sl):
    return {s["name"] for s in spans_of(sl.output("traces"))}


def tls_config(sl, ca_dir, server, client_ca=None, extra="", auth=""):
    crt, key, _ = server
    tls = f'tls = {{ cert_file = "{crt}", key_file = "{key}", reload_interval = "200ms"'
    if client_ca:
        tls += f', client_ca_file = "{client_ca}"'
    tls += " }"
    return sl.default_config(batch_timeout="50ms", receiver_extra=f"{tls}\n{auth}\n{extra}")


def no_panics(sl):
    assert "panicked" not in sl.log_text()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_tls_sdk_sends_and_plaintext_fails(make_sluice, tmp_path, transport):
    ca = CA(tmp_path / "pki")
    sl = make_sluice("tls")
    sl.start(tls_config(sl, ca.dir, ca.issue("server")))
    assert send(transport, sl, f"tls-{transport}", 25, ca=ca)
    wait_for(lambda: {f"tls-{transport}-{i}" for i in range(25)} <= names(sl), what="spans sent over TLS")
    assert len([n for n in names(sl) if n.startswith("tls-")]) == 25

    before = sl.metric("sluice_receiver_connections_refused_total", reason="tls_handshake", listener=transport)
    assert not send(transport, sl, f"plain-{transport}", 5, scheme="http", timeout=2)
    assert sl.metric("sluice_receiver_connections_refused_total", reason="tls_handshake", listener=transport) > before
    assert not any(n.startswith("plain-") for n in names(sl))
    # The listener still serves TLS clients after the plaintext attempts.
    assert send(transport, sl, f"after-{transport}", 3, ca=ca)
    no_panics(sl)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_mtls_requires_a_client_certificate(make_sluice, tmp_path, transport):
    ca = CA(tmp_path / "pki")
    client_ca = CA(tmp_path / "clients", cn="client CA")
    good = client_ca.issue("client", server=False)
    stranger = CA(tmp_path / "other", cn="other CA").issue("stranger", server=False)
    sl = make_sluice("mtls")
    sl.start(tls_config(sl, ca.dir, ca.issue("server"), client_ca=client_ca.path))

    assert not send(transport, sl, "nocert", 5, ca=ca, timeout=2)
    assert not send(transport, sl, "stranger", 5, ca=ca, client=stranger[:2], timeout=2)
    refused = sl.metric("sluice_receiver_connections_refused_total", reason="tls_handshake", listener=transport)
    assert refused >= 2
    assert send(transport, sl, "withcert", 12, ca=ca, client=good[:2])
    wait_for(lambda: {f"withcert-{i}" for i in range(12)} <= names(sl), what="spans over mTLS")
    assert not any(n.startswith(("nocert", "stranger")) for n in names(sl))
    no_panics(sl)


def peer_serial(port, ca) -> int:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_certificate_reload_on_file_change(make_sluice, tmp_path):
    ca = CA(tmp_path / "pki")
    crt, key, first = ca.issue("server")
    sl = make_sluice("reload")
    sl.start(tls_config(sl, ca.dir, (crt, key, first)))
    assert peer_serial(sl.http, ca) == first and peer_serial(sl.grpc, ca) == first
    # Keep a connection open across the swap: it is not dropped.
    keep = ssl.create_default_context(cafile=str(ca.path)).wrap_socket(
        socket.create_connection(("127.0.0.1", sl.http), timeout=5), server_hostname="127.0.0.1"
    )
    ncrt, nkey, second = ca.issue("server2")
    # Replace the files in place (as cert-manager or a ConfigMap update would).
    os.replace(nkey, key)
    os.replace(ncrt, crt)
    wait_for(lambda: peer_serial(sl.http, ca) == second, timeout=10, what="the new certificate on new HTTP connections")
    assert peer_serial(sl.grpc, ca) == second
    keep.sendall(b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
    assert keep.recv(100).startswith(b"HTTP/1.1 405")
    keep.close()
    assert send("grpc", sl, "after-reload", 4, ca=ca)
    assert "TLS certificate files changed: reloaded" in sl.log_text()
    no_panics(sl)


def export_request(n=3, tag="raw"):
    spans = make_spans(tag, n)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def grpc_code(sl, token):
    with grpc.insecure_channel(f"127.0.0.1:{sl.grpc}") as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        md = [("authorization", f"Bearer {token}")] if token else None
        try:
            stub.Export(export_request(tag="grpc-raw"), metadata=md, timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


def http_status(sl, token, path="/v1/traces", port=None):
    headers = {"content-type": "application/x-protobuf"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    url = f"http://127.0.0.1:{port or sl.http}{path}"
    return requests.post(url, data=export_request(tag="http-raw").SerializeToString(), headers=headers, timeout=5).status_code


def test_bearer_tokens_file_env_and_rotation(make_sluice, tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# tokens, one per line\n{TOKENS[0]}\n\n{TOKENS[1]}\n")
    monkeypatch.setenv("SLUICE_TEST_TOKENS", "tok-from-env-1,tok-from-env-2")
    sl = make_sluice("auth")
    pprof_port = __import__("conftest").free_port()
    cfg = sl.default_config(
        batch_timeout="50ms",
        receiver_extra=f'auth = {{ bearer_tokens_file = "{tokens}", bearer_tokens_env = "SLUICE_TEST_TOKENS", reload_interval = "200ms" }}',
    )
    cfg += (f'\n[receivers.pprof]\ntype = "pprof"\nhttp = "127.0.0.1:{pprof_port}"\nauth = {{ bearer_tokens_file = "{tokens}" }}\n'
            '[pipelines.profiles]\nsignals = ["profiles"]\nreceivers = ["pprof"]\nexporters = ["out"]\n')
    sl.start(cfg)

    # Refused: no token, a wrong token, a token of another scheme — counted one per request.
    assert http_status(sl, None) == 401
    assert http_status(sl, "wrong") == 401
    r = requests.post(sl.otlp_http("/v1/traces"), data=b"", headers={"authorization": f"Basic {TOKENS[0]}"}, timeout=5)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert grpc_code(sl, None) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(sl, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert not send("grpc", sl, "sdk-wrong", 2, scheme="http", token="nope")
    assert not send("http", sl, "sdk-wrong", 2, scheme="http", token="nope")
    body = (FIXTURES / "pprof" / "sample.cpu").read_bytes()
    assert requests.post(f"http://127.0.0.1:{pprof_port}/v1/pprof?service=p", data=body, timeout=5).status_code == 401
    wait_for(lambda: sl.metric("sluice_receiver_refused_requests_total", reason="unauthenticated", receiver="otlp") == 7,
             what="7 unauthenticated OTLP requests counted")
    assert sl.metric("sluice_receiver_refused_requests_total", reason="unauthenticated", receiver="pprof") == 1

    # Accepted: both file tokens and both env tokens, gRPC and HTTP, SDK and raw.
    assert http_status(sl, TOKENS[0]) == 200
    assert grpc_code(sl, TOKENS[1]) == grpc.StatusCode.OK
    assert grpc_code(sl, "tok-from-env-2") == grpc.StatusCode.OK
    assert send("grpc", sl, "sdk-grpc-ok", 10, scheme="http", token=TOKENS[0])
    assert send("http", sl, "sdk-http-ok", 10, scheme="http", token="tok-from-env-1")
    assert requests.post(f"http://127.0.0.1:{pprof_port}/v1/pprof?service=p", data=body, headers={"authorization": f"Bearer {TOKENS[1]}"}, timeout=5).status_code == 200
    wait_for(lambda: {f"sdk-grpc-ok-{i}" for i in range(10)} | {f"sdk-http-ok-{i}" for i in range(10)} <= names(sl), what="authenticated spans")
    assert not any(n.startswith("sdk-wrong") for n in names(sl))

    # Rotation: the file changes; the removed token stops working, the new one works.
    tokens.write_text(f"{TOKENS[1]}\ntok-gamma-new\n")
    wait_for(lambda: http_status(sl, TOKENS[0]) == 401, timeout=10, what="the removed token refused")
    assert http_status(sl, "tok-gamma-new") == 200
    assert grpc_code(sl, "tok-gamma-new") == grpc.StatusCode.OK

    log = sl.log_text()
    for t in TOKENS + ["tok-gamma-new", "tok-from-env-1"]:
        assert t not in log
    no_panics(sl)


def test_client_certificate_counts_as_authenticated(make_sluice, tmp_path):
    ca = CA(tmp_path / "pki")
    client_ca = CA(tmp_path / "clients", cn="client CA")
    good = client_ca.issue("client", server=False)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    sl = make_sluice("mtls-auth")
    crt, key, _ = ca.issue("server")
    sl.start(sl.default_config(batch_timeout="50ms", receiver_extra=(
        f'tls = {{ cert_file = "{crt}", key_file = "{key}", client_ca_file = "{client_ca.path}", require_client_cert = false }}\n'
        f'auth = {{ bearer_tokens_file = "{tokens}", client_certificates = true }}'
    )))
    # Verified certificate, no token: accepted. No certificate: a token is needed.
    assert send("http", sl, "cert-only", 4, ca=ca, client=good[:2])
    assert send("grpc", sl, "cert-only-grpc", 4, ca=ca, client=good[:2])
    assert not send("http", sl, "neither", 2, ca=ca)
    assert send("http", sl, "token-only", 3, ca=ca, token=TOKENS[0])
    wait_for(lambda: {"cert-only-3", "cert-only-grpc-3", "token-only-2"} <= names(sl), what="spans authenticated by certificate or token")
    assert sl.metric("sluice_receiver_refused_requests_total", reason="unauthenticated") == 1
    no_panics(sl)


def test_reload_adds_auth_to_a_running_receiver(make_sluice, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    sl = make_sluice("reload-auth")
    sl.start(sl.default_config())
    assert http_status(sl, None) == 200
    cfg = sl.default_config(receiver_extra=f'auth = {{ bearer_tokens_file = "{tokens}" }}')
    (sl.dir / "sluice.toml").write_text(cfg)
    r = requests.post(sl.url("/reload"), timeout=30)
    assert r.status_code == 200, r.text
    wait_for(lambda: http_status(sl, None) == 401, what="auth after the reload")
    assert http_status(sl, TOKENS[0]) == 200
    assert grpc_code(sl, None) == grpc.StatusCode.UNAUTHENTICATED
