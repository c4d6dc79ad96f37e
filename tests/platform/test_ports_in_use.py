"""A port another program holds: the service says which setting to change and stops with the
configuration error's exit code (2), so `up` does not restart it in a loop; a service that does
not come up is named with what tells why (its health's last answer, restarts, last output)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from streamsight.app.supervisor import CONFIG_ERROR_EXIT, Supervisor, _Child
from streamsight.config import SECTIONS


def _held_port() -> socket.socket:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held


def _run_fusion(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSIGHT_")}
    return subprocess.run([sys.executable, "-m", "services.fusion"], env={**clean, **env}, capture_output=True, text=True, timeout=90)


def test_a_metrics_port_in_use_is_a_configuration_error_that_names_the_setting():
    with _held_port() as held:
        port = held.getsockname()[1]
        done = _run_fusion({"STREAMSIGHT_FUSION_METRICS_PORT": str(port), "STREAMSIGHT_NATS_URL": "nats://127.0.0.1:1"})
    assert done.returncode == CONFIG_ERROR_EXIT, done.stderr[-2000:]
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in done.stderr
    assert "set STREAMSIGHT_FUSION_METRICS_PORT to a free port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_grpc_port_in_use_is_a_configuration_error(nats_server):
    with _held_port() as held:
        port = held.getsockname()[1]
        done = _run_fusion({"STREAMSIGHT_FUSION_GRPC_PORT": str(port), "STREAMSIGHT_NATS_URL": nats_server.url})
    assert done.returncode == CONFIG_ERROR_EXIT, done.stderr[-2000:]
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in done.stderr or f"cannot serve gRPC on 0.0.0.0:{port}" in done.stderr


async def test_a_service_that_does_not_come_up_is_named_with_its_last_answer_restarts_and_output(tmp_path):
    sup = Supervisor(tmp_path, free_ports=True, only=["audio"], nats_auth=False)
    with _held_port() as nobody:  # bound, never answering gRPC
        child = _Child(SECTIONS["audio"], {}, port=nobody.getsockname()[1], restarts=2)
        child.last_lines.extend(["starting", "loading the tagger", "still loading"])
        sup.children = [child]
        with pytest.raises(TimeoutError) as raised:
            await asyncio.wait_for(sup.wait_serving(timeout_s=2.0), 30)
    said = str(raised.value)
    assert said.startswith("not serving after 2 s: audio (")
    assert "restarts 2" in said and "last output: starting | loading the tagger | still loading" in said
    assert "last: " in said  # the health check's own last answer (UNAVAILABLE, DEADLINE_EXCEEDED, ...)


def test_an_embedded_stack_never_picks_a_port_its_nats_server_or_a_metrics_port_will_hold(tmp_path, monkeypatch) -> None:
    """Ports picked one call apart can coincide (each call sees the others' ports free again): the
    service ports are picked clear of nats-server's, the metrics ports and the ports given."""
    import streamsight.app.supervisor as supervisor_module
    import streamsight.natsd as natsd

    base, audio_metrics = 23000, 23000 + SECTIONS["audio"].metrics_offset
    monkeypatch.setenv("STREAMSIGHT_METRICS_BASE_PORT", str(base))
    nats_ports = iter([24001, 24002])
    monkeypatch.setattr(natsd, "free_port", lambda: next(nats_ports))  # nats-server's client and monitoring ports
    held = [24001, 24002, audio_metrics, base, 23999, audio_metrics + supervisor_module.METRICS_STEP]

    def offers_the_held_ones_first(n: int) -> list[int]:  # the worst a random pick can do
        fresh = [p for p in natsd.distinct_free_ports(n + len(held)) if p not in held]
        return (held + fresh)[:n]

    monkeypatch.setattr(supervisor_module, "distinct_free_ports", offers_the_held_ones_first)
    sup = Supervisor(tmp_path, free_ports=True, nats_auth=False, ports={"gateway": 23999}, replicas={"audio": 2})
    assert (sup.nats.port, sup.nats.monitor_port) == (24001, 24002)
    picked = [sup.ports[name] for name in SECTIONS if name != "gateway"] + list(sup._replica_ports.values())
    assert sup.ports["gateway"] == 23999 and len(picked) == len(SECTIONS)
    assert len(set(picked)) == len(picked) and not set(picked) & set(held), (picked, held)
