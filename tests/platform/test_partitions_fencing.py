"""A stage's state snapshots on a real NATS: saved per fetch with the applied sequence, taken
over by the next instance, and refused to a replica whose partition someone else wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import nats.js.errors
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the stage under test is test_stage's (--import-mode=importlib)
from test_stage import ByteCounter, CounterSettings, CounterStage, _records, _window  # noqa: E402

from streamsight import stage as stage_mod
from streamsight import subjects
from streamsight.bus import Bus


class SavingCounter(ByteCounter):
    """ByteCounter with export_state/import_state: its state is a byte count per stream."""

    def export_state(self, stream_id: str) -> bytes:
        return json.dumps({"bytes": self.streams.get(stream_id)["bytes"]}).encode()

    def import_state(self, stream_id: str, data: bytes) -> None:
        from streamsight.windows import WindowBounds

        saved = {"bytes": json.loads(data)["bytes"], "bounds": WindowBounds()}
        self.streams.entry(stream_id, lambda: saved, from_start=False)


class SavingStage(CounterStage):
    name = "savecount"

    async def open_logic(self) -> SavingCounter:
        return SavingCounter(idle_s=self.settings.stream_idle_s)


def _stage(nats_server) -> SavingStage:
    return SavingStage(CounterSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0))


async def _snapshot(bus: Bus, sid: str) -> tuple[dict, int]:
    kv = await bus.js.key_value(stage_mod.STATE_BUCKET)
    entry = await kv.get(f"savecount.{subjects.partition_of(sid)}.{sid}")
    head, _, state = entry.value.partition(b"\n")
    return {**json.loads(head), "state": json.loads(state) if state else None}, entry.revision


async def test_state_is_saved_per_fetch_and_the_next_instance_goes_on_from_it(nats_server, bus):
    sid = "taken"
    first = _stage(nats_server)
    async with first.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 100)
        await bus.publish(subjects.media("windows", sid), _window(sid, 0))
        await bus.publish(subjects.media("audio", sid), b"1" * 40)
        assert [r.values["bytes"] for r in await _records(bus, sid, 1)] == [100.0]
        for _ in range(100):  # the last audio message's fetch is saved before it is acked
            snap, _ = await _snapshot(bus, sid)
            if snap["state"] == {"bytes": 140}:
                break
            await asyncio.sleep(0.1)
        assert snap["state"] == {"bytes": 140} and snap["done"] is False
    # a graceful stop handed the partition back; the next instance loads the stream
    second = _stage(nats_server)
    async with second.serving():
        await bus.publish(subjects.media("windows", sid), _window(sid, 1, last=True))
        records = await _records(bus, sid, 2)
        assert [(r.window, r.values["bytes"], list(r.flags)) for r in records] == [(0, 100.0, []), (1, 140.0, [])]
        for _ in range(100):
            snap, _ = await _snapshot(bus, sid)
            if snap["done"]:
                break
            await asyncio.sleep(0.1)
        assert snap["done"] and snap["state"] is None  # finished: a small "done" entry stays


async def test_a_replica_whose_partition_state_someone_else_wrote_does_not_acknowledge(nats_server, bus):
    sid = "fenced"
    one = _stage(nats_server)
    async with one.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 10)
        await bus.publish(subjects.media("windows", sid), _window(sid, 0))
        await _records(bus, sid, 1)
        snap, _ = await _snapshot(bus, sid)
        fenced_before = stage_mod.STAGE_SNAPSHOTS.labels("savecount", "fenced")._value.get()
        kv = await bus.js.key_value(stage_mod.STATE_BUCKET)  # another replica took the partition and wrote
        await kv.put(f"savecount.{subjects.partition_of(sid)}.{sid}", b'{"seq": 1, "done": false}\n{"bytes": 10}')
        await bus.publish(subjects.media("audio", sid), b"1" * 5)
        for _ in range(100):
            if stage_mod.STAGE_SNAPSHOTS.labels("savecount", "fenced")._value.get() > fenced_before:
                break
            await asyncio.sleep(0.1)
        assert stage_mod.STAGE_SNAPSHOTS.labels("savecount", "fenced")._value.get() > fenced_before
        info = await bus.js.consumer_info(subjects.MEDIA_STREAM, f"savecount-p{subjects.partition_of(sid)}")
        assert info.num_ack_pending >= 1  # not acknowledged: due again for the partition's holder
        snap_after, _ = await _snapshot(bus, sid)
        assert snap_after["state"] == {"bytes": 10}  # the other replica's state was not overwritten


async def test_a_stream_id_used_again_after_it_finished_replaces_its_done_entry(nats_server, bus):
    sid = "again"
    fenced = stage_mod.STAGE_SNAPSHOTS.labels("savecount", "fenced")._value.get()
    seqs = []
    one = _stage(nats_server)
    async with one.serving():
        for run in range(2):
            await bus.publish(subjects.media("audio", sid), b"0" * (10 + run), f"{sid}:a:{run}")
            await bus.publish(subjects.media("windows", sid), _window(sid, 0, last=True), f"{sid}:w:{run}")
            for _ in range(100):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):  # not saved yet
                    snap, _ = await _snapshot(bus, sid)
                    if snap["done"] and snap["seq"] > (first_seq if run else 0):
                        break
                await asyncio.sleep(0.1)
            first_seq = snap["seq"]
            assert snap["done"]
            seqs.append(snap["seq"])
    assert seqs[1] > seqs[0]  # the second run's end was saved over the first's done entry
    msgs = await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", sid))
    assert len(msgs) == 1  # the second run's window 0 has the same id: JetStream kept the first
    assert fenced == stage_mod.STAGE_SNAPSHOTS.labels("savecount", "fenced")._value.get()


async def test_a_state_too_big_for_kv_is_not_saved_and_its_old_snapshot_goes(nats_server, bus, monkeypatch):
    sid = "huge"
    one = _stage(nats_server)
    async with one.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 10)
        await bus.publish(subjects.media("windows", sid), _window(sid, 0))
        await _records(bus, sid, 1)
        assert (await _snapshot(bus, sid))[0]["state"] == {"bytes": 10}
        monkeypatch.setattr(stage_mod, "MAX_SNAPSHOT_BYTES", 8)
        await bus.publish(subjects.media("audio", sid), b"1" * 5)
        await bus.publish(subjects.media("windows", sid), _window(sid, 1))
        assert [r.values["bytes"] for r in await _records(bus, sid, 2)] == [10.0, 15.0]  # the stage goes on
        kv = await bus.js.key_value(stage_mod.STATE_BUCKET)
        for _ in range(100):
            try:
                await kv.get(f"savecount.{subjects.partition_of(sid)}.{sid}")
            except (nats.js.errors.KeyDeletedError, nats.js.errors.KeyNotFoundError):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the stale snapshot was kept")


class QuickLeaseSettings(CounterSettings):
    partition_lease_s: float = 2.0
    partition_heartbeat_s: float = 0.25


class GatedCounter(SavingCounter):
    """SavingCounter whose step waits, when `gate` is set, until the test opens it."""

    gate = None  # a threading.Event, closed while the test holds a batch in hand
    entered = None

    def step(self, messages):
        if self.gate is not None:
            self.entered.set()
            self.gate.wait(30)
        return super().step(messages)


class GatedStage(SavingStage):
    Settings = QuickLeaseSettings

    async def open_logic(self) -> GatedCounter:
        return GatedCounter(idle_s=self.settings.stream_idle_s)


async def test_a_holder_whose_lease_lapsed_mid_batch_hands_it_back_and_the_next_holder_applies_it_first(nats_server, bus):
    """A replica whose renewals stalled (here: stopped) past the lease's margin finishes the step in
    hand but neither saves nor acknowledges it: the batch goes back at once, its consumer ends, and
    the next holder restores the last saved state and is delivered that batch before anything newer."""
    import threading

    from streamsight.telemetry import MESSAGES_RETURNED

    sid = "lapsed"
    p = subjects.partition_of(sid)
    settings = QuickLeaseSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0)
    first, second = GatedStage(settings), GatedStage(settings)
    returned = MESSAGES_RETURNED.labels("savecount")._value.get()
    async with first.serving():
        await bus.publish(subjects.media("audio", sid), b"0" * 100)
        await bus.publish(subjects.media("windows", sid), _window(sid, 0))
        assert [r.values["bytes"] for r in await _records(bus, sid, 1)] == [100.0]
        gate, entered = threading.Event(), threading.Event()
        first.logic.gate, first.logic.entered = gate, entered
        await bus.publish(subjects.media("audio", sid), b"1" * 40)
        assert await asyncio.to_thread(entered.wait, 10)  # the batch is in hand
        await first.partitions.abandon()  # its renewals stall: the lease lapses here at once, in KV after the TTL
        assert not first.partitions.holds(p)
        gate.set()
        first.logic.gate = None
        for _ in range(100):
            if MESSAGES_RETURNED.labels("savecount")._value.get() > returned:
                break
            await asyncio.sleep(0.05)
        assert MESSAGES_RETURNED.labels("savecount")._value.get() > returned, "the batch in hand was not handed back"
        assert (await _snapshot(bus, sid))[0]["state"] == {"bytes": 100}  # its state was not saved
        async with second.serving():  # takes the partition once the lease aged out in KV
            records = await taken_over_then_ended(bus, second, sid)
            assert [(r.window, r.values["bytes"]) for r in records] == [(0, 100.0), (1, 147.0)]


async def taken_over_then_ended(bus: Bus, stage, sid: str) -> list:
    """Once `stage` holds the stream's partition (a lease aged out in KV first), 7 more bytes and
    the last window record (1): the stream's two records."""
    p = subjects.partition_of(sid)
    for _ in range(200):
        if p in stage.partitions.held:
            break
        await asyncio.sleep(0.05)
    assert p in stage.partitions.held
    await bus.publish(subjects.media("audio", sid), b"2" * 7)
    await bus.publish(subjects.media("windows", sid), _window(sid, 1, last=True))
    return await _records(bus, sid, 2)


async def test_a_stage_replicas_health_reply_lists_the_partitions_it_holds(nats_server, bus):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    one = _stage(nats_server)
    async with one.serving():
        async with grpc.aio.insecure_channel(one.address) as ch:
            call = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            await call
            listed = dict(await call.initial_metadata())["streamsight-partitions"]
        assert listed == ",".join(map(str, sorted(one.partitions.held))) and one.partitions.held  # (an earlier test's lease may still be ageing out)
