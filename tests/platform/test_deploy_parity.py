"""docker-compose.yml and deploy/k8s/ at parity with `up`: the web page and the gRPC API published,
a local media folder, persistent clips, resource requests and limits (NATS's memory store inside
its limit), an order `kubectl apply -f deploy/k8s/` accepts on a fresh cluster, images pinned to
the project's version, and NATS with users: the deployed nats.conf, run by the real nats-server
with passwords in its environment, refuses strangers and forged events.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tomllib
from pathlib import Path

import nats
import pytest
import yaml

from streamsight import natsauth, subjects
from streamsight.bus import STREAMS, Bus
from streamsight.config import SECTIONS
from streamsight.natsd import free_port, server_binary

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
USERS = ["admin", "reader", *SECTIONS]
MEDIA_MAX_BYTES = next(s.max_bytes for s in STREAMS if s.name == subjects.MEDIA_STREAM)
DATA_DIR = "/data"  # the image's STREAMSIGHT_DATA_DIR (test_deploy checks the Dockerfile)
GiB = 1024**3


def _bytes(text: str) -> int:
    """Kubernetes (Mi, Gi) or Compose (m, g) memory quantities."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|k|m|g|KB|MB|GB)?", str(text).strip())
    assert m, text
    scale = {None: 1, "Ki": 1024, "k": 1024, "KB": 1024, "Mi": 1024**2, "m": 1024**2, "MB": 1024**2, "Gi": GiB, "g": GiB, "GB": GiB}
    return int(float(m.group(1)) * scale[m.group(2)])


def _memory_store(conf: str) -> int:
    return int(re.search(r"max_memory_store:\s*(\d+)", conf).group(1))


def _authorization(conf: str) -> str:
    """The `authorization { ... }` block of a nats.conf, dedented (it is indented inside a ConfigMap)."""
    lines = conf[conf.rindex("\n", 0, conf.index("authorization {")) + 1 :].splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    end = next(i for i, line in enumerate(lines) if line == " " * indent + "}")
    return "\n".join(line[indent:] for line in lines[: end + 1])


def _pinned(image: str) -> bool:
    name, _, tag = image.partition(":")
    return bool(tag) and tag != "latest" and bool(re.match(r"\d+\.\d+\.\d+", tag))


# Compose ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_compose_publishes_the_web_page_and_the_grpc_api(compose):
    gateway = compose["services"]["gateway"]
    assert {"50051:50051", "8080:8080"} <= set(gateway["ports"])
    assert _env(gateway)["STREAMSIGHT_GATEWAY_HTTP_PORT"] == "8080"
    published = {s: svc.get("ports", []) for s, svc in compose["services"].items() if svc.get("ports")}
    assert all(p.startswith("127.0.0.1:") for p in published["nats"]), "NATS only on this host"
    assert set(published) == {"gateway", "nats"}


def test_compose_has_a_media_folder_and_local_sources_only_from_it(compose):
    services = compose["services"]
    for name in ("gateway", "ingest", "chat"):
        mounts = [v.split("#")[0].strip() for v in services[name]["volumes"]]
        assert "./media:/media:ro" in mounts, name
    gateway = _env(services["gateway"])
    assert gateway["STREAMSIGHT_GATEWAY_ALLOW_LOCAL_FILES"] == "true"
    assert yaml.safe_load(gateway["STREAMSIGHT_GATEWAY_LOCAL_ROOTS"]) == ["/media"]
    assert not any("/chat" in v for s in services.values() for v in s.get("volumes", [])), "no second folder the gateway refuses"


def test_compose_keeps_clips_on_a_named_volume(compose):
    mounts = [v.split("#")[0].strip() for v in compose["services"]["ingest"]["volumes"]]
    data = [m for m in mounts if m.split(":")[1] == DATA_DIR]
    assert data and data[0].split(":")[0] in compose["volumes"], "ingest's data_dir (clips) on a named volume"


def test_compose_sets_limits_and_sizes_the_nats_memory_store_to_its_limit(compose):
    for name, svc in compose["services"].items():
        assert "mem_limit" in svc and "mem_reservation" in svc and "cpus" in svc, name
        assert _bytes(svc["mem_reservation"]) <= _bytes(svc["mem_limit"]), name
    store = _memory_store((REPO / "deploy" / "nats" / "nats.conf").read_text())
    limit = _bytes(compose["services"]["nats"]["mem_limit"])
    assert MEDIA_MAX_BYTES <= store <= 0.75 * limit, (store, limit)
    assert _bytes(compose["services"]["nats"]["environment"]["GOMEMLIMIT"].replace("MiB", "Mi")) < limit


