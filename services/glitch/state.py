"""Where a stream's glitch state waits for the replica that takes its partition over.

One JetStream KV bucket (`glitch.state_bucket`), one key per stream: `<partition>.<stream>`
(the stream id in KV's key alphabet, other bytes as `=XX`), so a replica that gains partition
k reads only k's keys (`read_partition`, one pass, filtered by the server). The value is a
snapshot (services/glitch/snapshot.py) with the last MEDIA message applied, or, for a finished
stream, a tombstone with that message only, kept for the bucket's TTL so that a redelivery
after the end is not taken for a new stream.

Also here, what partitioned consumers need besides: `until_settled` (a replica starting up
holds its share before it says it is ready: MEDIA keeps messages only for consumers that exist),
`wait_for_redeliveries` (a dead holder's unacknowledged batch must come back before anything
newer, or the detectors would see it out of order), and `release` (a stream handed to another
replica leaves the table without being counted finished).
"""

from __future__ import annotations

import asyncio
import datetime
import time

from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from streamsight import subjects
from streamsight.bus import Bus
from streamsight.lifecycle import StreamTable
from streamsight.partitions import Partitions, owner

KEY_SAFE = frozenset(b"-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
REDELIVERY_WAIT_MAX_S = 60.0


def key_of(stream_id: str) -> str:
    """The stream's key: `<partition>.<stream id in KV's alphabet>`."""
    token = "".join(chr(b) if b in KEY_SAFE else f"={b:02X}" for b in stream_id.encode())
    return f"{subjects.partition_of(stream_id)}.{token}"


async def state_bucket(bus: Bus, name: str, ttl_s: float) -> KeyValue:
    """The bucket, made with the platform's `nats_replicas` copies (streamsight.bus.Bus.kv)."""
    return await bus.kv(name, history=1, ttl_s=ttl_s)


async def read_partition(kv: KeyValue, partition: int) -> list[bytes]:
    """Every value stored under partition `partition`'s keys, in one pass."""
    watcher = await kv.watch(f"{partition}.*", ignore_deletes=True)
    values: list[bytes] = []
    try:
        async for entry in watcher:
            if entry is None:  # the end of what was stored
                break
            values.append(entry.value or b"")
    finally:
        await watcher.stop()
    return values


async def wait_consumer(bus: Bus, stream: str, durable: str, timeout_s: float = 15.0) -> None:
    """consume() creates its consumer in a task; MEDIA's interest retention needs it now."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await bus.js.consumer_info(stream, durable)
            return
        except NotFoundError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer {durable} on {stream} was not created within {timeout_s:.0f} s") from None
            await asyncio.sleep(0.05)


async def wait_for_redeliveries(bus: Bus, stream: str, durable: str, ack_wait_s: float) -> float:
    """If the durable has messages out that nobody acknowledged (its holder died with a batch in
    hand), wait until their ack wait is over: the server then redelivers them before anything
    newer, so the new holder applies them in order. Returns the seconds waited."""
    try:
        info = await bus.js.consumer_info(stream, durable)
    except NotFoundError:
        return 0.0
    if not info.num_ack_pending or info.delivered is None or info.delivered.last_active is None:
        return 0.0
    due = info.delivered.last_active + datetime.timedelta(seconds=ack_wait_s + 0.5)
    wait = min((due - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), REDELIVERY_WAIT_MAX_S)
    if wait > 0:
        await asyncio.sleep(wait)
    return max(wait, 0.0)


def release(table: StreamTable, stream_id: str) -> None:
    """Drop a stream's entry without finishing it: another replica holds it now.
    (StreamTable has no such call: finish() would remember the id as finished.)"""
    table._entries.pop(stream_id, None)  # noqa: SLF001
    table._seen.pop(stream_id, None)  # noqa: SLF001
    table._gauge()  # noqa: SLF001


async def until_settled(partitions: Partitions, timeout_s: float = 30.0) -> bool:
    """Wait until this replica holds every partition the live members' assignment gives it
    (False if that took longer than `timeout_s`: it goes on taking them in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = partitions.members
        if members:
            mine = {k for k in range(partitions.count) if owner(partitions.group, k, members) == partitions.replica}
            if mine <= partitions.held:
                return True
        await asyncio.sleep(0.1)
    return False
