"""A stage's snapshot interval on a real NATS: a live trickle is saved at most every
`snapshot_interval_s`, its messages acknowledged only once a snapshot covers them; a replica
killed with messages held leaves them to the next holder, and a handover saves them first."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import nats.js.errors

sys.path.insert(0, str(Path(__file__).parent))  # the stages under test are the other tests' (--import-mode=importlib)
from test_partitions_fencing import SavingStage, _snapshot, taken_over_then_ended  # noqa: E402
from test_stage import CounterSettings, _records, _window  # noqa: E402

from streamsight import stage as stage_mod
from streamsight import subjects
from streamsight.bus import Bus


class HoldingSettings(CounterSettings):
    snapshot_interval_s: float = 1.0


class LongHoldSettings(CounterSettings):
    snapshot_interval_s: float = 5.0  # longer than the ack wait: in-progress beats keep the held messages
    partition_lease_s: float = 2.0
    partition_heartbeat_s: float = 0.25


class HoldingStage(SavingStage):
    Settings = HoldingSettings


class LongHoldStage(SavingStage):
    Settings = LongHoldSettings


def _settings(cls, nats_server):
    return cls(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0)


async def _saved_seq(bus: Bus, sid: str) -> int:
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        return (await _snapshot(bus, sid))[0]["seq"]
    return 0


async def _held(stage, sid: str, count: int) -> None:
    for _ in range(100):
        if len(stage._held.get(sid, ())) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sid}: {count} messages never held: {stage._held.get(sid)}")


async def test_a_trickle_is_saved_at_most_every_interval_and_acknowledged_only_once_saved(nats_server, bus):
    sid = "trickle"
    durable = f"savecount-p{subjects.partition_of(sid)}"
    saves = stage_mod.STAGE_SNAPSHOTS.labels("savecount", "state")
    stage = HoldingStage(_settings(HoldingSettings, nats_server))
    async with stage.serving():
        before = saves._value.get()
        floors, most_held = [], 0
        for i in range(15):  # 1.5 s of one message a fetch, as a live stream's audio chunks come
            await bus.publish(subjects.media("audio", sid), (b"0" if i == 0 else b"1") * 10)
            await asyncio.sleep(0.1)
            # The acknowledged floor is read before the snapshot: a snapshot only moves forward,
            # so a floor above the snapshot read after it would be a message acknowledged unsaved.
            floor = (await bus.js.consumer_info(subjects.MEDIA_STREAM, durable)).ack_floor.stream_seq
            floors.append((floor, await _saved_seq(bus, sid)))
            most_held = max(most_held, len(stage._held.get(sid, ())))
        assert all(floor <= saved for floor, saved in floors), floors
        assert most_held >= 3, f"messages were not held between snapshots (at most {most_held})"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            info = await bus.js.consumer_info(subjects.MEDIA_STREAM, durable)
            snap, _ = await _snapshot(bus, sid)
            if info.num_ack_pending == 0 and snap["state"] == {"bytes": 150}:
                break
            await asyncio.sleep(0.1)
        assert info.num_ack_pending == 0 and snap["state"] == {"bytes": 150}, (info.num_ack_pending, snap)
        written = saves._value.get() - before
        # 15 fetches over about 2 s (one message each): a save a fetch would be 15
        assert 1 <= written <= 4, f"{written} snapshots for 15 fetches at a 1 s interval"
        await bus.publish(subjects.media("windows", sid), _window(sid, 0, last=True))
        assert [r.values["bytes"] for r in await _records(bus, sid, 1)] == [150.0]


async def test_a_replica_killed_with_messages_held_leaves_them_to_the_next_holder(nats_server, bus):
    sid = "heldkill"
    first, second = LongHoldStage(_settings(LongHoldSettings, nats_server)), LongHoldStage(_settings(LongHoldSettings, nats_server))
    async with first.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 100)
        await bus.publish(subjects.media("windows", sid), _window(sid, 0))
        assert [r.values["bytes"] for r in await _records(bus, sid, 1)] == [100.0]
        await bus.publish(subjects.media("audio", sid), b"1" * 40)
        await _held(first, sid, 3)
        await asyncio.sleep(2.0)  # past the 1 s ack wait: the beats kept them from redelivery
        assert not any(m.metadata.num_delivered > 1 for m in first._held[sid])
        assert await _saved_seq(bus, sid) == 0  # nothing saved yet (5 s interval)
        await first.partitions.abandon()  # killed: no renewal, no handover, no save
    async with second.serving():
        records = await taken_over_then_ended(bus, second, sid)
        # window 0 computed again from the redelivered messages (same id: JetStream kept one copy)
        assert [(r.window, r.values["bytes"]) for r in records] == [(0, 100.0), (1, 147.0)]
    msgs = await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", sid))
    assert len(msgs) == 2


async def test_a_handover_saves_what_was_held_before_letting_go(nats_server, bus):
    sid = "heldstop"
    durable = f"savecount-p{subjects.partition_of(sid)}"
    stage = LongHoldStage(_settings(LongHoldSettings, nats_server))
    async with stage.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 100)
        await bus.publish(subjects.media("audio", sid), b"1" * 40)
        await _held(stage, sid, 2)
        assert await _saved_seq(bus, sid) == 0
    snap, _ = await _snapshot(bus, sid)
    info = await bus.js.consumer_info(subjects.MEDIA_STREAM, durable)
    assert snap["state"] == {"bytes": 140} and info.num_ack_pending == 0, (snap, info.num_ack_pending)


async def test_held_messages_are_kept_from_redelivery_while_a_long_step_holds_the_lock(nats_server, bus):
    """On a loaded machine one step can outlast the ack wait; the held messages of the other
    streams must not come back meanwhile (their beats need no lock)."""
    sid = "heldlong"
    stage = LongHoldStage(_settings(LongHoldSettings, nats_server))
    async with stage.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 100)
        await bus.publish(subjects.media("audio", sid), b"1" * 40)
        await _held(stage, sid, 2)
        async with stage._lock:  # a step of 3 s: three ack waits (1 s)
            await asyncio.sleep(3.0)
        await asyncio.sleep(0.5)
        info = await bus.js.consumer_info(subjects.MEDIA_STREAM, f"savecount-p{subjects.partition_of(sid)}")
        assert info.num_redelivered == 0 and not any(m.metadata.num_delivered > 1 for m in stage._held[sid]), info
