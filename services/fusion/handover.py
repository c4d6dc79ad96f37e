"""What fusion needs to hand a partition's streams from one replica to another.

- `read_bucket`: every key and value of the state bucket in one pass (a watch of the last value
  per key, instead of a `get` per key); the replica gaining a partition keeps its streams' keys.
- `until_settled`: a replica starting up holds its share of the partitions before it says it
  is ready (MEDIA keeps window records only for consumers that exist).
- `wait_for_redeliveries`: what a dead holder fetched and never acknowledged must come back
  before anything newer (a record of window i arriving after the same stage's record of i + 2
  would have i scored without it, "moved_on");
- `release`: a stream handed to another replica leaves the table without being counted
  finished (StreamTable's finish() would remember its id as done).
"""

from __future__ import annotations

import asyncio
import datetime
import time

from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from streamsight.bus import Bus
from streamsight.lifecycle import StreamTable
from streamsight.partitions import Partitions, owner


async def read_bucket(kv: KeyValue) -> list[tuple[str, bytes]]:
    """(key, value) of every key the bucket holds now."""
    watcher = await kv.watchall(ignore_deletes=True)
    out: list[tuple[str, bytes]] = []
    try:
        async for entry in watcher:
            if entry is None:  # the end of what was stored
                break
            out.append((entry.key, entry.value or b""))
    finally:
        await watcher.stop()
    return out


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


async def wait_for_redeliveries(bus: Bus, stream: str, durable: str, ack_wait_s: float, most_s: float = 60.0) -> float:
    """If the durable has messages out that nobody acknowledged (its holder died with them in
    hand), wait until their ack wait is over: the server then redelivers them before anything
    newer. Returns the seconds waited."""
    try:
        info = await bus.js.consumer_info(stream, durable)
    except NotFoundError:
        return 0.0
    if not info.num_ack_pending or info.delivered is None or info.delivered.last_active is None:
        return 0.0
    due = info.delivered.last_active + datetime.timedelta(seconds=ack_wait_s + 0.5)
    wait = min((due - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), most_s)
    if wait > 0:
        await asyncio.sleep(wait)
    return max(wait, 0.0)


def release(table: StreamTable, stream_id: str) -> None:
    """Drop a stream's entry without finishing it: another replica holds it now."""
    table._entries.pop(stream_id, None)  # noqa: SLF001 - StreamTable has no such call yet
    table._seen.pop(stream_id, None)  # noqa: SLF001
    table._gauge()  # noqa: SLF001
