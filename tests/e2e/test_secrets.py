"""Issue 11: secrets never leave Sluice in text. A ClickHouse endpoint with `user:password@`, a Kafka
SASL password, a secret librdkafka property and an OTLP authorization header, with debug logging,
exports that fail and retry, a rejected reload and `sluice validate`: none of the secrets appears in
the log, `/status`, the reload answer or validate's output — and the ClickHouse credentials still
work (the rows land)."""

import subprocess

import requests
from chfront import ClickHouse
from conftest import BIN, free_port, wait_for
from test_tls_export import send_spans

SECRETS = ["s3cret-ch", "k4fka-s3cret", "k3y-s3cret", "t0ken-s3cret", "0tlp-s3cret"]


def config(sl, ch_endpoint, dead_port):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"
log_level = "debug"
shutdown_timeout = "5s"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"

[processors.batch]
type = "batch"
timeout = "100ms"

[exporters.ch]
type = "clickhouse"
endpoint = "{ch_endpoint}"
min_insert_rows = 1

[exporters.kafka]
type = "kafka"
brokers = ["127.0.0.1:{dead_port}"]
timeout = "2s"
sasl = {{ mechanism = "PLAIN", username = "sluice", password = "k4fka-s3cret" }}
producer = {{ "ssl.key.password" = "k3y-s3cret" }}
retry = {{ initial_interval = "200ms", max_elapsed = "4s" }}

[exporters.fwd]
type = "otlp"
protocol = "http"
endpoint = "http://fwd:0tlp-s3cret@127.0.0.1:{dead_port}"
headers = {{ authorization = "Bearer t0ken-s3cret" }}
retry = {{ initial_interval = "200ms", max_elapsed = "4s" }}

[pipelines.all]
signals = ["traces"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["ch", "kafka", "fwd"]
"""


def assert_clean(text, where):
    for s in SECRETS:
        assert s not in text, f"{s!r} found in {where}: ...{text[max(0, text.find(s) - 300):text.find(s) + 100]}..."


def test_secrets_stay_out_of_logs_status_and_validate(sluice, tmp_path):
    ch = ClickHouse(tmp_path / "ch", user="sluiceuser", password="s3cret-ch")
    try:
        dead = free_port()
        cfg = config(sluice, f"http://sluiceuser:s3cret-ch@127.0.0.1:{ch.port}", dead)
        sluice.start(cfg)
        send_spans(sluice, 30, name="secrets")
        # The credentials from the URL still authenticate: the rows land.
        wait_for(lambda: ch.count("otel.otel_traces", "ServiceName = 'secrets'") == 30, timeout=30,
                 what="30 rows in ClickHouse")
        # Kafka and the forwarder fail against a dead port, retry, log, and finally count the loss.
        wait_for(lambda: sluice.metric("sluice_exporter_failed_items_total", exporter="fwd") == 30
                 and sluice.metric("sluice_exporter_failed_items_total", exporter="kafka") == 30,
                 timeout=30, what="failed exports counted")
        status = requests.get(sluice.url("/status"), timeout=5).text
        assert '"ch"' in status
        assert_clean(status, "/status")

        # A rejected reload quotes the bad endpoint: in the answer, /status and the log.
        broken = cfg.replace(f"http://sluiceuser:s3cret-ch@127.0.0.1:{ch.port}",
                             f"htp://sluiceuser:s3cret-ch@127.0.0.1:{ch.port}")
        (sluice.dir / "sluice.toml").write_text(broken)
        r = requests.post(sluice.url("/reload"), timeout=30)
        assert r.status_code == 422 and "exporters.ch.endpoint" in r.text, r.text
        assert_clean(r.text, "the reload answer")
        assert_clean(requests.get(sluice.url("/status"), timeout=5).text, "/status after the reload")

        for text in (cfg, broken):
            f = tmp_path / "v.toml"
            f.write_text(text)
            v = subprocess.run([BIN, "validate", "--config", str(f)], capture_output=True, text=True, timeout=30)
            assert_clean(v.stdout + v.stderr, "sluice validate")
        assert "exporters.ch.endpoint" in v.stderr and "sluiceuser" in v.stderr, v.stderr

        sluice.stop()
        log = sluice.log_text()
        assert "will retry" in log and "ClickHouse schema ready" in log
        assert_clean(log, "the log")
    finally:
        ch.stop()
