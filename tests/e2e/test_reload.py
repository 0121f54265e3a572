"""Hot reload under load (issue 10): 20 reloads while `sluice-loadgen` sends 20,000 spans/s, five
invalid configurations rejected while serving, long-lived client connections that never break, and
`--watch` following a Kubernetes ConfigMap's `..data` symlink swap with exactly one reload.

Every exporter is a file exporter, and the test counts what landed in its files: the exporter that
stays configured throughout must hold every span Sluice accepted; an exporter that comes and goes
must hold every span accepted while it was configured (and nothing from before it existed)."""

import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
import requests
from conftest import BIN, free_port, wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_malformed import spans_request

LOADGEN = os.environ.get("SLUICE_LOADGEN") or str(pathlib.Path(BIN).parent / "sluice-loadgen")
SPANS_PER_REQUEST = 100
CONNECTIONS = 4
RATE = 200  # requests/s → 20,000 spans/s


def count_spans(directory: pathlib.Path) -> int:
    """Spans written by a file exporter: every span carries exactly one `"spanId"` key (the load
    generator's spans have no links), so counting the key counts spans without parsing 100s of MB."""
    if not directory.exists():
        return 0
    return sum(f.read_bytes().count(b'"spanId"') for f in directory.glob("traces*.jsonl"))


def config(sl, d, extra_k=0, extra=False, side_port=None, batch_items=8192, watermark=0.8, tag="v0", broken=""):
    extra_exporter = f'[exporters.extra]\ntype = "file"\npath = "{d}/extra-{extra_k}"\n' if extra else ""
    exporters = '["steady", "extra"]' if extra else '["steady"]'
    return f"""
[service]
admin = "127.0.0.1:{sl.admin}"

[receivers.main]
type = "otlp"
grpc = "127.0.0.1:{sl.grpc}"
http = "127.0.0.1:{sl.http}"

[receivers.side]
type = "otlp"
http = "127.0.0.1:{side_port}"

[processors.sampler]
type = "adaptive_sampler"
min_probability = 1.0                 # adaptive, but it never sheds here: every span must arrive
high_watermark = {watermark}

[processors.tag]
type = "attributes"
actions = [{{ key = "reload.generation", action = "upsert", value = "{tag}" }}]

[processors.batch]
type = "batch"
max_items = {batch_items}
timeout = "100ms"

[exporters.steady]
type = "file"
path = "{d}/steady"
max_file_size = "1GiB"

{extra_exporter}
{broken}

[pipelines.traces]
signals = ["traces"]
receivers = ["main", "side"]
processors = ["sampler", "tag", "batch"]
exporters = {exporters}
"""


def write_atomically(path: pathlib.Path, text: str):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def accepted(sl) -> float:
    return sl.metric("sluice_receiver_accepted_items_total", signal="traces")


def reload_via_admin(sl) -> dict:
    r = requests.post(sl.url("/reload"), timeout=30)
    return {"status": r.status_code, **r.json()}


def reload_via_sighup(sl) -> dict:
    before = requests.get(sl.url("/status"), timeout=5).json().get("last_reload")
    sl.proc.send_signal(signal.SIGHUP)
    last = wait_for(
        lambda: (lr := requests.get(sl.url("/status"), timeout=5).json().get("last_reload")) != before and lr,
        timeout=10,
        what="a reload after SIGHUP",
    )
    return {"status": 200 if last["result"] == "success" else 422, **last}


