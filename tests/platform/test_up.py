"""`streamsight up`: embedded NATS and supervised services, restart on crash, clean stop; NATS's own log in the output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from streamsight.config import SECTIONS, load_settings, section_class
from streamsight.natsd import free_port
from streamsight.app.supervisor import Supervisor, built_services


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split()[2] != "Z"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _health(address: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "streamsight.app.cli", "health", address, "--timeout", "2"], capture_output=True, text=True)
    return out.returncode == 0


def test_only_built_services_are_listed():
    names = [s.name for s in built_services()]
    assert "gateway" in names
    for name in names:
        module = "gateway" if name == "gateway" else f"services.{name}"
        assert __import__("importlib").util.find_spec(f"{module}.__main__") is not None


def test_one_environment_in_section_names_and_fusion_waits_for_the_stages_it_has(tmp_path, monkeypatch):
    sup = Supervisor(tmp_path, free_ports=True, only=["vision", "fusion", "gateway", "ingest"])
    env = sup.environment(SECTIONS["fusion"])
    assert env["STREAMSIGHT_FUSION_EXPECTED_MODALITIES"] == '["vision"]', "no audio service in this stack: fusion must not wait for it"
    assert env["STREAMSIGHT_GATEWAY_INGEST_ADDRESS"] == env["STREAMSIGHT_FUSION_INGEST_ADDRESS"] == f"127.0.0.1:{sup.ports['ingest']}"
    assert {env[f"STREAMSIGHT_{name.upper()}_GRPC_PORT"] for name in SECTIONS} == {str(p) for p in sup.ports.values()}
    assert not [k for k in env if k in ("STREAMSIGHT_GRPC_PORT", "STREAMSIGHT_INGEST_ADDRESS", "STREAMSIGHT_ALLOW_LOCAL_FILES")]
    for name in SECTIONS:  # every service reads that environment without a warning
        warnings: list[str] = []
        with monkeypatch.context() as m:
            for key in [k for k in os.environ if k.startswith("STREAMSIGHT_")]:
                m.delenv(key)
            for key, value in sup.environment(SECTIONS[name]).items():
                if key.startswith("STREAMSIGHT_"):
                    m.setenv(key, value)
            load_settings(section_class(name), warn=lambda cls, line: warnings.append(line))
        assert warnings == [], (name, warnings)


@pytest.mark.slow
def test_up_serves_restarts_a_crashed_service_and_stops_cleanly(tmp_path):
    nats_port, gateway_port = free_port(), free_port()
    log = open(tmp_path / "up.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path / "var"), "--nats-port", str(nats_port),
         "--gateway-port", str(gateway_port), "--only", "gateway"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMSIGHT_GATEWAY_HTTP_PORT": "0"},  # not 8080: another stack on this host may hold it
    )
    state_file = tmp_path / "var" / "up.json"
    try:
        address = f"127.0.0.1:{gateway_port}"
        _wait(lambda: _health(address), 60, "gateway SERVING")
        state = json.loads(state_file.read_text())
        assert state["nats_url"] == f"nats://127.0.0.1:{nats_port}"
        assert state["nats"]["restarts"] == 0 and _alive(state["nats"]["pid"])
        first_pid = state["services"]["gateway"]["pid"]

        os.kill(first_pid, signal.SIGKILL)  # a crash
        restarted = _wait(
            lambda: (s := json.loads(state_file.read_text()))["services"]["gateway"]["restarts"] == 1 and s, 30, "a restart"
        )
        assert restarted["services"]["gateway"]["pid"] != first_pid
        _wait(lambda: _health(address), 60, "gateway SERVING again")

        nats_pids = subprocess.run(["pgrep", "-f", f"{tmp_path}/var/nats/nats-server.conf"], capture_output=True, text=True).stdout.split()
        assert len(nats_pids) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not _alive(restarted["services"]["gateway"]["pid"])
        assert not _alive(int(nats_pids[0]))
        assert not state_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert "gateway | " in output
    assert any(line.startswith("nats    | [") and "Server is ready" in line for line in output.splitlines()), "nats-server's own log"
    assert "nats-server exited" not in output, "stopping the stack is not a nats-server crash"
    assert "exited with code -9; restarting" in output
