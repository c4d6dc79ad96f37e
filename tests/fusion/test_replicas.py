"""Two fusion replicas (real processes) on a real nats-server share four streams by partition;
one is SIGKILLed mid-stream. Every window is scored once and every highlight published once,
and the events are those of one replica alone on the same input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.fusion import analysed
from services.fusion.model import FusionModel
from services.fusion.service import FusionService
from streamsight import events, subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.natsd import NatsServer, free_port
from streamsight.partitions import lease_holders, owner

from ..conftest import until_true
from .test_service import FEATURES, publish, record, settings, start, window

REPO = Path(__file__).resolve().parents[2]
REPLICAS = ("fusion-a", "fusion-b")
WINDOWS = 6  # a 60 s file each; windows 0-2 before the kill, 3-5 after
HIGH = {0: {1, 2}, 1: {2, 3}, 2: {3, 4}, 3: {0, 5}}  # stream n's high windows: moments before, across and after the kill


def pick_streams() -> tuple[list[str], set[str]]:
    """Four stream ids in four partitions, two held by each replica; and replica b's."""
    mine: dict[str, list[str]] = {name: [] for name in REPLICAS}
    used: set[int] = set()
    for n in range(1000):
        sid = f"rep-{n}"
        p = subjects.partition_of(sid)
        holder = owner("fusion", p, set(REPLICAS))
        if p not in used and len(mine[holder]) < 2:
            mine[holder].append(sid)
            used.add(p)
    a, b = mine[REPLICAS[0]], mine[REPLICAS[1]]
    return [a[0], b[0], a[1], b[1]], set(b)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    names = [f"{m}.{f}" for m, fs in FEATURES.items() for f in fs]
    model = FusionModel(names, [2.0, 1.0, 2.0], -1.0, [0.3, 2.0, 1.0], [0.3, 2.0, 3.0], version="test@1")
    path = tmp_path_factory.mktemp("model") / "model.json"
    model.save(path)
    return path


class Collected:
    """Every score and highlight event on EVENTS, as JetStream stored them (duplicates included)."""

    def __init__(self) -> None:
        self.scores: list[events_pb2.WindowScore] = []
        self.highlights: list[events_pb2.Highlight] = []
        self.ids: list[str] = []
        self.analysed: list[str] = []  # ids of fusion's "analysed" statuses
        self.order: list[tuple[str, str]] = []  # (stream, "score" | "highlight" | "analysed") in stored order

    async def follow(self, bus: Bus):
        async def on_msg(msg) -> None:
            event = events.decode(msg.headers, msg.data)
            kind = event.WhichOneof("payload")
            if kind in ("score", "highlight"):
                self.ids.append(event.id)
                (self.scores if kind == "score" else self.highlights).append(getattr(event, kind))
                self.order.append((event.stream_id, kind))
            elif kind == "status" and analysed.is_analysed(event.status):
                self.analysed.append(event.id)
                self.order.append((event.stream_id, "analysed"))

        return await bus.js.subscribe(f"{subjects.PREFIX}.events.v1.>", stream=subjects.EVENTS_STREAM, cb=on_msg, ordered_consumer=True)

    async def wait(self, scores: int, highlights: int, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.scores) < scores or len(self.highlights) < highlights:
            assert time.monotonic() < deadline, f"{what}: {len(self.scores)}/{scores} scores, {len(self.highlights)}/{highlights} highlights"
            await asyncio.sleep(0.1)


async def play(bus: Bus, sids: list[str], windows: range) -> None:
    """Each stream's records and window records of `windows` (a 60 s file's)."""
    for n, sid in enumerate(sids):
        if windows.start == 0:
            await start(bus, sid, duration_s=10.0 * WINDOWS)
        for w in windows:
            for modality in ("vision", "audio"):
                await publish(bus, record(sid, modality, w, high=w in HIGH[n]))
            await bus.publish(subjects.media("windows", sid), window(sid, w, last=w == WINDOWS - 1), f"{sid}:window:{w}")


def fusion_process(url: str, name: str, model_path: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ, "STREAMSIGHT_NATS_URL": url, "STREAMSIGHT_REPLICA_ID": name, "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
        "STREAMSIGHT_FUSION_GRPC_PORT": "0", "STREAMSIGHT_FUSION_MODEL_PATH": str(model_path), "STREAMSIGHT_FUSION_MODEL_AV_PATH": "",
        "STREAMSIGHT_FUSION_INGEST_ADDRESS": f"127.0.0.1:{free_port()}", "STREAMSIGHT_FUSION_CLIP_TIMEOUT_S": "2",
        "STREAMSIGHT_LOG_FORMAT": "console",
    }
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.fusion"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


