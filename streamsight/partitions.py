"""Partition leases: which replica of a stage handles which partitions of the streams.

Per-stream subjects carry a partition (streamsight.subjects.partition_of); a stage that runs as
several replicas splits the `count` partitions among them, each replica consuming only the
subjects of the partitions it holds. The bookkeeping lives in one NATS KV bucket whose max age
is the lease TTL (`ttl_s`):

- `<group>.member.<replica>`: a member's heartbeat, put every `heartbeat_s`; a member whose key
  aged out (a process killed, a host gone) is no longer a member;
- `<group>.p.<k>`: the holder of partition k. Claimed by `create` (refused while someone holds
  it), renewed by `update` with the expected revision (refused when the lease expired and
  someone else claimed it: the holder learns it lost it), released by `delete` with the revision.

Assignment is rendezvous hashing over the live members: partition k belongs to the member with
the highest hash of (group, k, member), so every replica computes the same answer from the same
members, an added replica takes about 1/n of the partitions, and only a departed member's
partitions move. A replica releases a partition it no longer should hold (after `on_lose`), and
claims one it should hold once nobody holds it: a graceful stop hands partitions over within a
heartbeat, a killed replica's after its leases age out (`ttl_s`).

A lease is held, as far as this replica's work goes (`holds(k)`), only until `margin_s` before
it would age out counting from when its last successful renewal was sent: the server's clock
starts later than that, so a replica whose renewals stalled (a loaded machine, NATS slow) stops
fetching, acknowledging and telling the server its batch is in progress (streamsight.bus)
before another replica can claim the partition, and with a margin of at least the consumers'
ack wait, its unfinished messages are due again by then: the next holder restores exactly the
state whose messages were acknowledged and is delivered the rest first. Work pauses while a lease
is lapsed and goes on if the next renewal finds the key still this replica's; a state write
refused for a lapsed lease gives the lease up (`give_up`: `on_lose`, then claimed again once it
is free, if it is still this replica's), since the refused batch is applied in memory only.

`on_gain(k)` and `on_lose(k)` run one at a time, in the order the changes happen; a lease is
released only after `on_lose` returned (the last batch handled, its state saved and acked),
and renewals go on while the callbacks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from streamsight import subjects
from streamsight.bus import Final
from streamsight.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

BUCKET = "partitions"
LEASE_TTL_S = 6.0  # a killed replica's partitions move after about this long
HEARTBEAT_S = 1.0  # membership beats, lease renewals and rebalancing, this often

PARTITIONS_HELD = Gauge("streamsight_partitions_held", "Partitions this replica holds", ["group"])
PARTITION_CHANGES = Counter("streamsight_partition_changes_total", "Partitions this replica gained or lost", ["group", "change"])

Callback = Callable[[int], Awaitable[None]]


class LeaseLapsed(Final):
    """This replica no longer holds the partition (`Partitions.holds`): its state is not written."""


def replica_id() -> str:
    """This process's replica name: STREAMSIGHT_REPLICA_ID, else `<hostname>-<pid>`."""
    return os.environ.get("STREAMSIGHT_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"


def _key_token(text: str) -> str:
    """A replica name as KV allows it in a key (letters, digits, - _ = /)."""
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in text)


async def lease_holders(bus, group: str, bucket: str = BUCKET, count: int = subjects.PARTITIONS) -> dict[int, str]:
    """Who holds each of a group's partitions now, as the bucket says (for operators and tests);
    {} before any replica of any group started."""
    try:
        kv = await bus.js.key_value(bucket)
    except BucketNotFoundError:
        return {}
    out: dict[int, str] = {}
    for k in range(count):
        try:
            entry = await kv.get(f"{group}.p.{k}")
        except (KeyNotFoundError, KeyDeletedError):
            continue
        if entry.value:
            out[k] = entry.value.decode()
    return out


def owner(group: str, partition: int, members: list[str] | set[str] | frozenset[str]) -> str | None:
    """The member that should hold `partition` (rendezvous hashing); None without members."""

    def score(member: str) -> bytes:
        return hashlib.blake2b(f"{group}\x00{partition}\x00{member}".encode(), digest_size=8).digest()

    return max(members, key=lambda m: (score(m), m), default=None)


