"""The Helm chart (helm/sluice) checked with Helm's own Go SDK (helm-python-sdk: render + strict lint,
offline), Kubernetes' API schemas (kubernetes-validate, strict), the real `sluice validate`, and a real
`sluice` started with the args and config the gateway manifest renders (issue 16, acceptance 1-5).
Also checks that the Dockerfile has the agreed shape (no Docker engine here: it is parsed, not built)."""

import copy
import importlib.util
import json
import pathlib
import subprocess
import tomllib

import helm_python as helm
import kubernetes_validate
import pytest
import requests
import yaml
from dockerfile_parse import DockerfileParser

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sluice"

# The e2e helpers (binary path, free ports, polling, OTLP/JSON readers) live in tests/e2e/conftest.py;
# loaded under their own name so this folder needs no copy of them.
_spec = importlib.util.spec_from_file_location("sluice_e2e_helpers", ROOT / "tests" / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

RELEASE = "sluice-gateway"
NAMESPACE = "observability"
CONFIG_PATH = "/etc/sluice/sluice.toml"

CLICKHOUSE = {
    "exporters": {
        "file": None,  # null removes the gateway's default file exporter
        "clickhouse": {
            "type": "clickhouse",
            "endpoint": "http://clickhouse.db:8123",
            "database": "otel",
            "password": "${CLICKHOUSE_PASSWORD:-}",
            "ttl": "72h",
            "min_insert_rows": 10000,
            "max_insert_delay": "1s",
            "queue": {"max_items": 200000, "when_full": "block"},
            "retry": {"initial_interval": "100ms", "max_interval": "5s", "max_elapsed": "5m"},
        },
    },
    "processors": {
        "env": {"type": "attributes", "actions": [
            {"key": "deployment.environment", "action": "upsert", "value": "prod \"eu\" \\ <1>"},
            {"key": "k8s.cluster.name", "action": "insert", "value": "c1"},
        ]},
        "batch": {"max_items": 8192, "max_bytes": "3MiB", "timeout": "200ms"},
    },
    "pipelines": {"default": {"signals": ["traces", "metrics", "logs"], "processors": ["env", "batch"], "exporters": ["clickhouse"]}},
}

KAFKA = {
    "receivers": {"profiles": {"type": "pprof", "http": "0.0.0.0:4040"}},
    "processors": {"sampler": {
        "type": "adaptive_sampler", "mode": "tiered", "hold": "30s", "max_probability": 1.0,
        "tiers": [{"when_input_rate_above": 5000.0, "probability": 0.01},
                  {"when_load_above": 0.85, "probability": 0.001}],
    }},
    "exporters": {
        "file": None,
        "kafka": {
            "type": "kafka",
            "brokers": ["kafka-0.kafka:9092", "kafka-1.kafka:9092"],
            "topics": {"traces": "otlp_spans", "metrics": "otlp_metrics", "logs": "otlp_logs", "profiles": "otlp_profiles"},
            "compression": "snappy",
            "partition_by_trace_id": True,
            "producer": {"linger.ms": "5", "queue.buffering.max.kbytes": "65536"},
        },
    },
    "pipelines": {
        "default": None,
        "traces": {"signals": ["traces", "logs"], "receivers": ["otlp"], "processors": ["sampler", "batch"], "exporters": ["kafka"]},
        "metrics": {"signals": ["metrics"], "receivers": ["otlp"], "processors": ["batch"], "exporters": ["kafka"]},
        "profiles": {"signals": ["profiles"], "receivers": ["otlp", "profiles"], "processors": ["batch"], "exporters": ["kafka"]},
    },
}

# Value combinations: every mode, both reload modes, and each optional object on at least once.
COMBINATIONS = {
    "gateway-defaults": {},
    "gateway-clickhouse-rollout-hpa-monitor-tls": {
        "configReload": "rollout", "config": CLICKHOUSE,
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12, "targetMemoryUtilizationPercentage": 80},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "tls": {"receivers": {"secretName": "sluice-receiver-tls"}, "exporters": {"secretName": "clickhouse-client-tls"}},
        "envFrom": [{"secretRef": {"name": "clickhouse-credentials"}}],
        "podAnnotations": {"example.com/team": "observability"},
    },
    "gateway-persistent-kafka": {
        "persistence": {"enabled": True, "size": "20Gi", "storageClassName": "fast"},
        "headlessService": {"enabled": False},
        "podDisruptionBudget": {"maxUnavailable": "25%"},
        "replicaCount": 3,
        "config": KAFKA,
    },
    "agent-defaults": {"mode": "agent"},
    "agent-hostports-rollout-monitor": {
        "mode": "agent", "configReload": "rollout",
        "agent": {"hostPorts": True},
        "ports": {"otlpGrpc": 14317, "otlpHttp": 14318, "admin": 23133},
        "upstream": {"endpoint": "http://sluice-gateway.observability.svc:4318", "protocol": "http", "compression": "zstd"},
        "tolerations": [{"operator": "Exists"}],
        "serviceMonitor": {"enabled": True},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    },
    "sidecar-defaults": {"mode": "sidecar"},
    "sidecar-custom-rollout-tls": {
        "mode": "sidecar", "configReload": "rollout",
        "ports": {"otlpGrpc": 4317, "otlpHttp": 4318, "admin": 13134},
        "upstream": {"endpoint": "https://gateway.example.com:443"},
        "tls": {"exporters": {"secretName": "gateway-ca"}},
        "config": {"service": {"log_level": "warn"}, "exporters": {"gateway": {"queue": {"max_items": 5000, "when_full": "drop"}}}},
    },
}

