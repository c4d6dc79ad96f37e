"""Where a stream's glitch state waits for the replica that takes its partition over.

One JetStream KV bucket (`glitch.state_bucket`), one key per stream: `<partition>.<stream>`
(the stream id in KV's key alphabet, other bytes as `=XX`), so a replica that gains partition
k reads only k's keys (`read_partition`, one pass, filtered by the server). The value is a
snapshot (services/glitch/snapshot.py) with the last MEDIA message applied, or, for a finished
stream, a tombstone with that message only, kept for the bucket's TTL so that a redelivery
after the end is not taken for a new stream.
"""

from __future__ import annotations

from nats.js.kv import KeyValue

from streamsight import subjects
from streamsight.bus import Bus, kv_entries

KEY_SAFE = frozenset(b"-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def key_of(stream_id: str) -> str:
    """The stream's key: `<partition>.<stream id in KV's alphabet>`."""
    token = "".join(chr(b) if b in KEY_SAFE else f"={b:02X}" for b in stream_id.encode())
    return f"{subjects.partition_of(stream_id)}.{token}"


async def state_bucket(bus: Bus, name: str, ttl_s: float) -> KeyValue:
    """The bucket, made with the platform's `nats_replicas` copies (streamsight.bus.Bus.kv)."""
    return await bus.kv(name, history=1, ttl_s=ttl_s)


async def read_partition(bus: Bus, bucket: str, partition: int) -> list[bytes]:
    """Every value stored under partition `partition`'s keys, in one pass."""
    return [entry.value or b"" for entry in await kv_entries(bus.js, bucket, f"{partition}.*")]
