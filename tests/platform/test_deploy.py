"""Container and Kubernetes files stay valid, cover every built service, and set only real settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamsight import config
from streamsight.app.supervisor import built_services

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


NATS_NODES = ["nats-1", "nats-2", "nats-3"]


def test_compose_has_a_nats_cluster_and_one_healthy_container_per_built_service():
    services = _compose()["services"]
    assert set(services) == set(NATS_NODES) | {s.name for s in built_services()}
    for node in NATS_NODES:
        assert "healthz?js-enabled-only=true" in " ".join(services[node]["healthcheck"]["test"]), node
        assert services[node]["environment"]["NATS_SERVER_NAME"] == node
    for spec in built_services():
        svc = services[spec.name]
        module = "gateway" if spec.name == "gateway" else f"services.{spec.name}"
        assert svc["command"] == ["python", "-m", module]
        assert svc["healthcheck"]["test"][:3] == ["CMD", "streamsight", "health"]
        assert {node: svc["depends_on"][node]["condition"] for node in NATS_NODES} == dict.fromkeys(NATS_NODES, "service_healthy")
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_config_accepts_the_file():
    """The Compose CLI parses and validates the file (no engine needed)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    else:
        pytest.skip("neither 'docker compose' nor 'docker-compose' is installed (apt-get install docker-compose; .ci/run does)")
    secrets = {f"NATS_{name.upper()}_PASSWORD": f"pw-{name}" for name in ("admin", "reader", *config.SECTIONS)}
    env = {**os.environ, **secrets, "STREAMSIGHT_AUTH_TOKEN": "token"}
    run = lambda env: subprocess.run([*cmd, "-f", str(REPO / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True, cwd=REPO, env=env)  # noqa: E731
    out = run(env)
    assert out.returncode == 0, out.stderr
    missing = run({k: v for k, v in env.items() if k != "NATS_VISION_PASSWORD"})
    assert missing.returncode != 0 and "NATS passwords" in missing.stderr, "no NATS password: compose refuses to start"


def test_kubernetes_manifests_parse_and_probe():
    docs = [d for f in sorted((REPO / "deploy" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Namespace", "streamsight") in kinds and ("StatefulSet", "nats") in kinds
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert "readinessProbe" in container and "livenessProbe" in container, container["name"]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {s.name for s in built_services()}


def test_dockerfile_installs_the_project_and_checks_health():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in text
    assert "HEALTHCHECK" in text and "streamsight health" in text


# Settings names: every STREAMSIGHT_* variable the deploy files set is a real setting -------------

_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")
_REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def _interpolate(value) -> str:
    """Compose's ${VAR:-default} with nothing set in the shell: the default; a required
    ${VAR:?message} (secrets from .env): a stand-in value."""
    return _REQUIRED.sub(lambda m: f"<{m.group(1)}>", _DEFAULT.sub(lambda m: m.group(2), str(value)))


def _k8s_value(entry: dict) -> str:
    """An env entry's value; one from a Secret is a stand-in."""
    if "value" in entry:
        return str(entry["value"])
    if "fieldRef" in entry["valueFrom"]:  # the pod's own name or address
        return f"<{entry['valueFrom']['fieldRef']['fieldPath']}>"
    ref = entry["valueFrom"]["secretKeyRef"]
    return f"<{ref['name']}/{ref['key']}>"


def _is_setting(name: str) -> bool:
    """A platform setting, or a field of the section the name starts with."""
    if name in config.OTHER_VARIABLES:
        return True
    rest = name.removeprefix(config.ENV_PREFIX).lower()
    if config.is_platform(rest):
        return True
    section = next((s for s in config.SECTIONS if rest.startswith(s + "_")), None)
    return bool(section) and rest[len(section) + 1 :] in config.service_fields(config.section_class(section))


def _load_with(monkeypatch, section: str, env: dict[str, str]):
    """The service's settings exactly as the container would load them, and the warnings."""
    for name in list(os.environ):
        if name.startswith("STREAMSIGHT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    warnings: list[str] = []
    settings = config.load_settings(config.section_class(section), warn=lambda cls, line: warnings.append(line))
    return settings, warnings


def test_compose_sets_only_real_settings_and_each_service_its_own_ports(monkeypatch):
    services = _compose()["services"]
    ports = set()
    for spec in built_services():
        env = {k: _interpolate(v) for k, v in services[spec.name]["environment"].items()}
        assert [n for n in env if n.startswith("STREAMSIGHT_") and not _is_setting(n)] == [], spec.name
        settings, warnings = _load_with(monkeypatch, spec.name, env)
        assert warnings == [], (spec.name, warnings)
        assert settings.grpc_port == spec.grpc_port
        assert services[spec.name]["healthcheck"]["test"][3] == f"127.0.0.1:{settings.grpc_port}"
        assert settings.metrics_port > 0
        ports.add(settings.metrics_port)
    assert len(ports) == len(built_services())
    gateway, _ = _load_with(monkeypatch, "gateway", {k: _interpolate(v) for k, v in services["gateway"]["environment"].items()})
    fusion, _ = _load_with(monkeypatch, "fusion", {k: _interpolate(v) for k, v in services["fusion"]["environment"].items()})
    assert (gateway.ingest_address, gateway.chat_address, fusion.ingest_address) == ("ingest:50061", "chat:50062", "ingest:50061")


def test_kubernetes_sets_only_real_settings_and_scrapes_the_metrics_port(monkeypatch):
    docs = [d for f in sorted((REPO / "deploy" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    shared = next(d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "streamsight-env")
    assert [n for n in shared if not _is_setting(n)] == []
    for doc in (d for d in docs if d["kind"] == "Deployment"):
        name = doc["metadata"]["name"]
        container = doc["spec"]["template"]["spec"]["containers"][0]
        env = {**{k: str(v) for k, v in shared.items()}, **{e["name"]: _k8s_value(e) for e in container.get("env", [])}}
        assert [n for n in env if n.startswith("STREAMSIGHT_") and not _is_setting(n)] == [], name
        settings, warnings = _load_with(monkeypatch, name, env)
        assert warnings == [], (name, warnings)
        assert container["readinessProbe"]["grpc"]["port"] == settings.grpc_port
        metrics = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        assert metrics == settings.metrics_port == int(doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])


def test_dockerfile_sets_platform_settings_and_checks_the_gateways_port():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    names = set(re.findall(r"STREAMSIGHT_[A-Z0-9_]+", text))
    assert names and all(_is_setting(n) for n in names), names
    assert "STREAMSIGHT_GATEWAY_GRPC_PORT:-50051" in text