# Kinds that kubernetes-validate cannot know (CRDs): their shape is checked by hand below.
CRD_KINDS = {"ServiceMonitor"}
KUBE_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]


def render(values: dict) -> dict:
    """Renders the chart as `helm template` would; returns {template file name: [objects]}."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    docs = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        objs = [d for d in yaml.safe_load_all(text) if d]
        if objs:
            docs[path.rsplit("/", 1)[-1]] = objs
    return docs


def objects(values: dict) -> list:
    return [o for objs in render(values).values() for o in objs]


def one(objs: list, kind: str, name_suffix: str = "") -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_template(objs: list) -> dict:
    """The pod template of the workload (Deployment, StatefulSet, DaemonSet) or of the sidecar PodTemplate."""
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            return o["spec"]["template"]
        if o["kind"] == "PodTemplate":
            return o["template"]
    raise AssertionError("no workload rendered")


def container(objs: list) -> dict:
    (c,) = [c for c in pod_template(objs)["spec"]["containers"] if c["name"] == "sluice"]
    return c


def rendered_config(objs: list) -> str:
    return one(objs, "ConfigMap")["data"]["sluice.toml"]


def merged(base: dict, overlay: dict) -> dict:
    """What the chart documents for `config`: tables merge, other values replace, None removes."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def listen_ports(cfg: dict) -> dict:
    """{port: loopback?} of every address the config listens on (admin server + receivers)."""
    addrs = [cfg["service"]["admin"]]
    for r in cfg.get("receivers", {}).values():
        addrs += [r[k] for k in ("grpc", "http") if k in r]
    return {int(a.rsplit(":", 1)[1]): a.startswith("127.") for a in addrs}


# ---- acceptance 1: render and strict lint for each mode and value combination


