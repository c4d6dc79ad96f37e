"""The feature-stage runtime: MEDIA in, one FeatureRecord per (stream, window, modality) out.

A feature stage (vision, audio) is a `Service` whose whole job is the same loop; this module
is that loop, written once. The stage's own code is its domain logic, a `StageLogic`
without NATS (the same object training's offline feature extraction drives):

- `step(messages)` takes one fetch of `(subject, data)` MEDIA messages, several streams
  mixed, in stored order, and returns the windows they finished and the positions of the
  messages it rejects as bad input (with why);
- `evict_idle()` flushes the streams that went idle (streamsight.lifecycle's policy);
- `streams` is its `StreamTable`.

The runtime owns the rest: the stage's partitions (streamsight.partitions: every replica of the
stage joins the group named after it and holds some of the `subjects.PARTITIONS` partitions; one
replica holds them all), one durable batch consumer `<stage>-p<k>` per partition held, on the
stage's MEDIA subjects of partition k, started when the partition is gained and stopped (after
the batch in hand) when it is lost (fetches bounded in messages and bytes, see
streamsight.bus), `step` run in a worker thread
one fetch at a time (the logic need not be thread-safe), every finished window published
as a FeatureRecord (streamsight.windows.feature_record) with the stable id
`<stream>:<modality>:<window>` BEFORE the fetch is acknowledged (a publish that fails while NATS
is away is retried in place, so a fetch is never handled twice), an outbox so windows go out in
order and an idle flush whose publish failed goes first next time,
the idle sweep, handing freed heap back to the OS when a stream ends and every few seconds
of work (streamsight.heap.Trimmer), and the per-stage metrics: windows by flag,
redeliveries, rejects, lag behind ingest in media seconds (streamsight.lag; the consumer's
backlog is the Bus's `streamsight_consumer_*_messages`). Each published window has a span
with `stream.id` and `window.index`, inside the span of the fetch that finished it.

Takeover with state (a logic with `export_state`/`import_state`): a stream is saved in the KV
bucket `stage_state` under `<stage>.<partition>.<stream>`, with the MEDIA sequence of the last
message applied, after the windows of what it applied are published and before those messages
are acknowledged; a finished stream leaves a small "done" entry instead (the bucket's max age
clears it). A stream is saved at most every `snapshot_interval_s` (a live stream's fetches bring
a chunk or a frame each, and a state is up to a megabyte): the messages applied since are held,
unacknowledged (kept from redelivery by in-progress beats), and acknowledged once the next
snapshot covers them; a stream that ended, or has SNAPSHOT_HOLD_MAX messages held, is saved at
once, and a partition handed over is saved first. A replica that gains a partition loads its
streams from there, and a message at or below its stream's saved sequence (a redelivery of what
the previous holder saved but did not acknowledge) is acknowledged without being applied; one
applied here since but not saved yet is held again, not applied. A window that the
previous holder published but did not save is computed again from the same input and
published again with the same id (JetStream drops the copy). Each snapshot write expects the
revision this replica read or wrote last: a replica that lost its lease without noticing
cannot overwrite its successor's state; its batch fails and is redelivered to the successor.
Partition consumers have a short ack wait (`PARTITION_ACK_WAIT_S`, kept alive by the bus's
in-progress beats while a batch is handled), shorter than the lease TTL, so a killed holder's
unacknowledged messages are due again by the time its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

from nats.aio.msg import Msg
from opentelemetry import trace
from prometheus_client import Counter

from nats.js.errors import KeyWrongLastSequenceError

from streamsight import heap, subjects
from streamsight.bus import DEFAULT_FETCH_BYTES, FETCH_BUDGET, MAX_PAYLOAD, Consumer, Handled, kv_entries, say_in_progress, until_done
from streamsight.gen.media.v1 import media_pb2
from streamsight.applied import Applied
from streamsight.lag import MediaLag
from streamsight.lifecycle import StreamTable
from streamsight.partitions import HEARTBEAT_S, LEASE_TTL_S, LeaseLapsed, Partitions
from streamsight.service import Service
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import HANDLE_LATENCY, current_trace_id, stream_attributes, tracer
from streamsight.windows import WindowResult, feature_record
from streamsight.worker import Worker

CONSUMER_INACTIVE_S = 300.0  # a removed stage stops holding MEDIA back after this
LAG_POLL_S = 5.0  # how often ingest's position is read from MEDIA
PARTITION_ACK_WAIT_S = 3.0  # must stay below the lease TTL (see the module docstring)
# A pull reserves its max bytes from the connection's budget (streamsight.pull): sized so that
# every partition's pull fits in it at once, or idle partitions' lingering pulls starve the rest.
PARTITION_FETCH_BYTES = min(DEFAULT_FETCH_BYTES, FETCH_BUDGET // (subjects.PARTITIONS + 4))
STATE_BUCKET = "stage_state"
STATE_TTL_S = 3600.0
# A KV value is one NATS message: a stream's state above this (e.g. audio of very long windows)
# is not saved; its old snapshot is deleted, so a successor starts the stream afresh (partial).
MAX_SNAPSHOT_BYTES = MAX_PAYLOAD - 64 * 1024  # a snapshot rewritten by every fetch of its stream; "done" entries go after this
# A stream with this many messages applied since its last snapshot is saved at once, whatever
# snapshot_interval_s says: what a partition's consumer leaves unacknowledged stays far below its
# max_ack_pending (streamsight.bus), past which the server would stop delivering.
SNAPSHOT_HOLD_MAX = 16

STAGE_WINDOWS = Counter("streamsight_stage_windows_total", "Feature records a stage published, by flag (ok, partial, empty)", ["stage", "flag"])
STAGE_REDELIVERED = Counter("streamsight_stage_redelivered_total", "MEDIA messages a stage got more than once", ["stage"])
STAGE_SKIPPED = Counter("streamsight_stage_skipped_total", "MEDIA messages not applied again: already in the stream's state (saved, or applied here since)", ["stage"])
STAGE_SNAPSHOTS = Counter("streamsight_stage_snapshots_total", "Stream state snapshots a stage saved, by kind (state, done; fenced, too_big: not saved)", ["stage", "kind"])
STAGE_SNAPSHOT_BYTES = Counter("streamsight_stage_snapshot_bytes_total", "Bytes of stream state snapshots a stage saved", ["stage"])
STAGE_RESTORED = Counter("streamsight_stage_restored_total", "Streams a stage took over from snapshots, by result (state, done, unreadable)", ["stage", "result"])
STAGE_REJECTED = Counter("streamsight_stage_rejected_total", "MEDIA messages a stage rejected as bad input (dead-lettered)", ["stage"])


@dataclass
class StepResult:
    """What one fetch produced: finished windows, and rejected messages by position (why)."""

    windows: list[WindowResult]
    rejected: dict[int, str]


class StageLogic(Protocol):
    """A feature stage's domain logic: plain Python, no NATS (see the module docstring)."""

    streams: StreamTable

    def step(self, messages: list[tuple[str, bytes]]) -> StepResult: ...

    def evict_idle(self, now: float | None = None) -> list[WindowResult]: ...

    # Optional, for exact takeover (see the module docstring); without them a partition that
    # moves starts its streams afresh where it joins (the window it joins flagged partial).
    # def export_state(self, stream_id: str) -> bytes: ...
    # def import_state(self, stream_id: str, data: bytes) -> None: ...