def test_compose_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert _pinned(image), (name, image)
        if name != "nats":
            assert image == f"streamsight:{VERSION}", name


def test_compose_gives_every_service_its_own_nats_login_and_the_token(compose):
    services = compose["services"]
    for name in SECTIONS:
        env = _env(services[name])
        url = env["STREAMSIGHT_NATS_URL"]
        assert re.fullmatch(rf"nats://{name}:\$\{{{natsauth.password_variable(name)}:\?[^}}]+\}}@nats:4222", url), (name, url)
        assert env["STREAMSIGHT_AUTH_TOKEN"].startswith("${STREAMSIGHT_AUTH_TOKEN:?"), "a token is required, no default"
    nats_env = services["nats"]["environment"]
    assert {natsauth.password_variable(u) for u in USERS} <= set(nats_env)
    conf = (REPO / "deploy" / "nats" / "nats.conf").read_text()
    assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in services["nats"]["volumes"]
    assert _authorization(conf) == natsauth.deployed_authorization(USERS)


# Kubernetes -------------------------------------------------------------------------------------

K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def k8s() -> list[tuple[str, dict]]:
    """(file, document) in the order `kubectl apply -f deploy/k8s/` reads them (file names sorted)."""
    return [(f.name, d) for f in sorted(K8S.iterdir()) if f.suffix in (".yaml", ".yml", ".json") for d in yaml.safe_load_all(f.read_text()) if d]


def _kind(docs, kind: str, name: str) -> dict:
    return next(d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _containers(docs):
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def test_k8s_namespace_comes_first_and_everything_lives_in_it(k8s):
    assert k8s[0][1]["kind"] == "Namespace" and k8s[0][1]["metadata"]["name"] == "streamsight"
    for file, doc in k8s[1:]:
        assert doc["kind"] != "Namespace", file
        assert doc["metadata"].get("namespace") == "streamsight", (file, doc["kind"], doc["metadata"]["name"])
    assert not (K8S / "kustomization.yaml").exists(), "kubectl apply -f would read it as a resource"


def test_k8s_publishes_the_web_page_and_the_grpc_api(k8s):
    service = _kind(k8s, "Service", "gateway")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} >= {("grpc", 50051), ("http", 8080)}
    container = _kind(k8s, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} >= {50051, 8080}
    assert {"name": "STREAMSIGHT_GATEWAY_HTTP_PORT", "value": "8080"} in container["env"]


def test_k8s_has_a_media_volume_and_persistent_clips(k8s):
    claims = {d["metadata"]["name"] for _, d in k8s if d["kind"] == "PersistentVolumeClaim"}
    assert {"media", "ingest-data"} <= claims
    for name in ("gateway", "ingest", "chat"):
        spec = _kind(k8s, "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["/media"]["readOnly"] is True and volumes[mounts["/media"]["name"]]["persistentVolumeClaim"]["claimName"] == "media", name
    ingest = _kind(k8s, "Deployment", "ingest")["spec"]["template"]["spec"]
    data = next(m for m in ingest["containers"][0]["volumeMounts"] if m["mountPath"] == DATA_DIR)
    assert next(v for v in ingest["volumes"] if v["name"] == data["name"])["persistentVolumeClaim"]["claimName"] == "ingest-data"
    assert not [v for _, d in k8s if d["kind"] == "Deployment" for v in d["spec"]["template"]["spec"].get("volumes", []) if "emptyDir" in v]
    shared = _kind(k8s, "ConfigMap", "streamsight-env")["data"]
    assert shared["STREAMSIGHT_GATEWAY_ALLOW_LOCAL_FILES"] == "true" and yaml.safe_load(shared["STREAMSIGHT_GATEWAY_LOCAL_ROOTS"]) == ["/media"]


def test_k8s_requests_and_limits_everywhere_and_nats_memory_store_inside_its_limit(k8s):
    for doc, container in _containers(k8s):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), (container["name"], kind)
        assert _bytes(resources["requests"]["memory"]) <= _bytes(resources["limits"]["memory"]), container["name"]
    conf = _kind(k8s, "ConfigMap", "nats-config")["data"]["nats.conf"]
    nats = next(c for _, c in _containers(k8s) if c["name"] == "nats")
    limit = _bytes(nats["resources"]["limits"]["memory"])
    assert MEDIA_MAX_BYTES <= _memory_store(conf) <= 0.75 * limit
    assert _memory_store(conf) == _memory_store((REPO / "deploy" / "nats" / "nats.conf").read_text()), "compose and k8s alike"


