"""This ingest replica among the others: its heartbeat, its streams' placements, claims on a dead one's streams.

The buckets and records are streamsight/ingestroute.py's. The replica puts its `Replica` record
(address, capacity, running streams) every `replica_ttl_s / 3` seconds and whenever a stream
starts or ends; the bucket's TTL drops the record of a replica that stopped (kill -9, a lost
host), which is what "dead" means to the others.

A stream is the placement holder's. Taking one over is a compare-and-set on its placement key
(`claim`): created when there is none, replaced when it names this replica (a restart under the
same id) or a replica without a live record; two survivors racing for it cannot both win. A KV
failure other than a lost race (NATS away, a login that may not write the bucket) is logged and
counted; the replica then claims only when no other replica is known to be live, so one ingest
on its own still resumes its streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from streamsight.bus import Bus
from streamsight.ingestroute import PLACEMENTS_BUCKET, REPLICAS_BUCKET, Placement, Replica, read_replicas
from streamsight.telemetry import MESSAGES_FAILED

log = structlog.get_logger(__name__)
WRITE_TIMEOUT_S = 2.0  # a KV write on loopback or in a cluster takes milliseconds


class ReplicaAgent:
    """Registers this replica and keeps its placements; `running()` names the streams it runs now."""

    def __init__(self, bus: Bus, replica_id: str, address: Callable[[], str], capacity: int, ttl_s: float,
                 running: Callable[[], list[str]]) -> None:
        self.bus = bus
        self.id = replica_id
        self.address = address
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.running = running
        self.replicas: KeyValue | None = None
        self.placements: KeyValue | None = None
        self.writable = True

    async def open(self) -> None:
        self.replicas = await self.bus.kv(REPLICAS_BUCKET, history=1, ttl_s=self.ttl_s)
        self.placements = await self.bus.kv(PLACEMENTS_BUCKET, history=1)

    @staticmethod
    def _failed(what: str, exc: Exception, **fields) -> None:
        MESSAGES_FAILED.labels("ingest", "replica_kv").inc()
        log.warning(f"replica {what} failed", error=repr(exc), **fields)

    async def _write(self, op):
        """A KV write, bounded in time: a write NATS refuses (a login without the bucket) is never
        answered, and a stream start must not wait out the client's timeout for it. `writable` says
        whether the last write went through (start_stream does not wait for a placement while not)."""
        try:
            result = await asyncio.wait_for(op, WRITE_TIMEOUT_S)
        except KeyWrongLastSequenceError:
            self.writable = True  # NATS answered: a lost race, not a refusal
            raise
        except BaseException:
            self.writable = False
            raise
        self.writable = True
        return result

    async def beat(self) -> None:
        """Say this replica is alive, where, and with which streams."""
        assert self.replicas is not None
        record = Replica(self.id, self.address(), self.capacity, sorted(self.running()))
        record.beat_at = asyncio.get_running_loop().time()
        try:
            await self._write(self.replicas.put(self.id, record.to_bytes()))
        except Exception as exc:  # noqa: BLE001 -- the streams go on; placement just cannot see us
            self._failed("heartbeat", exc)

    async def leave(self) -> None:
        """A graceful stop: the record goes at once (its streams are stopped, nothing to take over)."""
        assert self.replicas is not None
        try:
            await self._write(self.replicas.delete(self.id))
        except Exception as exc:  # noqa: BLE001
            self._failed("leave", exc)

    async def live(self) -> set[str]:
        assert self.replicas is not None
        try:
            return {r.id for r in await read_replicas(self.bus.js)}
        except Exception as exc:  # noqa: BLE001
            self._failed("read", exc)
            return {self.id}

    async def holder(self, stream_id: str) -> str | None:
        """The replica the stream's placement names (None: no placement, or unreadable)."""
        assert self.placements is not None
        try:
            entry = await self.placements.get(stream_id)
            return Placement.from_bytes(entry.value).replica if entry.value else None
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except Exception as exc:  # noqa: BLE001
            self._failed("placement read", exc, stream_id=stream_id)
            return None

    async def placed(self, stream_id: str) -> None:
        """A stream started here on request: the placement names this replica."""
        assert self.placements is not None
        try:
            await self._write(self.placements.put(stream_id, Placement.here(self.id, self.address()).to_bytes()))
        except Exception as exc:  # noqa: BLE001
            self._failed("placement write", exc, stream_id=stream_id)

    async def release(self, stream_id: str) -> None:
        """The stream is forgotten here: its placement goes, unless another replica holds it now."""
        assert self.placements is not None
        try:
            entry = await self.placements.get(stream_id)
            if entry.value and Placement.from_bytes(entry.value).replica == self.id:
                await self._write(self.placements.delete(stream_id, last=entry.revision))
        except (KeyNotFoundError, KeyDeletedError, KeyWrongLastSequenceError):
            return
        except Exception as exc:  # noqa: BLE001
            self._failed("placement delete", exc, stream_id=stream_id)

    async def claim(self, stream_id: str, live: set[str]) -> str | None:
        """Take the stream's placement if it has none, names this replica or a dead one.

        Returns the replica it was taken from ("" for none; this replica's id after a restart),
        or None when another live replica holds it or another survivor won the race.
        """
        assert self.placements is not None
        try:
            try:
                entry = await self.placements.get(stream_id)
            except (KeyNotFoundError, KeyDeletedError):
                entry = None
            if entry is None or not entry.value:
                await self._write(self.placements.create(stream_id, Placement.here(self.id, self.address()).to_bytes()))
                return ""
            try:
                prev = Placement.from_bytes(entry.value)
            except (ValueError, KeyError, TypeError):
                prev = Placement("", "")  # unreadable: nobody's
            before = prev.replica
            if before != self.id and before in live:
                return None
            taken = Placement.here(self.id, self.address(), takeover_from=prev.takeover_from if before == self.id else before)
            await self._write(self.placements.update(stream_id, taken.to_bytes(), last=entry.revision))
            return before
        except KeyWrongLastSequenceError:
            return None  # another replica claimed it first
        except Exception as exc:  # noqa: BLE001
            self._failed("claim", exc, stream_id=stream_id)
            return "" if not (live - {self.id}) else None