@pytest.mark.parametrize("name", COMBINATIONS)
def test_strict_lint_passes(name):
    report = helm.lint(str(CHART), copy.deepcopy(COMBINATIONS[name]), strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_strict_lint_fails_on_bad_values():
    """The lint above can fail: a value the schema rejects is an error in the same call."""
    report = helm.lint(str(CHART), {"mode": "daemonset"}, strict=True)
    assert any(m["severity"] == 3 and "mode" in m["error"] for m in report["messages"]), report


EXPECTED_KINDS = {
    "gateway-defaults": ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"],
    "gateway-clickhouse-rollout-hpa-monitor-tls": ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "ServiceMonitor"],
    "gateway-persistent-kafka": ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "agent-defaults": ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"],
    "agent-hostports-rollout-monitor": ["ConfigMap", "DaemonSet", "Service", "ServiceAccount", "ServiceMonitor"],
    "sidecar-defaults": ["ConfigMap", "PodTemplate"],
    "sidecar-custom-rollout-tls": ["ConfigMap", "PodTemplate"],
}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_render_objects_and_pod_hardening(name):
    values = COMBINATIONS[name]
    objs = objects(values)
    assert sorted(o["kind"] for o in objs) == EXPECTED_KINDS[name]
    pod = pod_template(objs)
    c = container(objs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"]
    # Reload: --watch in the args, or a checksum that changes with the config on the pod template.
    reload = values.get("configReload", "watch")
    assert ("--watch" in c["args"]) == (reload == "watch")
    annotations = pod.get("metadata", {}).get("annotations", {})
    assert ("checksum/config" in annotations) == (reload == "rollout")
    # The config is a directory mount (no subPath), so Kubernetes' ..data swap reaches a watching sluice.
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "sluice-config"]
    assert c["args"][:2] == ["--config", CONFIG_PATH] and mount["mountPath"] == "/etc/sluice" and "subPath" not in mount
    secrets = {v["secret"]["secretName"]: v["name"] for v in pod["spec"]["volumes"] if "secret" in v}
    for side in ("receivers", "exporters"):
        want = values.get("tls", {}).get(side, {}).get("secretName")
        if want:
            (m,) = [m for m in c["volumeMounts"] if m["name"] == secrets[want]]
            assert m["readOnly"] is True and m["mountPath"] == f"/etc/sluice-tls/{side}"
    assert len(secrets) == sum(1 for s in values.get("tls", {}).values() if s.get("secretName"))
    if pod["spec"].get("serviceAccountName"):
        assert pod["spec"]["automountServiceAccountToken"] is False


def test_rollout_checksum_follows_the_config():
    a = pod_template(objects({"configReload": "rollout"}))["metadata"]["annotations"]["checksum/config"]
    b = pod_template(objects({"configReload": "rollout", "config": {"service": {"log_level": "debug"}}}))["metadata"]["annotations"]["checksum/config"]
    again = pod_template(objects({"configReload": "rollout"}))["metadata"]["annotations"]["checksum/config"]
    assert a == again and a != b


