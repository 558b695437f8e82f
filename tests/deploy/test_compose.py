"""deploy/compose.yaml, checked structurally: there is no compose engine here.

The file is read with PyYAML (which resolves the `<<` merge keys as Compose does) and its `${VAR:-default}`
variables are interpolated like Compose does, from a given environment (empty: the defaults), before checking.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.registry import load_registry
from tests.deploy.locust_cli import LOCUSTFILE_IN_IMAGE, arg_after, parse_locust

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CPU_IMAGE = "wattserve:0.1.0"
SERVERS = ("wattserve", "wattserve-gpu")
LOCUSTS = ("locust-master", "locust-worker")
_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: Mapping[str, str]):
    """Compose's interpolation: ${VAR}, $VAR, ${VAR:-default} (unset or empty), ${VAR-default} (unset), $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if m.group(2) == ":-":
            return env.get(name) or m.group(3)
        if m.group(2) == "-":
            return env[name] if name in env else m.group(3)
        assert name in env, f"${{{name}}} has no default: Compose would warn and use an empty string"
        return env[name]

    assert not re.search(r"\$\{[^}]*:?[?+]", value), f"unsupported interpolation in {value!r}"
    return _VARIABLE.sub(one, value)


def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def resolved(env: Mapping[str, str] | None = None) -> dict:
    return interpolate(raw(), env or {})


def active(compose: dict, *profiles: str) -> dict[str, dict]:
    """The services `docker compose --profile P ... up` starts: those without profiles, and those of P."""
    return {name: s for name, s in compose["services"].items()
            if not s.get("profiles") or set(s["profiles"]) & set(profiles)}


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else cmd


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/", "~")):
                out.append((source, target))
        elif volume.get("type") == "bind":
            out.append((volume["source"], volume["target"]))
    return out


def host_path(source: str) -> Path:
    return (DEPLOY / source).resolve()  # relative paths are relative to the compose file's folder


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of every published port."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
        else:
            parts = str(port).rsplit(":", 2)
            out.append(tuple([""] * (3 - len(parts)) + parts))
    return out


def devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


MISSPELT = ["-f", LOCUSTFILE_IN_IMAGE, "--worker", "--wattserve-smaples", "10"]


@functools.cache
def _compose_locust_runs() -> tuple[list[dict], set[str]]:
    """The master's, the worker's and the MISSPELT command line, parsed in one child process (~2 s)."""
    services = resolved()["services"]
    cases = [(command(services[n])[1:], {k: str(v) for k, v in services[n]["environment"].items() if v is not None})
             for n in LOCUSTS]
    return parse_locust([*cases, (MISSPELT, {})])


# --- the file ---------------------------------------------------------------------------------------------------


def test_compose_file_parses_and_every_variable_has_a_default():
    compose = resolved()  # interpolate() fails on a variable without a default
    assert compose["name"] == "wattserve"
    assert set(compose["services"]) == {*SERVERS, "prometheus", "grafana", *LOCUSTS}
    for name, service in compose["services"].items():
        assert "image" in service, name
        assert "<<" not in service, f"{name}: unresolved merge key"


def test_interpolation_follows_compose_rules():
    assert interpolate("${A:-x}/${A-y}/$$B/${C}", {"A": "", "C": "c"}) == "x//$B/c"
    with pytest.raises(AssertionError, match="no default"):
        interpolate("${UNSET}", {})


def test_named_volumes_are_declared_and_dependencies_exist():
    compose = resolved()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if isinstance(volume, str) and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"
        deps = service.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps:
            assert dep in compose["services"], f"{name} depends on unknown {dep}"
            # a dependency in a profile the dependent does not share would not be started with it
            dep_profiles = set(compose["services"][dep].get("profiles", []))
            assert dep_profiles <= set(service.get("profiles", [])), f"{name} depends on {dep} of {dep_profiles}"


# --- the server -------------------------------------------------------------------------------------------------


def test_servers_are_built_from_the_repository_dockerfile():
    compose = resolved()
    dockerfile = (ROOT / "Dockerfile").read_text()
    declared_args = set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile, re.M))
    assert compose["services"]["wattserve"]["image"] == CPU_IMAGE
    for name, service in compose["services"].items():
        if not service["image"].startswith("wattserve:"):
            continue
        build = service["build"]
        assert host_path(build["context"]) == ROOT, name
        assert (ROOT / build.get("dockerfile", "Dockerfile")).is_file(), name
        assert set(build.get("args", {})) <= declared_args, f"{name}: build args the Dockerfile does not declare"
        if service["image"] == CPU_IMAGE:
            # whichever service builds the shared tag, it is the same image
            assert "args" not in build, f"{name} builds {CPU_IMAGE} with other arguments"


