"""Which ingest replica holds a stream, and a gRPC stub to reach it (gateway, fusion's ExportClip).

Ingest may run as several replicas. Two JetStream KV buckets say where things are:

* `ingest_replicas` (REPLICAS_BUCKET): one key per live replica (its replica id), a JSON
  `Replica`: the gRPC address it advertises, its capacity (`ingest.max_streams`) and the streams
  it runs. The replica puts it again every heartbeat; the bucket's TTL (`ingest.replica_ttl_s`)
  removes the key of a replica that stopped beating, and so marks it dead.
* `ingest_placements` (PLACEMENTS_BUCKET): one key per stream id, a JSON `Placement`: the
  replica that holds the stream (runs it, or keeps its finished clips) and its address. Ingest
  writes it when it starts a stream; a survivor that takes over a dead replica's stream replaces
  it with a compare-and-set, so exactly one survivor wins.

Placement rule (`choose`): the live replica with the most room (capacity minus streams), ties
broken by replica id; none with room: `Full`. With no replica registered (an older ingest, or
the buckets not there yet) everything goes to the seed address (`gateway.ingest_address`), as
with one ingest.

`IngestRoutes.stub_for(stream_id)` is what a caller uses to reach the stream's replica.
Only ingest writes these buckets; readers never create them (the TTL is ingest's to choose).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

import grpc
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from streamsight import partitions
from streamsight.bus import Bus, kv_entries
from streamsight.gen.ingest.v1 import ingest_pb2_grpc
from streamsight.rpc import channel

REPLICAS_BUCKET = "ingest_replicas"
PLACEMENTS_BUCKET = "ingest_placements"
_KEY_BAD = re.compile(r"[^-/_=.a-zA-Z0-9]")


def replica_id() -> str:
    """This process's replica id (streamsight.partitions.replica_id: env STREAMSIGHT_REPLICA_ID, default
    <hostname>-<pid>) as a KV key."""
    return _KEY_BAD.sub("_", partitions.replica_id()) or "ingest"


@dataclass
class Replica:
    """One live ingest replica, as its heartbeat says."""

    id: str
    address: str
    capacity: int
    streams: list[str] = field(default_factory=list)
    beat_at: float = 0.0

    @property
    def room(self) -> int:
        return self.capacity - len(self.streams)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Replica":
        raw = json.loads(data)
        return cls(str(raw["id"]), str(raw["address"]), int(raw["capacity"]), [str(s) for s in raw.get("streams") or []],
                   float(raw.get("beat_at", 0.0)))


@dataclass
class Placement:
    """Where a stream is: the replica holding it and the address it advertised."""

    replica: str
    address: str
    placed_at: float = 0.0
    takeover_from: str = ""  # the dead replica a survivor took the stream from

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Placement":
        raw = json.loads(data)
        return cls(str(raw["replica"]), str(raw["address"]), float(raw.get("placed_at", 0.0)), str(raw.get("takeover_from", "")))

    @classmethod
    def here(cls, replica: str, address: str, takeover_from: str = "") -> "Placement":
        return cls(replica, address, time.time(), takeover_from)


class Full(Exception):
    """Every live ingest replica runs as many streams as it may."""


def choose(replicas: list[Replica]) -> Replica:
    """The replica a new stream goes to: most room, then the smallest id. `Full` when none has room."""
    if not replicas:
        raise Full("no ingest replica is registered")
    best = min(replicas, key=lambda r: (-r.room, r.id))
    if best.room <= 0:
        held = ", ".join(f"{r.id} {len(r.streams)}/{r.capacity}" for r in sorted(replicas, key=lambda r: r.id))
        raise Full(f"every ingest replica is full ({held}); stop a stream or add an ingest replica")
    return best


async def read_replicas(js: JetStreamContext) -> list[Replica]:
    """The live replicas (their keys have not expired), by id. Read with kv_entries: nats-py's
    `keys()` drops keys while others are written, and every replica writes its heartbeat here."""
    found = []
    for entry in await kv_entries(js, REPLICAS_BUCKET):
        if entry.value:
            try:
                found.append(Replica.from_bytes(entry.value))
            except (ValueError, KeyError, TypeError):
                continue  # a bad entry is no live replica
    return sorted(found, key=lambda r: r.id)


class IngestRoutes:
    """Reaches the ingest replica holding a stream; places new streams. One per process."""

    def __init__(self, bus: Bus, seed_address: str, token: str = "") -> None:
        self.bus = bus
        self.seed_address = seed_address
        self.token = token
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._replicas: KeyValue | None = None
        self._placements: KeyValue | None = None

    async def _kv(self, bucket: str) -> KeyValue | None:
        try:
            return await self.bus.js.key_value(bucket)
        except BucketNotFoundError:
            return None  # no replica has registered yet: the seed address serves

    async def _buckets(self) -> tuple[KeyValue | None, KeyValue | None]:
        if self._replicas is None:
            self._replicas = await self._kv(REPLICAS_BUCKET)
        if self._placements is None:
            self._placements = await self._kv(PLACEMENTS_BUCKET)
        return self._replicas, self._placements

    def stub(self, address: str) -> ingest_pb2_grpc.IngestStub:
        """A stub on a channel kept per address."""
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = channel(address, self.token)
        return ingest_pb2_grpc.IngestStub(ch)

    async def replicas(self) -> list[Replica]:
        kv, _ = await self._buckets()
        return await read_replicas(self.bus.js) if kv is not None else []

    async def placement(self, stream_id: str) -> Placement | None:
        _, kv = await self._buckets()
        if kv is None:
            return None
        try:
            entry = await kv.get(stream_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            return Placement.from_bytes(entry.value) if entry.value else None
        except (ValueError, KeyError, TypeError):
            return None

    async def address_of(self, stream_id: str) -> str:
        """The address of the replica holding `stream_id`: its live record's, else the placement's, else the seed."""
        placed = await self.placement(stream_id)
        if placed is None:
            return self.seed_address
        for replica in await self.replicas():
            if replica.id == placed.replica and replica.address:
                return replica.address
        return placed.address  # dead, or restarting at the same address: the caller sees UNAVAILABLE

    async def stub_for(self, stream_id: str) -> tuple[ingest_pb2_grpc.IngestStub, str]:
        """(stub, address) of the ingest replica that holds `stream_id` (the seed address when unknown)."""
        address = await self.address_of(stream_id)
        return self.stub(address), address

    async def place(self, exclude: frozenset[str] = frozenset()) -> tuple[ingest_pb2_grpc.IngestStub, str, Replica | None]:
        """Where a new stream goes: (stub, address, replica); the seed when no replica is registered. `Full` when all are full."""
        live = [r for r in await self.replicas() if r.id not in exclude and r.address]  # no address: not serving yet
        if not live and not exclude:
            return self.stub(self.seed_address), self.seed_address, None
        chosen = choose(live)
        return self.stub(chosen.address), chosen.address, chosen

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
