"""Alert rules on the metric stream (issue 18) against a real Alertmanager (Debian's
prometheus-alertmanager, installed by tests/alertmanager/setup.sh and started here on loopback):
a histogram series whose p99 crosses the threshold for longer than `duration` fires with the rule's
and the series' labels and resolves on recovery; a shorter spike and non-matching series never fire;
the same alerts arrive as log records in the file exporter. Metrics are posted as OTLP/JSON delta
histograms stamped with the time they are sent, every 0.2 s."""

import json
import shutil
import subprocess
import threading
import time

import pytest
import requests
from conftest import attrs, free_port, logs_of, wait_for

AM_BIN = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AM_CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


@pytest.fixture
def alertmanager(tmp_path):
    assert AM_BIN, "prometheus-alertmanager is missing: run bash tests/alertmanager/setup.sh"
    port = free_port()
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(AM_CONFIG)
    log = open(tmp_path / "alertmanager.log", "wb")
    proc = subprocess.Popen([AM_BIN, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        try:
            return requests.get(url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ready, timeout=30, what="alertmanager /-/ready")
    yield url
    proc.terminate()
    proc.wait(10)


def config(sl, am_url):
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"

[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sl.http}"

[processors.alerts]
type = "alert_rules"
check_interval = "200ms"
stale_after = "5s"

[[processors.alerts.rule]]
name = "p99_latency_spike"
metric = "http_request_duration_seconds"
matchers = ["service=~'payment.*'", "env='prod'"]
quantile = 0.99
threshold = 2000
unit = "ms"
duration = "3s"
window = "1s"
labels = {{ team = "finance-core", severity = "critical" }}
annotations = {{ summary = "p99 latency above 2 s" }}

[exporters.out]
type = "file"
path = "{sl.data}"

[exporters.am]
type = "alertmanager"
endpoint = "{am_url}"
resend_interval = "1s"
retry = {{ initial_interval = "100ms", max_interval = "500ms" }}

[pipelines.metrics]
signals = ["metrics"]
receivers = ["otlp"]
processors = ["alerts"]
exporters = ["out", "am"]
"""


def kv(k, v):
    return {"key": k, "value": {"stringValue": v}}


def histogram_request(series, t0, t1):
    """One delta histogram point per series over (t0, t1]: slow ones in (1 s, 5 s], fast ones ≤ 0.1 s."""
    rms = []
    for (service, env, route), slow in series.items():
        buckets = ["0", "0", "20", "0"] if slow else ["20", "0", "0", "0"]
        rms.append({
            "resource": {"attributes": [kv("service.name", service)]},
            "scopeMetrics": [{"metrics": [{
                "name": "http_request_duration_seconds", "unit": "s",
                "histogram": {"aggregationTemporality": 1, "dataPoints": [{
                    "attributes": [kv("env", env), kv("route", route)],
                    "startTimeUnixNano": str(t0), "timeUnixNano": str(t1),
                    "count": "20", "bucketCounts": buckets, "explicitBounds": [0.1, 1.0, 5.0]}]}}]}]})
    return {"resourceMetrics": rms}


class Feeder(threading.Thread):
    """Posts every series every 0.2 s; `slow` says which are slow right now. Records every alert set
    Alertmanager lists meanwhile."""

    def __init__(self, sl, am_url, series):
        super().__init__(daemon=True)
        self.sl, self.am_url, self.series = sl, am_url, dict(series)
        self.stop = threading.Event()
        self.seen = []  # label sets Alertmanager listed, over the whole run
        self.error = None

    def run(self):
        last = time.time_ns()
        try:
            while not self.stop.is_set():
                time.sleep(0.2)
                now = time.time_ns()
                r = requests.post(self.sl.otlp_http("/v1/metrics"), json=histogram_request(self.series, last, now), timeout=5)
                assert r.status_code == 200, r.text
                last = now
                self.seen += [a["labels"] for a in am_alerts(self.am_url)]
        except Exception as e:  # reported by the test
            self.error = e


def am_alerts(url):
    return requests.get(url + "/api/v2/alerts", timeout=5).json()


PAY = ("payment-api", "prod", "/pay")
SPIKE = ("payment-api", "prod", "/spike")
OTHER_SERVICE = ("checkout", "prod", "/pay")
OTHER_ENV = ("payment-api", "staging", "/pay")


def alert_records(sl):
    out = []
    for rec in logs_of(sl.output("logs")):
        a = attrs(rec)
        if a.get("event.name") == "alert":
            labels = {kv["key"]: kv["value"]["stringValue"] for kv in a["labels"]["kvlistValue"]["values"]}
            out.append((a["state"], labels, a))
    return out


def test_alert_fires_in_alertmanager_and_resolves(sluice, alertmanager):
    sl = sluice
    sl.start(config(sl, alertmanager))
    feeder = Feeder(sl, alertmanager, {PAY: True, SPIKE: True, OTHER_SERVICE: True, OTHER_ENV: True})
    feeder.start()
    try:
        # The spike lasts 0.6 s: with the 1 s window it breaches for ~1.6 s, under the 3 s duration.
        time.sleep(0.6)
        feeder.series[SPIKE] = False

        def firing():
            assert feeder.error is None, feeder.error
            return [a for a in am_alerts(alertmanager) if a["labels"].get("route") == "/pay"]

        alerts = wait_for(firing, timeout=20, what="the alert in Alertmanager")
        assert len(alerts) == 1, alerts
        a = alerts[0]
        assert a["labels"] == {"alertname": "p99_latency_spike", "team": "finance-core", "severity": "critical",
                               "service_name": "payment-api", "env": "prod", "route": "/pay"}, a["labels"]
        assert a["annotations"]["summary"] == "p99 latency above 2 s"
        assert float(a["annotations"]["value"]) > 2000
        assert a["status"]["state"] == "active"
        # Kept while firing: the resends refresh it (endsAt 4 s ahead), so it is still there later.
        time.sleep(3)
        assert [x for x in am_alerts(alertmanager) if x["labels"]["route"] == "/pay"]

        # Recovery: resolved once the slow observations left the window; Alertmanager drops it.
        feeder.series[PAY] = False
        wait_for(lambda: not [x for x in am_alerts(alertmanager) if x["labels"].get("route") == "/pay"],
                 timeout=15, what="the alert to resolve in Alertmanager")
    finally:
        feeder.stop.set()
        feeder.join(10)
    assert feeder.error is None, feeder.error
    # The spike and the series the matchers exclude never reached Alertmanager.
    routes = {(l.get("service_name"), l.get("env"), l.get("route")) for l in feeder.seen}
    assert routes == {PAY}, routes

    # The file exporter has the same story as log records.
    wait_for(lambda: any(s == "resolved" for s, _, _ in alert_records(sl)), what="resolved record in the file")
    records = alert_records(sl)
    pay = [(s, a) for s, l, a in records if l.get("route") == "/pay" and l.get("service.name") == "payment-api"
           and l.get("env") == "prod"]
    assert [s for s, _ in pay] == ["pending", "firing", "resolved"], records
    firing_rec = pay[1][1]
    assert firing_rec["alertname"] == "p99_latency_spike"
    assert firing_rec["threshold"] == 2000 and firing_rec["value"] > 2000
    labels = [l for s, l, _ in records if s == "firing"][0]
    assert labels["team"] == "finance-core" and labels["severity"] == "critical"
    spike = [s for s, l, _ in records if l.get("route") == "/spike"]
    assert spike == ["pending"], records
    others = [l for _, l, _ in records if l.get("service.name") == "checkout" or l.get("env") == "staging"]
    assert others == [], others
    # Every alert record counted in and out: the pipeline's queue gauge is back to zero.
    assert sl.metric("sluice_pipeline_queue_items", pipeline="metrics", signal="logs") == 0
    assert sl.metric("sluice_exporter_sent_items_total", exporter="out", signal="logs") == len(records)


def test_invalid_rules_are_reported_with_file_and_line(sluice, tmp_path):
    sl = sluice
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config(sl, "http://127.0.0.1:9").replace(
        "matchers = [\"service=~'payment.*'\", \"env='prod'\"]", "matchers = [\"service=~'(payment'\", \"env=prod\"]").replace(
        "quantile = 0.99", "quantile = 99"))
    from conftest import BIN
    r = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    lines = cfg.read_text().splitlines()
    matchers_line = next(i for i, l in enumerate(lines, 1) if l.startswith("matchers"))
    quantile_line = next(i for i, l in enumerate(lines, 1) if l.startswith("quantile"))
    err = r.stdout + r.stderr
    assert f"bad.toml:{matchers_line}" in err and "processors.alerts.rule[0].matchers[0]" in err and "invalid regex" in err, err
    assert "processors.alerts.rule[0].matchers[1]" in err and "quotes" in err, err
    assert f"bad.toml:{quantile_line}" in err and "between 0 and 1" in err, err
