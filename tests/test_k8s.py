"""The Kubernetes manifests in docker/k8s/ (issue 17): every core object validates, strictly (no
unknown fields), against the Kubernetes OpenAPI schemas that the kubernetes-validate package
ships, for the newest version it knows and for an older one still in wide use. The two CRD kinds
kubernetes-validate has no schema for (the Prometheus Operator's ServiceMonitor; the adapter
rule, which is a config file inside a ConfigMap) are checked against small schemas written here
from their documented fields. Then the objects are checked against each other and against the
server: labels and ports that select, the HPA's metric is one the adapter serves and
server/metrics.c exports, and the shutdown timing leaves the drain its full grace.
"""
import copy
import os
import re

import jsonschema
import kubernetes_validate as kv  # tests/requirements.txt: a hard dependency, never a skip
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "docker", "k8s")
# The newest schema set the package ships, and 1.30 (still served by the large managed clouds'
# extended support in 2026): the manifests use nothing newer than 1.27's fields.
VERSIONS = (kv.latest_version(), "1.30")
APP = {"app.kubernetes.io/name": "flashgen", "app.kubernetes.io/component": "server"}


# applied on its own in the Prometheus adapter's namespace, not through the kustomization
ADAPTER_FILE = "prometheus-adapter.yaml"


def load_all():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    objs = []
    for name in kust["resources"] + [ADAPTER_FILE]:
        with open(os.path.join(K8S, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    objs.append((name, doc))
    return kust, objs


KUST, OBJS = load_all()


def one(kind, name=None):
    found = [o for _, o in OBJS if o["kind"] == kind and (name is None or
                                                          o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container():
    return one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest():
    on_disk = {f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml"}
    assert set(KUST["resources"]) == on_disk - {ADAPTER_FILE}
    kinds = sorted(o["kind"] for _, o in OBJS)
    assert kinds == sorted(["ConfigMap", "ConfigMap", "Deployment", "Service",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"])


CORE = [(n, o) for n, o in OBJS if o["apiVersion"] != "monitoring.coreos.com/v1"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,obj", CORE, ids=[f"{n}:{o['kind']}" for n, o in CORE])
def test_core_objects_validate_strictly(name, obj, version):
    assert kv.validate(obj, version, strict=True) == kv.utils.major_minor(version)


def test_validator_rejects_what_is_wrong():
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    bad = copy.deepcopy(one("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, VERSIONS[0], strict=True)
    bad = copy.deepcopy(one("HorizontalPodAutoscaler"))
    bad["spec"]["maxReplicas"] = "eight"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, VERSIONS[0], strict=True)


# The ServiceMonitor fields used here, as the monitoring.coreos.com/v1 CRD defines them
# (prometheus-operator Documentation/api.md: ServiceMonitorSpec, Endpoint; Duration's pattern is
# the CRD's own). additionalProperties false where we write the object, so a typo fails.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "matchExpressions": {"type": "array"}},
}
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"},
                                    "labels": {"type": "object",
                                               "additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["string", "integer"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        "honorLabels": {"type": "boolean"},
                    }}},
            }},
    },
}

# The prometheus-adapter config file (docs/config.md of kubernetes-sigs/prometheus-adapter): a list
# of discovery rules, each a series query, its resource mapping, naming and metrics query.
ADAPTER = {
    "type": "object", "required": ["rules"], "additionalProperties": False,
    "properties": {"rules": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["seriesQuery", "resources", "metricsQuery"],
        "additionalProperties": False,
        "properties": {
            "seriesQuery": {"type": "string"},
            "seriesFilters": {"type": "array"},
            "resources": {"type": "object", "additionalProperties": False, "properties": {
                "overrides": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["resource"],
                    "properties": {"resource": {"type": "string"}, "group": {"type": "string"}}}},
                "template": {"type": "string"}}},
            "name": {"type": "object", "additionalProperties": False,
                     "properties": {"matches": {"type": "string"}, "as": {"type": "string"}}},
            "metricsQuery": {"type": "string"},
        }}}},
}


def test_servicemonitor_matches_its_crd_fields_and_the_service():
    sm = one("ServiceMonitor")
    jsonschema.validate(sm, SERVICE_MONITOR)
    svc = one("Service")
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics"


def exported_gauges():
    with open(os.path.join(ROOT, "server", "metrics.c")) as f:
        src = f.read()
    return set(re.findall(r'head\(&b, "(flashgen_\w+)", "gauge"', src))


