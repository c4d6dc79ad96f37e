"""Open event watchers (SSE clients of the web page, WatchEvents calls): counted, and cleaned up.

Every watcher follows the EVENTS stream through a consumer of its own (see eventlog.watch).
`Watchers.follow` is the only way the gateway opens one: it counts the watcher while it is
open (``streamsight_gateway_watchers{kind}``) and closes the event generator on the way out,
whichever way the watcher ends (the client disconnects, a write fails, the server shuts
down), so its consumer is deleted then and not left holding server resources.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

from nats.js import JetStreamContext
from prometheus_client import Gauge

from gateway import eventlog
from streamsight.gen.events.v1 import events_pb2

WATCHERS = Gauge("streamsight_gateway_watchers", "Event watchers open in the gateway", ["kind"])


class Watchers:
    def __init__(self, js: JetStreamContext):
        self.js = js
        self.open: Counter[str] = Counter()  # kind ("sse", "grpc") -> watchers open now

    @property
    def count(self) -> int:
        return sum(self.open.values())

    @contextlib.asynccontextmanager
    async def follow(
        self,
        kind: str,
        subject: str,
        types: set[str],
        after_sequence: int | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[AsyncIterator[events_pb2.Event]]:
        """The events of eventlog.watch, for one watcher of `kind`, closed when the block ends."""
        self.open[kind] += 1
        WATCHERS.labels(kind).inc()
        try:
            async with contextlib.aclosing(eventlog.watch(self.js, subject, types, after_sequence, since)) as events:
                yield events
        finally:
            self.open[kind] -= 1
            WATCHERS.labels(kind).dec()
