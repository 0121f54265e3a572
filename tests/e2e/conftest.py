"""Shared helpers for the end-to-end tests: start real `sluice` processes, read their output and metrics."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "debug" / "sluice")
FIXTURES = ROOT / "tests" / "fixtures"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free right now and never handed out before in this test run: the kernel may return
    the port it just released to the next bind, so two calls in a row could otherwise collide."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(cond, timeout=15.0, interval=0.05, what="condition"):
    """Polls `cond` until it returns a truthy value; fails the test with `what` on timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def parse_metrics(text: str) -> dict:
    """Prometheus text → {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


class Sluice:
    """One `sluice` process with its own ports, config file and data directory."""

    def __init__(self, workdir: pathlib.Path, name="sluice"):
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.grpc = free_port()
        self.http = free_port()
        self.admin = free_port()
        self.proc = None
        self.log_path = self.dir / "sluice.log"

    def default_config(self, batch_timeout="100ms", batch_items=8192, exporter=None, receiver_extra="", service_extra="", processors=None, batch_bytes="3MiB"):
        exporter = exporter or f'type = "file"\npath = "{self.data}"'
        processors = processors if processors is not None else ["batch"]
        return f"""
[service]
admin = "127.0.0.1:{self.admin}"
log_level = "info"
{service_extra}

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{self.grpc}"
http = "127.0.0.1:{self.http}"
{receiver_extra}

[processors.batch]
type = "batch"
timeout = "{batch_timeout}"
max_items = {batch_items}
max_bytes = "{batch_bytes}"

[exporters.out]
{exporter}

[pipelines.all]
signals = ["traces", "metrics", "logs", "profiles"]
receivers = ["otlp"]
processors = {json.dumps(processors)}
exporters = ["out"]
"""

    def start(self, config: str | None = None, prefix: list | None = None, binary: str | None = None, args: list | None = None, config_path=None):
        """Writes the config and starts sluice; `prefix` runs it under another command (e.g. taskset),
        `args` are extra arguments (e.g. --watch), `config_path` an existing file to run with instead."""
        cfg = config_path or self.dir / "sluice.toml"
        if config_path is None:
            cfg.write_text(config if config is not None else self.default_config())
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*(prefix or []), binary or BIN, "--config", str(cfg), *(args or [])], stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sluice exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                return requests.get(self.url("/readyz"), timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout=20, what="sluice /readyz")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin}{path}"

    def otlp_http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"sluice did not stop within {timeout}s:\n{self.log_text()}")

    def metrics(self) -> dict:
        return parse_metrics(requests.get(self.url("/metrics"), timeout=5).text)

    def metric(self, name: str, **labels) -> float:
        """Sum of `name` over series whose labels include `labels`."""
        total = 0.0
        for (n, ls), v in self.metrics().items():
            if n == name and all((k, str(val)) in ls for k, val in labels.items()):
                total += v
        return total

    def output(self, signal_name: str) -> list:
        """Every OTLP/JSON request line written for a signal, oldest first (rotated files included)."""
        if not self.data.exists():
            return []
        files = sorted(self.data.glob(f"{signal_name}-*.jsonl")) + [self.data / f"{signal_name}.jsonl"]
        out = []
        for f in files:
            if f.exists():
                # Only whole lines: the exporter may be midway through writing the last one.
                complete = f.read_text().split("\n")[:-1]
                out += [json.loads(line) for line in complete if line.strip()]
        return out


def spans_of(requests_: list) -> list:
    return [s for r in requests_ for rs in r.get("resourceSpans", []) for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]


def logs_of(requests_: list) -> list:
    return [l for r in requests_ for rl in r.get("resourceLogs", []) for sl in rl.get("scopeLogs", []) for l in sl.get("logRecords", [])]


def metrics_of(requests_: list) -> list:
    return [m for r in requests_ for rm in r.get("resourceMetrics", []) for sm in rm.get("scopeMetrics", []) for m in sm.get("metrics", [])]


def data_points(metric: dict) -> list:
    for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
        if kind in metric and metric[kind] is not None:
            return metric[kind].get("dataPoints", [])
    return []


def attrs(obj: dict) -> dict:
    """OTLP attribute list → {key: python value}."""
    out = {}
    for kv in obj.get("attributes", []) or []:
        v = kv.get("value") or {}
        if "stringValue" in v:
            out[kv["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[kv["key"]] = int(v["intValue"])
        elif "doubleValue" in v:
            out[kv["key"]] = float(v["doubleValue"])
        elif "boolValue" in v:
            out[kv["key"]] = v["boolValue"]
        else:
            out[kv["key"]] = v
    return out


@pytest.fixture
def sluice(tmp_path):
    """A started sluice with the default test config (OTLP → batch → file); stopped after the test."""
    s = Sluice(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def make_sluice(tmp_path):
    """Factory for extra sluice processes; all are stopped after the test."""
    made = []

    def make(name="sluice"):
        s = Sluice(tmp_path, name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
