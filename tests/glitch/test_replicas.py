"""Two glitch replicas (real processes) share two streams by partition, the real ingest feeding
them; the replica holding one stream is stopped and SIGKILLed while that stream's planted glitch
is open. The other takes the stream over from its snapshot: every glitch and health event of
both streams comes once, equal field for field (thumbnails too) to one replica's run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from services.glitch.service import GlitchService
from services.glitch.settings import GlitchSettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import events, subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2_grpc
from streamsight.natsd import NatsServer
from streamsight.partitions import lease_holders, owner
from streamsight.rpc import channel
from training.glitch import corrupt, scenes

from ..conftest import until_true
from .conftest import TEST_SEEDS, encode, held_out_scene

REPO = Path(__file__).resolve().parents[2]
REPLICAS = ("glitch-a", "glitch-b")


@pytest.fixture(scope="module")
def long_glitch(tmp_path_factory) -> Path:
    """10 s of held-out footage with a green fill band from 3 s to 7 s: one incident open for 4 s.
    The band is training.glitch.corrupt's, made once and laid on every frame of the span (a
    decoder that lost those rows fills them alike; making it per frame took 60 ms a frame)."""
    frames = held_out_scene(TEST_SEEDS[1], 10.0)
    a, b = int(3.0 * scenes.FPS), int(7.0 * scenes.FPS)
    bad, mask, _ = corrupt.corrupt(frames[a], frames[a + 1], "green", np.random.default_rng(4))
    rows = mask.any(axis=1)
    assert 0 < rows.sum() < len(rows), "a band, not the whole frame"
    frames[a:b, rows] = bad[rows]
    return encode(frames, tmp_path_factory.mktemp("glitch") / "long.mkv")


def pick_streams() -> tuple[str, str]:
    """A stream held by replica a and one held by replica b."""
    found: dict[str, str] = {}
    for n in range(1000):
        sid = f"gl-{n}"
        found.setdefault(owner("glitch", subjects.partition_of(sid), set(REPLICAS)), sid)
        if len(found) == 2:
            return found[REPLICAS[0]], found[REPLICAS[1]]
    raise AssertionError("no stream ids for both replicas")


class Collected:
    """Every glitch and health event on EVENTS, by event id, as JetStream stored them."""

    def __init__(self) -> None:
        self.events: dict[str, object] = {}
        self.ids: list[str] = []

    async def follow(self, bus: Bus):
        async def on_msg(msg) -> None:
            event = events.decode(msg.headers, msg.data)
            kind = event.WhichOneof("payload")
            if kind in ("glitch", "health"):
                self.ids.append(event.id)
                self.events[event.id] = getattr(event, kind)

        return await bus.js.subscribe(f"{subjects.PREFIX}.events.v1.>", stream=subjects.EVENTS_STREAM, cb=on_msg, ordered_consumer=True)

    def of(self, sid: str, phase: int) -> list[events_pb2.Glitch]:
        return [e for e in self.events.values() if isinstance(e, events_pb2.Glitch) and e.stream_id == sid and e.phase == phase]


async def ingest_files(nats_url: str, data_dir: Path, sources: dict[str, Path], ingest_vod, during=None) -> None:
    ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, data_dir=data_dir))
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        job = asyncio.create_task(ingest_vod(stub, sources, timeout=120.0))
        if during is not None:
            await during
        await job


async def settled(got: Collected, timeout_s: float = 2.0) -> None:
    """Until no new event came for a while (a late duplicate would show up now)."""
    count, quiet = -1, 0.0
    while quiet < timeout_s:
        quiet = quiet + 0.25 if len(got.ids) == count else 0.0
        count = len(got.ids)
        await asyncio.sleep(0.25)


async def single_replica_run(sources: dict[str, Path], tmp_path: Path, ingest_vod) -> Collected:
    """The reference: one in-process glitch on a NATS of its own."""
    server = NatsServer(tmp_path / "nats-ref").start()
    try:
        bus = await Bus.connect(server.url, "glitch-test")
        await bus.ensure_streams()
        got = Collected()
        sub = await got.follow(bus)
        glitch = GlitchService(GlitchSettings(nats_url=server.url, grpc_host="127.0.0.1", grpc_port=0, intra_threads=1))
        async with glitch.serving():
            await ingest_files(server.url, tmp_path / "ref", sources, ingest_vod)
            await until(lambda: _true(all(glitch.streams.finished(sid) for sid in sources)), 60, "the reference run did not finish")
            await settled(got)
        await sub.unsubscribe()
        await bus.close()
        return got
    finally:
        server.stop()


def glitch_process(url: str, name: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ, "STREAMSIGHT_NATS_URL": url, "STREAMSIGHT_REPLICA_ID": name, "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
        "STREAMSIGHT_GLITCH_GRPC_PORT": "0", "STREAMSIGHT_GLITCH_INTRA_THREADS": "1", "STREAMSIGHT_LOG_FORMAT": "console",
        # small batches: the stream's incident is open over several of them, each saved before its ack
        "STREAMSIGHT_GLITCH_FETCH_BATCH": "4",
    }
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.glitch"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


async def holders(bus: Bus) -> dict[int, str]:
    return await lease_holders(bus, "glitch")


async def until(check, timeout_s: float, what: str) -> float:
    return await until_true(check, timeout_s, what, 0.05)


@pytest.mark.slow
async def test_a_glitch_open_across_a_kill_is_reported_as_by_one_replica(nats_server, long_glitch, tmp_path, ingest_vod):
    on_a, on_b = pick_streams()
    sources = {on_a: long_glitch, on_b: long_glitch}
    reference = await single_replica_run(sources, tmp_path, ingest_vod)
    assert len(reference.of(on_b, events_pb2.PHASE_START)) == 1 and len(reference.of(on_b, events_pb2.PHASE_END)) == 1

    bus = await Bus.connect(nats_server.url, "glitch-test")
    await bus.ensure_streams()
    got = Collected()
    sub = await got.follow(bus)
    procs = {name: glitch_process(nats_server.url, name, tmp_path / f"{name}.log") for name in REPLICAS}
    timing: dict[str, float] = {}

    async def kill_b_while_its_glitch_is_open() -> None:
        await until(lambda: _true(got.of(on_b, events_pb2.PHASE_START)), 60, "no glitch START for b's stream")
        procs["glitch-b"].send_signal(signal.SIGSTOP)  # frozen at once; killed once we know what it had published
        timing["open_at_kill"] = float(not got.of(on_b, events_pb2.PHASE_END))
        procs["glitch-b"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: _true(got.of(on_b, events_pb2.PHASE_END)), 60, "b's stream's glitch never ended")
        timing["end_after_kill_s"] = time.monotonic() - killed

    try:
        split = {k: owner("glitch", k, set(REPLICAS)) for k in range(subjects.PARTITIONS)}
        await until(lambda: _same(holders(bus), split), 90, "the replicas did not split the partitions")
        await until(lambda: _consumers(bus), 30, "the partitions' consumers were not made")
        await ingest_files(nats_server.url, tmp_path / "run", sources, ingest_vod, during=kill_b_while_its_glitch_is_open())
        await until(lambda: _true(set(got.ids) >= set(reference.ids)), 60, f"events missing: {set(reference.ids) - set(got.ids)}")
        await settled(got)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait(15)
        await sub.unsubscribe()
        await bus.close()
    print(f"glitch takeover: the open incident's END {timing.get('end_after_kill_s', -1):.1f} s after the kill")

    assert timing["open_at_kill"] == 1.0, "the kill came after the incident had ended (nothing spanned it)"
    assert len(got.ids) == len(set(got.ids)), "an event was published twice"
    assert sorted(got.ids) == sorted(reference.ids)
    for event_id, event in reference.events.items():
        assert got.events[event_id] == event, event_id  # every field, the thumbnail JPEG included


async def _true(value) -> bool:
    return bool(value)


async def _same(found, expected) -> bool:
    return await found == expected


async def _consumers(bus: Bus) -> bool:
    try:
        for k in range(subjects.PARTITIONS):
            await bus.js.consumer_info(subjects.MEDIA_STREAM, f"glitch-p{k}")
    except Exception:
        return False
    return True
