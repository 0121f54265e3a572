"""The admin server's status page (issue 17) in Debian's headless chromium, driven by playwright-core
(tests/browser/status_page.mjs): no console errors, no request leaves the admin server (assets are
embedded), every configured component is drawn in the topology, the numbers change while load runs,
and the sampler's p and exporter load are charted. The screenshot is kept in target/artifacts/."""

import json
import pathlib
import shutil
import subprocess

import pytest
import requests
from test_sampling import Load

ROOT = pathlib.Path(__file__).resolve().parents[2]
BROWSER = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "target" / "artifacts"


def ops_config(sl):
    """Two pipelines, a sampler steered by a slow exporter, a processor and receiver shared."""
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"

[receivers.otlp]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"

[processors.sampler]
type = "adaptive_sampler"
interval = "500ms"

[processors.batch]
type = "batch"
timeout = "50ms"
max_items = 1000

[exporters.slow]
type = "blackhole"
max_rate = 1500.0
queue = {{ max_items = 20000, when_full = "drop" }}

[exporters.archive]
type = "file"
path = "{sl.data}"

[pipelines.traces]
signals = ["traces"]
receivers = ["otlp"]
processors = ["sampler", "batch"]
exporters = ["slow", "archive"]

[pipelines.metrics]
signals = ["metrics"]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["archive"]
"""


COMPONENTS = {"receiver:otlp", "processor:sampler", "processor:batch", "exporter:slow", "exporter:archive",
              "pipeline:traces", "pipeline:metrics"}


@pytest.fixture(scope="module")
def browser_ready():
    subprocess.run(["bash", str(BROWSER / "setup.sh")], check=True)
    assert shutil.which("node"), "node is needed to drive chromium"


def test_status_page_in_headless_chromium(sluice, browser_ready):
    sluice.start(ops_config(sluice))
    page = requests.get(sluice.url("/"), timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text, "no CDN or external asset"
    # A reload's result is shown on the page.
    r = requests.post(sluice.url("/reload"), timeout=10)
    assert r.status_code == 200, r.text
    load = Load(sluice, 3000.0)
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        out = subprocess.run(["node", str(BROWSER / "status_page.mjs"), sluice.url("/"), str(shot)],
                             cwd=BROWSER, capture_output=True, text=True, timeout=120)
    finally:
        load.end()
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["errors"] == [], seen["errors"]
    assert seen["external"] == []
    first, second = seen["first"], seen["second"]
    assert set(second["components"]) == COMPONENTS
    # Live numbers move while the load runs: the receiver's accepted count and the file exporter's sent count.
    accepted = lambda snap: {tuple(r[:2]): r[3] for r in snap["receivers"]}
    assert accepted(first)[("otlp", "traces")] != accepted(second)[("otlp", "traces")], (first, second)
    sent = lambda snap: {r[0]: r[2] for r in snap["exporters"]}
    assert sent(first)["archive"] != sent(second)["archive"]
    assert second["live"]["live-receiver-otlp"].endswith("/s") and second["live"]["live-receiver-otlp"] != "0/s"
    # The sampler's p is shown (in the topology and its table) and charted with the loads it reads.
    assert second["live"]["live-processor-sampler"].startswith("p ")
    sampler = second["samplers"][0]
    assert sampler[0] == "sampler" and 0 < float(sampler[2]) <= 1 and "slow" in sampler[5]
    series = {s["name"]: s["points"] for s in second["series"]}
    assert set(series) == {"sampler p", "slow load", "archive load"}
    assert series["sampler p"] > {s["name"]: s["points"] for s in first["series"]}["sampler p"]
    assert second["reload"].startswith("success at "), second["reload"]
    assert shot.stat().st_size > 10_000
