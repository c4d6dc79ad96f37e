"""Ingest in processes of its own (so a test can SIGKILL it), and readers of what it published."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from streamsight import subjects
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.natsd import distinct_free_ports

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}


class Ingest:
    """`python -m services.ingest` in its own process (so that it can be killed with SIGKILL)."""

    def __init__(self, nats_url: str, folder: Path, window_s: float = 4.0, **settings: str):
        # A restart keeps its replica id, as under `up`: it resumes its streams at once (a new id waits
        # for the old one's heartbeat to expire, ingest.replica_ttl_s)
        settings.setdefault("STREAMSIGHT_REPLICA_ID", "ingest-1")
        self.port, metrics_port = distinct_free_ports(2)
        self.env = dict(os.environ, STREAMSIGHT_NATS_URL=nats_url, STREAMSIGHT_INGEST_GRPC_PORT=str(self.port), STREAMSIGHT_GRPC_HOST="127.0.0.1",
                        STREAMSIGHT_DATA_DIR=str(folder / "var"), STREAMSIGHT_INGEST_METRICS_PORT=str(metrics_port),
                        STREAMSIGHT_WINDOW_S=str(window_s), STREAMSIGHT_INGEST_ALLOW_NETWORKS='["127.0.0.0/8"]',
                        STREAMSIGHT_INGEST_LIVE_GIVE_UP_S="3", STREAMSIGHT_LOG_FORMAT="console", **settings)
        self.log = folder / "ingest.log"
        self.proc: subprocess.Popen | None = None
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    async def stub(self, ch) -> ingest_pb2_grpc.IngestStub:
        stub = ingest_pb2_grpc.IngestStub(ch)
        for _ in range(300):
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="probe"))
            except Exception as err:  # NOT_FOUND: serving
                if "NOT_FOUND" in str(getattr(err, "code", lambda: "")()):
                    return stub
            await asyncio.sleep(0.1)
        raise AssertionError("ingest did not start serving")


class Recorder:
    """A reader of the stream's window records and frames (MEDIA keeps messages for a reader)."""

    def __init__(self, bus, sid: str):
        self.windows: list[media_pb2.WindowRecord] = []
        self.frames: list[str] = []
        self.task = bus.consume(f"rec-{sid}", subjects.media("*", sid), self.handle, subjects.MEDIA_STREAM, batch=64)

    async def handle(self, msg) -> None:
        kind = msg.subject.split(".")[3]
        if kind == "windows":
            self.windows.append(media_pb2.WindowRecord.FromString(msg.data))
        elif kind.startswith("frames_"):
            self.frames.append(msg.headers.get("Nats-Msg-Id", "") if msg.headers else "")

    async def wait_windows(self, count: int, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.windows) < count:
            assert loop.time() < deadline, f"{len(self.windows)} window records, waited for {count}"
            await asyncio.sleep(0.05)


async def statuses(bus, sid: str) -> list[events_pb2.StreamStatus]:
    return [events_pb2.StreamStatus.FromString(m.data) for m in await bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", sid))]


async def until_terminal(bus, sid: str, timeout: float = 90.0) -> events_pb2.StreamStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = [s for s in await statuses(bus, sid) if s.state in TERMINAL]
        if done:
            return done[-1]
        assert loop.time() < deadline, f"{sid} did not end"
        await asyncio.sleep(0.2)


