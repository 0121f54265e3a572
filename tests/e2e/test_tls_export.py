"""Issue 11, the exporters' side of TLS: a sidecar Sluice exports to a gateway Sluice through a TLS
terminator (tlsproxy.py) over OTLP gRPC and HTTP — with the CA, with `server_name`, with a client
certificate (mTLS) — and a wrong CA or a missing client certificate fails, is retried and counted;
ClickHouse over `https://`; `sluice validate` refuses TLS settings that cannot work."""

import subprocess

import pytest
from chfront import ClickHouse
from conftest import BIN, spans_of, wait_for
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from test_clickhouse import ch_config
from test_sdk import exporters
from tlsproxy import Pki, TlsProxy


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def proxies():
    made = []

    def make(*a, **kw):
        p = TlsProxy(*a, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def send_spans(sl, n, name="tls"):
    span_exp, _, _ = exporters("grpc", sl)
    tp = TracerProvider(resource=Resource.create({"service.name": name}))
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    tracer = tp.get_tracer(name)
    ids = set()
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i % 5}") as s:
            ids.add(f"{s.get_span_context().span_id:016x}")
    tp.shutdown()
    return ids


def otlp_exporter(protocol, port, tls, host="127.0.0.1", extra=""):
    return f"""type = "otlp"
endpoint = "https://{host}:{port}"
protocol = "{protocol}"
tls = {{ {tls} }}
{extra}"""


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("mode", ["ca", "server_name", "mtls"])
def test_sidecar_exports_to_gateway_over_tls(make_sluice, pki, proxies, protocol, mode):
    gateway = make_sluice("gateway").start()
    proxy = proxies(pki, gateway.grpc if protocol == "grpc" else gateway.http,
                    client_ca=pki.ca_file if mode == "mtls" else None)
    tls = f'ca_file = "{pki.ca_file}"'
    host = "127.0.0.1"
    if mode == "server_name":
        # The certificate names gateway.test; the endpoint is "localhost".
        tls += ', server_name = "gateway.test"'
        host = "localhost"
    if mode == "mtls":
        tls += f', cert_file = "{pki.client_cert}", key_file = "{pki.client_key}"'
    sidecar = make_sluice("sidecar")
    sidecar.start(sidecar.default_config(exporter=otlp_exporter(protocol, proxy.port, tls, host)))
    ids = send_spans(sidecar, 250)
    spans = wait_for(lambda: (s := spans_of(gateway.output("traces"))) and len(s) >= 250 and s,
                     what="250 spans at the gateway")
    assert {s["spanId"] for s in spans} == ids and len(spans) == 250
    assert sidecar.metric("sluice_exporter_sent_items_total", signal="traces") == 250
    assert sidecar.metric("sluice_exporter_failed_items_total", signal="traces") == 0
    assert proxy.connections >= 1 and proxy.handshakes_failed == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("mode", ["ca", "mtls"])
def test_sidecar_exports_to_a_gateway_sluice_that_terminates_tls_itself(make_sluice, pki, protocol, mode):
    """No terminator in between: the gateway's own listener (rustls) takes the sidecar's TLS, and with
    `client_ca_file` demands the sidecar's client certificate."""
    gateway = make_sluice("gateway")
    tls = f'tls = {{ cert_file = "{pki.server_cert}", key_file = "{pki.server_key}"'
    if mode == "mtls":
        tls += f', client_ca_file = "{pki.ca_file}"'
    gateway.start(gateway.default_config(batch_timeout="50ms", receiver_extra=tls + " }"))
    client_tls = f'ca_file = "{pki.ca_file}"'
    if mode == "mtls":
        client_tls += f', cert_file = "{pki.client_cert}", key_file = "{pki.client_key}"'
    port = gateway.grpc if protocol == "grpc" else gateway.http
    sidecar = make_sluice("sidecar")
    sidecar.start(sidecar.default_config(exporter=otlp_exporter(protocol, port, client_tls)))
    ids = send_spans(sidecar, 200)
    spans = wait_for(lambda: (s := spans_of(gateway.output("traces"))) and len(s) >= 200 and s,
                     what="200 spans at the gateway")
    assert {s["spanId"] for s in spans} == ids and len(spans) == 200
    assert sidecar.metric("sluice_exporter_sent_items_total", signal="traces") == 200
    assert sidecar.metric("sluice_exporter_failed_items_total", signal="traces") == 0
    assert gateway.metric("sluice_receiver_accepted_items_total", signal="traces") == 200
    if mode == "mtls":
        # The same sidecar without its certificate is refused by the gateway and says so.
        bare = make_sluice("bare")
        bare.start(bare.default_config(exporter=otlp_exporter(protocol, port, f'ca_file = "{pki.ca_file}"',
                                                               extra='retry = { max_elapsed = "1s" }')))
        send_spans(bare, 5, name="bare")
        wait_for(lambda: bare.metric("sluice_exporter_failed_items_total", signal="traces") == 5,
                 what="the uncertified sidecar's spans counted as failed")
        assert gateway.metric("sluice_receiver_accepted_items_total", signal="traces") == 200


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("fault", ["wrong_ca", "no_client_cert"])
def test_tls_failure_is_retried_and_counted(make_sluice, pki, proxies, tmp_path, protocol, fault):
    gateway = make_sluice("gateway").start()
    target = gateway.grpc if protocol == "grpc" else gateway.http
    if fault == "wrong_ca":
        proxy = proxies(pki, target)
        tls = f'ca_file = "{Pki(tmp_path / "other", name="other-ca").ca_file}"'
    else:
        proxy = proxies(pki, target, client_ca=pki.ca_file)
        tls = f'ca_file = "{pki.ca_file}"'
    sidecar = make_sluice("sidecar")
    retry = 'retry = { initial_interval = "100ms", max_interval = "500ms", max_elapsed = "3s" }'
    sidecar.start(sidecar.default_config(exporter=otlp_exporter(protocol, proxy.port, tls, extra=retry)))
    send_spans(sidecar, 40)
    # Every span is accounted for: failed after the retries, dropped with a reason, none sent.
    wait_for(lambda: sidecar.metric("sluice_exporter_failed_items_total", signal="traces") == 40,
             timeout=30, what="40 spans counted as failed")
    assert sidecar.metric("sluice_dropped_items_total", signal="traces", reason="export_failed") == 40
    assert sidecar.metric("sluice_exporter_sent_items_total", signal="traces") == 0
    assert spans_of(gateway.output("traces")) == []
    log = sidecar.log_text()
    assert log.count("will retry") >= 2, log[-3000:]
    if fault == "wrong_ca":
        assert proxy.handshakes_failed >= 2
        assert "invalid peer certificate: UnknownIssuer" in log, log[-3000:]
    else:
        assert proxy.connections == 0