def test_default_stack_is_cpu_only_and_gpu_reservations_only_in_the_gpu_profile():
    compose = resolved()
    assert set(active(compose)) == {"wattserve", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        if devices(service):
            assert service.get("profiles") == ["gpu"], f"{name} reserves GPUs outside the gpu profile"
    assert not any(devices(s) for s in active(compose, "campaign").values())
    gpu = compose["services"]["wattserve-gpu"]
    [device] = devices(gpu)
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", gpu["build"]["args"]["TORCH_INDEX"])
    # a GPU build must not overwrite the CPU image's tag
    assert gpu["image"] != CPU_IMAGE and gpu["image"].startswith("wattserve:")


def test_published_ports_bind_to_loopback_by_default_and_do_not_collide():
    compose = resolved()
    seen: dict[str, str] = {}
    for name, service in compose["services"].items():
        for ip, host_port, _ in published(service):
            assert ip == "127.0.0.1", f"{name} publishes {host_port} on {ip or 'every interface'}"
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name
    assert {ip for s in resolved({"BIND_ADDRESS": "0.0.0.0"})["services"].values() for ip, _, _ in published(s)} \
        == {"0.0.0.0"}, "BIND_ADDRESS is the one switch for every published port"


@pytest.mark.parametrize("name", SERVERS)
def test_server_healthcheck_probes_readiness_on_the_served_port(name):
    service = resolved()["services"][name]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8000/readyz" in " ".join(test)
    assert [c for _, _, c in published(service)] == ["8000"]
    assert "--port 8000" in (ROOT / "Dockerfile").read_text().replace('", "', " ")
    start = re.fullmatch(r"(\d+)s", service["healthcheck"]["start_period"])
    assert start and int(start.group(1)) >= 120, "model loading takes a while: give the server a start period"


@pytest.mark.parametrize("registry_file", ["embedded.yaml", "power-hungry.yaml"])
@pytest.mark.parametrize("name", SERVERS)
def test_registry_volume_holds_a_registry_wattserve_accepts(name, registry_file):
    service = resolved({"WATTSERVE_REGISTRY_FILE": registry_file})["services"][name]
    inside = Path(service["environment"]["WATTSERVE_REGISTRY"])
    [(source, _)] = [(s, t) for s, t in bind_mounts(service) if Path(t) == inside.parent]
    registry = host_path(source) / inside.name
    assert registry.is_file(), f"{name}: WATTSERVE_REGISTRY {inside} is {registry} on the host, which is missing"
    assert load_registry(registry).models
    # a custom folder replaces the default
    custom = resolved({"WATTSERVE_REGISTRY_DIR": "/srv/models"})["services"][name]
    assert ("/srv/models", str(inside.parent)) in bind_mounts(custom)


@pytest.mark.parametrize("name", [*SERVERS, *LOCUSTS])
def test_wattserve_image_containers_are_locked_down_with_writable_tmp_and_home(name):
    service = resolved()["services"][name]
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "user" not in service and "privileged" not in service, "the image's non-root user (10001) runs it"
    writable = [t for v in service.get("volumes", []) if isinstance(v, str) and not v.startswith(".")
                for t in [v.split(":")[1]]]
    writable += service["tmpfs"]
    env = service.get("environment", {})
    # HOME (the image's user's home unless set): caches of torch, matplotlib, Hugging Face. Locust runs the
    # campaign from its working directory: relative result paths must be writable
    home = env.get("HOME", "/home/wattserve")
    for path in [home, env.get("HF_HOME"), env.get("WATTSERVE_DEMO_DIR"), service.get("working_dir")]:
        if path is not None:
            assert any(path == t or path.startswith(t + "/") for t in writable), \
                f"{name}: {path} is on the read-only root filesystem"
    if name in LOCUSTS:
        assert "working_dir" in service, "the image's working directory, /app, is read-only"
    if name in LOCUSTS[:1]:
        assert any(t == "/home/wattserve" for t in writable), "the master writes its results under its home"


def test_only_settings_wattserve_knows_are_passed():
    from service.settings import Settings

    for name in SERVERS:
        env = resolved()["services"][name]["environment"]
        ours = {k for k in env if k.startswith("WATTSERVE_")} - {"WATTSERVE_DEMO_DIR"}
        unknown = {k for k in ours if k.removeprefix("WATTSERVE_").lower() not in Settings.model_fields}
        assert not unknown, f"{name}: {sorted(unknown)} are not wattserve settings"


# --- observability: the mounted folders come from deploy/prometheus/ and grafana/ -------------------------------


@pytest.mark.parametrize("name", ["wattserve", "wattserve-gpu", "prometheus", "grafana", *LOCUSTS])
def test_every_bind_mounted_host_path_exists(name):
    service = resolved()["services"][name]
    missing = [source for source, _ in bind_mounts(service) if not host_path(source).exists()]
    assert not missing, f"{name} mounts {missing} (relative to deploy/), missing from the repository"


def test_prometheus_and_grafana_get_their_configuration():
    compose = resolved()
    prometheus = dict((t, host_path(s)) for s, t in bind_mounts(compose["services"]["prometheus"]))
    config = arg_after([a for c in command(compose["services"]["prometheus"]) for a in c.split("=", 1)],
                       "--config.file")
    host_config = prometheus[str(Path(config).parent)] / Path(config).name
    assert host_config.is_file(), f"{host_config} missing"
    assert (host_config.parent / "rules").is_dir(), "deploy/prometheus/rules/ missing"
    grafana = dict((t, host_path(s)) for s, t in bind_mounts(compose["services"]["grafana"]))
    provisioning = grafana["/etc/grafana/provisioning"]
    assert (provisioning / "datasources").is_dir() and (provisioning / "dashboards").is_dir()
    assert list(grafana["/var/lib/grafana/dashboards"].glob("*.json")), "no dashboard JSON in grafana/dashboards/"
    # the dashboards provider must read the folder the dashboards are mounted at
    providers = " ".join(p.read_text() for p in (provisioning / "dashboards").glob("*.y*ml"))
    assert "/var/lib/grafana/dashboards" in providers


# --- campaigns --------------------------------------------------------------------------------------------------


def test_locust_runs_only_in_the_campaign_profile_from_the_wattserve_image():
    compose = resolved()
    assert not set(LOCUSTS) & set(active(compose)) and not set(LOCUSTS) & set(active(compose, "gpu"))
    assert set(LOCUSTS) <= set(active(compose, "campaign"))
    for name in LOCUSTS:
        service = compose["services"][name]
        assert service["profiles"] == ["campaign"]
        assert service["image"] == CPU_IMAGE
        cmd = command(service)
        assert cmd[0] == "locust" and arg_after(cmd, "-f") == LOCUSTFILE_IN_IMAGE


@pytest.mark.parametrize("workers", [None, "5"])
def test_master_waits_for_exactly_the_workers_compose_starts(workers):
    compose = resolved({"LOCUST_WORKERS": workers} if workers else {})
    master, worker = compose["services"]["locust-master"], compose["services"]["locust-worker"]
    assert {"--master", "--headless"} <= set(command(master))
    assert "--worker" in command(worker)
    replicas = int(worker["deploy"]["replicas"])
    assert replicas == int(workers or 2)
    assert int(arg_after(command(master), "--expect-workers")) == replicas
    assert arg_after(command(worker), "--master-host") == "locust-master" in compose["services"]
    assert master["depends_on"]["wattserve"]["condition"] == "service_healthy"


def test_campaign_targets_a_wattserve_service_and_a_model_it_serves():
    compose = resolved()
    for name in LOCUSTS:
        env = compose["services"][name]["environment"]
        target = urlsplit(env["LOCUST_HOST"])
        assert (target.scheme, target.hostname, target.port) == ("http", "wattserve", 8000)
        assert {"LOCUST_WATTSERVE_MODEL", "LOCUST_WATTSERVE_DATASET", "LOCUST_WATTSERVE_SAMPLES"} <= set(env)
        assert env["LOCUST_WATTSERVE_DATASET"].startswith("bundled:"), "the default campaign needs no Hub access"
        server = compose["services"]["wattserve"]
        registry = host_path(bind_mounts(server)[0][0]) / Path(server["environment"]["WATTSERVE_REGISTRY"]).name
        assert env["LOCUST_WATTSERVE_MODEL"] in {m.name for m in load_registry(registry).models}
    gpu_target = resolved({"LOCUST_HOST": "http://wattserve-gpu:8000"})["services"]["locust-master"]["environment"]
    assert urlsplit(gpu_target["LOCUST_HOST"]).hostname in compose["services"]


def test_the_image_contains_the_locustfile_the_campaign_runs():
    assert (ROOT / "loadtest" / "locustfile.py").is_file(), "loadtest/locustfile.py is missing"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR\s+/app\s*$", dockerfile, re.M)
    assert re.search(r"^COPY\s+(--\S+\s+)*loadtest/?\s+(\./|/app/)?loadtest/?\s*$", dockerfile, re.M), \
        "the Dockerfile must COPY loadtest/ to /app/loadtest (the Locust services run /app/loadtest/locustfile.py)"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"loadtest", "loadtest/", "loadtest/locustfile.py"} & set(ignored)


def test_locust_accepts_each_campaign_container_command_and_environment():
    services = resolved()["services"]
    runs, known = _compose_locust_runs()
    runs = runs[:len(LOCUSTS)]
    for name, run in zip(LOCUSTS, runs, strict=True):
        assert "error" not in run, f"{name}: locust refuses its command line or environment: {run.get('error')}"
        unknown = {k for k in services[name]["environment"] if k.startswith("LOCUST_")} - known
        assert not unknown, f"{name}: neither Locust nor the locustfile reads {sorted(unknown)}"
    master, worker = (run["options"] for run in runs)
    assert master["master"] and master["headless"] and worker["worker"]
    assert master["wattserve_model"] and master["wattserve_samples"] > 0
    # the locustfile needs stages or a run time to plan the load (loadtest/locust_options.py)
    assert master["wattserve_stages"] or master.get("run_time")
    assert (worker["master_host"], worker["master_port"]) == ("locust-master", 5557)


def test_a_misspelt_locust_option_is_refused():
    runs, known = _compose_locust_runs()
    assert "unrecognized arguments: --wattserve-smaples" in runs[-1]["error"]
    assert "LOCUST_WATTSERVE_SAMPLES" in known and "LOCUST_WATTSERVE_SAMPLE" not in known
