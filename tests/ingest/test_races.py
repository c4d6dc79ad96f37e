"""Start/stop races against one real ingest process: stopping a stream 0-120 ms after starting it.

The crash this guards against: the decode thread closed the input container while the finishing
thread still wrote that container's packets into the clip buffer (a new segment copies the input
streams as templates), and FFmpeg read freed memory: SIGSEGV, every stream of the process lost.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest

from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.natsd import distinct_free_ports
from streamsight.rpc import channel

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TRIES = 200


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> list[Path]:
    """Two files long enough that none ends by itself within the 120 ms: H.264 + AAC, two sizes."""
    root = tmp_path_factory.mktemp("race_media")
    return [
        make_media(root / "a.mp4", duration=20.0, width=640, height=360, fps=30, segments=[(0, 20, "pan")], keyframe_interval=1.0).path,
        make_media(root / "b.mp4", duration=12.0, width=1280, height=720, fps=30, segments=[(0, 12, "action")], keyframe_interval=2.0).path,
    ]


@pytest.fixture
def ingest_process(nats_server, tmp_path):
    """`python -m services.ingest` as its own process (a native crash ends it, not pytest)."""
    port, metrics_port = distinct_free_ports(2)
    env = dict(os.environ, STREAMSIGHT_NATS_URL=nats_server.url, STREAMSIGHT_INGEST_GRPC_PORT=str(port), STREAMSIGHT_GRPC_HOST="127.0.0.1",
               STREAMSIGHT_DATA_DIR=str(tmp_path / "var"), STREAMSIGHT_INGEST_METRICS_PORT=str(metrics_port),
               STREAMSIGHT_LOG_LEVEL="warning", PYTHONFAULTHANDLER="1")
    log = tmp_path / "ingest.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    yield proc, f"127.0.0.1:{port}", log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _ready(stub: ingest_pb2_grpc.IngestStub, proc: subprocess.Popen) -> None:
    for _ in range(300):
        assert proc.poll() is None, "ingest exited while starting"
        try:
            await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="probe"))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("ingest did not start serving")


def test_stop_within_120ms_of_start_never_crashes(bus, media, ingest_process):
    proc, address, log = ingest_process
    rng = random.Random(23)

    async def main() -> Counter:
        states: Counter = Counter()
        async with channel(address) as ch:
            stub = ingest_pb2_grpc.IngestStub(ch)
            await _ready(stub, proc)
            for n in range(TRIES):
                sid = f"race{n}"
                await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(media[n % 2]), pacing=common_pb2.PACING_VOD))
                await asyncio.sleep(rng.uniform(0.0, 0.12))
                try:
                    reply = await stub.StopIngest(ingest_pb2.StopIngestRequest(stream_id=sid))
                except grpc.aio.AioRpcError as err:
                    raise AssertionError(f"try {n}: {err.code().name}; ingest exit code {proc.poll()}\n{log.read_text()[-4000:]}") from None
                states[common_pb2.StreamState.Name(reply.state)] += 1
            # One more, left to run: the process still ingests after all the races.
            await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="after", source=str(media[0]), pacing=common_pb2.PACING_VOD))
            while (status := await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="after"))).frames_decoded < 30:
                assert status.state in (common_pb2.STREAM_STATE_STARTING, common_pb2.STREAM_STATE_RUNNING), status
                await asyncio.sleep(0.05)
            await stub.StopIngest(ingest_pb2.StopIngestRequest(stream_id="after"))
        return states

    states = asyncio.run(main())
    assert proc.poll() is None, f"ingest died (exit {proc.returncode})\n{log.read_text()[-4000:]}"
    assert states == Counter({"STREAM_STATE_STOPPED": TRIES}), states
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-4000:]
    assert "Segmentation fault" not in log.read_text()
