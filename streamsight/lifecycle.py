"""One stream lifecycle for every stage: what a stage keeps per stream, and when it lets go.

A stage (vision, audio, glitch, fusion, chat's media side) keeps one entry per stream in a
`StreamTable`. The policy, the same for all of them:

- **first message**: the stream's entry is made by the stage's factory. A first message that
  is not the stream's start (window > 0: this instance joined mid-way, after a restart or a
  partition move) is counted as `joined`; the stage flags that window partial;
- **last record**: ingest's window record with `last=True` finishes the stream: the stage
  flushes it, the entry is dropped, and the id is remembered as finished (the newest
  `finished_memory` ids);
- **late or redelivered messages after the end** are dropped and counted `late`: they never
  make a new entry (a detector that is never freed). The exception is a message from the
  stream's very start (window 0, first sample): the id is being used again for a new run,
  counted `reused`;
- **idle**: an entry that got nothing for `idle_s` seconds of wall time (its ingest died
  without a last record) is handed back by `idle()` for the stage to flush, flagged
  partial, and dropped; counted `idle`.

Wall time is used only for idleness, never to decide what a window contains. Every case is
a Prometheus counter (`streamsight_stage_streams_total{stage, event}`), and the gauge
`streamsight_stage_active_streams{stage}` is the table's size, so "after all streams end,
every stage's table is empty" can be checked from outside.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

DEFAULT_IDLE_S = 300.0  # one platform-wide idle policy (a stage's setting may change it)
FINISHED_MEMORY = 4096

STAGE_STREAMS = Counter(
    "streamsight_stage_streams_total",
    "Stream lifecycle events per stage: started, joined (mid-way), finished, idle, late (dropped after the end), reused",
    ["stage", "event"],
)
STAGE_ACTIVE = Gauge("streamsight_stage_active_streams", "Streams a stage holds state for", ["stage"])

E = TypeVar("E")


class StreamTable(Generic[E]):
    """A stage's per-stream entries under the one lifecycle policy (see the module docstring)."""

    def __init__(self, stage: str, idle_s: float = DEFAULT_IDLE_S, finished_memory: int = FINISHED_MEMORY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self.idle_s = idle_s
        self.finished_memory = finished_memory
        self._clock = clock
        self._entries: dict[str, E] = {}
        self._seen: dict[str, float] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.counts: dict[str, int] = {}

    def _count(self, event: str) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        STAGE_STREAMS.labels(self.stage, event).inc()

    def _gauge(self) -> None:
        STAGE_ACTIVE.labels(self.stage).set(len(self._entries))

    def entry(self, stream_id: str, make: Callable[[], E], from_start: bool) -> E | None:
        """The stream's entry, made with `make()` on its first message; None for a late message.

        `from_start`: the message is the stream's first (window 0 / sample 0).
        """
        entry = self._entries.get(stream_id)
        if entry is None:
            if stream_id in self._finished:
                if not from_start:
                    self._count("late")
                    return None
                del self._finished[stream_id]
                self._count("reused")
            entry = self._entries[stream_id] = make()
            self._count("started" if from_start else "joined")
            self._gauge()
        self._seen[stream_id] = self._clock()
        return entry

    def get(self, stream_id: str) -> E | None:
        return self._entries.get(stream_id)

    def finished(self, stream_id: str) -> bool:
        return stream_id in self._finished

    def finish(self, stream_id: str) -> E | None:
        """The stream's last record was handled: drop its entry, remember the id as finished."""
        return self._drop(stream_id, "finished")

    def release(self, stream_id: str) -> E | None:
        """Drop the stream's entry WITHOUT remembering it as finished: another replica holds it now
        (its partition moved), and it may come back here later."""
        entry = self._entries.pop(stream_id, None)
        self._seen.pop(stream_id, None)
        self._gauge()
        return entry

    def mark_finished(self, stream_id: str) -> None:
        """Another replica finished the stream: drop any entry, and its stragglers are late here too."""
        self._entries.pop(stream_id, None)
        self._seen.pop(stream_id, None)
        self._finished[stream_id] = None
        self._finished.move_to_end(stream_id)
        while len(self._finished) > self.finished_memory:
            self._finished.popitem(last=False)
        self._gauge()

    def idle(self, now: float | None = None) -> list[tuple[str, E]]:
        """Entries silent for `idle_s`: dropped (remembered as finished) and returned for flushing."""
        now = self._clock() if now is None else now
        stale = [sid for sid, seen in self._seen.items() if now - seen >= self.idle_s]
        return [(sid, entry) for sid in stale if (entry := self._drop(sid, "idle")) is not None]

    def _drop(self, stream_id: str, event: str) -> E | None:
        entry = self._entries.pop(stream_id, None)
        self._seen.pop(stream_id, None)
        self._finished[stream_id] = None
        self._finished.move_to_end(stream_id)
        while len(self._finished) > self.finished_memory:
            self._finished.popitem(last=False)
        if entry is not None:
            self._count(event)
            self._gauge()
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def items(self) -> list[tuple[str, E]]:
        return list(self._entries.items())
