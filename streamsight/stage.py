"""The feature-stage runtime: MEDIA in, one FeatureRecord per (stream, window, modality) out.

A feature stage (vision, audio) is a `Service` whose whole job is the same loop; this module
is that loop, written once. The stage's own code is its domain logic, a `StageLogic`
without NATS (the same object training's offline feature extraction drives):

- `step(messages)` takes one fetch of `(subject, data)` MEDIA messages, several streams
  mixed, in stored order, and returns the windows they finished and the positions of the
  messages it rejects as bad input (with why);
- `evict_idle()` flushes the streams that went idle (streamsight.lifecycle's policy);
- `streams` is its `StreamTable`.

The runtime owns the rest: one durable batch consumer on the stage's MEDIA subjects
(fetches bounded in messages and bytes, see streamsight.bus), `step` run in a worker thread
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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

from nats.aio.msg import Msg
from opentelemetry import trace
from prometheus_client import Counter

from streamsight import heap, subjects
from streamsight.bus import until_done
from streamsight.gen.media.v1 import media_pb2
from streamsight.lag import MediaLag
from streamsight.lifecycle import StreamTable
from streamsight.service import Service
from streamsight.telemetry import HANDLE_LATENCY, current_trace_id, stream_attributes, tracer
from streamsight.windows import WindowResult, feature_record
from streamsight.worker import Worker

CONSUMER_INACTIVE_S = 300.0  # a removed stage stops holding MEDIA back after this
LAG_POLL_S = 5.0  # how often ingest's position is read from MEDIA

STAGE_WINDOWS = Counter("streamsight_stage_windows_total", "Feature records a stage published, by flag (ok, partial, empty)", ["stage", "flag"])
STAGE_REDELIVERED = Counter("streamsight_stage_redelivered_total", "MEDIA messages a stage got more than once", ["stage"])
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
        media = [subjects.media(kind) for kind in self.media_kinds]
        fetch = getattr(self.settings, "fetch_batch", 64)
        self.bus.consume_batches(self.name, media, self.on_batch, subjects.MEDIA_STREAM, batch=fetch, inactive_threshold_s=CONSUMER_INACTIVE_S)
        self._tasks = [asyncio.create_task(self._idle_sweep(), name=f"{self.name}:idle"),
                       asyncio.create_task(self._watch_lag(), name=f"{self.name}:lag")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if len(self.logic.streams):
            # Their acknowledged input is gone with this process; the next instance resumes
            # from the unacknowledged messages and flags the window it joins "partial".
            self.log.warning("stopping with streams in progress", streams=sorted(self.logic.streams))

    async def on_batch(self, msgs: list[Msg]) -> dict[int, str]:
        for msg in msgs:
            if msg.metadata and msg.metadata.num_delivered > 1:
                STAGE_REDELIVERED.labels(self.name).inc()
        async with self._lock:
            await self._publish_outbox()  # what a failed publish left behind goes first
            started = time.perf_counter()
            result = await self._worker.run(self._step, [(m.subject, m.data) for m in msgs])
            HANDLE_LATENCY.labels(self.name, "batch").observe(time.perf_counter() - started)
            STAGE_REJECTED.labels(self.name).inc(len(result.rejected))
            self._note_windows_seen(msgs)
            self._outbox += result.windows
            # The fetch is acknowledged once its windows are out, and must not come back: its
            # messages are in the logic's state already, so a failed publish is retried in place.
            await until_done(self._publish_outbox, "publishing windows", stage=self.name)
        return result.rejected

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

    async def _idle_sweep(self) -> None:
        """Streams whose ingest vanished without a last window record are flushed, not kept forever."""
        period = min(30.0, self.logic.streams.idle_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                async with self._lock:
                    self._outbox += await self._worker.run(self._evict_idle)
                    await self._publish_outbox()
            except Exception as exc:  # NATS trouble: the outbox keeps the windows for the next try
                self.log.warning("idle flush failed; will retry", error=repr(exc))

    async def _watch_lag(self) -> None:
        """Ingest's position in every stream held, from MEDIA, for the lag gauge."""
        assert self.bus is not None
        while True:
            await asyncio.sleep(LAG_POLL_S)
            await self._lag.poll_heads(self.bus.js)
