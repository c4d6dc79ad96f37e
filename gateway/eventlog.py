"""Reading the durable event log (the EVENTS JetStream stream) for the public API.

`watch` follows events live, optionally replaying from a sequence number or a time, through an
ordered consumer, and deletes that consumer when it is closed (the server would otherwise keep
it until its inactivity threshold, and for ever while the subscription stayed open); `read_all`
returns what one subject holds so far. Messages on event subjects that are not valid
CloudEvents are skipped and counted, never passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from streamsight import events, subjects
from streamsight.gen.events.v1 import events_pb2
from streamsight.telemetry import MESSAGES_FAILED

log = structlog.get_logger(__name__)


def _decode(msg) -> events_pb2.Event | None:
    try:
        return events.decode(msg.headers, msg.data, msg.metadata.sequence.stream)
    except events.BadEvent as exc:
        MESSAGES_FAILED.labels("gateway", "bad_event").inc()
        log.warning("skipped a malformed event", subject=msg.subject, error=str(exc))
        return None


async def watch(
    js: JetStreamContext,
    subject: str,
    types: set[str],
    after_sequence: int | None = None,
    since: datetime | None = None,
) -> AsyncIterator[events_pb2.Event]:
    """Events on `subject` (wildcards allowed) whose type is in `types` (all when empty)."""
    if after_sequence is not None:
        if after_sequence == 0:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_sequence + 1)
    elif since is not None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat())
    else:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    sub = await js.subscribe(subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config)
    try:
        async for msg in sub.messages:
            event = _decode(msg)
            if event is not None and (not types or event.type in types):
                yield event
    finally:
        await _close(js, sub)


async def _close(js: JetStreamContext, sub) -> None:
    """Unsubscribe, then delete the consumer (an ordered consumer's current one: it is
    re-created under a new name after a gap, and the subscription knows the latest)."""
    consumer = sub._consumer  # nats-py keeps no public name for it
    try:
        await sub.unsubscribe()
        await js.delete_consumer(subjects.EVENTS_STREAM, consumer)
    except NotFoundError:  # already gone (the server removed it, or NATS was restarted)
        pass
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        # NATS is unreachable: the server drops the consumer itself once it has no interest.
        log.warning("could not delete a watcher's consumer", consumer=consumer, error=repr(exc))


async def read_all(bus, subject: str) -> list[events_pb2.Event]:
    """Every event stored so far on `subject`, in log order (malformed ones skipped)."""
    decoded = (_decode(msg) for msg in await bus.read_all(subjects.EVENTS_STREAM, subject))
    return [event for event in decoded if event is not None]