async def holders(bus: Bus) -> dict[int, str]:
    return await lease_holders(bus, "fusion")


async def until(check, timeout_s: float, what: str) -> float:
    return await until_true(check, timeout_s, what, 0.1)


async def consumers_made(bus: Bus) -> bool:
    try:
        for k in range(subjects.PARTITIONS):
            await bus.js.consumer_info(subjects.MEDIA_STREAM, f"fusion-media-p{k}")
    except Exception:
        return False
    return True


async def single_replica_run(model_path: Path, sids: list[str], tmp_path: Path) -> Collected:
    """The reference: one in-process fusion on a NATS of its own."""
    server = NatsServer(tmp_path / "nats-ref").start()
    try:
        bus = await Bus.connect(server.url, "fusion-test")
        await bus.ensure_streams()
        got = Collected()
        sub = await got.follow(bus)
        async with FusionService(settings(server.url, model_path, "fusion")).serving():
            await play(bus, sids, range(0, WINDOWS))
            await got.wait(len(sids) * WINDOWS, 1, 60, "the single replica's run")
            await asyncio.sleep(2.0)  # the last highlights
        await sub.unsubscribe()
        await bus.close()
        return got
    finally:
        server.stop()


@pytest.mark.slow
async def test_two_replicas_one_killed_mid_stream_give_the_single_replicas_events(nats_server, model_path, tmp_path):
    sids, on_b = pick_streams()
    reference = await single_replica_run(model_path, sids, tmp_path)
    n_scores, n_highlights = len(reference.scores), len(reference.highlights)
    assert n_scores == len(sids) * WINDOWS and n_highlights >= len(sids)

    bus = await Bus.connect(nats_server.url, "fusion-test")
    await bus.ensure_streams()
    got = Collected()
    sub = await got.follow(bus)
    procs = {name: fusion_process(nats_server.url, name, model_path, tmp_path / f"{name}.log") for name in REPLICAS}
    try:
        split = {k: owner("fusion", k, set(REPLICAS)) for k in range(subjects.PARTITIONS)}
        await until(lambda: _same(holders(bus), split), 60, "the replicas did not split the partitions")
        await until(lambda: consumers_made(bus), 30, "the partitions' consumers were not made")

        await play(bus, sids, range(0, 3))
        await got.wait(len(sids) * 3, 0, 30, "windows 0-2")
        await play(bus, sids, range(3, WINDOWS))
        # b is killed as soon as it scored a window after the first three: mid-stream, with
        # whatever it fetched and not yet acknowledged in hand
        await until(lambda: _scored_after(got, on_b, 3), 30, "replica b scored nothing after window 2")
        procs["fusion-b"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        took_over = await until(lambda: _same(holders(bus), {k: "fusion-a" for k in range(subjects.PARTITIONS)}), 30,
                                "replica a did not take b's partitions over")
        await got.wait(n_scores, n_highlights, 60, "after the kill")
        done = time.monotonic() - killed
        await until(lambda: _true(len(got.analysed) >= len(sids)), 30, "not every stream's analysed status came")
        await asyncio.sleep(3.0)  # a duplicate would show up now
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait(15)
        await sub.unsubscribe()
        await bus.close()
    print(f"takeover: leases {took_over:.1f} s after the kill, every window scored {done:.1f} s after it")

    assert len(got.ids) == len(set(got.ids)), "an event was published twice"
    assert sorted(got.ids) == sorted(reference.ids)
    key = lambda e: (e.stream_id, getattr(e, "window", 0), getattr(e, "highlight_id", ""))  # noqa: E731
    assert sorted(got.scores, key=key) == sorted(reference.scores, key=key)  # every field of every score
    assert sorted(got.highlights, key=key) == sorted(reference.highlights, key=key)
    # fusion's last word on each stream: once, after every score and highlight of the stream
    assert len(got.analysed) == len(set(got.analysed)) == len(sids), got.analysed
    for sid in sids:
        kinds = [kind for s, kind in got.order if s == sid]
        assert kinds[-1] == "analysed" and kinds.count("analysed") == 1, (sid, kinds)


async def _true(value: bool) -> bool:
    return value


async def _same(found, expected: dict[int, str]) -> bool:
    return await found == expected


async def _scored_after(got: Collected, sids: set[str], window: int) -> bool:
    return any(s.stream_id in sids and s.window >= window for s in got.scores)
