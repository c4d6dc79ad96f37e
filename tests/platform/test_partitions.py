"""Partition leases on a real nats-server: a deterministic split, a graceful stop, a kill, a join."""

from __future__ import annotations

import asyncio
import itertools

import nats.js.errors
import pytest

from streamsight import partitions as parts
from streamsight.partitions import Partitions, owner

TTL_S, BEAT_S = 2.0, 0.25
_buckets = itertools.count()


class Replica:
    """A Partitions member that records its callbacks, as a stage would use it."""

    def __init__(self, bus, name: str, bucket: str):
        self.p = Partitions(bus, "grp", name, 16, ttl_s=TTL_S, heartbeat_s=BEAT_S, bucket=bucket)
        self.calls: list[tuple[str, int]] = []
        self.busy = 0  # callbacks running at once

    async def _call(self, change: str, k: int) -> None:
        self.busy += 1
        assert self.busy == 1, "on_gain/on_lose overlap"
        self.calls.append((change, k))
        await asyncio.sleep(0.01)  # a stage's callback awaits (consumer start, state load)
        self.busy -= 1

    async def start(self) -> None:
        await self.p.start(lambda k: self._call("gain", k), lambda k: self._call("lose", k))


class Observer:
    """Checks, every 20 ms, that no partition is held by two replicas at once."""

    def __init__(self, replicas: list[Replica]):
        self.replicas = replicas
        self.observations = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            held = [r.p.held for r in self.replicas]
            for a, b in itertools.combinations(held, 2):
                assert not (a & b), f"partitions {sorted(a & b)} held twice"
            self.observations += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def until(cond, timeout: float = 20.0) -> None:
    """Wait for `cond()` (the deadline only stops a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.fixture
def bucket() -> str:
    return f"parts_test_{next(_buckets)}"


def expected(members: list[str]) -> dict[str, frozenset[int]]:
    return {m: frozenset(k for k in range(16) if owner("grp", k, members) == m) for m in members}


def test_rendezvous_is_deterministic_and_moves_only_a_departed_members_share():
    two = expected(["a", "b"])
    assert two["a"] | two["b"] == frozenset(range(16)) and not two["a"] & two["b"]
    assert two["a"] and two["b"]
    three = expected(["a", "b", "c"])
    # c takes from a and b; nothing moves between a and b
    assert three["a"] <= two["a"] and three["b"] <= two["b"] and three["c"]
    assert expected(["b", "a"]) == two


async def test_two_replicas_split_sixteen_partitions_and_one_stopped_leaves_all_to_the_other(bus, bucket):
    a, b = Replica(bus, "a", bucket), Replica(bus, "b", bucket)
    await a.start()
    await b.start()
    obs = Observer([a, b])
    want = expected(["a", "b"])
    await until(lambda: a.p.held == want["a"] and b.p.held == want["b"])
    await b.p.stop()
    assert b.p.held == frozenset()
    assert sorted(k for c, k in b.calls if c == "lose") == sorted(want["b"])
    await until(lambda: a.p.held == frozenset(range(16)))
    await obs.stop()
    await a.p.stop()
    assert obs.observations > 10
    # every partition was gained once more than lost, by someone, and ends released
    kv = await bus.js.key_value(bucket)
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        keys = []
    assert not [k for k in keys if ".p." in k]  # every lease released


async def test_a_killed_replicas_partitions_move_after_the_lease_ttl(bus, bucket):
    a, b = Replica(bus, "a", bucket), Replica(bus, "b", bucket)
    await a.start()
    await b.start()
    obs = Observer([a, b])
    want = expected(["a", "b"])
    await until(lambda: a.p.held == want["a"] and b.p.held == want["b"])
    await b.p.abandon()  # no release, no more beats: a crash
    assert ("lose", min(want["b"])) not in b.calls
    # a must not take b's partitions while b's leases live (renewed at most a beat ago)
    await asyncio.sleep(TTL_S / 4)
    assert a.p.held == want["a"]
    await until(lambda: a.p.held == frozenset(range(16)))
    await obs.stop()
    await a.p.stop()


async def test_an_added_replica_takes_its_share_and_no_partition_is_held_twice(bus, bucket):
    a, b = Replica(bus, "a", bucket), Replica(bus, "b", bucket)
    await a.start()
    await b.start()
    want = expected(["a", "b"])
    await until(lambda: a.p.held == want["a"] and b.p.held == want["b"])
    obs = Observer([a, b])
    a.calls.clear(), b.calls.clear()
    c = Replica(bus, "c", bucket)
    obs.replicas.append(c)
    await c.start()
    want3 = expected(["a", "b", "c"])
    await until(lambda: all(r.p.held == want3[n] for n, r in zip("abc", (a, b, c))))
    assert {k for ch, k in c.calls if ch == "gain"} == set(want3["c"])
    lost = {k for r in (a, b) for ch, k in r.calls if ch == "lose"}
    assert lost == set(want3["c"])  # only what c took moved
    await obs.stop()
    assert obs.observations > 10
    for r in (a, b, c):
        await r.p.stop()


def test_the_lease_must_outlive_two_heartbeats():
    with pytest.raises(ValueError, match="twice the heartbeat"):
        Partitions(None, "g", "r", ttl_s=1.0, heartbeat_s=0.5)


def test_replica_id_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_REPLICA_ID", "vision-2")
    assert parts.replica_id() == "vision-2"
    monkeypatch.delenv("STREAMSIGHT_REPLICA_ID")
    assert parts.replica_id().endswith(f"-{__import__('os').getpid()}")


async def test_a_stopped_consumer_finishes_its_batch_and_the_next_holder_goes_on_from_there(bus):
    """What a partition handover relies on: stop() after the batch in hand, the durable kept."""
    from streamsight import subjects

    sid = "handover1"
    for i in range(40):
        await bus.js.publish(subjects.features("audio", sid), str(i).encode())
    seen: list[int] = []
    first_batch = asyncio.Event()

    async def handle(msgs):
        seen.extend(int(m.data) for m in msgs)
        first_batch.set()
        await asyncio.sleep(0.2)  # stop() arrives while this batch is in hand
        return {}

    subject = subjects.features("audio", partition=subjects.partition_of(sid))
    one = bus.consume_batches("handover-p", subject, handle, subjects.FEATURES_STREAM, batch=8, ack_wait_s=3.0)
    await asyncio.wait_for(first_batch.wait(), 20)
    await one.stop()
    assert one.done() and len(seen) >= 8 and len(seen) % 8 == 0
    info = await bus.js.consumer_info(subjects.FEATURES_STREAM, "handover-p")
    assert info.num_ack_pending == 0 and info.num_pending == 40 - len(seen)
    two = bus.consume_batches("handover-p", subject, handle, subjects.FEATURES_STREAM, batch=8, ack_wait_s=3.0)
    await until(lambda: len(seen) >= 40)
    await two.stop()
    assert seen == list(range(40))


async def test_a_lapse_whose_lease_key_survived_pauses_the_work_and_the_next_renewal_resumes_it(bus, bucket):
    a = Replica(bus, "a", bucket)
    await a.start()
    await until(lambda: len(a.p.held) == 16)
    a.p._valid_until = {k: 0.0 for k in a.p._valid_until}  # as if the renewals had stalled past the margin
    assert not any(a.p.holds(k) for k in range(16))
    await until(lambda: all(a.p.holds(k) for k in range(16)), timeout=5)  # the keys were still its own
    assert a.calls == [("gain", k) for k in range(16)], "no partition lost and taken again"
    a.p.give_up(3)  # a refused state write: that one goes and comes back
    assert not a.p.holds(3)
    await until(lambda: ("lose", 3) in a.calls and a.p.holds(3), timeout=10)
    assert a.calls[16:] == [("lose", 3), ("gain", 3)]
    await a.p.stop()
