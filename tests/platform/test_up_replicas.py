"""`streamsight up --replicas`: N processes of a service, each with its replica id and ports, restarted on its own.

Run as a user runs it (the CLI in a subprocess, chat and the gateway only, to stay cheap: chat
starts in about a second and needs no partitions bucket). The test is about the processes (ids,
ports, independent restarts, status), not how the replicas share the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from streamsight.app.supervisor import METRICS_STEP, Supervisor, built_services, parse_replicas
from streamsight.config import SECTIONS, ConfigError
from streamsight.natsd import free_port

from ..conftest import free_port_block


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split()[2] != "Z"


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def _wait(predicate, timeout_s: float, what: str, proc, log):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"up exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _state(path):
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _serving(address: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "streamsight.app.cli", "health", address, "--timeout", "2"], capture_output=True, text=True)
    return out.returncode == 0


def test_bad_replicas_and_nats_copies_up_cannot_keep_are_refused_with_the_reason(tmp_path, monkeypatch):
    for arg, reason in (("gateway=2", "one gateway"), ("nope=2", "no such service"), ("glitch=0", "1 to 16"), ("glitch", "SERVICE=COUNT"),
                        ("glitch=2,glitch=3", "given twice")):  # fmt: skip
        with pytest.raises(ConfigError, match=reason):
            Supervisor(tmp_path, free_ports=True, only=["glitch", "gateway"], nats_auth=False, replicas=parse_replicas(arg))
    with pytest.raises(ConfigError, match="not started by this"):
        Supervisor(tmp_path, free_ports=True, only=["gateway"], nats_auth=False, replicas={"vision": 2})
    monkeypatch.setenv("STREAMSIGHT_GLITCH_REPLICAS", "two")
    with pytest.raises(ConfigError, match="STREAMSIGHT_GLITCH_REPLICAS"):
        Supervisor(tmp_path, free_ports=True, only=["glitch"], nats_auth=False)
    monkeypatch.delenv("STREAMSIGHT_GLITCH_REPLICAS")
    monkeypatch.setenv("STREAMSIGHT_NATS_REPLICAS", "3")
    with pytest.raises(ConfigError, match="more copies than `up`'s 1 nats-server"):
        Supervisor(tmp_path, free_ports=True, only=["gateway"], nats_auth=False)
    Supervisor(tmp_path, free_ports=True, only=["gateway"], nats_auth=False, nats_nodes=3)  # three nodes keep three copies
    with pytest.raises(ConfigError, match="1 to 5 nats-servers"):
        Supervisor(tmp_path, free_ports=True, only=["gateway"], nats_auth=False, nats_nodes=6)
    monkeypatch.delenv("STREAMSIGHT_NATS_REPLICAS")
    # What a user sees: exit 2 and the reason, before anything starts.
    out = subprocess.run(
        [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path), "--nats-port", str(free_port()), "--replicas", "gateway=2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "one gateway" in out.stderr, out.stderr
    assert not (tmp_path / "up.json").exists(), "nothing was started"


def test_a_services_own_grpc_port_setting_is_its_port_under_up_and_the_others_are_told_it(tmp_path, monkeypatch):
    # `up` gave chat its default 50062 whatever STREAMSIGHT_CHAT_GRPC_PORT said (and told the child so),
    # so a second stack on the host failed to bind it however the user set the port
    monkeypatch.setenv("STREAMSIGHT_CHAT_GRPC_PORT", "41234")
    monkeypatch.setenv("STREAMSIGHT_GRPC_PORT", "41000")  # the old flat name would put every service on one port: ignored
    sup = Supervisor(tmp_path, only=["chat", "gateway"], nats_auth=False, replicas={"chat": 2})
    chat = [sup.replica_environment(SECTIONS["chat"], n) for n in (1, 2)]
    assert chat[0]["STREAMSIGHT_CHAT_GRPC_PORT"] == "41234" and chat[1]["STREAMSIGHT_CHAT_GRPC_PORT"] not in ("41234", "50062")
    assert sup.replica_environment(SECTIONS["gateway"], 1)["STREAMSIGHT_GATEWAY_CHAT_ADDRESS"] == "127.0.0.1:41234"
    assert sup.ports == {"chat": 41234}  # the others keep their defaults
    monkeypatch.setenv("STREAMSIGHT_CHAT_GRPC_PORT", "not-a-port")  # left for chat to refuse with its configuration error
    assert Supervisor(tmp_path, only=["chat", "gateway"], nats_auth=False).ports == {}


def test_each_replica_gets_its_id_ports_and_ingest_its_advertised_address(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_METRICS_BASE_PORT", "9100")
    sup = Supervisor(tmp_path, free_ports=True, only=["ingest", "glitch", "gateway"], nats_auth=False, replicas={"ingest": 2, "glitch": 3})
    assert sup.replicas == {"ingest": 2, "glitch": 3, "gateway": 1}
    glitch = [sup.replica_environment(SECTIONS["glitch"], n) for n in (1, 2, 3)]
    assert [e["STREAMSIGHT_REPLICA_ID"] for e in glitch] == ["glitch-1", "glitch-2", "glitch-3"]
    ports = [int(e["STREAMSIGHT_GLITCH_GRPC_PORT"]) for e in glitch]
    assert ports[0] == sup.ports["glitch"] and len(set(ports)) == 3 and not set(ports[1:]) & set(sup.ports.values())
    assert [e.get("STREAMSIGHT_GLITCH_METRICS_PORT") for e in glitch] == [None, "9115", "9125"]  # the first: base + offset 5
    ingest = [sup.replica_environment(SECTIONS["ingest"], n) for n in (1, 2)]
    assert [e["STREAMSIGHT_INGEST_ADVERTISE_ADDRESS"] for e in ingest] == [f"127.0.0.1:{e['STREAMSIGHT_INGEST_GRPC_PORT']}" for e in ingest]
    assert len({e["STREAMSIGHT_INGEST_GRPC_PORT"] for e in ingest}) == 2
    # the others still find the first ingest (the gateway places streams by the replicas' KV records)
    assert all(e["STREAMSIGHT_GATEWAY_INGEST_ADDRESS"] == f"127.0.0.1:{sup.ports['ingest']}" for e in glitch + ingest)


@pytest.mark.slow
def test_up_runs_two_replicas_each_with_its_id_and_ports_and_restarts_one_alone_on_a_nats_cluster(tmp_path):
    """`up --nats-nodes 3 --replicas chat=2`: each replica's id and ports; chat-2 killed is restarted
    alone; nats-1 killed is restarted by `up` while the services only reconnect."""
    if "chat" not in {s.name for s in built_services()}:
        pytest.skip("chat is not built here")
    base = free_port_block(METRICS_STEP + len(SECTIONS))  # replica 2's metrics port is the first's + 10
    chat_port = free_port()  # not chat's default: another stack on this host may hold it
    log = tmp_path / "up.log"
    state_file = tmp_path / "var" / "up.json"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path / "var"), "--nats-port", str(free_port()),
             "--gateway-port", str(free_port()), "--only", "chat,gateway", "--replicas", "chat=2", "--nats-nodes", "3"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "STREAMSIGHT_GATEWAY_HTTP_PORT": "0", "STREAMSIGHT_METRICS_BASE_PORT": str(base),
                 "STREAMSIGHT_CHAT_GRPC_PORT": str(chat_port)},
        )  # fmt: skip
    try:
        _wait(lambda: "all services SERVING" in log.read_text(), 180, "every replica SERVING", proc, log)
        replicas = _state(state_file)["services"]["chat"]["replicas"]
        assert [r["id"] for r in replicas] == ["chat-1", "chat-2"] and replicas[0]["port"] == chat_port  # the user's port
        assert len({r["pid"] for r in replicas}) == 2 and len({r["port"] for r in replicas}) == 2
        offset = SECTIONS["chat"].metrics_offset
        assert [r["metrics_port"] for r in replicas] == [base + offset, base + offset + METRICS_STEP]
        for r in replicas:
            env = _environ(r["pid"])
            assert env["STREAMSIGHT_REPLICA_ID"] == r["id"]
            assert env["STREAMSIGHT_CHAT_GRPC_PORT"] == str(r["port"])
            assert _serving(f"127.0.0.1:{r['port']}"), r
            with urllib.request.urlopen(f"http://127.0.0.1:{r['metrics_port']}/metrics", timeout=5) as resp:
                assert resp.status == 200 and b"# TYPE" in resp.read(), r
        text = log.read_text()
        assert "services: chat x2, gateway" in text
        assert all(any(line.startswith(f"{name:<8}| ") for line in text.splitlines()) for name in ("chat-1", "chat-2")), "each replica's own log prefix"
        assert "up      | chat-2" in text and f"gRPC 127.0.0.1:{replicas[1]['port']}" in text, "the status lists each replica"

        os.kill(replicas[1]["pid"], signal.SIGKILL)
        after = _wait(
            # the restart count and the new pid are written apart: wait for both
            lambda: (s := _state(state_file)) and s["services"]["chat"]["replicas"][1]["restarts"] == 1
            and s["services"]["chat"]["replicas"][1]["pid"] != replicas[1]["pid"] and s, 30, "chat-2 restarted", proc, log
        )["services"]["chat"]["replicas"]
        assert after[0]["pid"] == replicas[0]["pid"] and after[0]["restarts"] == 0, "chat-1 went on untouched"
        assert after[1]["pid"] != replicas[1]["pid"] and _environ(after[1]["pid"])["STREAMSIGHT_REPLICA_ID"] == "chat-2"
        _wait(lambda: _serving(f"127.0.0.1:{after[1]['port']}"), 120, "chat-2 SERVING again on its port", proc, log)

        state = _state(state_file)
        nodes = state["nats"]["nodes"]
        assert [n["name"] for n in nodes] == ["nats-1", "nats-2", "nats-3"] and all(_alive(n["pid"]) for n in nodes)
        assert state["nats_url"] == ",".join(n["address"] for n in nodes)
        env = _environ(after[0]["pid"])
        assert [u.rsplit("@", 1)[-1] for u in env["STREAMSIGHT_NATS_URL"].split(",")] == [n["address"].removeprefix("nats://") for n in nodes]
        assert env["STREAMSIGHT_NATS_REPLICAS"] == "3", "a copy on each node unless the user says otherwise"
        os.kill(nodes[0]["pid"], signal.SIGKILL)  # a NATS node lost: up restarts it; the services reconnect
        _wait(lambda: "nats-1  | nats-server back at" in log.read_text(), 60, "nats-1 restarted by up", proc, log)
        _wait(lambda: _serving(state["gateway"]), 60, "the gateway SERVING after the node loss", proc, log)
        final = _state(state_file)
        assert final["nats"]["restarts"] == 1 and final["nats"]["nodes"][0]["pid"] != nodes[0]["pid"]
        assert final["services"]["chat"]["replicas"][0]["restarts"] == 0 and final["services"]["gateway"]["restarts"] == 0, "a node loss is a reconnect, not a crash"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not [r for r in after if _alive(r["pid"])], "a replica outlived up"
    finally:
        if proc.poll() is None:  # a failure: up's children run in sessions of their own, so stop them too
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert f"{'chat-2':<8}| exited with code -9; restarting" in log.read_text()
