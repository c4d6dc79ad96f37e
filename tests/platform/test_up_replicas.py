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

from streamsight.app.supervisor import METRICS_STEP, built_services
from streamsight.config import SECTIONS
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


def test_bad_replicas_and_nats_copies_up_cannot_keep_are_refused_with_the_reason(tmp_path):
    for arg, reason in (("gateway=2", "one gateway"), ("nope=2", "no such service"), ("glitch=0", "1 to 16"), ("glitch", "SERVICE=COUNT")):
        out = subprocess.run(
            [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path), "--nats-port", str(free_port()), "--replicas", arg],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2, (arg, out.stdout, out.stderr)
        assert reason in out.stderr, (arg, out.stderr)
    clustered = subprocess.run(
        [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path), "--nats-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STREAMSIGHT_NATS_REPLICAS": "3"},
    )  # fmt: skip
    assert clustered.returncode == 2 and "runs one nats-server" in clustered.stderr, clustered.stderr
    assert not (tmp_path / "up.json").exists(), "nothing was started"


@pytest.mark.slow
def test_up_runs_two_replicas_each_with_its_id_and_ports_and_restarts_one_alone(tmp_path):
    if "chat" not in {s.name for s in built_services()}:
        pytest.skip("chat is not built here")
    base = free_port_block(METRICS_STEP + len(SECTIONS))  # replica 2's metrics port is the first's + 10
    log = tmp_path / "up.log"
    state_file = tmp_path / "var" / "up.json"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path / "var"), "--nats-port", str(free_port()),
             "--gateway-port", str(free_port()), "--only", "chat,gateway", "--replicas", "chat=2"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "STREAMSIGHT_GATEWAY_HTTP_PORT": "0", "STREAMSIGHT_METRICS_BASE_PORT": str(base)},
        )  # fmt: skip
    try:
        _wait(lambda: "all services SERVING" in log.read_text(), 180, "every replica SERVING", proc, log)
        replicas = _state(state_file)["services"]["chat"]["replicas"]
        assert [r["id"] for r in replicas] == ["chat-1", "chat-2"]
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
            lambda: (s := _state(state_file)) and s["services"]["chat"]["replicas"][1]["restarts"] == 1 and s, 30, "chat-2 restarted", proc, log
        )["services"]["chat"]["replicas"]
        assert after[0]["pid"] == replicas[0]["pid"] and after[0]["restarts"] == 0, "chat-1 went on untouched"
        assert after[1]["pid"] != replicas[1]["pid"] and _environ(after[1]["pid"])["STREAMSIGHT_REPLICA_ID"] == "chat-2"
        _wait(lambda: _serving(f"127.0.0.1:{after[1]['port']}"), 120, "chat-2 SERVING again on its port", proc, log)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not [r for r in after if _alive(r["pid"])], "a replica outlived up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"{'chat-2':<8}| exited with code -9; restarting" in log.read_text()