class StaleLease(Exception):
    """Another replica wrote this partition's state: this one lost the lease without noticing."""


def _snapshot(applied: Applied, state: bytes | None) -> bytes:
    """A snapshot entry: a JSON line (applied position, done) and the logic's state bytes."""
    head = {"seq": applied.seq, "stored_ns": applied.stored_ns, "done": state is None}
    return json.dumps(head).encode() + b"\n" + (state or b"")


def _read_snapshot(data: bytes) -> tuple[Applied, bytes | None]:
    head, _, state = data.partition(b"\n")
    meta = json.loads(head)
    return Applied(int(meta["seq"]), int(meta.get("stored_ns", 0))), None if meta["done"] else state


class FeatureStage(Service):
    """Base of vision and audio: subclasses set `modality` and `media_kinds` and build their logic."""

    modality: ClassVar[str] = ""
    media_kinds: ClassVar[tuple[str, ...]] = ()  # MEDIA subjects' kinds, e.g. ("audio", "windows")

    # Hooks ------------------------------------------------------------------
    async def open_logic(self) -> StageLogic:
        """Open models and return the stage's logic; runs once at start."""
        raise NotImplementedError

    def producer(self) -> str:
        """producer_version of every record (which code and model made it)."""
        return ""

    def record_info(self) -> dict[str, str]:
        """`info` of every record (provider, model, ...)."""
        return {}

    def describe(self, window: WindowResult) -> dict[str, object]:
        """Extra fields for the "window published" log line."""
        return {}

    # Runtime -----------------------------------------------------------------
    async def start(self) -> None:
        self.logic = await self.open_logic()
        self._lock = asyncio.Lock()  # one step (or idle flush) at a time: the logic is not thread-safe
        self._outbox: list[WindowResult] = []
        self._lag = MediaLag(self.name)
        self._trimmer = heap.Trimmer()
        self._worker = Worker(self.name)  # every step in one thread of the stage's own (streamsight.worker)
        assert self.bus is not None
        self._fetch = getattr(self.settings, "fetch_batch", 64)
        self._stateful = hasattr(self.logic, "export_state") and hasattr(self.logic, "import_state")
        self._applied: dict[str, Applied] = {}  # stream -> the last MEDIA message applied
        self._revisions: dict[str, int] = {}  # stream -> revision of its snapshot as this replica knows it
        self._saved: dict[str, Applied] = {}  # stream -> the position its last snapshot holds
        # stream -> messages applied since its last snapshot, acknowledged once the next one is saved,
        # and when the first of them was held
        self._held: dict[str, list[Msg]] = {}
        self._held_since: dict[str, float] = {}
        self._snapshot_every = float(getattr(self.settings, "snapshot_interval_s", 0.0))
        self._consumers: dict[int, Consumer] = {}
        self.snapshot_stats = [0, 0, 0.0]  # snapshots, bytes, seconds (export + write)
        self._kv = await self.bus.kv(STATE_BUCKET, history=1, ttl_s=STATE_TTL_S) if self._stateful else None
        ttl = getattr(self.settings, "partition_lease_s", LEASE_TTL_S)
        self._ack_wait = min(PARTITION_ACK_WAIT_S, ttl / 2)
        for k in range(subjects.PARTITIONS):  # every partition keeps its MEDIA until someone takes it
            await self.bus.declare_batches_consumer(self._durable(k), self._subjects(k), subjects.MEDIA_STREAM, batch=self._fetch,
                                                    ack_wait_s=self._ack_wait, inactive_threshold_s=CONSUMER_INACTIVE_S)
        self._tasks = [asyncio.create_task(self._idle_sweep(), name=f"{self.name}:idle"),
                       asyncio.create_task(self._watch_lag(), name=f"{self.name}:lag")]
        self.partitions = Partitions(self.bus, self.name, ttl_s=ttl, heartbeat_s=getattr(self.settings, "partition_heartbeat_s", HEARTBEAT_S))
        if self._stateful and self._snapshot_every > 0:
            self._tasks += [asyncio.create_task(self._save_held(), name=f"{self.name}:snapshots"),
                            asyncio.create_task(self._beat_held(), name=f"{self.name}:held-beats")]
        await self.partitions.start(self._gain, self._lose)


    def health_info(self) -> dict[str, str]:
        held = getattr(self, "partitions", None)
        return {"partitions": ",".join(map(str, sorted(held.held))) if held is not None else ""}

    def _durable(self, partition: int) -> str:
        return f"{self.name}-p{partition}"

    def _subjects(self, partition: int) -> list[str]:
        return [subjects.media(kind, partition=partition) for kind in self.media_kinds]

    # Partitions --------------------------------------------------------------------
    async def _gain(self, partition: int) -> None:
        """Load the partition's streams from their snapshots, then start its consumer."""
        restored = await self._restore(partition) if self._stateful else 0
        # A killed holder's batch in hand comes back first (before anything newer), once due.
        await self.bus.wait_for_redeliveries(subjects.MEDIA_STREAM, self._durable(partition), self._ack_wait, self.partitions.margin_s)
        self._consumers[partition] = self.bus.consume_batches(
            self._durable(partition), self._subjects(partition), self.on_batch, subjects.MEDIA_STREAM, batch=self._fetch,
            ack_wait_s=self._ack_wait, inactive_threshold_s=CONSUMER_INACTIVE_S, max_bytes=PARTITION_FETCH_BYTES,
            holds=lambda: self.partitions.holds(partition),
        )
        self.log.info("partition taken", partition=partition, streams=restored,
                      positions={s: a.seq for s, a in self._saved.items() if subjects.partition_of(s) == partition})

    async def _lose(self, partition: int) -> None:
        """Stop the partition's consumer after the batch in hand (its state saved, its acks
        sent), then forget its streams here."""
        consumer = self._consumers.pop(partition, None)
        if consumer is not None:
            await consumer.stop()
        async with self._lock:
            # What was applied since the last snapshots is saved now, while the lease still holds:
            # the next holder then starts from it, not from messages redelivered after an ack wait.
            for sid in [s for s in self._held if subjects.partition_of(s) == partition]:
                try:
                    await self._checkpoint([sid])
                except Exception as exc:  # lease lapsed or refused: the next holder gets them again
                    self.log.warning("saving a stream's state at handover failed; its messages since go to the next holder",
                                     stream_id=sid, error=repr(exc))
                    await self._hand_back_held(sid)
            dropped = [sid for sid in list(self.logic.streams) if subjects.partition_of(sid) == partition]
            for sid in dropped:
                self.logic.streams.release(sid)
                self._lag.forget(sid)
            for sid in [s for s in self._applied if subjects.partition_of(s) == partition]:
                self._applied.pop(sid, None)
                self._saved.pop(sid, None)
                self._revisions.pop(sid, None)
        self.log.info("partition handed over", partition=partition, streams=len(dropped))

    async def _restore(self, partition: int) -> int:
        assert self._kv is not None
        prefix = f"{self.name}.{partition}."
        entries = [e for e in await kv_entries(self.bus.js, STATE_BUCKET, f"{prefix}*") if e.value]
        restored = 0
        async with self._lock:
            for entry in entries:
                sid = entry.key[len(prefix):]
                self._revisions[sid] = entry.revision  # even an unreadable one is overwritten, not fenced
                try:
                    applied, state = _read_snapshot(entry.value)
                    if state is None:
                        self.logic.streams.mark_finished(sid)
                        STAGE_RESTORED.labels(self.name, "done").inc()
                    else:
                        await self._worker.run(self.logic.import_state, sid, state)
                        STAGE_RESTORED.labels(self.name, "state").inc()
                        restored += 1
                except Exception as exc:  # the stream starts afresh here, its window flagged partial
                    STAGE_RESTORED.labels(self.name, "unreadable").inc()
                    self.log.error("stream snapshot unreadable; the stream starts afresh", stream_id=sid, error=repr(exc))
                    continue
                self._applied[sid] = self._saved[sid] = applied
        return restored

    async def stop(self) -> None:
        # Every consumer ends its batch in hand at once (one by one, each would wait out its fetch),
        # then each partition is handed over and its lease released.
        await asyncio.gather(*(c.stop() for c in list(self._consumers.values())))
        await self.partitions.stop()
        await cancel_and_wait(self._tasks)
        if len(self.logic.streams):
            # Their acknowledged input is gone with this process; the next instance resumes
            # from the unacknowledged messages and flags the window it joins "partial".
            self.log.warning("stopping with streams in progress", streams=sorted(self.logic.streams))

    async def on_batch(self, msgs: list[Msg]) -> Handled:
        for msg in msgs:
            if msg.metadata and msg.metadata.num_delivered > 1:
                STAGE_REDELIVERED.labels(self.name).inc()
        async with self._lock:
            await self._publish_outbox()  # what a failed publish left behind goes first
            # What the stream's saved state holds is acknowledged, not applied again; what was
            # applied here since (a held message delivered again) is held again, not applied.
            saved = self._saved if self._stateful else self._applied
            fresh, again = [], []
            for i, m in enumerate(msgs):
                sid, at = subjects.stream_of(m.subject), Applied.of(m)
                if not saved.get(sid, Applied()).covers(at):
                    (again if self._applied.get(sid, Applied()).covers(at) else fresh).append(i)
            STAGE_SKIPPED.labels(self.name).inc(len(msgs) - len(fresh))
            if len(fresh) < len(msgs):  # redeliveries after a takeover or a stall: rare, and the first place to look after a loss
                skipped = sorted(set(range(len(msgs))) - set(fresh))
                self.log.info("messages not applied again", saved=len(skipped) - len(again), held_again=len(again),
                              seqs=[Applied.of(msgs[i]).seq for i in skipped],
                              applied={sid: self._applied[sid].seq for sid in {subjects.stream_of(msgs[i].subject) for i in skipped} if sid in self._applied})
            started = time.perf_counter()
            result = await self._worker.run(self._step, [(msgs[i].subject, msgs[i].data) for i in fresh])
            HANDLE_LATENCY.labels(self.name, "batch").observe(time.perf_counter() - started)
            rejected = {fresh[i]: why for i, why in result.rejected.items()}
            STAGE_REJECTED.labels(self.name).inc(len(rejected))
            touched: dict[str, Applied] = {}
            for i in fresh:
                touched[subjects.stream_of(msgs[i].subject)] = Applied.of(msgs[i])
            self._note_windows_seen(msgs)
            self._outbox += result.windows
            # The fetch is acknowledged once its windows are out, and must not come back: its
            # messages are in the logic's state already, so a failed publish is retried in place.
            await until_done(self._publish_outbox, "publishing windows", stage=self.name)
            self._applied.update(touched)
            if not self._stateful:
                return Handled(rejected)
            return await self._save_or_hold(msgs, [i for i in sorted(fresh + again) if i not in rejected], set(touched), rejected)

    async def _save_or_hold(self, msgs: list[Msg], applied: list[int], touched: set[str], rejected: dict[int, str]) -> Handled:
        """Save the streams of a fetch whose snapshot is due (ended, interval passed, too many
        messages waiting) and acknowledge what they held; hold the other streams' messages."""
        by_stream: dict[str, list[int]] = {}
        for i in applied:
            by_stream.setdefault(subjects.stream_of(msgs[i].subject), []).append(i)
        now = time.monotonic()
        due = [sid for sid in touched | set(by_stream) if self._snapshot_due(sid, len(by_stream.get(sid, ())), now)]
        await self._checkpoint(due)
        held = [i for sid, positions in by_stream.items() if sid not in due for i in positions]
        for i in held:
            sid = subjects.stream_of(msgs[i].subject)
            self._held.setdefault(sid, []).append(msgs[i])
            self._held_since.setdefault(sid, now)
        return Handled(rejected, frozenset(held))

    def _snapshot_due(self, sid: str, adding: int, now: float) -> bool:
        if self._snapshot_every <= 0 or adding == 0 or sid not in self.logic.streams:
            return True
        waiting = len(self._held.get(sid, ())) + adding
        return waiting >= SNAPSHOT_HOLD_MAX or now - self._held_since.get(sid, now) >= self._snapshot_every

    async def _checkpoint(self, streams: list[str]) -> None:
        """Save the streams' state, then acknowledge the messages they held (now covered)."""
        await self._save(streams)
        for sid in streams:
            for msg in self._held.pop(sid, []):
                with contextlib.suppress(Exception):  # NATS away: redelivered, then skipped (saved) and acknowledged
                    await msg.ack()
            self._held_since.pop(sid, None)

    async def _hand_back_held(self, sid: str) -> None:
        """A stream's held messages that no snapshot will cover go back to the server at once,
        unacknowledged: redelivered before anything newer to whoever holds the partition next.
        Left to their ack wait instead, a successor that took the partition over at a graceful
        release (no wait for redeliveries then) would fetch newer messages first."""
        for msg in self._held.pop(sid, []):
            with contextlib.suppress(Exception):
                await msg.nak()
        self._held_since.pop(sid, None)

    async def _save_held(self) -> None:
        """Save, every `snapshot_interval_s`, the streams whose held messages waited that long (a
        live stream between fetches)."""
        while True:
            await asyncio.sleep(max(self._snapshot_every / 2, 0.05))
            async with self._lock:
                now = time.monotonic()
                for sid, since in list(self._held_since.items()):
                    if sid not in self._held_since or now - since < self._snapshot_every:
                        continue
                    if not self.partitions.holds(subjects.partition_of(sid)):
                        continue  # a lapsed lease: no save; the next holder gets them again
                    try:
                        await self._checkpoint([sid])
                    except StaleLease:
                        await self._hand_back_held(sid)
                    except Exception as exc:  # LeaseLapsed, NATS away: tried again next round
                        self.log.warning("saving a stream's state failed; will retry", stream_id=sid, error=repr(exc))

    async def _beat_held(self) -> None:
        """Keep held messages from being redelivered while they wait for their snapshot. Without
        the lock: on a loaded machine a step can hold it longer than the ack wait, and held
        messages came back to this replica (a redelivery and a copy, for nothing). Not past the
        lease (`holds`): the next holder must get them after one ack wait."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            now = time.monotonic()
            for sid, since in list(self._held_since.items()):
                if now - since >= self._ack_wait / 3 and self.partitions.holds(subjects.partition_of(sid)):
                    await say_in_progress(list(self._held.get(sid, ())))

    async def _save(self, streams: list[str]) -> None:
        """Snapshot each stream (or its "done" entry) with its applied sequence; StaleLease when
        another replica wrote one since (this replica's lease is gone: the batch is redelivered)."""
        assert self._kv is not None
        for sid in streams:
            started = time.perf_counter()
            live = sid in self.logic.streams
            state = await self._worker.run(self.logic.export_state, sid) if live else None
            value = _snapshot(self._applied.get(sid, Applied()), state)
            key = f"{self.name}.{subjects.partition_of(sid)}.{sid}"
            if len(value) > MAX_SNAPSHOT_BYTES:
                await self._drop_snapshot(sid, key, len(value))
                continue

            async def write() -> None:
                self.partitions.check(subjects.partition_of(sid))  # the lease ran out: the batch goes back
                last = self._revisions.get(sid)
                if last is None:
                    try:
                        self._revisions[sid] = await self._kv.create(key, value)
                        return
                    except KeyWrongLastSequenceError:
                        # A stream id used again after it finished: its "done" entry is replaced.
                        # Any other entry is another replica's state: fenced.
                        entry = await self._kv.get(key)
                        if _read_snapshot(entry.value)[1] is not None:
                            raise
                        last = entry.revision
                self._revisions[sid] = await self._kv.update(key, value, last=last)

            delay = 0.5
            while True:  # like until_done, but a refused revision is final
                try:
                    await write()
                    break
                except KeyWrongLastSequenceError:
                    STAGE_SNAPSHOTS.labels(self.name, "fenced").inc()
                    self.partitions.give_up(subjects.partition_of(sid))  # the batch goes back at once (streamsight.bus)
                    raise StaleLease(f"{key} was written by another replica") from None
                except (asyncio.CancelledError, LeaseLapsed):
                    raise
                except Exception as exc:
                    self.log.warning("saving stream state failed; retrying", stream_id=sid, error=repr(exc), retry_in_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            self._saved[sid] = self._applied.get(sid, Applied())
            STAGE_SNAPSHOTS.labels(self.name, "state" if live else "done").inc()
            STAGE_SNAPSHOT_BYTES.labels(self.name).inc(len(value))
            self.snapshot_stats[0] += 1
            self.snapshot_stats[1] += len(value)
            self.snapshot_stats[2] += time.perf_counter() - started
            if not live:  # finished: the "done" entry stays in KV; nothing more to remember here
                self._applied.pop(sid, None)
                self._saved.pop(sid, None)
                self._revisions.pop(sid, None)

    def _ended(self) -> int:
        counts = self.logic.streams.counts
        return counts.get("finished", 0) + counts.get("idle", 0)

    def _step(self, messages: list[tuple[str, bytes]]) -> StepResult:
        """The logic's step, then a heap trim when it ended a stream or one is due (in the worker thread)."""
        ended = self._ended()
        result = self.logic.step(messages)
        self._trimmer.after_work(self._ended() > ended)
        return result

    def _evict_idle(self) -> list[WindowResult]:
        ended = self._ended()
        windows = self.logic.evict_idle()
        self._trimmer.after_work(self._ended() > ended)
        return windows

    def _note_windows_seen(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            if ".windows." in msg.subject:
                self._lag.seen(subjects.stream_of(msg.subject), self._window_end_hint(msg))

    @staticmethod
    def _window_end_hint(msg: Msg) -> float:
        try:
            return float(media_pb2.WindowRecord.FromString(msg.data).end_s)
        except Exception:
            return 0.0

    async def _publish_outbox(self) -> None:
        assert self.bus is not None
        info, producer = self.record_info(), self.producer()
        while self._outbox:
            w = self._outbox[0]
            record = feature_record(self.modality, w, info, producer)
            msg_id = subjects.feature_msg_id(w.stream_id, self.modality, w.window)
            with tracer().start_as_current_span(
                f"publish {self.modality} window", kind=trace.SpanKind.PRODUCER, attributes=stream_attributes(w.stream_id, w.window)
            ):
                await self.bus.publish(subjects.features(self.modality, w.stream_id), record, msg_id, kind="features")
            self._outbox.pop(0)
            for flag in w.flags or ("ok",):
                STAGE_WINDOWS.labels(self.name, flag).inc()
            self._lag.handled(w.stream_id, w.end_s)
            self.log.info("window published", stream_id=w.stream_id, window=w.window, flags=list(w.flags),
                          trace_id=current_trace_id(), **self.describe(w))
        for sid in [s for s in self._lag.streams if s not in self.logic.streams]:
            self._lag.forget(sid)  # finished streams: nothing to lag behind

    async def _drop_snapshot(self, sid: str, key: str, size: int) -> None:
        """A state too big for one KV value: its older snapshot must not be taken over (the
        messages since are acknowledged), so it is deleted, at its revision."""
        STAGE_SNAPSHOTS.labels(self.name, "too_big").inc()
        self.log.warning("stream state too big to save; a replica taking it over starts it afresh", stream_id=sid, bytes=size)
        last = self._revisions.pop(sid, None)
        if last is not None:
            try:
                await self._kv.delete(key, last=last)
            except Exception as exc:
                if isinstance(exc, KeyWrongLastSequenceError) or "wrong last sequence" in str(exc).lower():
                    STAGE_SNAPSHOTS.labels(self.name, "fenced").inc()
                    raise StaleLease(f"{key} was written by another replica") from None
                raise

    async def _idle_sweep(self) -> None:
        """Streams whose ingest vanished without a last window record are flushed, not kept forever."""
        period = min(30.0, self.logic.streams.idle_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                async with self._lock:
                    before = set(self.logic.streams)
                    self._outbox += await self._worker.run(self._evict_idle)
                    await self._publish_outbox()
                    if self._stateful:
                        await self._checkpoint([sid for sid in before if sid not in self.logic.streams and sid in self._applied])
            except Exception as exc:  # NATS trouble: the outbox keeps the windows for the next try
                self.log.warning("idle flush failed; will retry", error=repr(exc))

    async def _watch_lag(self) -> None:
        """Ingest's position in every stream held, from MEDIA, for the lag gauge."""
        assert self.bus is not None
        while True:
            await asyncio.sleep(LAG_POLL_S)
            await self._lag.poll_heads(self.bus.js)