def adapter_rules():
    cm = one("ConfigMap", "flashgen-prometheus-adapter")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    jsonschema.validate(cfg, ADAPTER)
    return cfg["rules"]


def test_hpa_scales_on_a_metric_the_adapter_serves_and_the_server_exports():
    hpa = one("HorizontalPodAutoscaler")
    dep = one("Deployment")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"], ref["apiVersion"]) == ("Deployment", dep["metadata"]["name"],
                                                             dep["apiVersion"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "Pods"
    name = m["pods"]["metric"]["name"]
    assert name == "flashgen_num_requests_waiting"
    assert name in exported_gauges()  # a gauge: a per-pod average of it means something
    served = []
    for r in adapter_rules():
        series = re.match(r"^(\w+)\{", r["seriesQuery"]).group(1)
        assert series in exported_gauges(), series
        exposed = re.sub(r["name"]["matches"], r["name"]["as"], series) if "name" in r else series
        assert r["resources"]["overrides"]["pod"]["resource"] == "pod"
        assert r["resources"]["overrides"]["namespace"]["resource"] == "namespace"
        assert "<<.Series>>{<<.LabelMatchers>>}" in r["metricsQuery"]
        assert "by (<<.GroupBy>>)" in r["metricsQuery"]
        served.append(exposed)
    assert name in served


def test_selectors_and_ports_line_up():
    dep = one("Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == APP
    for sel in (one("Service")["spec"]["selector"],
                one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert all(pod_labels.get(k) == v for k, v in sel.items()) and sel
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert ports["http"] == int(env["FLASHGEN_PORT"])
    assert env["FLASHGEN_HOST"] == "0.0.0.0"
    for p in one("Service")["spec"]["ports"]:
        assert p["targetPort"] in ports
    # the PDB leaves the HPA's floor room to drain one pod at a time
    assert one("PodDisruptionBudget")["spec"]["maxUnavailable"] < \
        one("HorizontalPodAutoscaler")["spec"]["minReplicas"]


def config_option_names():
    with open(os.path.join(ROOT, "config", "config.c")) as f:
        return set(re.findall(r'^\s*\{"(\w+)", CONFIG_T_', f.read(), re.M))


def config_default(name):
    with open(os.path.join(ROOT, "config", "config.c")) as f:
        m = re.search(r'\{"%s", CONFIG_T_\w+, OFF\(\w+\), "([^"]*)"' % name, f.read())
    return m.group(1)


def test_environment_names_real_options():
    """Every FLASHGEN_* variable set is a server option or one the image's entrypoint reads."""
    with open(os.path.join(ROOT, "docker", "entrypoint.sh")) as f:
        entry = set(re.findall(r"\$\{(FLASHGEN_\w+)", f.read()))
    options = {"FLASHGEN_" + n.upper() for n in config_option_names()}
    names = {e["name"] for e in container()["env"]}
    names |= set(one("ConfigMap", "flashgen-model")["data"])
    for n in names:
        assert n in options or n in entry, n
    refs = {r["configMapRef"]["name"] for r in container()["envFrom"]}
    assert refs == {"flashgen-model"}


def test_probes_and_shutdown_timing():
    c = container()
    pod = one("Deployment")["spec"]["template"]["spec"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    s = c["startupProbe"]
    # a model load (and the entrypoint's download) gets at least 10 minutes before a restart
    assert s["periodSeconds"] * s["failureThreshold"] >= 600
    # a pod answering 503 (draining, failed) leaves the Service within the preStop sleep
    r = c["readinessProbe"]
    assert r["periodSeconds"] * r["failureThreshold"] <= float(
        c["lifecycle"]["preStop"]["exec"]["command"][1])
    env = {e["name"]: e.get("value") for e in c["env"]}
    grace = float(env.get("FLASHGEN_SHUTDOWN_GRACE", config_default("shutdown_grace")))
    with open(os.path.join(ROOT, "server", "serve.c")) as f:
        flush = float(re.search(r"#define SERVE_FLUSH_MAX_S ([\d.]+)", f.read()).group(1))
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0].endswith("sleep")
    pre = float(cmd[1])
    assert pod["terminationGracePeriodSeconds"] > pre + grace + flush


def test_one_gpu_per_replica():
    r = container()["resources"]
    assert r["requests"]["nvidia.com/gpu"] == r["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert env["FLASHGEN_DEVICE"] == "cuda"
    sc = one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert sc["runAsUser"] == 10001 and sc["runAsNonRoot"]  # the image's user (docker/Dockerfile)