def test_k8s_images_are_pinned(k8s):
    for _, container in _containers(k8s):
        assert _pinned(container["image"].split()[0]), container["image"]
        if container["name"] != "nats":
            assert container["image"] == f"streamsight:{VERSION}", container["name"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert next(c["image"] for _, c in _containers(k8s) if c["name"] == "nats") == compose["services"]["nats"]["image"]


def test_k8s_nats_has_users_from_a_secret_and_each_service_its_own_login(k8s):
    conf = _kind(k8s, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert _authorization(conf) == natsauth.deployed_authorization(USERS)
    nats = next(c for _, c in _containers(k8s) if c["name"] == "nats")
    env = {e["name"]: e for e in nats["env"]}
    for user in USERS:
        assert env[natsauth.password_variable(user)]["valueFrom"]["secretKeyRef"] == {"name": "streamsight-nats", "key": user}
    assert "STREAMSIGHT_NATS_URL" not in _kind(k8s, "ConfigMap", "streamsight-env")["data"], "no shared login"
    for doc, container in _containers(k8s):
        name = doc["metadata"]["name"]
        if name == "nats":
            continue
        env = {e["name"]: e for e in container["env"]}
        names = [e["name"] for e in container["env"]]
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "streamsight-nats", "key": name}
        assert env["STREAMSIGHT_NATS_URL"]["value"] == f"nats://{name}:$(NATS_PASSWORD)@nats:4222"
        assert names.index("NATS_PASSWORD") < names.index("STREAMSIGHT_NATS_URL"), "$(VAR) needs VAR defined before"
        assert env["STREAMSIGHT_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "streamsight-auth", "key": "token"}


# The deployed nats.conf, run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed_nats(tmp_path_factory):
    """deploy/nats/nats.conf on the real nats-server (local port and folder), passwords in its environment."""
    folder = tmp_path_factory.mktemp("deployed-nats")
    port, monitor = free_port(), free_port()
    conf = (REPO / "deploy" / "nats" / "nats.conf").read_text()
    conf = conf.replace("port: 4222", f"host: 127.0.0.1\nport: {port}").replace("http: 8222", f"http: 127.0.0.1:{monitor}")
    conf = conf.replace("/data/jetstream", str(folder / "js"))
    (folder / "nats.conf").write_text(conf)
    passwords = {u: f"pw-{u}-x1" for u in USERS}
    env = {**os.environ, **{natsauth.password_variable(u): p for u, p in passwords.items()}}
    without = subprocess.run([server_binary(), "-t", "-c", str(folder / "nats.conf")], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != natsauth.password_variable("vision")})  # fmt: skip
    assert without.returncode != 0 and "NATS_VISION_PASSWORD" in without.stderr + without.stdout, "no password: no server"
    proc = subprocess.Popen([server_binary(), "-c", str(folder / "nats.conf")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"nats://127.0.0.1:{port}"

        async def ready():
            for _ in range(100):
                try:
                    nc = await nats.connect(natsauth.with_credentials(url, "admin", passwords["admin"]), connect_timeout=1, allow_reconnect=False)
                    await nc.close()
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            pytest.fail("the deployed nats.conf did not start")

        asyncio.run(ready())
        yield url, passwords
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_deployed_nats_conf_refuses_strangers_and_forged_events(deployed_nats):
    url, passwords = deployed_nats
    with pytest.raises(Exception):
        await (await nats.connect(url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0)).close()
    ingest = await Bus.connect(natsauth.with_credentials(url, "ingest", passwords["ingest"]), "ingest")
    errors: list[str] = []

    async def on_error(exc):
        errors.append(str(exc))

    vision = await nats.connect(natsauth.with_credentials(url, "vision", passwords["vision"]), error_cb=on_error, allow_reconnect=False)
    try:
        await ingest.ensure_streams()
        assert (await ingest.js.publish(subjects.media("windows", "d1"), b"w", timeout=5)).seq > 0
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
            await vision.jetstream(timeout=1).publish(subjects.event("highlight", "d1"), b"forged")
        await asyncio.sleep(0.1)
        assert any("permissions violation" in e.lower() for e in errors), errors
        assert await ingest.backlog(subjects.EVENTS_STREAM, subjects.event("highlight", "d1")) == 0
    finally:
        await vision.close()
        await ingest.close()
