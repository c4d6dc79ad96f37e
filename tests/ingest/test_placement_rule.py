"""The placement rule and records of streamsight/ingestroute.py, and a replica's claims on real NATS KV."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.replicas import ReplicaAgent
from streamsight.ingestroute import Full, Placement, Replica, choose


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
