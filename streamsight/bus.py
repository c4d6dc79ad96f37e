"""The NATS/JetStream bus every service talks through.

- `Bus.connect` connects with unlimited reconnects and logs disconnects.
- `ensure_streams` provisions the JetStream streams (MEDIA in memory, bounded in bytes, refusing
  new messages when full; FEATURES, EVENTS and DEADLETTER file-backed), idempotently, and
  brings an existing stream to the current configuration. In a JetStream cluster, FEATURES,
  EVENTS, DEADLETTER and the KV buckets (`kv`) keep `replicas` copies (nats_replicas; MEDIA one).
- `publish` adds the trace context to the headers and a `Nats-Msg-Id` for deduplication, and
  tries again for a while when no stream answered (a cluster's stream just made or re-electing);
  `publish_event` sends a CloudEvent (see streamsight.events).
- `consume` runs a durable pull consumer: every instance of a service that uses the same
  durable name shares the work (JetStream's queue-group behaviour for pull consumers). Fetches
  are bounded in messages and bytes, and all pulls of a connection share one byte budget under
  the server's pending limit (streamsight.pull), so a slow handler makes the backlog wait in
  the stream instead of getting the connection cut. While a batch is handled, the server is
  told it is in progress, so a slow batch is not redelivered behind its own back.
  A message is acknowledged only after its handler returned, i.e. after the handler
  published its result. A handler raises `BadMessage` for input that can never be handled:
  the message goes to the dead-letter subject at once. Any other error is retried with
  backoff and dead-lettered after `max_deliver` attempts; a delivery past that (the earlier
  ones killed the process or never answered) is dead-lettered without handling it, and the
  server stops delivering it. Either way the service keeps running. Each returns a `Consumer`
  whose `stop()` ends the fetch loop after the batch in hand, leaving the durable on the server
  (a partition handed to another replica, streamsight.partitions). A partition's consumer
  is given `holds`, whether this replica's lease on the partition still holds (with a margin
  of one ack wait): it fetches, tells the server a batch is in progress, and acknowledges
  only while it does; otherwise the batch in hand is handed back at once (nak, counted in
  `streamsight_messages_returned_total`) and the consumer pauses until the lease holds again
  (or the partition is handed over and the consumer stopped), so what the next holder
  restores and what it is delivered first are exactly what this replica did not finish.
- After NATS comes back (a restart loses the memory stream MEDIA and its consumers), the
  streams are provisioned again and each consumer is re-created when its fetch finds it gone;
  `usable` is False while fetches fail (readiness), and `on_reconnect` hooks run.
- Observability: every consumer's backlog (JetStream's num_pending, num_ack_pending and
  num_redelivered) is polled every `CONSUMER_POLL_S` into `streamsight_consumer_*_messages`
  gauges; disconnects, reconnects and slow consumers are counted; each handled message has a
  span with `stream.id` (and `window.index` for a feature record), a batch's span has
  `stream.id` when the batch is one stream's, and a published event has a span with `stream.id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import structlog
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, KeyDeletedError, KeyNotFoundError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace

from streamsight import events, subjects
from streamsight.pull import ByteBudget, ConsumerGone, PullFetcher
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import (
    CONSUMER_ACK_PENDING,
    CONSUMER_PENDING,
    CONSUMER_REDELIVERED,
    CONSUMERS_RECREATED,
    DEAD_LETTERS,
    HANDLE_LATENCY,
    MESSAGES_FAILED,
    MESSAGES_IN,
    MESSAGES_RETURNED,
    NATS_DISCONNECTS,
    NATS_RECONNECTS,
    NATS_SLOW_CONSUMERS,
    PUBLISHED,
    extracted_context,
    inject_headers,
    stream_attributes,
    tracer,
)

log = structlog.get_logger(__name__)

MAX_PAYLOAD = 8 * 1024 * 1024  # matches the embedded server's max_payload; a full-HD RGB frame fits
# What one fetch may bring in: batches of frames (consume_batches), or small records one at a
# time (consume); a message larger than that is still fetched, in a pull widened for it. All
# pulls of one connection together stay under FETCH_BUDGET, well below nats-server's default
# per-client pending limit (max_pending, 64 MiB), past which the server cuts a client as a
# slow consumer.
DEFAULT_FETCH_BYTES = 16 * 1024 * 1024
DEFAULT_RECORD_FETCH_BYTES = 1024 * 1024
FETCH_BUDGET = 40 * 1024 * 1024
FETCH_EXPIRES_S = 1.0
# A consumer create sent while a cluster elects a leader is never answered; retried after this
# rather than after the client's 10 s default (a node loss measured 6.2 s median, 9 s max so, 16 s before).
CONSUMER_CREATE_TIMEOUT_S = 3.0
MEDIA_CONSUMER_INACTIVE_S = 300.0  # a MEDIA consumer nobody pulled from for this long is deleted by the server
NO_STREAM_WAIT_S = 10.0  # a publish no stream answered is tried again this long (a stream just made or electing a leader)
CONSUMER_POLL_S = 10.0  # how often each consumer's backlog is read (one small JetStream request per consumer)


class BadMessage(Exception):
    """Input that can never be handled (undecodable, unknown stream, out of range)."""


def event_payload(msg: Msg, kind: str):
    """The `kind` payload ("status", "glitch", ...) of an event message; BadMessage (dead-lettered)
    when it does not decode or carries another kind."""
    try:
        event = events.decode(msg.headers, msg.data)
    except events.BadEvent as exc:
        raise BadMessage(str(exc)) from None
    if event.WhichOneof("payload") != kind:
        raise BadMessage(f"{event.type} on a {kind} subject")
    return getattr(event, kind)


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream the platform needs."""

    name: str
    subjects: list[str]
    storage: StorageType
    max_age_s: float
    max_bytes: int = -1
    duplicate_window_s: float = 120.0
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    discard: DiscardPolicy = DiscardPolicy.OLD
    replicated: bool = True  # follows the Bus's `replicas` (nats_replicas); False: always one copy


# MEDIA keeps a message only while some consumer still has to take it (interest retention), so
# the messages it holds for a stream are that stream's backlog: ingest paces files by it and
# drops live frames by it (services/ingest/admission.py). It is nats-server's memory, so it is
# bounded (1 GiB, above ingest's media_max_bytes), and when full it refuses new messages
# (DiscardPolicy.NEW: ingest waits and retries) instead of silently dropping the oldest, which
# could be window records. Its max age only clears what a vanished consumer left: every MEDIA
# consumer has an inactive threshold, so interest retention removes messages long before.
# It has one copy even in a cluster: it is transient (a frame is taken within seconds, and
# ingest resumes a stream from its last complete window), and three copies of every 8 MiB
# frame in three nodes' memory would triple its memory and route traffic for nothing durable.
MEDIA_MAX_BYTES = 1024**3
MEDIA_MAX_AGE_S = 3600.0
STREAMS = [
    StreamSpec(
        subjects.MEDIA_STREAM,
        [f"{subjects.PREFIX}.media.v1.>"],
        StorageType.MEMORY,
        MEDIA_MAX_AGE_S,
        MEDIA_MAX_BYTES,
        30.0,
        RetentionPolicy.INTEREST,
        DiscardPolicy.NEW,
        replicated=False,
    ),
    StreamSpec(subjects.FEATURES_STREAM, [f"{subjects.PREFIX}.features.v1.>"], StorageType.FILE, 7 * 86400.0),
    StreamSpec(subjects.EVENTS_STREAM, [f"{subjects.PREFIX}.events.v1.>"], StorageType.FILE, 30 * 86400.0),
    StreamSpec(subjects.DEADLETTER_STREAM, [f"{subjects.PREFIX}.deadletter.v1.>"], StorageType.FILE, 7 * 86400.0),
]

def _same_stream(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether `current` already has every setting `ensure_streams` manages as `wanted` has it."""
    fields = ("subjects", "max_age", "max_bytes", "discard", "duplicate_window", "max_msg_size", "num_replicas")
    have = {f: getattr(current, f) for f in fields}
    want = {f: getattr(wanted, f) for f in fields}
    have["subjects"], want["subjects"] = sorted(have["subjects"] or []), sorted(want["subjects"] or [])
    return have == want


@dataclass(frozen=True)
class _ConsumerSpec:
    """Everything needed to (re-)create one durable pull consumer and fetch from it."""

    durable: str
    subject: str | list[str]
    stream: str
    batch: int
    max_bytes: int
    max_deliver: int
    ack_wait_s: float
    deliver_new: bool
    inactive_threshold_s: float | None
    holds: Callable[[], bool] | None = None  # a partition's consumer: whether its lease still holds

    def ours(self) -> bool:
        return self.holds is None or self.holds()

    @property
    def subjects(self) -> list[str]:
        return [self.subject] if isinstance(self.subject, str) else list(self.subject)


class Consumer:
    """A running durable consumer (what `consume` and `consume_batches` return).

    `await stop()` ends its fetch loop after the batch in hand is handled and acknowledged,
    within a fetch's expiry (FETCH_EXPIRES_S); the durable stays on the server, so whoever
    takes the same durable next (another replica holding the partition) goes on from there.
    It can still be awaited and cancelled like the task it wraps.
    """

    def __init__(self, bus: "Bus", spec: "_ConsumerSpec", task: asyncio.Task, stopping: asyncio.Event):
        self._bus, self.spec, self.task, self._stopping = bus, spec, task, stopping

    @property
    def durable(self) -> str:
        return self.spec.durable

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self.task)
        self._bus._forget(self)

    def cancel(self) -> bool:
        return self.task.cancel()

    def done(self) -> bool:
        return self.task.done()

    def __await__(self):
        return self.task.__await__()


Handler = Callable[[Msg], Awaitable[None]]


async def say_in_progress(msgs: list[Msg]) -> None:
    """Tell the server the messages not yet acknowledged are being worked on (their ack wait
    starts again); a failure is left to the next beat."""
    for msg in msgs:
        if not msg.is_acked:
            with contextlib.suppress(Exception):
                await msg.in_progress()


@dataclasses.dataclass(frozen=True)
class Handled:
    """What a batch handler made of one fetch, by position in the batch: the messages it rejects
    as bad input (each with the reason; dead-lettered) and those it keeps to acknowledge itself
    later (`held`: a stage acknowledges a message once a saved state covers it). The rest are
    acknowledged when the handler returns."""

    rejected: dict[int, str] = dataclasses.field(default_factory=dict)
    held: frozenset[int] = frozenset()


# A batch handler gets every message of one fetch and returns the ones it rejects (a plain dict,
# as `Handled.rejected`) or a `Handled`.
BatchHandler = Callable[[list[Msg]], Awaitable["dict[int, str] | Handled"]]


def message_attributes(msg: Msg) -> dict[str, str | int]:
    """`stream.id` of a per-stream subject, and `window.index` of a feature record (from its id)."""
    parts = msg.subject.split(".")
    if len(parts) < 5 or parts[0] != subjects.PREFIX or parts[1] not in ("media", "features", "events"):
        return {}
    stream_id, window = parts[-1], None
    if parts[1] == "features":
        tail = ((msg.headers or {}).get("Nats-Msg-Id") or "").rsplit(":", 1)
        if len(tail) == 2 and tail[0].startswith(stream_id + ":") and tail[1].isdigit():
            window = int(tail[1])
    return stream_attributes(stream_id, window)


def _log_death(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consumer stopped", task=task.get_name(), exc_info=task.exception())


class Final(Exception):
    """An error `until_done` does not retry (e.g. a partition's lease ran out: the effect is no
    longer this replica's to make)."""


async def until_done(action: Callable[[], Awaitable[object]], what: str, **log_fields) -> None:
    """Run `action` until it succeeds, 0.5 s doubling to 10 s between tries.

    For effects whose input is already in a stage's state: failing the batch would have it
    redelivered and counted twice, so the effect waits for NATS instead (stable message ids
    keep a retried publish single).
    """
    delay = 0.5
    while True:
        try:
            await action()
            return
        except Final:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} failed; retrying", error=repr(exc), retry_in_s=delay, **log_fields)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def kv_entries(js: JetStreamContext, bucket: str, keys: str = ">", timeout_s: float = 10.0) -> list[KeyValue.Entry]:
    """The live entries (key, value, revision) of a bucket's keys matching `keys`: a watch of the
    last value per key, filtered by the server, then a get for each key the watch left out.

    The watch is read until the entry the server had last when it delivered ("0 pending"), never
    until nats-py's own end marker: that marker can come before entries already sent have
    arrived (nats-py #842), and a partition's new holder then restored none of its streams
    (the replica kill test met it once in 12 runs). Even "0 pending" comes before every key while
    other keys are written (4 of 150 reads of 4 keys, one written every millisecond), so the keys
    the stream's subject list names and the watch did not deliver are read one by one."""
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.{keys}")
    if not info.state.subjects:
        return []
    kv = await js.key_value(bucket)
    watcher = await kv.watch(keys, inactive_threshold=30.0)
    found: dict[str, KeyValue.Entry] = {}
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=timeout_s)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):  # the last was a marker nats-py skips
                log.warning("KV read ended by its timeout", bucket=bucket, keys=keys, entries=len(found))
                break
            if entry is None:  # nats-py's early "nothing more": the entries may still be on their way
                continue
            found[entry.key] = entry
            if entry.delta == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    for entry in await kv_left_out(kv, bucket, info.state.subjects, found):
        found[entry.key] = entry
    return [entry for entry in found.values() if entry.operation is None]


async def kv_left_out(kv: KeyValue, bucket: str, subjects: dict[str, int], seen) -> list[KeyValue.Entry]:
    """The live entries of the keys in `subjects` (a stream-info subject list of bucket `bucket`)
    that are not in `seen`: what a watch's first pass left out. A key deleted meanwhile is none."""
    prefix = f"$KV.{bucket}."
    out = []
    for subject in subjects:
        key = subject[len(prefix):]
        if key in seen:
            continue
        try:
            out.append(await kv.get(key))
        except (KeyNotFoundError, KeyDeletedError):
            continue
    return out


class Bus:
    """One service's connection to NATS and JetStream."""

    def __init__(self, nc: Client, service: str, replicas: int | None = None):
        self.nc = nc
        # Copies of replicated streams and KV buckets (streamsight.config's nats_replicas);
        # None: existing ones keep theirs, new ones get one (tools that must not change them).
        self.replicas = replicas
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self.service = service
        self._tasks: list[asyncio.Task] = []
        self._closing = asyncio.Event()
        self._fetch_budget = ByteBudget(FETCH_BUDGET)
        self._specs: list[_ConsumerSpec] = []
        self._usable = True
        self._consumer_watch: asyncio.Task | None = None
        # Called after each reconnect, once the platform's streams exist again.
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []

    @property
    def usable(self) -> bool:
        """Connected, and the last JetStream call of a consumer worked (readiness)."""
        return self.nc.is_connected and self._usable

    @classmethod
    async def connect(cls, url: str, service: str, connect_timeout: float = 5.0, replicas: int | None = None) -> "Bus":
        closing = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                NATS_SLOW_CONSUMERS.labels(service, "client").inc()
            if not closing.is_set():
                log.warning("nats error", error=str(exc))

        async def on_disconnect() -> None:
            if not closing.is_set():
                NATS_DISCONNECTS.labels(service).inc()
                log.warning("nats disconnected; reconnecting")

        holder: list[Bus] = []

        async def on_reconnect() -> None:
            NATS_RECONNECTS.labels(service).inc()
            log.info("nats reconnected")
            if holder:
                await holder[0]._after_reconnect()

        nc = await nats.connect(
            servers=[u.strip() for u in url.split(",") if u.strip()],
            name=f"streamsight-{service}",
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        bus = cls(nc, service, replicas)
        bus._closing = closing
        holder.append(bus)
        return bus

    async def _after_reconnect(self) -> None:
        """A restarted nats-server may have lost the memory streams and their consumers:
        provision both again before saying the bus is usable (MEDIA keeps a message only for
        consumers that exist when it is published)."""
        self._usable = False
        for attempt in itertools.count():
            try:
                await self.ensure_streams()
                for spec in self._specs:
                    await self._create_consumer(spec)
                self._usable = True
                break
            except Exception as exc:  # not ready yet (a cluster electing leaders): again, until it is
                log.warning("streams or consumers not re-created after reconnect; will retry", error=repr(exc), attempt=attempt)
                # A service without a consume loop (chat) has nothing else that would retry.
                await asyncio.sleep(min(2.0**attempt, 5.0))
                if self._closing.is_set() or not self.nc.is_connected:
                    return  # closing, or disconnected again: the next reconnect starts over
        for hook in self.on_reconnect:
            try:
                await hook()
            except Exception as exc:
                log.warning("reconnect hook failed", hook=getattr(hook, "__name__", repr(hook)), error=repr(exc))

    async def ensure_streams(self, specs: list[StreamSpec] = STREAMS) -> None:
        """Create the platform's streams, or bring existing ones to `specs` (safe to call from
        every service at start).

        An existing stream is updated in place (limits, discard policy, subjects, max age,
        replicas) and keeps its messages. Replicated specs get `self.replicas` copies (when it is
        None, an existing stream keeps its count and a new one gets 1); a count the server cannot
        place (more than its cluster's nodes, or >1 on a lone server) is a RuntimeError naming
        the setting. A stream of one copy (MEDIA) whose node does not answer is skipped with a
        warning. JetStream cannot change a stream's storage or retention: a stream
        made with other ones raises a RuntimeError naming the difference (delete it, or, for
        MEDIA, restart nats-server: it is in memory), rather than running with the wrong one.
        """
        for spec in specs:
            try:
                await self._ensure_stream(spec)
            except nats.errors.TimeoutError:
                if spec.replicated:
                    raise
                # Its one copy is on a node that is down (MEDIA in a cluster): the services that
                # need it wait in their fetches and publish retries; the others go on meanwhile.
                log.warning("stream unreachable (the NATS node of its only copy is down?); going on without it", stream=spec.name)

    async def _ensure_stream(self, spec: StreamSpec) -> None:
        """One spec of `ensure_streams`."""
        current = await self._stream_config(spec.name)
        config = StreamConfig(
            name=spec.name,
            subjects=spec.subjects,
            storage=spec.storage,
            max_age=spec.max_age_s,
            max_bytes=spec.max_bytes,
            discard=spec.discard,
            duplicate_window=spec.duplicate_window_s,
            max_msg_size=MAX_PAYLOAD,
            retention=spec.retention,
            num_replicas=self._replicas_of(spec, current),
        )
        if current is None:
            try:
                await self.js.add_stream(config=config)
                return
            except APIError as exc:
                current = await self._stream_config(spec.name)  # another service made it meanwhile?
                if current is None:
                    self._check_placement(exc, spec.name, config.num_replicas)
                    raise RuntimeError(
                        f"stream {spec.name} cannot be created: {exc.description} (nats-server's max_memory_store or max_file_store too small?)"
                    ) from exc
        fixed = [f"{name} is {have}, needs {want}" for name, have, want in (
            ("storage", current.storage, spec.storage), ("retention", current.retention, spec.retention)) if have != want]
        if fixed:
            raise RuntimeError(f"stream {spec.name} exists with another {', '.join(fixed)}; JetStream cannot change that in place")
        if _same_stream(current, config):
            return  # nothing to change: no request (after a node loss each one may wait for an election)
        try:
            await self.js.update_stream(config=config)
        except APIError as exc:
            self._check_placement(exc, spec.name, config.num_replicas)
            raise

    def _replicas_of(self, spec: StreamSpec, current: StreamConfig | None) -> int:
        if not spec.replicated:
            return 1
        if self.replicas is not None:
            return self.replicas
        return (current.num_replicas or 1) if current is not None else 1

    @staticmethod
    def _check_placement(exc: APIError, what: str, replicas: int | None) -> None:
        """A RuntimeError naming nats_replicas when the server refused `replicas` copies of `what`."""
        text = (exc.description or "").lower()
        if (replicas or 1) > 1 and any(s in text for s in ("replicas > 1 not supported", "insufficient resources", "no suitable peers")):
            raise RuntimeError(
                f"{what}: nats-server cannot keep {replicas} copies ({exc.description}); nats_replicas"
                " (STREAMSIGHT_NATS_REPLICAS) must be at most the JetStream cluster's nodes, 1 for a lone server"
            ) from exc

    async def _stream_config(self, name: str) -> StreamConfig | None:
        """The stream's configuration, or None when it does not exist.

        Looked up before adding: re-adding an existing stream makes nats-server reserve its
        max_bytes a second time, which a memory store sized for MEDIA refuses.
        """
        try:
            return (await self.js.stream_info(name)).config
        except NotFoundError:
            return None

    async def kv(self, bucket: str, history: int = 5, ttl_s: float | None = None) -> KeyValue:
        """A KV bucket, created on first use with `self.replicas` copies (1 when None); an
        existing bucket is brought to that count (its history and TTL are left as they are)."""
        try:
            store = await self.js.key_value(bucket)
        except BucketNotFoundError:
            replicas = self.replicas or 1
            try:
                return await self.js.create_key_value(KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s, replicas=replicas))
            except APIError as exc:
                with contextlib.suppress(BucketNotFoundError):
                    return await self.js.key_value(bucket)  # another process made it meanwhile
                self._check_placement(exc, f"KV bucket {bucket}", replicas)
                raise
        if self.replicas is not None:
            stream = f"KV_{bucket}"
            config = (await self.js.stream_info(stream)).config
            if (config.num_replicas or 1) != self.replicas:
                try:
                    await self.js.update_stream(config=dataclasses.replace(config, num_replicas=self.replicas))
                except APIError as exc:
                    self._check_placement(exc, f"KV bucket {bucket}", self.replicas)
                    raise
        return store

    async def publish(
        self,
        subject: str,
        payload: bytes | Message,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str = "data",
    ):
        """Publish to JetStream and wait for the ack; returns the PubAck (seq, duplicate)."""
        data = payload if isinstance(payload, bytes) else payload.SerializeToString()
        hdrs = inject_headers(headers)
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        ack = await self._publish_when_stored(subject, data, hdrs)
        PUBLISHED.labels(self.service, kind).inc()
        return ack

    async def _publish_when_stored(self, subject: str, data: bytes, headers: dict[str, str]):
        """`js.publish`, retried while no stream answers, for up to `NO_STREAM_WAIT_S`.

        In a JetStream cluster a stream that was just created, or whose leader is being elected
        again, has no responder yet on the node a client is connected to: the server answers
        "no responders" and nothing was stored, so trying again cannot store a message twice.
        A subject that no stream takes at all still fails, after the wait.
        """
        delay = 0.05
        deadline = time.monotonic() + NO_STREAM_WAIT_S
        while True:
            try:
                return await self.js.publish(subject, data, headers=headers)
            except NoStreamResponseError:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def publish_event(self, stream_id: str, payload: Message, event_id: str):
        """Publish a CloudEvent for `payload` on its per-stream event subject (in a span of its own)."""
        ce_type = events.type_of(payload)
        headers = events.headers_for(ce_type, event_id, self.service, stream_id)
        with tracer().start_as_current_span(f"publish {ce_type}", kind=trace.SpanKind.PRODUCER, attributes=stream_attributes(stream_id)):
            return await self.publish(subjects.event_for_type(ce_type, stream_id), payload, event_id, headers, kind=ce_type)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Keep an unhandleable message, with why, on the service's dead-letter subject."""
        headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
        headers.update(
            {
                "streamsight-dlq-subject": msg.subject,
                "streamsight-dlq-reason": reason[:500],
                "streamsight-dlq-service": self.service,
            }
        )
        await self._publish_when_stored(subjects.deadletter(self.service), msg.data, headers)
        DEAD_LETTERS.labels(self.service).inc()

    def consume(
        self,
        durable: str,
        subject: str | list[str],
        handler: Handler,
        stream: str,
        batch: int = 16,
        max_deliver: int = 5,
        ack_wait_s: float = 60.0,
        deliver_new: bool = False,
        inactive_threshold_s: float | None = None,
        max_bytes: int | None = None,
        holds: Callable[[], bool] | None = None,
    ) -> Consumer:
        """Start a durable pull consumer in the background; returns it (`stop()` ends it).

        With several subjects, messages come in the order they were stored, across subjects
        (an analyser sees a stream's window record after that window's media).
        `inactive_threshold_s` lets the server delete the consumer when no instance has pulled
        for that long (so a service that was removed stops holding MEDIA messages back).
        A fetch brings at most `batch` messages and about `max_bytes` bytes (see streamsight.pull).
        `holds`: a partition's consumer, see the module docstring.
        """

        async def run_batch(msgs: list[Msg]) -> None:
            for position, msg in enumerate(msgs):
                if not spec.ours():
                    await self._hand_back(spec, msgs[position:])
                    return
                await self._handle_one(msg, handler, max_deliver, spec)

        spec = _ConsumerSpec(durable, subject, stream, batch, max_bytes or DEFAULT_RECORD_FETCH_BYTES, max_deliver, ack_wait_s, deliver_new,
                             inactive_threshold_s, holds)
        return self._start(spec, run_batch)

    def consume_batches(
        self,
        durable: str,
        subject: str | list[str],
        handler: BatchHandler,
        stream: str,
        batch: int = 64,
        max_deliver: int = 5,
        ack_wait_s: float = 120.0,
        inactive_threshold_s: float | None = None,
        max_bytes: int | None = None,
        holds: Callable[[], bool] | None = None,
    ) -> Consumer:
        """Like `consume`, but the handler takes each fetched batch at once (batched inference).

        If the handler raises, every message of the batch is retried (and dead-lettered after
        `max_deliver` attempts); messages it returns as rejected go to the dead-letter subject.
        """

        async def run_batch(msgs: list[Msg]) -> None:
            await self._handle_batch(msgs, handler, max_deliver, spec)

        spec = _ConsumerSpec(durable, subject, stream, batch, max_bytes or DEFAULT_FETCH_BYTES, max_deliver, ack_wait_s, False, inactive_threshold_s, holds)
        return self._start(spec, run_batch)

    async def declare_batches_consumer(
        self,
        durable: str,
        subject: str | list[str],
        stream: str,
        batch: int = 64,
        max_deliver: int = 5,
        ack_wait_s: float = 120.0,
        inactive_threshold_s: float | None = None,
    ) -> None:
        """Create (or update) the durable `consume_batches` would use, without fetching from it:
        a MEDIA partition nobody holds yet keeps its messages for whoever takes it."""
        spec = _ConsumerSpec(durable, subject, stream, batch, DEFAULT_FETCH_BYTES, max_deliver, ack_wait_s, False,
                             MEDIA_CONSUMER_INACTIVE_S if inactive_threshold_s is None and stream == subjects.MEDIA_STREAM else inactive_threshold_s)
        await self._create_consumer(spec)

    def _start(self, spec: "_ConsumerSpec", run_batch) -> Consumer:
        if spec.stream == subjects.MEDIA_STREAM and spec.inactive_threshold_s is None:
            # MEDIA keeps a message while any consumer has not taken it: a consumer whose service
            # is gone must go too, or MEDIA fills up with what nobody will read.
            spec = dataclasses.replace(spec, inactive_threshold_s=MEDIA_CONSUMER_INACTIVE_S)
        self._specs.append(spec)
        stopping = asyncio.Event()
        task = asyncio.create_task(self._consume_loop(spec, run_batch, stopping), name=f"consume:{spec.durable}")
        task.add_done_callback(_log_death)
        self._tasks.append(task)
        if self._consumer_watch is None:
            self._consumer_watch = asyncio.create_task(self._watch_consumers(), name=f"consumers:{self.service}")
            self._tasks.append(self._consumer_watch)
        return Consumer(self, spec, task, stopping)

    def _forget(self, consumer: Consumer) -> None:
        """A stopped consumer is no longer re-created after a reconnect nor polled."""
        with contextlib.suppress(ValueError):
            self._specs.remove(consumer.spec)
        with contextlib.suppress(ValueError):
            self._tasks.remove(consumer.task)

    async def poll_consumers(self) -> None:
        """Read every consumer's backlog into the `streamsight_consumer_*_messages` gauges."""
        for stream, durable in dict.fromkeys((spec.stream, spec.durable) for spec in self._specs):
            labels = (self.service, stream, durable)
            try:
                info = await self.js.consumer_info(stream, durable)
            except NotFoundError:  # not made yet, or gone with a NATS restart (its loop re-creates it)
                values = (0, 0, 0)
            except Exception:  # NATS away: readiness says so; the gauges keep their last values
                continue
            else:
                values = (int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0))
            for gauge, value in zip((CONSUMER_PENDING, CONSUMER_ACK_PENDING, CONSUMER_REDELIVERED), values):
                gauge.labels(*labels).set(value)

    async def _watch_consumers(self) -> None:
        while not self._closing.is_set():
            await self.poll_consumers()
            await asyncio.sleep(CONSUMER_POLL_S)

    async def _hand_back(self, spec: "_ConsumerSpec", msgs: list[Msg]) -> None:
        """The lease on the messages' partition ran out: they go back to the server at once,
        unacknowledged, for the partition's next holder (before anything newer)."""
        log.warning("partition lease ran out; the messages in hand are handed back", durable=spec.durable, messages=len(msgs))
        MESSAGES_RETURNED.labels(self.service).inc(len(msgs))
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak()

    async def _handle_batch(self, msgs: list[Msg], handler: BatchHandler, max_deliver: int, spec: "_ConsumerSpec") -> None:
        if not spec.ours():
            await self._hand_back(spec, msgs)
            return
        msgs = await self._drop_exhausted(msgs, max_deliver)
        if not msgs:
            return
        for msg in msgs:
            MESSAGES_IN.labels(self.service, subjects.pattern_of(msg.subject)).inc()
        # One span for the batch, linked to every message's producer, so traces still reach back.
        links = [trace.Link(span.get_span_context()) for m in msgs if (span := trace.get_current_span(extracted_context(m.headers))).get_span_context().is_valid]
        streams = {subjects.stream_of(m.subject) for m in msgs}
        attributes = message_attributes(msgs[0]) if len(streams) == 1 else {}
        attributes.pop("window.index", None)
        try:
            with tracer().start_as_current_span(f"handle batch of {len(msgs)}", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes):
                outcome = await handler(msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not spec.ours():  # e.g. a state write refused: another replica holds the partition now
                await self._hand_back(spec, msgs)
                return
            MESSAGES_FAILED.labels(self.service, "error").inc(len(msgs))
            for msg in msgs:
                await self._retry_or_dead_letter(msg, exc, max_deliver)
            return
        if not spec.ours():  # what the handler did may be in the next holder's state or not: it decides
            await self._hand_back(spec, msgs)
            return
        rejected, held = (outcome.rejected, outcome.held) if isinstance(outcome, Handled) else (outcome, frozenset())
        for position, msg in enumerate(msgs):
            if position in rejected:
                MESSAGES_FAILED.labels(self.service, "bad_message").inc()
                log.warning("bad message dead-lettered", subject=msg.subject, error=rejected[position])
                await self.dead_letter(msg, f"bad message: {rejected[position]}")
                await msg.term()
            elif position not in held:
                await msg.ack()

    async def _drop_exhausted(self, msgs: list[Msg], max_deliver: int) -> list[Msg]:
        """Dead-letter, unhandled, the messages delivered more often than `max_deliver`.

        A failed try is counted by `_retry_or_dead_letter`, which dead-letters on the last one;
        a delivery beyond that means the tries before it never finished (the process died on
        the message, or it took longer than the ack wait): handling it again could kill the
        process again, so it goes to the dead-letter stream instead.
        """
        kept = []
        for msg in msgs:
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            if delivered > max_deliver:
                MESSAGES_FAILED.labels(self.service, "exhausted").inc()
                log.error("message delivered too often without being handled; dead-lettered", subject=msg.subject, deliveries=delivered)
                await self.dead_letter(msg, f"delivered {delivered} times without an answer (the process died on it or timed out)")
                await msg.term()
            else:
                kept.append(msg)
        return kept

    async def _retry_or_dead_letter(self, msg: Msg, exc: BaseException, max_deliver: int) -> None:
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        if delivered >= max_deliver:
            log.error("message failed too often; dead-lettered", subject=msg.subject, error=repr(exc), deliveries=delivered)
            await self.dead_letter(msg, f"failed {delivered} times: {exc!r}")
            await msg.term()
        else:
            log.warning("message failed; will retry", subject=msg.subject, error=repr(exc), deliveries=delivered)
            await msg.nak(delay=min(2.0**delivered, 30.0))

    def _consumer_config(self, spec: "_ConsumerSpec") -> ConsumerConfig:
        subject_list = spec.subjects
        return ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            # One more delivery than the handler is tried: that one is dead-lettered unhandled
            # (see _drop_exhausted); the server then stops, even if every try killed the process.
            max_deliver=spec.max_deliver + 1,
            max_ack_pending=max(spec.batch * 4, 64),
            deliver_policy=DeliverPolicy.NEW if spec.deliver_new else DeliverPolicy.ALL,
            filter_subject=subject_list[0] if len(subject_list) == 1 else None,
            filter_subjects=subject_list if len(subject_list) > 1 else None,
            inactive_threshold=spec.inactive_threshold_s,
        )

    async def _create_consumer(self, spec: "_ConsumerSpec") -> None:
        """Create (or update) the durable consumer; after a NATS restart, the streams first."""
        config = self._consumer_config(spec)
        try:
            await self.js.add_consumer(spec.stream, config=config, timeout=CONSUMER_CREATE_TIMEOUT_S)
        except NotFoundError:  # the stream itself is gone (a memory stream after a restart)
            await self.ensure_streams()
            await self.js.add_consumer(spec.stream, config=config, timeout=CONSUMER_CREATE_TIMEOUT_S)

    async def _consume_loop(self, spec: "_ConsumerSpec", run_batch, stopping: asyncio.Event) -> None:
        fetcher = PullFetcher(self.nc, spec.stream, spec.durable, self._fetch_budget, MAX_PAYLOAD)
        created = False
        try:
            # The flags, not only cancellation, end the loop: a batch in hand is handled first.
            while not self._closing.is_set() and not stopping.is_set():
                if not spec.ours():  # paused: a late renewal resumes it, a lease given up stops it
                    await asyncio.sleep(0.1)
                    continue
                try:
                    if not created:
                        await self._create_consumer(spec)
                        created = True
                    msgs = await fetcher.fetch(spec.batch, spec.max_bytes, FETCH_EXPIRES_S)
                except ConsumerGone as exc:
                    log.warning("consumer gone; re-creating it", durable=spec.durable, stream=spec.stream, reason=str(exc))
                    CONSUMERS_RECREATED.labels(self.service).inc()
                    created = False
                    continue
                except (nats.errors.ConnectionClosedError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a broken connection or a JetStream error: wait, then again
                    self._usable = False
                    log.warning("fetch failed", durable=spec.durable, error=repr(exc))
                    created = False
                    await asyncio.sleep(1.0)
                    continue
                self._usable = True
                if msgs:
                    async with self._keep_in_progress(msgs, spec):
                        await run_batch(msgs)
                # Not held while the next fetch waits: a batch of frames is up to 16 MiB.
                msgs = None
            if stopping.is_set() or not spec.ours():
                # Messages that came after a pull gave up are this consumer's: handled now (or,
                # the lease gone, handed back), not left for a redelivery that would reach the
                # next holder after newer ones.
                while rest := fetcher._leftovers(spec.batch):
                    async with self._keep_in_progress(rest, spec):
                        await run_batch(rest)
        finally:
            await fetcher.close()
            if stopping.is_set() and self.nc.is_connected:
                # The acknowledgements are on the server before the caller hands the partition
                # over: the next holder then finds nothing of ours pending and need not wait.
                with contextlib.suppress(Exception):
                    await self.nc.flush(timeout=2)

    @contextlib.asynccontextmanager
    async def _keep_in_progress(self, msgs: list[Msg], spec: "_ConsumerSpec"):
        """Tell the server, while a batch is being handled, that it is not lost.

        On a loaded machine a batch can take longer than the ack wait; without this the
        server would redeliver it while it is still being worked on, out of order. A partition's
        consumer says so only while its lease holds: a holder whose lease ran out never keeps
        its batch from the next holder past one ack wait.
        """

        async def beat() -> None:
            while True:
                await asyncio.sleep(max(spec.ack_wait_s / 3, 0.5))
                if not spec.ours():
                    return
                await say_in_progress(msgs)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            await cancel_and_wait([task])

    async def _handle_one(self, msg: Msg, handler: Handler, max_deliver: int, spec: "_ConsumerSpec") -> None:
        if not await self._drop_exhausted([msg], max_deliver):
            return
        pattern = subjects.pattern_of(msg.subject)  # drop partition and stream id: bounded label values
        MESSAGES_IN.labels(self.service, pattern).inc()
        started = time.perf_counter()
        ctx = extracted_context(msg.headers)
        with tracer().start_as_current_span(f"handle {pattern}", context=ctx, kind=trace.SpanKind.CONSUMER, attributes=message_attributes(msg)):
            try:
                await handler(msg)
            except BadMessage as exc:
                MESSAGES_FAILED.labels(self.service, "bad_message").inc()
                log.warning("bad message dead-lettered", subject=msg.subject, error=str(exc))
                await self.dead_letter(msg, f"bad message: {exc}")
                await msg.term()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                MESSAGES_FAILED.labels(self.service, "error").inc()
                await self._retry_or_dead_letter(msg, exc, max_deliver)
                return
        if not spec.ours():
            await self._hand_back(spec, [msg])
            return
        await msg.ack()
        HANDLE_LATENCY.labels(self.service, pattern).observe(time.perf_counter() - started)

    async def wait_consumer(self, stream: str, durable: str, timeout_s: float = 15.0) -> None:
        """Until the durable exists: consume() creates it in a task, and MEDIA's interest retention
        keeps a message only for consumers that exist when it is published."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.js.consumer_info(stream, durable)
                return
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumer {durable} on {stream} was not created within {timeout_s:.0f} s") from None
                await asyncio.sleep(0.05)

    async def wait_for_redeliveries(self, stream: str, durable: str, ack_wait_s: float, margin_s: float = 0.0, most_s: float = 60.0) -> float:
        """If the durable has messages out that nobody acknowledged (a replica died with a batch in
        hand), wait until their ack wait is over: the server then redelivers them before anything
        newer, so the partition's new holder applies them in order. The last delivery says when
        at the earliest; the previous holder may have said "in progress" since, but not after its
        lease's margin (`margin_s`, streamsight.partitions) before the lease aged out, which was
        before this call: so at most `ack_wait_s - margin_s` from now. Returns the seconds waited."""
        try:
            info = await self.js.consumer_info(stream, durable)
        except NotFoundError:
            return 0.0
        if not info.num_ack_pending or info.delivered is None or info.delivered.last_active is None:
            return 0.0
        now = datetime.datetime.now(datetime.timezone.utc)
        due = max(info.delivered.last_active + datetime.timedelta(seconds=ack_wait_s), now + datetime.timedelta(seconds=max(0.0, ack_wait_s - margin_s)))
        due += datetime.timedelta(seconds=0.5)
        wait = min((due - now).total_seconds(), most_s)
        if wait > 0:
            await asyncio.sleep(wait)
        return max(wait, 0.0)

    async def consumer_pending(self, stream: str, durable: str) -> int:
        """Messages not yet acknowledged by a durable consumer (0 if it does not exist yet); for
        a partitioned stage's name ("vision"), the sum over its partitions' `<name>-p<k>`."""
        try:
            infos = [await self.js.consumer_info(stream, durable)]
        except NotFoundError:
            prefix = f"{durable}-p"
            infos = [i for i in await self.js.consumers_info(stream) if i.name.startswith(prefix) and i.name[len(prefix):].isdigit()]
        return sum(int(i.num_pending or 0) + int(i.num_ack_pending or 0) for i in infos)

    async def read_all(self, stream: str, subject: str) -> list[Msg]:
        """Every message `stream` holds on `subject` (wildcards allowed) right now, in order."""
        try:
            last = await self.js.get_last_msg(stream, subject)
        except NotFoundError:
            return []
        sub = await self.js.subscribe(subject, stream=stream, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        out: list[Msg] = []
        try:
            async for msg in sub.messages:
                out.append(msg)
                if msg.metadata.sequence.stream >= last.seq:
                    break
        finally:
            await sub.unsubscribe()
        return out

    async def backlog(self, stream: str, subject_filter: str) -> int:
        """Messages `stream` holds on subjects matching `subject_filter`."""
        info = await self.js.stream_info(stream, subjects_filter=subject_filter)
        return sum((info.state.subjects or {}).values())

    async def close(self) -> None:
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        done, stuck = await asyncio.wait(self._tasks, timeout=5.0) if self._tasks else (set(), set())
        if stuck:
            log.warning("consumers did not stop in time", consumers=[t.get_name() for t in stuck])
        self._tasks.clear()
        if not self.nc.is_closed:
            # Not drain(): pull subscriptions have no callback to drain into. What was fetched
            # and not acknowledged is redelivered to another instance or after a restart.
            await self.nc.flush(timeout=2) if self.nc.is_connected else None
            try:  # bounded: a teardown in the whole test suite once waited 300 s here on a loaded machine
                await asyncio.wait_for(self.nc.close(), timeout=10.0)
            except asyncio.TimeoutError:
                log.warning("NATS connection did not close in 10 s; left to the process's exit")