def start_loadgen(sl, seconds):
    return subprocess.Popen(
        [LOADGEN, "--endpoint", f"http://127.0.0.1:{sl.grpc}", "--protocol", "grpc",
         "--spans-per-request", str(SPANS_PER_REQUEST), "--attributes", "2", "--connections", str(CONNECTIONS),
         "--rate", str(RATE), "--duration", f"{seconds}s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish_loadgen(proc) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["requests_failed"] == 0, report
    return report


class HeldConnections:
    """A gRPC channel and an HTTP/1.1 keep-alive connection to the unchanged receiver, used after
    every reload; any reconnect or connection error is recorded."""

    def __init__(self, sl):
        self.states = []
        self.channel = grpc.insecure_channel(f"127.0.0.1:{sl.grpc}")
        self.channel.subscribe(self.states.append, try_to_connect=True)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.export = self.channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        self.http = http.client.HTTPConnection("127.0.0.1", sl.http, timeout=10)
        self.http.connect()
        self.sock = self.http.sock
        self.sent = 0
        self.body = spans_request(1)

    def use(self):
        self.export(self.body, timeout=10)
        self.http.request("POST", "/v1/traces", body=self.body, headers={"Content-Type": "application/x-protobuf"})
        r = self.http.getresponse()
        r.read()
        assert r.status == 200, r.status
        assert self.http.sock is self.sock, "the HTTP/1.1 keep-alive connection was replaced"
        self.sent += 2

    def check(self):
        ready_seen = [s for s in self.states if s == grpc.ChannelConnectivity.READY]
        after = self.states[self.states.index(grpc.ChannelConnectivity.READY):] if ready_seen else []
        assert after and all(s == grpc.ChannelConnectivity.READY for s in after), f"gRPC channel left READY: {self.states}"

    def close(self):
        self.http.close()
        self.channel.close()


def test_twenty_reloads_under_load_lose_nothing_and_keep_connections(make_sluice):
    sl = make_sluice("reload")
    d = sl.dir
    path = d / "sluice.toml"
    side_ports = [free_port() for _ in range(6)]
    state = {"extra_k": 0, "extra": False, "side_port": side_ports[0], "batch_items": 8192, "watermark": 0.8, "tag": "v0"}
    sl.start(config(sl, d, **state))
    held = HeldConnections(sl)
    load = start_loadgen(sl, seconds=32)
    wait_for(lambda: accepted(sl) > 20_000, timeout=15, what="load flowing")

    windows = []  # (k, accepted before the add, after the add, before the removal, after the removal)
    side_sent = 0
    for k in range(1, 21):
        time.sleep(0.9)
        change = k % 5
        if change in (1, 3):
            state["extra"] = not state["extra"]  # add / remove an exporter (a new folder each life)
            state["extra_k"] = k if state["extra"] else state["extra_k"]
        elif change == 2:
            state["watermark"] = 0.85 if state["watermark"] == 0.8 else 0.8  # the sampler
        elif change == 4:
            state["batch_items"] = 4096 if state["batch_items"] == 8192 else 8192  # the batch size
        else:
            state["side_port"] = side_ports[k // 5]  # a receiver's port
        state["tag"] = f"v{k // 4}"  # an attribute action, every fourth reload
        toggled = change in (1, 3)
        before = accepted(sl)
        write_atomically(path, config(sl, d, **state))
        outcome = reload_via_admin(sl) if k % 2 else reload_via_sighup(sl)
        after = accepted(sl)
        assert outcome["status"] == 200 and outcome["result"] == "success", outcome
        built = outcome["changes"]["built"]
        assert "exporters.steady" not in built and "receivers.main" not in built, outcome
        if change == 4:
            # The sampler did not change: it kept its state (its measured input rate).
            sampler = requests.get(sl.url("/status"), timeout=5).json()["samplers"][0]
            assert sampler["input_rate"] > 0, sampler
            assert "processors.sampler" not in built
        if change == 2:
            assert "processors.sampler" in built, outcome
        if toggled and state["extra"]:
            windows.append([k, before, after, None, None])
        elif toggled:
            windows[-1][3:] = [before, after]
        # The moved receiver serves on its new port; the old one is closed.
        r = requests.post(f"http://127.0.0.1:{state['side_port']}/v1/traces", data=spans_request(3),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200, r.text
        side_sent += 3
        if change == 0:
            old = side_ports[k // 5 - 1]
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", old)) != 0, timeout=10, what=f"old port {old} closed")
        held.use()

    report = finish_loadgen(load)
    held.check()
    held.close()
    wait_for(lambda: sl.metric("sluice_pipeline_queue_items") == 0 and sl.metric("sluice_exporter_queue_items") == 0,
             timeout=30, what="queues drained")
    total = accepted(sl)
    assert total == report["items_ok"] + side_sent + held.sent, (total, report, side_sent, held.sent)
    assert sl.metric("sluice_receiver_refused_items_total") == 0
    assert sl.metric("sluice_dropped_items_total") == 0
    assert sl.metric("sluice_sampler_sampled_out_items_total") == 0
    assert sl.metric("sluice_config_reload_total", result="success") == 20
    # The exporter configured throughout holds every accepted span.
    wait_for(lambda: count_spans(d / "steady") == total, timeout=30, what=f"{total} spans in steady")
    # Each life of the exporter that came and went holds every span accepted while it existed.
    assert len(windows) == 4
    in_extra = 0
    for k, before_add, after_add, before_rm, after_rm in windows:
        n = count_spans(d / f"extra-{k}")
        in_extra += n
        # Requests in flight at the swap may go either way: at most one per connection.
        slack = CONNECTIONS * SPANS_PER_REQUEST
        assert before_rm - after_add - slack <= n <= after_rm - before_add, (k, n, before_add, after_add, before_rm, after_rm)
        assert n > 20_000, (k, n)
    assert in_extra == sl.metric("sluice_exporter_sent_items_total", exporter="extra")
    assert sl.stop() == 0


INVALID = {
    "toml syntax": lambda c: c.replace("[exporters.steady]", "[exporters.steady"),
    "unknown type": lambda c: c.replace('type = "file"', 'type = "s3"', 1),
    "undefined processor": lambda c: c.replace('processors = ["sampler", "tag", "batch"]', 'processors = ["sampler", "nope"]'),
    "bad value": lambda c: c.replace("max_items = 8192", "max_items = 0"),
}


def test_invalid_configs_are_rejected_whole_while_the_old_topology_serves(make_sluice):
    sl = make_sluice("invalid")
    d = sl.dir
    path = d / "sluice.toml"
    side = free_port()
    good = config(sl, d, side_port=side)
    sl.start(good)
    load = start_loadgen(sl, seconds=12)
    wait_for(lambda: accepted(sl) > 20_000, timeout=15, what="load flowing")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    cases = dict(INVALID)
    # Valid on paper, but the new receiver's port is held by another process: the build fails.
    cases["port in use"] = lambda c: c.replace(f'http = "127.0.0.1:{side}"', f'http = "127.0.0.1:{taken}"')
    for i, (name, breaks) in enumerate(cases.items(), start=1):
        time.sleep(0.5)
        write_atomically(path, breaks(good))
        before = accepted(sl)
        outcome = reload_via_admin(sl)
        assert outcome["status"] == 422 and outcome["result"] == "failure", (name, outcome)
        if name != "port in use":
            assert f"{path}:" in outcome["error"], (name, outcome["error"])
        else:
            assert "cannot listen" in outcome["error"], outcome["error"]
        status = requests.get(sl.url("/status"), timeout=5).json()
        assert status["last_reload"]["result"] == "failure" and status["last_reload"]["error"] == outcome["error"]
        assert sl.metric("sluice_config_reload_total", result="failure") == i
        wait_for(lambda: accepted(sl) > before + 2_000, timeout=10, what=f"old topology still serving after {name}")
    busy.close()
    report = finish_loadgen(load)
    write_atomically(path, good)
    assert reload_via_admin(sl)["result"] == "success"
    total = accepted(sl)
    assert total == report["items_ok"]
    assert sl.metric("sluice_dropped_items_total") == 0
    wait_for(lambda: count_spans(d / "steady") == total, timeout=30, what=f"{total} spans in steady")
    assert "configuration reload rejected" in sl.log_text()
    assert sl.stop() == 0


def test_watch_follows_a_configmap_symlink_swap_with_one_reload(make_sluice):
    sl = make_sluice("watch")
    d = sl.dir
    mount = d / "mount"
    mount.mkdir()
    side = free_port()

    def publish(version, text):
        # What the kubelet does: a new timestamped folder, a temporary link, an atomic rename.
        folder = mount / f"..2026_11_30_{version}"
        folder.mkdir()
        (folder / "sluice.toml").write_text(text)
        tmp = mount / "..data_tmp"
        tmp.symlink_to(folder.name)
        os.replace(tmp, mount / "..data")
        return folder

    first = publish("a", config(sl, d, side_port=side))
    (mount / "sluice.toml").symlink_to("..data/sluice.toml")
    sl.start(config_path=mount / "sluice.toml", args=["--watch"])
    publish("b", config(sl, d, extra_k=1, extra=True, side_port=side))
    shutil.rmtree(first)
    wait_for(lambda: sl.metric("sluice_config_reload_total", result="success") == 1, timeout=10, what="one reload")
    r = requests.post(sl.otlp_http("/v1/traces"), data=spans_request(5),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: count_spans(d / "extra-1") == 5, timeout=10, what="spans in the exporter the new config added")
    time.sleep(2)
    assert sl.metric("sluice_config_reload_total", result="success") == 1
    assert sl.metric("sluice_config_reload_total", result="failure") == 0
    assert sl.stop() == 0


def test_filter_processor_drops_and_counts_matching_items(sluice):
    d = sluice.dir
    cfg = f"""
[service]
admin = "127.0.0.1:{sluice.admin}"

[receivers.otlp]
type = "otlp"
http = "127.0.0.1:{sluice.http}"

[processors.health]
type = "filter"
drop_when = [{{ attribute = "http.route", equals = "/healthz" }}]

[exporters.out]
type = "file"
path = "{d}/out"

[pipelines.traces]
signals = ["traces", "logs"]
receivers = ["otlp"]
processors = ["health"]
exporters = ["out"]
"""
    sluice.start(cfg)
    req = ExportTraceServiceRequest.FromString(spans_request(10))
    for i, s in enumerate(req.resource_spans[0].scope_spans[0].spans):
        kv = s.attributes.add()
        kv.key = "http.route"
        kv.value.string_value = "/healthz" if i < 4 else "/pay"
    r = requests.post(sluice.otlp_http("/v1/traces"), data=req.SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: count_spans(d / "out") == 6, timeout=10, what="6 kept spans")
    assert sluice.metric("sluice_dropped_items_total", component="health", reason="filtered", signal="traces") == 4
    assert b"/healthz" not in (d / "out" / "traces.jsonl").read_bytes()