class Partitions:
    """One replica's share of a group's partitions (see the module docstring)."""

    def __init__(
        self,
        bus,
        group: str,
        replica: str | None = None,
        count: int = subjects.PARTITIONS,
        *,
        ttl_s: float = LEASE_TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
        bucket: str = BUCKET,
        margin_s: float | None = None,
    ):
        if heartbeat_s * 2 >= ttl_s:
            raise ValueError(f"the lease TTL ({ttl_s} s) must be more than twice the heartbeat ({heartbeat_s} s)")
        self.bus, self.group, self.count = bus, group, count
        self.replica = _key_token(replica or replica_id())
        self.ttl_s, self.heartbeat_s, self.bucket = ttl_s, heartbeat_s, bucket
        self.margin_s = ttl_s / 2 if margin_s is None else margin_s
        if not heartbeat_s < ttl_s - self.margin_s:
            raise ValueError(f"the lease TTL ({ttl_s} s) less its margin ({self.margin_s} s) must be more than the heartbeat ({heartbeat_s} s)")
        self._valid_until: dict[int, float] = {}  # leases held -> when this replica stops using them (monotonic)
        self._kv: KeyValue | None = None
        self._revisions: dict[int, int] = {}  # leases this replica holds -> their last revision
        self._held: set[int] = set()  # gained (on_gain returned) and not yet being lost
        self._lease_lock = asyncio.Lock()  # renewal, claim and release of one lease never interleave
        self._round_lock = asyncio.Lock()  # one rebalancing round (its on_gain/on_lose) at a time
        self._lost: set[int] = set()  # leases a renewal found taken: on_lose is due
        self._tasks: list[asyncio.Task] = []
        self._on_gain: Callback | None = None
        self._on_lose: Callback | None = None
        self._stopping = False
        self.members: frozenset[str] = frozenset()
        self.changed = asyncio.Event()  # set after every gain or loss (tests, readiness)

    @property
    def held(self) -> frozenset[int]:
        """The partitions this replica handles now (on_gain done, on_lose not begun)."""
        return frozenset(self._held)

    def holds(self, partition: int) -> bool:
        """Whether this replica may still work on `partition` (fetch, acknowledge, save state):
        it holds the lease, and its last renewal was sent less than TTL - margin ago."""
        return partition in self._revisions and time.monotonic() < self._valid_until.get(partition, 0.0)

    def check(self, partition: int) -> None:
        """Before a state write: LeaseLapsed unless this replica `holds` the partition. A lapsed
        lease is given up, since the batch being saved is then applied in memory only: the
        partition is taken again from the saved state."""
        if not self.holds(partition):
            self.give_up(partition)
            raise LeaseLapsed(f"the lease on {self.group} partition {partition} is not this replica's any more")

    def give_up(self, partition: int) -> None:
        """The lease is known to be gone (another replica wrote the partition's state): work on
        it stops now, `on_lose` comes in the next round."""
        if self._revisions.pop(partition, None) is not None:
            log.warning("partition lease given up", group=self.group, partition=partition, replica=self.replica)
            self._lost.add(partition)
        self._valid_until.pop(partition, None)

    def mine(self) -> frozenset[int]:
        """The partitions the live members' assignment gives this replica now."""
        return frozenset(k for k in range(self.count) if owner(self.group, k, self.members) == self.replica)

    async def settled(self, timeout_s: float = 30.0) -> bool:
        """Wait until this replica holds every partition the assignment gives it (a replica starting
        up says it is ready only then: MEDIA keeps messages only for consumers that exist). False
        if that took longer than `timeout_s`: it goes on taking them in the background."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.members and self.mine() <= self.held:
                return True
            await asyncio.sleep(0.1)
        return False

    def _member_key(self, member: str | None = None) -> str:
        return f"{self.group}.member.{member or self.replica}"

    def _lease_key(self, partition: int) -> str:
        return f"{self.group}.p.{partition}"

    async def start(self, on_gain: Callback, on_lose: Callback) -> None:
        """Join the group, take the free partitions that are this replica's, then go on in the
        background (partitions other replicas still hold come when they let go or expire)."""
        self._on_gain, self._on_lose = on_gain, on_lose
        self._kv = await self.bus.kv(self.bucket, history=1, ttl_s=self.ttl_s)
        PARTITIONS_HELD.labels(self.group).set(0)
        self._tasks = [asyncio.create_task(self._beat(), name=f"partitions:{self.group}:beat")]
        # One beat first: replicas started together then see each other, instead of the first
        # one taking every partition and handing most of them over again.
        await asyncio.sleep(self.heartbeat_s)
        try:
            async with self._round_lock:
                await self._rebalance_once()
        except Exception as exc:  # NATS trouble: the background rounds retry
            log.warning("partition rebalance failed; will retry", group=self.group, error=repr(exc))
        self._tasks.append(asyncio.create_task(self._rebalance(), name=f"partitions:{self.group}:rebalance"))

    async def stop(self) -> None:
        """Leave the group: every partition is lost (on_lose) and released, then the member key."""
        self._stopping = True
        async with self._round_lock:  # a change in progress finishes first
            await cancel_and_wait(self._tasks[1:])
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(self._member_key())  # the others see this member gone at once
        for partition in sorted(self._revisions):
            await self._lose(partition, release=True)
        await cancel_and_wait(self._tasks[:1])
        self._tasks = []

    async def abandon(self) -> None:
        """Stop beating without releasing or calling anything: what a killed process leaves (tests)."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        self._held.clear()
        self._revisions.clear()
        self._valid_until.clear()

    # Background ------------------------------------------------------------------
    async def _beat(self) -> None:
        """Membership heartbeat and lease renewal, every heartbeat_s, whatever the callbacks do."""
        while True:
            try:
                if not self._stopping:
                    await self._kv.put(self._member_key(), str(time.time()).encode())
                async with self._lease_lock:  # all at once: one by one, 16 round trips on a loaded NATS outlast the margin
                    await asyncio.gather(*(self._renew(p) for p in sorted(self._revisions)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: the leases may age out; renewal tells
                log.warning("partition heartbeat failed", group=self.group, error=repr(exc))
            await asyncio.sleep(self.heartbeat_s)

    async def _renew(self, partition: int) -> None:
        """One lease renewed (the caller holds the lease lock); a lapsed or refused one is lost."""
        revision = self._revisions.get(partition)
        if revision is None:
            return
        # Renewals that stalled past the margin paused the work (holds() is False); if the key is
        # still ours on the server, nobody else can have claimed it, and the work goes on.
        sent = time.monotonic()
        try:
            self._revisions[partition] = await self._kv.update(self._lease_key(partition), self.replica.encode(), last=revision)
            self._valid_until[partition] = sent + self.ttl_s - self.margin_s
        except KeyWrongLastSequenceError:
            # The lease aged out (this process stalled past the TTL) and may be someone else's.
            log.warning("partition lease lost", group=self.group, partition=partition, replica=self.replica)
            self.give_up(partition)

    async def _rebalance(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_s)
            try:
                async with self._round_lock:
                    if not self._stopping:
                        await self._rebalance_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("partition rebalance failed; will retry", group=self.group, error=repr(exc))

    async def _rebalance_once(self) -> None:
        members = await self._members()
        members.add(self.replica)
        self.members = frozenset(members)
        for partition in sorted(self._lost):
            self._lost.discard(partition)
            await self._lose(partition, release=False)
        for partition in range(self.count):
            want = owner(self.group, partition, members) == self.replica
            mine = partition in self._revisions
            if mine and not want:
                await self._lose(partition, release=True)
            elif want and not mine:  # claimed if nobody holds it: create is refused otherwise
                await self._gain(partition)

    async def _members(self) -> set[str]:
        """Live members, as the bucket holds them now: the group's member keys from the stream's
        subject list, then each one's latest value (a deleted one has left). No consumer is made
        (a watcher per round would be a consumer created and deleted every beat), and lease keys
        are not read (16 requests a beat per group): whether one is free is for `create` in
        `_gain` to find."""
        prefix = f"$KV.{self.bucket}.{self.group}.member."
        info = await self.bus.js.stream_info(f"KV_{self.bucket}", subjects_filter=f"{prefix}>")
        members: set[str] = set()
        for subject in info.state.subjects or {}:
            key = subject[len(f"$KV.{self.bucket}."):]
            try:
                await self._kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):  # left (its key deleted), or aged out meanwhile
                continue
            members.add(subject[len(prefix):])
        return members

    async def _gain(self, partition: int) -> None:
        async with self._lease_lock:
            sent = time.monotonic()
            try:
                self._revisions[partition] = await self._kv.create(self._lease_key(partition), self.replica.encode())
                self._valid_until[partition] = sent + self.ttl_s - self.margin_s
            except KeyWrongLastSequenceError:
                return  # someone holds it (a lease not yet aged out): next round
        try:
            await self._on_gain(partition)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("taking a partition failed; releasing it", group=self.group, partition=partition, exc_info=exc)
            async with self._lease_lock:
                revision = self._revisions.pop(partition, None)
                self._valid_until.pop(partition, None)
                if revision is not None:
                    with contextlib.suppress(Exception):
                        await self._kv.delete(self._lease_key(partition), last=revision)
            return
        self._held.add(partition)
        self._changed("gained", partition)

    async def _lose(self, partition: int, release: bool) -> None:
        """on_lose, then (if `release` and it is still ours) delete the lease."""
        was_held = partition in self._held
        self._held.discard(partition)
        if was_held:
            try:
                await self._on_lose(partition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("giving up a partition failed", group=self.group, partition=partition, exc_info=exc)
        if release:
            async with self._lease_lock:
                revision = self._revisions.pop(partition, None)
                self._valid_until.pop(partition, None)
                if revision is not None:
                    with contextlib.suppress(Exception):
                        await self._kv.delete(self._lease_key(partition), last=revision)
        if was_held:
            self._changed("lost", partition)

    def _changed(self, change: str, partition: int) -> None:
        PARTITION_CHANGES.labels(self.group, change).inc()
        PARTITIONS_HELD.labels(self.group).set(len(self._held))
        log.info(f"partition {change}", group=self.group, partition=partition, replica=self.replica, held=sorted(self._held))
        self.changed.set()
        self.changed = asyncio.Event()
