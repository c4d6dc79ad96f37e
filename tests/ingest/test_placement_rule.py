"""The placement rule and records of streamsight/ingestroute.py, a replica's claims on real NATS KV, and a hand-over."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.replicas import ReplicaAgent
from services.ingest.resume import ResumeStore
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import subjects
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.ingestroute import Full, Placement, Replica, choose
from streamsight.rpc import channel


def test_the_replica_with_most_room_wins_ties_by_id():
    replicas = [Replica("ingest-b", "b:1", 4, ["s1"]), Replica("ingest-a", "a:1", 4, ["s2"]), Replica("ingest-c", "c:1", 8, ["s3", "s4", "s5"])]
    assert choose(replicas).id == "ingest-c"  # 5 free
    replicas[2].streams += ["s6", "s7"]
    assert choose(replicas).id == "ingest-a"  # 3 free each: the smaller id


def test_full_and_empty_sets_are_refused_with_what_each_holds():
    with pytest.raises(Full, match=r"every ingest replica is full \(ingest-a 1/1, ingest-b 2/2\)"):
        choose([Replica("ingest-b", "b:1", 2, ["x", "y"]), Replica("ingest-a", "a:1", 1, ["z"])])
    with pytest.raises(Full, match="no ingest replica is registered"):
        choose([])


def test_records_round_trip():
    replica = Replica("ingest-a", "10.0.0.1:50061", 16, ["s1"], 12.5)
    assert Replica.from_bytes(replica.to_bytes()) == replica
    placed = Placement.here("ingest-b", "10.0.0.2:50061", takeover_from="ingest-a")
    assert Placement.from_bytes(placed.to_bytes()) == placed


async def test_one_claim_wins_and_a_live_holder_keeps_its_stream(bus):
    agents = {name: ReplicaAgent(bus, name, lambda name=name: f"{name}:1", 4, 5.0, list) for name in ("ingest-a", "ingest-b", "ingest-c")}
    for agent in agents.values():
        await agent.open()
    a, b, c = agents.values()
    await a.placed("claimed1")
    assert await b.claim("claimed1", live={"ingest-a", "ingest-b"}) is None, "ingest-a is live: its stream stays"
    # ingest-a died: b and c race from the same placement revision; exactly one wins
    won = await asyncio.gather(b.claim("claimed1", live={"ingest-b", "ingest-c"}), c.claim("claimed1", live={"ingest-b", "ingest-c"}))
    assert sorted(won, key=str) == [None, "ingest-a"], won
    winner = "ingest-b" if won[0] else "ingest-c"
    assert await a.holder("claimed1") == winner
    assert await a.claim("claimed1", live={"ingest-a", winner}) is None, "the restarted loser finds it held"
    assert await a.claim("fresh1", live=set()) == "", "a stream without placement is anyone's, created once"
    assert await b.claim("fresh1", live={"ingest-a", "ingest-b"}) is None
    await a.release("fresh1")
    assert await a.holder("fresh1") is None


async def test_a_stream_another_replica_took_is_handed_over_without_a_word(nats_server, bus, tmp_path, monkeypatch):
    """A replica cut off from NATS past its TTL finds its stream's placement taken: it stops the stream
    there, publishes no status and no last window, and leaves the resume point to the new holder."""
    video = make_media(tmp_path / "long.mp4", duration=30.0, width=160, height=92, fps=10).path
    monkeypatch.setenv("STREAMSIGHT_REPLICA_ID", "ingest-h")
    settings = IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "var", replica_ttl_s=1.5,
                              window_s=2.0, shutdown_grace_s=1.0)
    other = ReplicaAgent(bus, "ingest-z", lambda: "127.0.0.1:1", 4, 1.5, list)
    await other.open()

    async def beating() -> None:
        while True:
            await other.beat()
            await asyncio.sleep(0.3)

    async with IngestService(settings).serving() as ingest, channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="handed1", source=str(video), pacing=common_pb2.PACING_LIVE))
        assert await other.holder("handed1") == "ingest-h"
        beat = asyncio.create_task(beating())
        try:
            await asyncio.sleep(0.5)
            await other.placements.put("handed1", Placement.here("ingest-z", "127.0.0.1:1", takeover_from="ingest-h").to_bytes())
            stream = ingest.streams["handed1"]
            await asyncio.wait({stream.task}, timeout=10)
            assert stream.handed_over and "handed1" not in ingest.streams, "forgotten here: the new holder answers for it"
            await asyncio.sleep(1.0)  # a round more: it does not claim the stream back from the live holder
            assert await other.holder("handed1") == "ingest-z" and "handed1" not in ingest.running()
        finally:
            beat.cancel()
    found = [events_pb2.StreamStatus.FromString(m.data) for m in await bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", "handed1"))]
    assert [common_pb2.StreamState.Name(s.state) for s in found] == ["STREAM_STATE_RUNNING"], "no terminal status from the old holder"
    windows = [media_pb2.WindowRecord.FromString(m.data) for m in await bus.read_all(subjects.MEDIA_STREAM, subjects.media("windows", "handed1"))]
    assert not any(w.last for w in windows), "no last window record"
    assert "handed1" in await (await ResumeStore.open(bus, "ingest_streams")).left(), "the resume point stays for the new holder"
