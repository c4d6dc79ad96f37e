"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader from npm) calls the gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """tests/node with its npm packages installed (npm install runs once per checkout)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the cross-language client test (apt-get install nodejs npm; .ci/run does)")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=600)
    return NODE_DIR / "client.js"


async def test_node_client_starts_lists_and_watches(gateway, nats_server, node_client):
    bus = await Bus.connect(nats_server.url, "nodetest")
    proc = await asyncio.create_subprocess_exec(
        "node", str(node_client), gateway.address, "from-node", "https://example.com/live.m3u8", "4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    # The highlights go out once the client's start was refused (its two statuses are stored):
    # on a loaded machine node can take seconds to get there.
    for _ in range(300):
        if len(await bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", "from-node"))) >= 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and to open its watch
    for i in range(2):
        await bus.publish_event("from-node", events_pb2.Highlight(stream_id="from-node", highlight_id=f"n{i}", score=0.5 + i / 10), f"from-node:n{i}")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    await bus.close()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert proc.returncode == 0, (lines, err.decode())
    start, listed, watched = lines
    # No ingest runs in this test: the start is refused with a clear status, and the stream is recorded.
    assert start["start"]["code"] == "UNAVAILABLE" and "ingest service is not reachable" in start["start"]["details"]
    assert "from-node" in listed["streams"]
    events = watched["events"]
    assert [e["type"] for e in events] == ["streamsight.status.v1"] * 2 + ["streamsight.highlight.v1"] * 2
    assert (events[0]["status"]["state"], events[0]["status"]["reason"]) == ("STREAM_STATE_PENDING", "registered")
    assert events[1]["status"]["state"] == "STREAM_STATE_FAILED"
    assert [e["highlight"]["highlight_id"] for e in events[2:]] == ["n0", "n1"]
    assert int(events[3]["sequence"]) > int(events[2]["sequence"])
