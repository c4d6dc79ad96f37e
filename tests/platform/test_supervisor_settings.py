"""`streamsight up` with the settings a user sets in the shell: ports per service, the web page's
port, and Ctrl-C while the services start.

- `STREAMSIGHT_METRICS_PORT` (one port for seven processes) is read as the base: every service
  serves /metrics on its own port, base plus its offset.
- `STREAMSIGHT_HTTP_PORT` (a flat name only the gateway has) reaches the gateway as
  `STREAMSIGHT_GATEWAY_HTTP_PORT`; the section's own variable is honoured too.
- SIGINT during start-up stops `up` and everything it started without waiting for health.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streamsight.app.supervisor import Supervisor, built_services, sectioned_environment
from streamsight.config import SECTIONS, load_settings, section_class
from streamsight.natsd import free_port

from ..conftest import free_port_block


def _clean_env(monkeypatch, **values: str) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMSIGHT_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _settings_of(sup: Supervisor, name: str, monkeypatch) -> tuple[object, list[str]]:
    """The settings service `name` would load from the environment `up` gives it, and its warnings."""
    warnings: list[str] = []
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("STREAMSIGHT_")]:
            m.delenv(key)
        for key, value in sup.environment(SECTIONS[name]).items():
            if key.startswith("STREAMSIGHT_"):
                m.setenv(key, value)
        settings = load_settings(section_class(name), warn=lambda cls, line: warnings.append(line))
    return settings, warnings


def test_flat_metrics_port_is_a_base_and_flat_http_port_is_the_gateways(tmp_path, monkeypatch):
    _clean_env(monkeypatch, STREAMSIGHT_METRICS_PORT="9300", STREAMSIGHT_HTTP_PORT="8099")
    sup = Supervisor(tmp_path, free_ports=True)
    assert sup.http_port == 8099 and sup.state()["web"] == "http://127.0.0.1:8099/"
    ports = {}
    for name in SECTIONS:
        settings, warnings = _settings_of(sup, name, monkeypatch)
        assert warnings == [], (name, warnings)
        ports[name] = settings.metrics_port
    assert ports == {name: 9300 + SECTIONS[name].metrics_offset for name in SECTIONS}
    gateway, _ = _settings_of(sup, "gateway", monkeypatch)
    assert gateway.http_port == 8099


def test_section_variables_win_over_flat_ones_and_are_left_alone(monkeypatch):
    env, said = sectioned_environment(
        {"STREAMSIGHT_METRICS_PORT": "9300", "STREAMSIGHT_METRICS_BASE_PORT": "9400",
         "STREAMSIGHT_HTTP_PORT": "8099", "STREAMSIGHT_GATEWAY_HTTP_PORT": "8100", "STREAMSIGHT_MAX_STREAMS": "3"}
    )  # fmt: skip
    assert env["STREAMSIGHT_METRICS_BASE_PORT"] == "9400" and "STREAMSIGHT_METRICS_PORT" not in env
    assert env["STREAMSIGHT_GATEWAY_HTTP_PORT"] == "8100" and "STREAMSIGHT_HTTP_PORT" not in env
    assert env["STREAMSIGHT_MAX_STREAMS"] == "3", "ingest and chat both have max_streams: each reads it itself"
    assert len(said) == 2 and all("is ignored" in line for line in said)


def test_the_gateways_own_http_port_variable_is_honoured(tmp_path, monkeypatch):
    _clean_env(monkeypatch, STREAMSIGHT_GATEWAY_HTTP_PORT="8123")
    sup = Supervisor(tmp_path)
    assert sup.environment(SECTIONS["gateway"])["STREAMSIGHT_GATEWAY_HTTP_PORT"] == "8123"
    assert sup.state()["web"] == "http://127.0.0.1:8123/"


# The real `streamsight up`, as a user starts it -----------------------------------------------


def _up(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "up.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSIGHT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsight.app.cli", "up", "--data-dir", str(tmp_path / "var"),
         "--nats-port", str(free_port()), "--gateway-port", str(free_port()), *args],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**base, "STREAMSIGHT_ONNX_PROVIDER": "cpu", **env},
    )  # fmt: skip
    return proc, log


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"up exited with {proc.returncode} before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_up_serves_metrics_per_service_and_the_web_page_on_the_chosen_ports(tmp_path):
    built = [s.name for s in built_services()]
    base, http = free_port_block(len(SECTIONS)), free_port()
    proc, log = _up(tmp_path, {"STREAMSIGHT_METRICS_PORT": str(base), "STREAMSIGHT_HTTP_PORT": str(http)})
    try:
        _wait_for(lambda: "all services SERVING" in log.read_text(), 240, "every service SERVING", proc, log)
        seen = set()
        for name in built:
            port = base + SECTIONS[name].metrics_offset
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and "# TYPE" in text, (name, port)
            seen.add(port)
        assert len(seen) == len(built), "every service on its own metrics port"
        status, page = _get(f"http://127.0.0.1:{http}/")
        assert status == 200 and "<html" in page.lower()
        state = json.loads((tmp_path / "var" / "up.json").read_text())
        assert state["web"] == f"http://127.0.0.1:{http}/"
        assert all(s["restarts"] == 0 for s in state["services"].values()), "a service crash-looped"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        _stop(proc)
    assert "STREAMSIGHT_METRICS_PORT" in log.read_text() and "is read as STREAMSIGHT_METRICS_BASE_PORT" in log.read_text()


@pytest.mark.slow
def test_ctrl_c_during_start_up_stops_everything_without_waiting_for_health(tmp_path):
    """SIGINT comes while services load and one has given up on a bad setting (it will never serve):
    `up` must not sit out the 120 s health wait."""
    proc, log = _up(tmp_path, {"STREAMSIGHT_GATEWAY_HTTP_PORT": "0", "STREAMSIGHT_GLITCH_FETCH_BATCH": "0"})
    state_file = tmp_path / "var" / "up.json"
    try:
        expected = {s.name for s in built_services()}
        state = _wait_for(
            lambda: state_file.exists() and (s := json.loads(state_file.read_text() or "{}")) and set(s["services"]) == expected
            and all(v["pid"] for v in s["services"].values()) and s,
            60, "every service spawned", proc, log,
        )  # fmt: skip
        assert "all services SERVING" not in log.read_text(), "start-up was over before the signal: nothing tested"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(45)  # far below the 120 s health wait it used to sit out
        took = time.monotonic() - sent
    finally:
        _stop(proc)
    assert code == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "stopping during start-up" in text or "stopped on a configuration error: glitch" in text
    assert "up      | stopped" in text
    assert not [n for n, s in state["services"].items() if _alive(s["pid"])], "a service outlived up"
    assert not _alive(state["nats"]["pid"])
    print(f"SIGINT during start-up: up exited {took:.1f} s later")
