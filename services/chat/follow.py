"""One chat reader's follow of its stream's media, kept alive across NATS restarts.

`MediaFollow` holds two ordered consumers (ephemeral, in order, no acks): the stream's window
records on MEDIA and its status events on EVENTS, each from a start time. A restarted
nats-server keeps neither (MEDIA is in memory; no ephemeral consumer survives), and nats-py's
own recovery of an ordered consumer cannot help: it asks for a start sequence while the start
time is still set, which the server refuses (err_code 10094), and a MEDIA stream made again
numbers its messages from 1. `check()` asks the server for each consumer and subscribes again
where it is gone (the service calls it after each reconnect and every FOLLOW_CHECK_S), from the
stored time of the last message seen: nothing newer is skipped, and the few seen again are
harmless (a window record at or below the watermark changes nothing; a status event only
repeats what was said). Re-subscriptions are counted in streamsight_chat_media_resubscribed_total.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

log = structlog.get_logger(__name__)

FOLLOW_CHECK_S = 5.0  # how often the consumers are checked between reconnects (a lost cluster node drops them too)
RESUBSCRIBED = Counter(
    "streamsight_chat_media_resubscribed_total", "Chat readers' media consumers subscribed again after NATS dropped them", ["kind"]
)

Handler = Callable[[Msg], Awaitable[None]]


class MediaFollow:
    """The two consumers of one reader; `kinds` maps a name ("windows", "status") to (stream, subject, handler)."""

    def __init__(self, js: JetStreamContext, stream_id: str, since: datetime, kinds: dict[str, tuple[str, str, Handler]]) -> None:
        self.js, self.stream_id, self.since, self.kinds = js, stream_id, since, kinds
        self._subs: dict[str, object] = {}
        self._last: dict[str, datetime] = {}  # kind -> stored time of the last message handed on
        self._stopped = False
        self._checking = asyncio.Lock()  # the reconnect's check and the periodic one never both subscribe

    async def start(self) -> None:
        """Subscribe both; on a failure none is left subscribed and the error is raised."""
        try:
            for kind in self.kinds:
                await self._subscribe(kind)
        except Exception:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopped = True
        for sub in list(self._subs.values()):  # a check may change it meanwhile
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def check(self) -> int:
        """Subscribe again each consumer the server no longer has; how many were. A consumer that
        cannot be asked about or made now (NATS away) is left for the next check."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> int:
        again = 0
        for kind in self.kinds:
            if self._stopped:
                break
            sub = self._subs.get(kind)
            if sub is not None:
                try:
                    await sub.consumer_info()
                    continue
                except nats.js.errors.NotFoundError:
                    pass
                except Exception as exc:
                    log.debug("chat media consumer not checked", stream_id=self.stream_id, kind=kind, error=repr(exc))
                    continue
                self._subs.pop(kind, None)
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            try:
                await self._subscribe(kind)
            except Exception as exc:
                log.warning("chat media consumer not made again; will retry", stream_id=self.stream_id, kind=kind, error=repr(exc))
                continue
            again += 1
            RESUBSCRIBED.labels(kind).inc()
            log.info("chat media consumer made again", stream_id=self.stream_id, kind=kind, since=self._last.get(kind, self.since).isoformat())
        return again

    async def _subscribe(self, kind: str) -> None:
        stream, subject, handler = self.kinds[kind]

        async def on_msg(msg: Msg) -> None:
            with contextlib.suppress(Exception):  # no metadata: keep the previous start
                self._last[kind] = msg.metadata.timestamp
            await handler(msg)

        start = self._last.get(kind, self.since)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
        sub = await self.js.subscribe(subject, stream=stream, cb=on_msg, ordered_consumer=True, config=config)
        if self._stopped:  # stopped while subscribing
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        self._subs[kind] = sub
