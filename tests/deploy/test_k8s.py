"""The Kustomize manifests in deploy/k8s: every variant renders with ``kubectl kustomize``, passes
``kubernetes-validate --strict``, and has the properties the service relies on.

kubernetes-validate knows only built-in kinds: for a custom resource it prints a WARN ("Couldn't find schema") and
exits 0, and it has no flag to do otherwise. So the tests require an INFO "passed" line for every built-in
resource, allow the WARN for ServiceMonitor only, and validate the ServiceMonitor here against
SERVICE_MONITOR_SCHEMA, the subset of the Prometheus Operator's CRD schema (monitoring.coreos.com/v1) that these
manifests use, with unknown fields refused.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from service.registry import RegistryError, load_registry
from service.settings import Settings
from tests.deploy.locust_cli import LOCUSTFILE_IN_IMAGE, arg_after, parse_locust
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu", "campaign": K8S / "campaign"}
SERVICE_VARIANTS = ("cpu", "gpu")
# the oldest Kubernetes these manifests support (PodDisruptionBudget.unhealthyPodEvictionPolicy is on by default
# from 1.27) and the newest kubernetes-validate has schemas for
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
SERVER_SELECTOR = {"app.kubernetes.io/name": "wattserve", "app.kubernetes.io/component": "server"}

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"], "additionalProperties": False,
            "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": _STRINGS}}},
    },
}
_RELABELINGS = {"type": "array", "items": {"type": "object"}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                           "labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
        "spec": {
            "type": "object", "required": ["endpoints", "selector"], "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS}},
                "jobLabel": {"type": "string"}, "targetLabels": _STRINGS, "podTargetLabels": _STRINGS,
                "sampleLimit": {"type": "integer", "minimum": 0},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    # the CRD: port and targetPort are mutually exclusive
                    "not": {"required": ["port", "targetPort"]},
                    "properties": {
                        "port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": {"type": "string", "pattern": _DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
                        "relabelings": _RELABELINGS, "metricRelabelings": _RELABELINGS,
                    },
                }},
            },
        },
    },
}


def kubernetes_validate() -> str:
    found = Path(sys.executable).with_name("kubernetes-validate")
    assert found.exists(), "kubernetes-validate is a dev dependency (pip install -e '.[dev]')"
    return str(found)


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    kubectl = require_tool("kubectl", "https://kubernetes.io/docs/tasks/tools/ ; only the client is needed")
    out = {}
    for variant, folder in VARIANTS.items():
        result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
        out[variant] = result.stdout
    return out


@pytest.fixture(scope="module")
def docs(rendered) -> dict[str, list[dict]]:
    return {variant: [d for d in yaml.safe_load_all(text) if d] for variant, text in rendered.items()}


def of_kind(resources: list[dict], kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: list[dict], kind: str, name: str) -> dict:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(deployment: dict, name: str | None = None) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def pod_labels(deployment: dict) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def env_of(ctr: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in ctr.get("env", [])}


def container_env(resources: list[dict], ctr: dict) -> dict[str, str]:
    """The container's environment as it starts: its envFrom ConfigMaps, then its literal env values over them."""
    env: dict[str, str] = {}
    for source in ctr.get("envFrom", []):
        env.update(named(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({k: v for k, v in env_of(ctr).items() if v is not None})
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def run_kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run([kubernetes_validate(), "--strict", "-k", version, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


# --- schema validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_variant_passes_kubernetes_validate_strict(version, rendered, docs, tmp_path):
    paths = {variant: tmp_path / f"{variant}.yaml" for variant in VARIANTS}
    for variant, path in paths.items():
        path.write_text(rendered[variant])
    result = run_kubernetes_validate(list(paths.values()), version)  # one run for all: it starts in ~1 s
    assert result.returncode == 0, result.stdout + result.stderr
    for variant, path in paths.items():
        lines = [line for line in result.stdout.splitlines() if line.split(" ")[1:2] == [str(path)]]
        passed = {m.group(1) for line in lines if (m := re.match(r"INFO .* passed for resource (\S+) against", line))}
        expected = {f"{d['kind'].lower()}/{d['metadata']['name']}"
                    for d in docs[variant] if d["kind"] != "ServiceMonitor"}
        assert passed == expected, f"{variant}:\n" + "\n".join(lines)
        warnings = [line for line in lines if line.startswith("WARN")]
        assert len(warnings) == len(of_kind(docs[variant], "ServiceMonitor")), f"{variant}: {warnings}"
        assert all("kind ServiceMonitor with api version monitoring.coreos.com/v1" in w for w in warnings), warnings


def test_strict_validation_refuses_a_misspelt_field(docs, tmp_path):
    broken = copy.deepcopy(docs["cpu"])
    ctr = container(named(broken, "Deployment", "wattserve"))
    ctr["readynessProbe"] = ctr.pop("readinessProbe")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken))
    result = run_kubernetes_validate([path], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0 and "ERROR" in result.stdout and "deployment/wattserve" in result.stdout


@pytest.mark.parametrize("variant", SERVICE_VARIANTS)
def test_service_monitor_matches_the_prometheus_operator_crd(variant, docs):
    monitors = of_kind(docs[variant], "ServiceMonitor")
    assert len(monitors) == 1
    jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(monitors[0])
    for endpoint in monitors[0]["spec"]["endpoints"]:
        # Prometheus refuses a scrape timeout longer than the interval
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


@pytest.mark.parametrize("mutation", ["typo", "interval", "both ports"])
def test_service_monitor_schema_refuses_broken_monitors(mutation, docs):
    monitor = copy.deepcopy(of_kind(docs["cpu"], "ServiceMonitor")[0])
    endpoint = monitor["spec"]["endpoints"][0]
    if mutation == "typo":
        endpoint["scrapeInterval"] = endpoint.pop("interval")
    elif mutation == "interval":
        endpoint["interval"] = "15 seconds"
    else:
        endpoint["targetPort"] = 8000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(monitor)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a Prometheus duration: {duration}"
    return sum(int(n) * units[u] for n, u in parts)


# --- the server --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SERVICE_VARIANTS)
def test_probes_use_readyz_healthz_and_a_startup_probe_for_slow_loads(variant, docs):
    ctr = container(named(docs[variant], "Deployment", "wattserve"), "wattserve")
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = ctr["startupProbe"]
    # models load before the server answers at all: the startup probe must outlast a slow first load
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    listen = int(arg_after(ctr["command"], "--port"))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = ctr[probe]["httpGet"]["port"]
        assert ports.get(port, port) == listen, f"{probe} checks port {port}, the server listens on {listen}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_pod_runs_non_root_and_locked_down(variant, docs):
    deployments = of_kind(docs[variant], "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        where = f"{variant}: deployment/{deployment['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        # Service links inject <SERVICE>_PORT=tcp://...: WATTSERVE_PORT and LOCUST_* are settings of these programs
        assert pod["enableServiceLinks"] is False, where
        for ctr in pod["containers"]:
            ctx = ctr["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in ctx and ctx.get("runAsUser", 10001) != 0, where
            assert {"requests", "limits"} <= set(ctr["resources"]), where
            assert ctr["image"].startswith("wattserve:"), where


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_path_a_process_writes_is_a_writable_volume(variant, docs):
    """With a read-only root filesystem: /tmp, HOME, HF_HOME, WATTSERVE_DEMO_DIR and Locust's working directory
    must lie on emptyDirs."""
    for deployment in of_kind(docs[variant], "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        scratch = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
        for ctr in pod["containers"]:
            env = env_of(ctr)
            mounts = [m["mountPath"] for m in ctr.get("volumeMounts", [])
                      if m["name"] in scratch and not m.get("readOnly", False)]
            server = ctr["name"] == "wattserve"
            needed = ["HOME", "TMPDIR"] + (["HF_HOME", "WATTSERVE_DEMO_DIR"] if server else [])
            # Locust runs the campaign from its working directory: relative result paths must be writable
            paths = ["/tmp"] + [env.get(name) for name in needed] + ([] if server else [ctr.get("workingDir")])
            for path in paths:
                assert path is not None, f"{deployment['metadata']['name']}: set {needed} (and workingDir) explicitly"
                assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), \
                    f"{variant}: {deployment['metadata']['name']} writes {path}, not on a writable volume {mounts}"


def registry_configmap(resources: list[dict]) -> tuple[dict, str]:
    """The ConfigMap the server's WATTSERVE_REGISTRY file comes from, and that file's key in it."""
    deployment = named(resources, "Deployment", "wattserve")
    ctr = container(deployment, "wattserve")
    registry_path = Path(env_of(ctr)["WATTSERVE_REGISTRY"])
    mount = next(m for m in ctr["volumeMounts"] if m["mountPath"] == str(registry_path.parent))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    return named(resources, "ConfigMap", volume["configMap"]["name"]), registry_path.name


@pytest.mark.parametrize("variant", SERVICE_VARIANTS)
def test_registry_configmap_is_mounted_and_accepted_by_wattserve(variant, docs, tmp_path):
    configmap, key = registry_configmap(docs[variant])
    # the generated name carries the content hash: a registry edit rolls the pods
    assert re.fullmatch(r"wattserve-registry-[a-z0-9]{10}", configmap["metadata"]["name"])
    text = configmap["data"][key]
    (tmp_path / key).write_text(text)
    registry = load_registry(tmp_path / key)
    assert "all-MiniLM-L6-v2" in {m.name for m in registry.models}
    # one registry for both overlays: no entry may pin a device that one of them lacks
    assert {m.device for m in registry.models} == {"auto"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("task: feature-extraction", "task: feature-extractor"))
    with pytest.raises(RegistryError, match="unknown task"):
        load_registry(broken)


@pytest.mark.parametrize("variant", SERVICE_VARIANTS)
def test_settings_are_wattserve_settings_with_valid_values(variant, docs, monkeypatch):
    resources = docs[variant]
    ctr = container(named(resources, "Deployment", "wattserve"), "wattserve")
    ours = {k: v for k, v in container_env(resources, ctr).items() if k.startswith("WATTSERVE_")}
    # Settings ignores unknown WATTSERVE_* names: a typo would pass silently, so check the names here
    unknown = {k for k in ours if k.removeprefix("WATTSERVE_").lower() not in Settings.model_fields}
    assert unknown <= {"WATTSERVE_DEMO_DIR"}, f"not wattserve settings: {sorted(unknown)}"
    for key in list(os.environ):
        if key.startswith("WATTSERVE_"):
            monkeypatch.delenv(key)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.registry) == ours["WATTSERVE_REGISTRY"]


def test_gpu_overlay_asks_for_one_gpu_and_the_cpu_overlay_for_none(docs):
    gpu = named(docs["gpu"], "Deployment", "wattserve")
    ctr = container(gpu, "wattserve")
    assert str(ctr["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert ctr["image"].endswith("-cuda")
    tolerations = gpu["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
    # a rollout must not need a second GPU
    assert gpu["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    for variant in ("cpu", "campaign"):
        for deployment in of_kind(docs[variant], "Deployment"):
            for c in deployment["spec"]["template"]["spec"]["containers"]:
                asked = {**c["resources"].get("requests", {}), **c["resources"].get("limits", {})}
                assert not any(k.startswith("nvidia.com/") for k in asked), f"{variant}: {c['name']} asks {asked}"
                assert not c["image"].endswith("-cuda")
    assert container(named(docs["cpu"], "Deployment", "wattserve"))["image"] == "wattserve:0.1.0"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_services_select_exactly_their_deployment_and_name_its_ports(variant, docs):
    resources = docs[variant]
    for service in of_kind(resources, "Service"):
        selector = service["spec"]["selector"]
        targets = [d for d in of_kind(resources, "Deployment")
                   if selects(selector, pod_labels(d))]
        assert len(targets) == 1, f"service/{service['metadata']['name']} selects {len(targets)} deployments"
        deployment = targets[0]
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        named_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["name"] and port["targetPort"] in named_ports, port


@pytest.mark.parametrize("variant", SERVICE_VARIANTS)
def test_service_monitor_selects_the_service_and_its_port_by_name(variant, docs):
    resources = docs[variant]
    service = named(resources, "Service", "wattserve")
    monitor = named(resources, "ServiceMonitor", "wattserve")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    # it must not pick up the Locust master's Service when a campaign runs in the same namespace
    locust_service = named(docs["campaign"], "Service", "locust-master")
    assert not selects(monitor["spec"]["selector"]["matchLabels"], locust_service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"] and "http" in port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # namespace-agnostic: no namespaceSelector, so it watches the namespace it is applied into
    assert "namespaceSelector" not in monitor["spec"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_manifests_are_namespace_agnostic(variant, docs):
    assert [d["metadata"]["name"] for d in docs[variant] if "namespace" in d["metadata"]] == []
    assert not of_kind(docs[variant], "Namespace")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_disruption_budgets_never_block_a_drain(variant, docs):
    resources = docs[variant]
    for pdb in of_kind(resources, "PodDisruptionBudget"):
        [deployment] = [d for d in of_kind(resources, "Deployment")
                        if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))]
        assert deployment["spec"]["replicas"] > pdb["spec"]["minAvailable"], \
            f"{variant}: minAvailable {pdb['spec']['minAvailable']} of {deployment['spec']['replicas']} replicas"
    assert len(of_kind(docs["cpu"], "PodDisruptionBudget")) == 1


# --- the campaign ------------------------------------------------------------------------------------------------


def test_service_variants_deploy_only_the_service_and_the_campaign_only_locust(docs):
    for variant in SERVICE_VARIANTS:
        assert {d["metadata"]["name"].split("-")[0] for d in docs[variant]} == {"wattserve"}
    assert {d["metadata"]["name"].split("-")[0] for d in docs["campaign"]} == {"locust"}
    for deployment in of_kind(docs["campaign"], "Deployment"):
        assert not selects(SERVER_SELECTOR, pod_labels(deployment))


def test_campaign_master_and_workers_are_wired_together(docs):
    resources = docs["campaign"]
    master, worker = named(resources, "Deployment", "locust-master"), named(resources, "Deployment", "locust-worker")
    service = named(resources, "Service", "locust-master")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"master": 5557, "web": 8089}
    master_cmd, worker_cmd = container(master)["command"], container(worker)["command"]
    assert "--master" in master_cmd and "--worker" in worker_cmd
    assert worker["spec"]["replicas"] == 2
    # the master starts the campaign once this many workers have connected
    assert int(arg_after(master_cmd, "--expect-workers")) == worker["spec"]["replicas"]
    assert arg_after(worker_cmd, "--master-host") == service["metadata"]["name"]
    assert int(arg_after(worker_cmd, "--master-port")) == 5557
    for cmd in (master_cmd, worker_cmd):
        assert cmd[0] == "locust" and arg_after(cmd, "-f") == LOCUSTFILE_IN_IMAGE


def test_campaign_targets_the_wattserve_service_and_a_served_model(docs, tmp_path):
    resources = docs["campaign"]
    master = named(resources, "Deployment", "locust-master")
    config = {}
    for deployment in of_kind(resources, "Deployment"):
        [source] = container(deployment)["envFrom"]
        assert source == container(master)["envFrom"][0], "master and workers share one campaign configuration"
        config = named(resources, "ConfigMap", source["configMapRef"]["name"])["data"]
    target = urlsplit(config["LOCUST_HOST"])
    service = named(docs["cpu"], "Service", "wattserve")
    assert (target.scheme, target.hostname, target.port) == ("http", service["metadata"]["name"],
                                                              service["spec"]["ports"][0]["port"])
    registry, key = registry_configmap(docs["cpu"])
    (tmp_path / key).write_text(registry["data"][key])
    served = {m.name for m in load_registry(tmp_path / key).models}
    assert config["LOCUST_WATTSERVE_MODEL"] in served
    assert int(config["LOCUST_WATTSERVE_SAMPLES"]) > 0


def test_locust_accepts_each_campaign_container_command_and_environment(docs):
    """Parsed by Locust with this repository's loadtest/locustfile.py, which the image holds at /app/loadtest."""
    resources = docs["campaign"]
    deployments = [named(resources, "Deployment", n) for n in ("locust-master", "locust-worker")]
    cases, envs = [], []
    for deployment in deployments:
        ctr = container(deployment)
        env = container_env(resources, ctr)
        assert ctr["command"][0] == "locust" and arg_after(ctr["command"], "-f") == LOCUSTFILE_IN_IMAGE
        cases.append((ctr["command"][1:], env))
        envs.append(env)
    runs, known = parse_locust(cases)
    for deployment, env, run in zip(deployments, envs, runs, strict=True):
        name = deployment["metadata"]["name"]
        assert "error" not in run, f"{name}: locust refuses its command line or environment: {run.get('error')}"
        unknown = {k for k in env if k.startswith("LOCUST_")} - known
        assert not unknown, f"{name}: neither Locust nor the locustfile reads {sorted(unknown)}"
    master, worker = (run["options"] for run in runs)
    assert master["master"] and master["autostart"] and not master["headless"] and worker["worker"]
    assert master["wattserve_model"] and master["wattserve_samples"] > 0
    # the locustfile needs stages or a run time to plan the load (loadtest/locust_options.py)
    assert master["wattserve_stages"] or master.get("run_time")
    # results on the writable home emptyDir
    assert master["wattserve_results"].startswith(env_of(container(deployments[0]))["HOME"] + "/")