def test_clickhouse_over_https(sluice, pki, proxies, tmp_path):
    ch = ClickHouse(tmp_path / "ch")
    try:
        proxy = proxies(pki, ch.port, alpn=("http/1.1",))
        sluice.start(ch_config(sluice, f"https://localhost:{proxy.port}",
                               extra=f'tls = {{ ca_file = "{pki.ca_file}" }}'))
        ids = send_spans(sluice, 120, name="ch-tls")
        wait_for(lambda: ch.count("otel.otel_traces", "ServiceName = 'ch-tls'") == 120, timeout=30,
                 what="120 rows in otel_traces")
        got = {r["SpanId"] for r in ch.rows("SELECT SpanId FROM otel.otel_traces WHERE ServiceName = 'ch-tls'")}
        assert got == ids
        assert proxy.connections >= 1
        assert sluice.metric("sluice_exporter_sent_items_total", signal="traces") == 120
    finally:
        ch.stop()


def validate(tmp_path, exporter):
    cfg = tmp_path / "v.toml"
    cfg.write_text(f"""
[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:4317"

[exporters.out]
{exporter}

[pipelines.all]
signals = ["traces"]
receivers = ["otlp"]
exporters = ["out"]
""")
    return subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)


def test_validate_is_honest_about_tls(tmp_path, pki):
    other = Pki(tmp_path / "other", name="other-ca")
    ok = [
        otlp_exporter("grpc", 4317, f'ca_file = "{pki.ca_file}"'),
        otlp_exporter("http", 4318, f'cert_file = "{pki.client_cert}", key_file = "{pki.client_key}"'),
        'type = "otlp"\nendpoint = "https://gateway:4317"',
        f'type = "clickhouse"\nendpoint = "https://ch:8443"\ntls = {{ ca_file = "{pki.ca_file}" }}',
        f'type = "kafka"\nbrokers = ["k:9093"]\ntls = {{ ca_file = "{pki.ca_file}" }}\n'
        'sasl = { mechanism = "SCRAM-SHA-512", username = "u", password = "p" }',
    ]
    for exporter in ok:
        r = validate(tmp_path, exporter)
        assert r.returncode == 0, (exporter, r.stderr)
    bad = [
        (otlp_exporter("grpc", 4317, 'ca_file = "/nonexistent/ca.pem"'), "exporters.out.tls.ca_file", "/nonexistent/ca.pem"),
        # A key that is not the certificate's.
        (otlp_exporter("grpc", 4317, f'cert_file = "{pki.client_cert}", key_file = "{other.client_key}"'),
         "exporters.out.tls.key_file", "client certificate and key"),
        (otlp_exporter("http", 4318, f'cert_file = "{pki.client_cert}"'), "exporters.out.tls.key_file", "missing"),
        (otlp_exporter("http", 4318, f'ca_file = "{pki.client_key}"'), "exporters.out.tls.ca_file", "no PEM certificate"),
        (f'type = "otlp"\nendpoint = "http://gateway:4317"\ntls = {{ ca_file = "{pki.ca_file}" }}', "exporters.out.tls", "not https://"),
        (f'type = "clickhouse"\nendpoint = "http://ch:8123"\ntls = {{ ca_file = "{pki.ca_file}" }}', "exporters.out.tls", "not https://"),
        ('type = "kafka"\nbrokers = ["k:9093"]\ntls = { server_name = "k" }', "exporters.out.tls.server_name", "not supported"),
        ('type = "kafka"\nbrokers = ["k:9093"]\nproducer = { "security.protocol" = "tls" }', "exporters.out.producer", "security.protocol"),
    ]
    for exporter, path, words in bad:
        r = validate(tmp_path, exporter)
        assert r.returncode == 2, (exporter, r.stdout)
        assert path in r.stderr and words in r.stderr, (exporter, r.stderr)
