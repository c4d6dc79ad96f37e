"""`python -m services.chat` as a process: refuses bad settings, serves health, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from streamsight.natsd import free_port
from streamsight.rpc import wait_serving


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSIGHT_")}
    env.update(extra)
    return env


def test_bad_settings_exit_2_naming_the_variable():
    out = subprocess.run(
        [sys.executable, "-m", "services.chat"],
        env=_env(STREAMSIGHT_CHAT_IRC_TOKEN="oauth:abc", STREAMSIGHT_CHAT_MAX_STREAMS="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "STREAMSIGHT_CHAT_IRC_NICK" in out.stderr and "STREAMSIGHT_CHAT_MAX_STREAMS" in out.stderr
    assert "oauth:abc" not in out.stderr  # the secret is not echoed


async def test_serves_health_and_stops_on_sigterm(nats_server):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.chat"],
        env=_env(STREAMSIGHT_NATS_URL=nats_server.url, STREAMSIGHT_GRPC_HOST="127.0.0.1", STREAMSIGHT_GRPC_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await wait_serving(f"127.0.0.1:{port}", timeout_s=60, service="streamsight.chat.v1.Chat")
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "service ready" in output and "forecast@sha256:" in output and "service stopped" in output
