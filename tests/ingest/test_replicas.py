"""Ingest replicas: streams placed on both, a SIGKILLed replica's streams taken over, clips after a restart.

Two `python -m services.ingest` processes (ingest-a, ingest-b) on one real NATS, each with its
own data folder, play four real 12 s cuts of the shared OpenArena gameplay (720p H.264 + AAC) in
real time, placed by the gateway's rule (streamsight.ingestroute). ingest-a is SIGKILLed mid-file:
ingest-b claims its streams once a-'s heartbeat expires and resumes each from its next window.
Every window record goes out once, the takeover is in the "resumed" status and in the placement.
Then ingest-b is SIGKILLed too, restarted under the same id, and cuts a clip of a stream that had
finished before (its record was memory only before stream.json).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import pytest

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2
from streamsight.ingestroute import IngestRoutes
from streamsight.rpc import channel

from .procs import Ingest, Recorder, statuses, until_terminal

pytestmark = pytest.mark.slow
WINDOW_S = 2.0
CUT_S = 12.0


def cut(source: Path, dest: Path, seconds: float) -> Path:
    """The first `seconds` of `source` by stream copy (no re-encoding: the real packets)."""
    with av.open(str(source)) as src, av.open(str(dest), "w") as out:
        streams = [s for s in src.streams if s.type in ("video", "audio")]
        mapped = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in src.demux(streams):
            if packet.pts is None or packet.dts is None:
                continue
            if float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = mapped[packet.stream.index]
            out.mux(packet)
    return dest


async def _wait(check, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await check()):
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)
    return found


async def test_streams_are_placed_on_both_replicas_and_a_killed_ones_are_taken_over(bus, nats_server, tmp_path, shared_data):
    game = cut(shared_data / "media" / "openarena_dm2.mp4", tmp_path / "game.mp4", CUT_S)
    settings = dict(STREAMSIGHT_INGEST_REPLICA_TTL_S="2", STREAMSIGHT_INGEST_MAX_STREAMS="4", STREAMSIGHT_INGEST_FLOW_WIDTH="160",
                    STREAMSIGHT_INGEST_GLITCH_MAX_WIDTH="320", STREAMSIGHT_INGEST_GLITCH_MAX_HEIGHT="180")
    made = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        made[name] = Ingest(nats_server.url, tmp_path / name, window_s=WINDOW_S, STREAMSIGHT_REPLICA_ID=f"ingest-{name}", **settings)
    a, b = made["a"], made["b"]
    routes = IngestRoutes(bus, seed_address=a.address)
    sids = [f"rep{n}" for n in range(4)]
    recorders = {sid: Recorder(bus, sid) for sid in sids}
    try:
        a.start()
        b.start()
        await _wait(lambda: _count(routes, 2), 30, "both replicas registered")
        placed = {}
        for n, sid in enumerate(sids):
            stub, address, replica = await routes.place()
            await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(game), pacing=common_pb2.PACING_LIVE))
            placed[sid] = replica.id
            await _wait(lambda: _streams(routes, n + 1), 10, "the replica's heartbeat counts the new stream")
        assert placed == {"rep0": "ingest-a", "rep1": "ingest-b", "rep2": "ingest-a", "rep3": "ingest-b"}, "most room first, ties by id"
        for sid in sids:
            assert (await routes.placement(sid)).replica == placed[sid]
        await asyncio.gather(*(recorders[sid].wait_windows(2) for sid in sids))  # 2 s windows: about 4 s into every file
        killed_at = time.monotonic()
        a.kill()
        taken = {sid: s for sid, s in placed.items() if s == "ingest-a"}

        async def resumed(sid):
            return [s for s in await statuses(bus, sid) if s.reason == "resumed"]

        takeovers = []
        for sid in taken:
            await _wait(lambda: resumed(sid), 30, f"{sid} taken over")
            takeovers.append(time.monotonic() - killed_at)
        print(f"takeover after SIGKILL: {', '.join(f'{t:.2f} s' for t in takeovers)}")
        finals = {sid: await until_terminal(bus, sid, timeout=60) for sid in sids}
        await asyncio.sleep(0.5)
        b.kill()  # its streams had all finished: what it held of them was memory and segment files
        b.start()  # the same replica id and data folder
        async with channel(b.address) as ch:
            await b.stub(ch)
        clips = {}
        for sid in ("rep0", "rep1"):  # one it took over, one it ran from the start
            stub, address = await routes.stub_for(sid)
            assert address == b.address
            status = await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=sid))
            assert status.state == common_pb2.STREAM_STATE_ENDED and status.media_time_s > CUT_S - 1, status
            assert (status.replica, status.taken_over_from) == ("ingest-b", "ingest-a" if sid == "rep0" else ""), status
            clips[sid] = await stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id=sid, start_s=4.0, end_s=8.0, clip_id="after"))
            read = [piece async for piece in stub.ReadClip(ingest_pb2.ReadClipRequest(stream_id=sid, clip_id=clips[sid].clip_id))]
            assert sum(len(p.data) for p in read) == clips[sid].size_bytes > 0
    finally:
        for rec in recorders.values():
            rec.task.cancel()
        b.stop()
        a.stop()
    windows = int(CUT_S / WINDOW_S)
    for sid in sids:
        assert finals[sid].state == common_pb2.STREAM_STATE_ENDED, finals[sid]
        assert [w.index for w in recorders[sid].windows] == list(range(windows)), f"{sid}: every window record once, in order"
        assert [w.last for w in recorders[sid].windows] == [False] * (windows - 1) + [True]
        assert len(recorders[sid].frames) == len(set(recorders[sid].frames)), f"{sid}: no frame twice"
    for sid in taken:
        [status] = [s for s in await statuses(bus, sid) if s.reason == "resumed"]
        assert "ingest replica ingest-a died; ingest-b took the stream over" in status.detail, status.detail
        placement = await routes.placement(sid)
        assert (placement.replica, placement.takeover_from) == ("ingest-b", "ingest-a")
    for sid in set(sids) - set(taken):
        assert not [s for s in await statuses(bus, sid) if s.reason == "resumed"], "ingest-b's own streams ran on"
    for sid, clip in clips.items():
        assert clip.start_s <= 4.0 and 7.9 <= clip.end_s <= 8.5, clip  # from the keyframe at or before 4 s
        with av.open(clip.uri.removeprefix("file://")) as f:
            assert f.streams.video[0].height == 720 and f.duration / 1e6 >= clip.end_s - clip.start_s - 0.2
    await routes.close()


async def _count(routes: IngestRoutes, n: int) -> bool:
    return len(await routes.replicas()) == n


async def _streams(routes: IngestRoutes, n: int) -> bool:
    return sum(len(r.streams) for r in await routes.replicas()) >= n
