"""docker-compose.yml and deploy/k8s/ at parity with `up`: the web page and the gRPC API published,
a local media folder, persistent clips, resource requests and limits (NATS's memory store inside
its limit), an order `kubectl apply -f deploy/k8s/` accepts on a fresh cluster, images pinned to
the project's version, and NATS as a 3-node cluster with users: the deployed nats.conf, run by
three real nats-servers with passwords in their environment, makes a cluster that keeps R3
streams and refuses strangers and forged events.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import nats
import pytest
import yaml

from streamsight import natsauth, subjects
from streamsight.bus import STREAMS, Bus
from streamsight.config import SECTIONS
from streamsight.natsd import distinct_free_ports, server_binary

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
USERS = ["admin", "reader", *SECTIONS]
MEDIA_MAX_BYTES = next(s.max_bytes for s in STREAMS if s.name == subjects.MEDIA_STREAM)
DATA_DIR = "/data"  # the image's STREAMSIGHT_DATA_DIR (test_deploy checks the Dockerfile)
GiB = 1024**3
NATS_NODES = ["nats-1", "nats-2", "nats-3"]  # compose's cluster; k8s: StatefulSet nats, pods nats-0..2
K8S_NATS_NODES = ["nats-0.nats", "nats-1.nats", "nats-2.nats"]


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
    for node in NATS_NODES:
        assert published[node] and all(p.startswith("127.0.0.1:") for p in published[node]), "NATS only on this host"
    assert set(published) == {"gateway", *NATS_NODES}
    host_ports = [p.rsplit(":", 1)[0] for node in NATS_NODES for p in published[node]]
    assert len(set(host_ports)) == len(host_ports), "each node on host ports of its own"


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
    for node in NATS_NODES:
        limit = _bytes(compose["services"][node]["mem_limit"])
        assert MEDIA_MAX_BYTES <= store <= 0.75 * limit, (node, store, limit)
        assert _bytes(compose["services"][node]["environment"]["GOMEMLIMIT"].replace("MiB", "Mi")) < limit


def test_compose_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert _pinned(image), (name, image)
        if name not in NATS_NODES:
            assert image == f"streamsight:{VERSION}", name


def test_compose_gives_every_service_its_own_nats_login_and_the_token(compose):
    services = compose["services"]
    for name in SECTIONS:
        env = _env(services[name])
        first, *others = re.split(r",(?=nats://)", env["STREAMSIGHT_NATS_URL"])  # every node: losing one is a reconnect
        variable = natsauth.password_variable(name)
        assert re.fullmatch(rf"nats://{name}:\$\{{{variable}:\?[^}}]+\}}@nats-1:4222", first), (name, first)
        assert others == [f"nats://{name}:${{{variable}}}@{node}:4222" for node in NATS_NODES[1:]], (name, others)
        assert env["STREAMSIGHT_NATS_REPLICAS"] == "3"
        assert env["STREAMSIGHT_AUTH_TOKEN"].startswith("${STREAMSIGHT_AUTH_TOKEN:?"), "a token is required, no default"
    for node in NATS_NODES:
        assert {natsauth.password_variable(u) for u in USERS} <= set(services[node]["environment"]), node
        assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in services[node]["volumes"], node
    data = [next(v.split(":")[0] for v in services[node]["volumes"] if v.endswith(":/data")) for node in NATS_NODES]
    assert len(set(data)) == len(NATS_NODES) and set(data) <= set(compose["volumes"]), "a store of its own per node"
    conf = (REPO / "deploy" / "nats" / "nats.conf").read_text()
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
    assert next(c["image"] for _, c in _containers(k8s) if c["name"] == "nats") == compose["services"]["nats-1"]["image"]


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
        assert env["STREAMSIGHT_NATS_URL"]["value"] == ",".join(f"nats://{name}:$(NATS_PASSWORD)@{node}:4222" for node in K8S_NATS_NODES)
        assert names.index("NATS_PASSWORD") < names.index("STREAMSIGHT_NATS_URL"), "$(VAR) needs VAR defined before"
        assert env["STREAMSIGHT_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "streamsight-auth", "key": "token"}


# The deployed nats.conf, run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed_nats(tmp_path_factory):
    """deploy/nats/nats.conf on three real nats-servers, as compose's nats-1..3 (local ports, folders
    and routes), passwords in their environment; yields each node's URL and the passwords."""
    folder = tmp_path_factory.mktemp("deployed-nats")
    conf = (REPO / "deploy" / "nats" / "nats.conf").read_text()
    passwords = {u: f"pw-{u}-x1" for u in USERS}
    env = {**os.environ, **{natsauth.password_variable(u): p for u, p in passwords.items()}}
    picked = distinct_free_ports(3 * len(NATS_NODES))  # free_port() one at a time may give one port twice
    ports = [tuple(picked[3 * i : 3 * i + 3]) for i in range(len(NATS_NODES))]  # client, monitoring, route
    routes = [f"nats-route://{node}:6222" for node in NATS_NODES]
    assert f"routes: {json.dumps(routes)}" in conf and 'listen: "0.0.0.0:6222"' in conf, "the cluster block compose runs"
    files = []
    for node, (port, monitor, route) in zip(NATS_NODES, ports):
        text = conf.replace("port: 4222", f"host: 127.0.0.1\nport: {port}").replace("http: 8222", f"http: 127.0.0.1:{monitor}")
        text = text.replace("/data/jetstream", str(folder / node / "js")).replace('"0.0.0.0:6222"', f'"127.0.0.1:{route}"')
        text = text.replace(json.dumps(routes), json.dumps([f"nats-route://127.0.0.1:{r}" for _, _, r in ports]))
        (folder / f"{node}.conf").write_text(text)
        files.append(folder / f"{node}.conf")
    without = subprocess.run([server_binary(), "-t", "-c", str(files[0])], capture_output=True, text=True,
                             env={**{k: v for k, v in env.items() if k != natsauth.password_variable("vision")}, "NATS_SERVER_NAME": "nats-1"})  # fmt: skip
    assert without.returncode != 0 and "NATS_VISION_PASSWORD" in without.stderr + without.stdout, "no password: no server"
    procs = [
        subprocess.Popen([server_binary(), "-c", str(f)], env={**env, "NATS_SERVER_NAME": node}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for node, f in zip(NATS_NODES, files)
    ]
    try:
        urls = [f"nats://127.0.0.1:{port}" for port, _, _ in ports]

        def healthy(monitor: int) -> bool:  # JetStream up and the cluster's meta leader elected
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        deadline = time.monotonic() + 30
        while not all(healthy(m) for _, m, _ in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("the deployed nats.conf did not make a healthy 3-node cluster")
            time.sleep(0.1)
        yield urls, passwords
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def test_the_deployed_nats_conf_refuses_strangers_and_forged_events(deployed_nats):
    urls, passwords = deployed_nats
    url = urls[0]
    with pytest.raises(Exception):
        await (await nats.connect(url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0)).close()
    every_node = ",".join(natsauth.with_credentials(u, "ingest", passwords["ingest"]) for u in urls)
    ingest = await Bus.connect(every_node, "ingest", replicas=3)
    errors: list[str] = []

    async def on_error(exc):
        errors.append(str(exc))

    vision = await nats.connect(natsauth.with_credentials(url, "vision", passwords["vision"]), error_cb=on_error, allow_reconnect=False)
    try:
        await ingest.ensure_streams()
        features = await ingest.js.stream_info(subjects.FEATURES_STREAM)
        assert features.config.num_replicas == 3 and len(features.cluster.replicas) == 2, "FEATURES on all three nodes"
        assert (await ingest.publish(subjects.media("windows", "d1"), b"w")).seq > 0  # as ingest does: MEDIA may still be electing
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
            await vision.jetstream(timeout=1).publish(subjects.event("highlight", "d1"), b"forged")
        await asyncio.sleep(0.1)
        assert any("permissions violation" in e.lower() for e in errors), errors
        assert await ingest.backlog(subjects.EVENTS_STREAM, subjects.event("highlight", "d1")) == 0
    finally:
        await vision.close()
        await ingest.close()


def test_k8s_nats_is_a_3_node_cluster_and_the_stages_run_replicas(k8s, compose, tmp_path):
    statefulset = _kind(k8s, "StatefulSet", "nats")
    nodes = statefulset["spec"]["replicas"]
    assert nodes == 3 and statefulset["spec"]["serviceName"] == "nats"
    service = _kind(k8s, "Service", "nats")
    assert service["spec"]["clusterIP"] == "None", "headless: each pod has its own name for routes and clients"
    assert {p["port"] for p in service["spec"]["ports"]} >= {4222, 6222}
    conf = _kind(k8s, "ConfigMap", "nats-config")["data"]["nats.conf"]
    routes = json.loads(re.search(r"routes: (\[.*\])", conf).group(1))
    assert routes == [f"nats-route://{node}:6222" for node in K8S_NATS_NODES[:nodes]]
    nats_env = {e["name"]: e for e in next(c for _, c in _containers(k8s) if c["name"] == "nats")["env"]}
    assert "server_name: $POD_NAME" in conf and nats_env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # nats-server itself reads the ConfigMap's file (-t: check, do not run)
    (tmp_path / "nats.conf").write_text(conf)
    env = {**os.environ, "POD_NAME": "nats-0", **{natsauth.password_variable(u): "x" for u in USERS}}
    check = subprocess.run([server_binary(), "-t", "-c", str(tmp_path / "nats.conf")], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr + check.stdout
    assert _kind(k8s, "ConfigMap", "streamsight-env")["data"]["STREAMSIGHT_NATS_REPLICAS"] == str(nodes)
    for name in ("vision", "audio", "glitch", "fusion", "chat"):
        spec = _kind(k8s, "Deployment", name)["spec"]
        assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate", name
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert compose["services"][name]["deploy"]["replicas"] >= 2, name