def test_gateway_objects():
    objs = objects(COMBINATIONS["gateway-clickhouse-rollout-hpa-monitor-tls"])
    deploy = one(objs, "Deployment")
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    headless = one(objs, "Service", "-headless")
    assert headless["spec"]["clusterIP"] == "None"
    sm = one(objs, "ServiceMonitor")
    service = one(objs, "Service", RELEASE)
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics" and ep["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert sm["metadata"]["labels"]["release"] == "prom"

    sts_objs = objects(COMBINATIONS["gateway-persistent-kafka"])
    sts = one(sts_objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == one(sts_objs, "Service", "-headless")["metadata"]["name"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "sluice-data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi" and claim["spec"]["storageClassName"] == "fast"
    (mount,) = [m for m in container(sts_objs)["volumeMounts"] if m["name"] == "sluice-data"]
    assert mount["mountPath"] == "/var/lib/sluice"
    assert not any(v["name"] == "sluice-data" for v in sts["spec"]["template"]["spec"]["volumes"])
    assert one(sts_objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "25%"


def test_agent_objects():
    objs = objects(COMBINATIONS["agent-defaults"])
    assert one(objs, "Service")["spec"]["internalTrafficPolicy"] == "Local"
    assert not any("hostPort" in p for p in container(objs)["ports"])
    objs = objects(COMBINATIONS["agent-hostports-rollout-monitor"])
    ports = {p["name"]: p for p in container(objs)["ports"]}
    assert ports["otlp-grpc"]["hostPort"] == 14317 and ports["otlp-http"]["hostPort"] == 14318
    assert "hostPort" not in ports["admin"]
    assert pod_template(objs)["spec"]["tolerations"] == [{"operator": "Exists"}]
    cfg = tomllib.loads(rendered_config(objs))
    assert cfg["exporters"]["gateway"] == {"type": "otlp", "endpoint": "http://sluice-gateway.observability.svc:4318", "protocol": "http", "compression": "zstd"}


def test_sidecar_snippet_renders_alone():
    """`helm template --show-only templates/sidecar.yaml` gives one object: the container + volumes to paste."""
    docs = render(COMBINATIONS["sidecar-defaults"])
    (tmpl,) = docs["sidecar.yaml"]
    assert tmpl["kind"] == "PodTemplate"
    spec = tmpl["template"]["spec"]
    (c,) = spec["containers"]
    assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in c["volumeMounts"]} == {"sluice-config", "sluice-data"}
    (cfg_vol,) = [v for v in spec["volumes"] if v["name"] == "sluice-config"]
    assert cfg_vol["configMap"]["name"] == one(docs["configmap.yaml"], "ConfigMap")["metadata"]["name"]
    cfg = tomllib.loads(docs["configmap.yaml"][0]["data"]["sluice.toml"])
    assert cfg["receivers"]["otlp"]["grpc"].startswith("127.0.0.1:") and cfg["receivers"]["otlp"]["http"].startswith("127.0.0.1:")
    # Only the admin port is declared: the receivers listen on the pod's loopback.
    assert [p["name"] for p in c["ports"]] == ["admin"]


# ---- acceptance 2: every manifest validates against Kubernetes' schemas, strictly


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", COMBINATIONS)
def test_manifests_validate_strict(name, kube):
    checked = 0
    for obj in objects(COMBINATIONS[name]):
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, kube, strict=True)
        checked += 1
    assert checked >= 2


def test_strict_validation_catches_a_bad_manifest():
    """The check above can fail: an unknown field in a rendered container is rejected."""
    obj = one(objects({}), "Deployment")
    obj["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.30", strict=True)


# ---- acceptance 3: the config in every ConfigMap passes `sluice validate`; ports and probes agree with it


def sluice_validate(tmp_path, toml_text: str) -> subprocess.CompletedProcess:
    f = tmp_path / "sluice.toml"
    f.write_text(toml_text)
    return subprocess.run([e2e.BIN, "validate", "--config", str(f)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_rendered_config_passes_sluice_validate(name, tmp_path):
    values = COMBINATIONS[name]
    objs = objects(values)
    text = rendered_config(objs)
    res = sluice_validate(tmp_path, text)
    assert res.returncode == 0, f"sluice validate failed:\n{res.stdout}{res.stderr}\n---\n{text}"
    # The TOML says exactly what the values asked for: the mode's defaults with `config` merged over them.
    defaults = tomllib.loads(rendered_config(objects({k: v for k, v in values.items() if k != "config"})))
    assert tomllib.loads(text) == merged(defaults, values.get("config", {}))


def test_sluice_validate_rejects_a_bad_rendered_config(tmp_path):
    """The check above can fail: a config value of the wrong type reaches `sluice validate` and is refused."""
    text = rendered_config(objects({"config": {"processors": {"batch": {"max_items": "many"}}}}))
    res = sluice_validate(tmp_path, text)
    assert res.returncode == 2, res
    assert "max_items" in res.stdout + res.stderr


@pytest.mark.parametrize("name", COMBINATIONS)
def test_ports_and_probes_agree_with_config(name):
    objs = objects(COMBINATIONS[name])
    cfg = tomllib.loads(rendered_config(objs))
    c = container(objs)
    admin = int(cfg["service"]["admin"].rsplit(":", 1)[1])
    assert not cfg["service"]["admin"].startswith("127."), "the kubelet cannot probe a loopback admin server"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": admin}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": admin}
    reachable = {p for p, loopback in listen_ports(cfg).items() if not loopback}
    assert {p["containerPort"] for p in c["ports"]} == reachable
    for svc in (o for o in objs if o["kind"] == "Service"):
        by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert {by_name[p["targetPort"]] for p in svc["spec"]["ports"]} == reachable
        assert all(p["port"] == by_name[p["targetPort"]] for p in svc["spec"]["ports"])


# ---- acceptance 4: values.schema.json rejects bad values

BAD_VALUES = {
    "unknown mode": ({"mode": "daemonset"}, "/mode"),
    "negative replicas": ({"replicaCount": -1}, "/replicaCount"),
    "replicas of the wrong type": ({"replicaCount": "three"}, "/replicaCount"),
    "unknown reload mode": ({"configReload": "restart"}, "/configReload"),
    "port out of range": ({"ports": {"otlpGrpc": 70000}}, "/ports/otlpGrpc"),
    "config table of the wrong type": ({"config": {"receivers": ["otlp"]}}, "/config/receivers"),
    "misspelt top-level key": ({"replicas": 3}, "replicas"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "relative data dir": ({"dataDir": "data"}, "/dataDir"),
    "persistence on an agent": ({"mode": "agent", "persistence": {"enabled": True}}, "/persistence/enabled"),
    "bad upstream compression": ({"mode": "sidecar", "upstream": {"compression": "brotli"}}, "/upstream/compression"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects(case):
    values, where = BAD_VALUES[case]
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError) as err:
            chart.validate_schema(copy.deepcopy(values))
        assert where in str(err.value)
        # Rendering (helm template / install) refuses the same values.
        with pytest.raises(helm.HelmError):
            chart.render(values=copy.deepcopy(values), name=RELEASE)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_schema_accepts_the_combinations(name):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(copy.deepcopy(COMBINATIONS[name]))


# ---- acceptance 5: the real sluice runs with the gateway manifest's args and config


def mount_configmap(conf_dir: pathlib.Path, text: str, version: int):
    """Writes sluice.toml the way the kubelet updates a mounted ConfigMap: into a fresh ..<timestamp>
    directory, then an atomic swap of the ..data symlink (sluice.toml -> ..data/sluice.toml)."""
    stamp = f"..2026_01_01_00_00_{version:02d}.{version}"
    (conf_dir / stamp).mkdir(parents=True)
    (conf_dir / stamp / "sluice.toml").write_text(text)
    (conf_dir / "..data_tmp").symlink_to(stamp)
    (conf_dir / "..data_tmp").replace(conf_dir / "..data")
    if not (conf_dir / "sluice.toml").is_symlink():
        (conf_dir / "sluice.toml").symlink_to("..data/sluice.toml")


def send_span(grpc_port: int, name: str):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": "helm-chart-test"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
    with tp.get_tracer("helm.test").start_as_current_span(name):
        pass
    tp.shutdown()


def send_log(http_port: int, body: str):
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    lp = LoggerProvider(resource=Resource.create({"service.name": "helm-chart-test"}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/logs")))
    lp.get_logger("helm.test").emit(body=body, severity_text="INFO")
    lp.shutdown()


def written(data_dir: pathlib.Path, signal: str) -> list:
    """The OTLP/JSON requests the file exporter wrote for a signal."""
    f = data_dir / f"{signal}.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


@pytest.mark.parametrize("reload", ["watch", "rollout"])
def test_gateway_manifest_runs(reload, tmp_path):
    objs = objects({"configReload": reload})
    one(objs, "Deployment")
    c = container(objs)
    text = rendered_config(objs)
    cfg = tomllib.loads(text)

    # Rewrite only the listen addresses (to free local ports) and the data directory.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    local = {name: e2e.free_port() for name in ports}
    for name, port in ports.items():
        assert text.count(f'"0.0.0.0:{port}"') == 1, (name, text)
        text = text.replace(f'"0.0.0.0:{port}"', f'"127.0.0.1:{local[name]}"')
    data_path = cfg["exporters"]["file"]["path"]
    assert text.count(f'"{data_path}"') == 1
    data_dir = tmp_path / "data"
    conf_dir = tmp_path / "etc-sluice"
    mount_configmap(conf_dir, text.replace(f'"{data_path}"', f'"{data_dir}"'), 1)
    args = [str(conf_dir / "sluice.toml") if a == CONFIG_PATH else a for a in c["args"]]
    assert args != c["args"], "the rendered args name the mounted config file"

    log_path = tmp_path / "sluice.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([e2e.BIN, *args], stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = f"http://127.0.0.1:{local['admin']}"

        def probe(p):
            if proc.poll() is not None:
                raise AssertionError(f"sluice exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                return requests.get(admin + p["httpGet"]["path"], timeout=1).status_code == 200
            except requests.RequestException:
                return False

        e2e.wait_for(lambda: probe(c["readinessProbe"]), timeout=20, what="readiness probe")
        assert probe(c["livenessProbe"])

        # One span over OTLP/gRPC, one log record over OTLP/HTTP, through the rendered receivers.
        send_span(local["otlp-grpc"], "through-the-chart")
        send_log(local["otlp-http"], "hello from the chart")
        spans = e2e.wait_for(lambda: e2e.spans_of(written(data_dir, "traces")), what="traces.jsonl")
        records = e2e.wait_for(lambda: e2e.logs_of(written(data_dir, "logs")), what="logs.jsonl")
        assert [s["name"] for s in spans] == ["through-the-chart"]
        assert [r["body"]["stringValue"] for r in records] == ["hello from the chart"]
        # What the ServiceMonitor scrapes counts them.
        metrics = e2e.parse_metrics(requests.get(admin + "/metrics", timeout=5).text)
        accepted = {dict(labels).get("signal"): v for (n, labels), v in metrics.items() if n == "sluice_receiver_accepted_items_total"}
        assert accepted.get("traces", 0) >= 1 and accepted.get("logs", 0) >= 1, accepted

        if reload == "watch":
            # A ConfigMap update reaches the running pod: the file exporter moves to a new directory.
            moved = tmp_path / "data-after-reload"
            mount_configmap(conf_dir, text.replace(f'"{data_path}"', f'"{moved}"'), 2)

            def arrived_after_reload():
                send_span(local["otlp-grpc"], "after-reload")
                return [s for s in e2e.spans_of(written(moved, "traces")) if s["name"] == "after-reload"]

            e2e.wait_for(arrived_after_reload, timeout=30, interval=0.5, what="a span in the reloaded exporter's directory")
            assert probe(c["readinessProbe"]) and probe(c["livenessProbe"])
    finally:
        proc.terminate()
        rc = proc.wait(timeout=40)
        log.close()
    assert rc == 0, log_path.read_text()


# ---- the container image recipe (not built here: no Docker engine)


def test_dockerfile_shape():
    df = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages = [i for i in df.structure if i["instruction"] == "FROM"]
    assert len(stages) == 2 and stages[0]["value"].split()[-2:] == ["AS", "builder"]
    runtime = df.structure[df.structure.index(stages[1]):]
    runs = [i["value"] for i in runtime if i["instruction"] == "RUN"]
    assert any(r.strip() == "sluice --version" for r in runs), "the runtime stage runs the binary as its build check"
    (user,) = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    with helm.Chart.load(str(CHART)) as chart:
        assert user == "{0}:{0}".format(chart.values["securityContext"]["runAsUser"]), "the chart runs the image's user"
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert copies == ["--from=builder /out/sluice /usr/local/bin/sluice"]
    assert df.baseimage.startswith("debian:") and df.baseimage.endswith("-slim")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored
