"""Settings through `streamsight up`: one environment for every process, each service takes its own section.

The user's shell sets the variables; the supervisor hands that one environment to every service.
Same-named fields of two sections keep their own values, every service serves metrics on its
own port (all scraped here), a service's cpu_nice makes its process nicer, and a bad value stops only the service whose section it is, with
exit code 2 and the setting's name, without a restart loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import pytest

from streamsight.config import SECTIONS
from streamsight.rpc import wait_serving
from streamsight.app.supervisor import Supervisor, built_services

from ..conftest import free_port_block

pytestmark = pytest.mark.slow

STARTED = ["gateway", "chat", "vision", "audio", "glitch"]


class Lines:
    """The supervisor's output, kept as (service, line) pairs."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def write(self, text: str) -> None:
        for raw in text.splitlines():
            name, _, line = raw.partition("| ")
            self.lines.append((name.strip(), line))

    def flush(self) -> None:
        pass

    def of(self, service: str) -> list[str]:
        return [line for name, line in self.lines if name == service]

    def json_of(self, service: str) -> list[dict]:
        found = []
        for line in self.of(service):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found




async def _until(predicate, timeout_s: float, what: str):
    for _ in range(int(timeout_s * 10)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _niceness(pid: int) -> int:
    """A process's niceness, from /proc/<pid>/stat (field 19; the name in parentheses may hold spaces)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def test_up_gives_each_service_its_own_section_and_metrics_port(tmp_path, monkeypatch):
    built = {s.name for s in built_services()}
    if not set(STARTED) <= built:
        pytest.skip(f"needs {STARTED} built; have {sorted(built)}")
    for name in list(os.environ):
        if name.startswith("STREAMSIGHT_"):
            monkeypatch.delenv(name)
    base = free_port_block(len(SECTIONS))
    # As a user sets them in the shell before `streamsight up`:
    user_env = {
        "STREAMSIGHT_LOG_FORMAT": "json",
        "STREAMSIGHT_METRICS_BASE_PORT": str(base),
        "STREAMSIGHT_VISION_INTRA_THREADS": "2",
        "STREAMSIGHT_AUDIO_INTRA_THREADS": "3",
        "STREAMSIGHT_VISION_MAX_BATCH": "4",
        "STREAMSIGHT_CHAT_MAX_STREAMS": "5",
        "STREAMSIGHT_INGEST_MAX_STREAMS": "7",  # ingest is not started: nobody else may read it
        "STREAMSIGHT_GLITCH_FETCH_BATCH": "0",  # bad: glitch, and only glitch, refuses to start
        "STREAMSIGHT_ONNX_PROVIDER": "cpu",
        "STREAMSIGHT_AUDIO_CPU_NICE": "4",
    }
    for name, value in user_env.items():
        monkeypatch.setenv(name, value)

    async def scenario() -> None:
        out = Lines()
        sup = Supervisor(tmp_path / "var", free_ports=True, out=out, only=STARTED)
        await sup.start()
        try:
            addresses = sup.addresses()
            await asyncio.gather(*(wait_serving(addresses[n], 120) for n in STARTED if n != "glitch"))
            glitch = next(c for c in sup.children if c.spec.name == "glitch")
            await _until(lambda: glitch.gave_up, 60, "glitch to give up on its configuration error")

            # Same field names, two sections, two values.
            vision_ready = next(r for r in out.json_of("vision") if r.get("event") == "service ready")
            assert (vision_ready["intra_threads"], vision_ready["max_batch"]) == ("2", "4")
            chat_ready = next(r for r in out.json_of("chat") if r.get("event") == "service ready")
            assert chat_ready["max_streams"] == "5"

            # The bad value is named by its variable and YAML path, and glitch is not restarted.
            glitch_text = "\n".join(out.of("glitch"))
            assert "glitch.fetch_batch / STREAMSIGHT_GLITCH_FETCH_BATCH" in glitch_text
            assert glitch.process.returncode == 2 and glitch.restarts == 0

            # Every running service serves its own metrics port, base + its offset.
            for name in STARTED:
                if name == "glitch":
                    continue
                text = await asyncio.to_thread(_scrape, base + SECTIONS[name].metrics_offset)
                assert "# TYPE" in text, name
            assert all(c.restarts == 0 for c in sup.children), "a service crash-looped"

            # audio.cpu_nice: audio's process runs 4 nicer than this one (its parent), vision as started.
            mine = os.nice(0)
            niceness = {c.spec.name: _niceness(c.process.pid) for c in sup.children if c.spec.name in ("audio", "vision")}
            assert niceness == {"audio": min(19, mine + 4), "vision": mine}, niceness

            # No service warned about the user's section variables: they are all real settings.
            for name in STARTED:
                for line in out.of(name):
                    if "settings warning" in line:
                        assert not any(var in line for var in user_env), line
        finally:
            await sup.stop()

    asyncio.run(scenario())
