"""One stream's chat reader: source, media clock, windows, sentiment series, forecast, publishing.

The media clock decides when a window is complete (its *watermark*, media seconds):

- replay, pacing VOD (or unspecified): the chat follows the stream's media. The service
  hands over each window record ingest publishes (`media_window`); the watermark is the
  latest record's end, replay messages before it are fed and the windows up to it closed.
  The record with `last`, or a terminal stream status (`media_ended`), finishes the
  chat at the media's end. No media progress for `idle_timeout_s` finishes it too.
- replay, pacing LIVE: real time from StartChat (watermark = seconds since StartChat);
  finishes after the window of the last message, or at a terminal stream status.
- live IRC: a message's media time is its receipt time minus `media_start`, the
  watermark is the same clock. Runs until StopChat or a terminal stream status (or no
  media progress for `idle_timeout_s` once media was seen). A reader that joins after
  the stream's start begins at the current window, which is flagged "partial".

Every closed 10 s window gives one FeatureRecord (message id `<stream>:chat:<i>`, so a
republish is deduplicated by JetStream); every closed 30 s interval one SentimentPoint
and one SentimentForecast event. Publishing is retried (same ids) until it succeeds.
Commands from the service go through `inbox`, so only the session's task changes its
windows (the IRC reader only adds messages). A chat failure is published as a
StreamStatus with state UNSPECIFIED and reason "chat_failed": the stream itself goes on.

Resumed after a crash (resume.py): `started_wall` is the first reader's start (a realtime
replay keeps its clock), and windows below `skip_windows` / intervals below `skip_intervals`
were published by the first reader: they are aggregated (the forecaster's state needs them)
but not published again. `on_progress(next_window, next_interval)` is awaited after each
publish, for the service to save.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from google.protobuf.message import Message
from prometheus_client import Counter

from services.chat.client import ChatClear, ChatNotice, IrcAuthError, TwitchIrcClient
from services.chat.forecast import HORIZON, StreamForecaster
from services.chat.message import ChatMessage
from services.chat.sources import LoadedReplay
from services.chat.windows import ChatAggregator, SeriesPoint
from streamsight import subjects
from streamsight.windows import WindowResult, feature_record
from streamsight.gen.chat.v1 import chat_pb2
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2

FEED_BATCH = 200  # messages scored between two yields to the event loop (a flood must not stall it)
PARTIAL_AFTER_S = 1.0  # a live reader that joins later than this into a window flags it "partial"
ENDED_GRACE_S = 1.0  # after a stream's end status, window records still in flight are awaited this long

MESSAGES = Counter("streamsight_chat_messages_total", "Chat messages read", ["source"])
REJECTED = Counter("streamsight_chat_rejected_total", "Chat lines that could not be read", ["source"])
UNCOUNTED = Counter(
    "streamsight_chat_uncounted_total", "Chat messages in no window (older than a closed window, or after the media's end)", ["source"]
)
FAILURES = Counter("streamsight_chat_failures_total", "Chat readers that failed", ["source"])
PUBLISH_RETRIES = Counter("streamsight_chat_publish_retries_total", "Failed publishes that were retried", ["kind"])

RUNNING = common_pb2.STREAM_STATE_RUNNING
TERMINAL = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_STOPPED, common_pb2.STREAM_STATE_FAILED)


class Publisher(Protocol):
    """What a session publishes through (streamsight.bus.Bus)."""

    async def publish(self, subject: str, payload: bytes | Message, msg_id: str | None = None, headers=None, kind: str = "data"): ...

    async def publish_event(self, stream_id: str, payload: Message, event_id: str): ...


@dataclass(frozen=True, slots=True)
class Products:
    """What every session shares: the forecaster's factory and the facts stamped on records."""

    new_aggregator: Callable[[float], ChatAggregator]  # start_s -> aggregator
    new_forecaster: Callable[[], StreamForecaster]
    model_name: str
    lexicon_version: str


class ChatSession:
    """One stream's chat; see the module docstring. `run()` is its task."""

    def __init__(
        self,
        stream_id: str,
        run_id: str,
        publisher: Publisher,
        products: Products,
        *,
        replay: LoadedReplay | None = None,
        client: TwitchIrcClient | None = None,
        media_start: float | None = None,
        realtime: bool = False,
        idle_timeout_s: float = 120.0,
        started_wall: float | None = None,
        skip_windows: int = 0,
        skip_intervals: int = 0,
        on_progress: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        if (replay is None) == (client is None):
            raise ValueError("a chat session needs exactly one of a replay or an IRC client")
        self.stream_id = stream_id
        self.run_id = run_id
        self.publisher = publisher
        self.products = products
        self.replay = replay
        self.client = client
        self.realtime = realtime
        self.idle_timeout_s = idle_timeout_s
        self.source_kind = "irc" if client else "replay"
        self.format = "irc" if client else replay.format  # type: ignore[union-attr]
        now = time.time()
        self.started_wall = started_wall if started_wall else now
        self.started_mono = time.monotonic() - max(0.0, now - self.started_wall)
        self.skip_windows, self.skip_intervals = skip_windows, skip_intervals
        self.on_progress = on_progress
        self.next_window, self.next_interval = skip_windows, skip_intervals
        self.media_start = media_start if media_start else self.started_wall
        self.inbox: asyncio.Queue[tuple] = asyncio.Queue()
        self.state = common_pb2.STREAM_STATE_STARTING if client else RUNNING
        self.last_error = ""
        self.log = structlog.get_logger("chat").bind(stream_id=stream_id, source=self.source_kind, format=self.format)
        start_s = 0.0
        if client is not None:
            start_s = max(0.0, now - self.media_start)  # a resumed IRC reader starts from now too
        self.agg = products.new_aggregator(start_s)
        self._partial_window = int(start_s // self.agg.window_s) if start_s % self.agg.window_s > PARTIAL_AFTER_S else None
        self.forecaster = products.new_forecaster()
        self._end_s = math.inf
        self._watermark = 0.0
        self._fed = 0  # replay messages handed to the aggregator
        self._times = [m.media_time for m in replay.messages] if replay else []
        self._info = {"source_format": self.format, "source": self.source_kind, "lexicon": products.lexicon_version}
        self._producer = f"chat lexicon-{products.lexicon_version} {products.model_name}"
        self.windows_published = 0
        self.intervals_published = 0

    # ------------------------------------------------------------ commands (from the service)

    def media_window(self, index: int, end_s: float, last: bool) -> None:
        self.inbox.put_nowait(("window", index, end_s, last))

    def media_ended(self, state: int, media_time_s: float) -> None:
        self.inbox.put_nowait(("ended", state, media_time_s))

    def media_alive(self) -> None:
        self.inbox.put_nowait(("alive",))

    def stop(self) -> None:
        self.inbox.put_nowait(("stop",))

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def status(self) -> chat_pb2.ChatStatus:
        state = self.state
        if state == common_pb2.STREAM_STATE_STARTING and self.client is not None and self.client.connections > 0:
            state = RUNNING
        rejected = self.replay.rejected if self.replay else self.client.malformed_lines  # type: ignore[union-attr]
        return chat_pb2.ChatStatus(
            stream_id=self.stream_id,
            state=state,
            messages=self.agg.total_messages + self.agg.late_messages,
            rejected=rejected,
            format=self.format,
            last_error=self.last_error,
        )

    # ------------------------------------------------------------ the task

    async def run(self) -> None:
        self.log.info("chat started", realtime=self.realtime, messages_in_replay=len(self._times) if self.replay else None)
        if self.replay is not None and self.replay.rejected:
            REJECTED.labels("replay").inc(self.replay.rejected)
            for err in self.replay.errors:  # the reasons never quote a line, so no usernames
                self.log.warning("chat replay line rejected", file=str(self.replay.path), where=err.where, reason=err.reason)
        try:
            if self.client is not None:
                await self._run_live_irc()
            elif self.realtime:
                await self._run_replay_realtime()
            else:
                await self._run_replay_following_media()
        except asyncio.CancelledError:
            self.log.info("chat cancelled", media_time_s=round(self._watermark, 3))
            raise
        except Exception as exc:  # a bug must not take other streams or the service down
            self.log.error("chat failed", exc_info=exc)
            await self._fail("internal_error", f"chat reader error: {type(exc).__name__}: {exc}")
        finally:
            if self.client is not None:
                await self.client.close()
                REJECTED.labels("irc").inc(self.client.malformed_lines)

    async def _run_replay_following_media(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self.inbox.get(), self.idle_timeout_s)
            except asyncio.TimeoutError:
                await self._idle_finish()
                return
            kind = item[0]
            if kind == "window":
                _, index, end_s, last = item
                await self._advance(end_s)
                if last:
                    await self._finish(max(self._watermark, end_s), common_pb2.STREAM_STATE_ENDED)
                    return
            elif kind == "ended":
                # Window records and status events come through different consumers, so the
                # last records may still be on their way: take them before finishing.
                _, state, media_time_s = item
                await self._drain_windows(ENDED_GRACE_S)
                await self._finish(max(self._watermark, media_time_s), state)
                return
            elif kind == "stop":
                await self._finish(self._watermark, common_pb2.STREAM_STATE_STOPPED)
                return

    async def _drain_windows(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while (item := await self._wait(deadline - time.monotonic())) is not None:
            if item[0] == "window":
                await self._advance(item[2])
                if item[3]:
                    return
            elif item[0] == "stop":
                return

    async def _run_replay_realtime(self) -> None:
        last_t = self._times[-1] if self._times else 0.0
        end_s = (math.floor(last_t / self.agg.window_s) + 1) * self.agg.window_s
        while True:
            now = time.monotonic() - self.started_mono
            await self._advance(min(now, end_s))
            if now >= end_s:
                await self._finish(end_s, common_pb2.STREAM_STATE_ENDED)
                return
            item = await self._wait(self._until_next_window(now))
            if item is None or item[0] in ("window", "alive"):
                continue
            now = time.monotonic() - self.started_mono
            if item[0] == "ended":
                await self._finish(min(now, end_s), item[1])
                return
            if item[0] == "stop":
                await self._finish(min(now, end_s), common_pb2.STREAM_STATE_STOPPED)
                return

    async def _run_live_irc(self) -> None:
        reader = asyncio.create_task(self._read_irc(), name=f"irc:{self.stream_id}")
        media_seen: float | None = None  # monotonic time of the latest media progress, once there was some
        try:
            while True:
                now = self._live_media_time()
                windows, points = self.agg.advance(now)
                await self._publish(windows, points)
                self._watermark = max(self._watermark, now)
                timeout = self._until_next_window(now)
                if media_seen is not None:
                    timeout = min(timeout, max(0.0, media_seen + self.idle_timeout_s - time.monotonic()))
                item = await self._wait(timeout)
                if item is None:
                    if media_seen is not None and time.monotonic() - media_seen >= self.idle_timeout_s:
                        await self._idle_finish(self._live_media_time())
                        return
                    continue
                kind = item[0]
                if kind in ("window", "alive"):
                    media_seen = time.monotonic()
                elif kind == "ended":
                    await self._finish(self._live_media_time(), item[1])
                    return
                elif kind == "stop":
                    await self._finish(self._live_media_time(), common_pb2.STREAM_STATE_STOPPED)
                    return
                elif kind == "failed":
                    await self._fail(item[1], item[2])
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_irc(self) -> None:
        assert self.client is not None
        n = 0
        try:
            async for event in self.client.events():
                if isinstance(event, ChatMessage):
                    self.agg.add(event)
                    MESSAGES.labels("irc").inc()
                    n += 1
                    if n % FEED_BATCH == 0:  # lines already buffered arrive without a pause
                        await asyncio.sleep(0)
                elif isinstance(event, ChatNotice):
                    self.log.info("chat notice", notice_id=event.notice_id)
                elif isinstance(event, ChatClear):
                    self.log.info("chat cleared", kind=event.kind)  # counts stay: the message was seen
        except IrcAuthError as exc:
            self.inbox.put_nowait(("failed", "irc_login_refused", str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("chat irc reader failed", exc_info=exc)
            self.inbox.put_nowait(("failed", "irc_error", f"IRC reader error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------ helpers

    def _live_media_time(self) -> float:
        return time.time() - self.media_start

    def _until_next_window(self, now: float) -> float:
        w = self.agg.window_s
        return max(0.0, (math.floor(now / w) + 1) * w - now) + 0.005

    async def _wait(self, timeout: float) -> tuple | None:
        if timeout <= 0:
            return None if self.inbox.empty() else self.inbox.get_nowait()
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _feed_until(self, t: float) -> None:
        """Hand the replay's messages before media time `t` to the aggregator."""
        if self.replay is None:
            return
        k = bisect.bisect_left(self._times, t, lo=self._fed)
        if k > self._fed:
            batch = self.replay.messages[self._fed : k]
            self._fed = k
            await self.agg.add_batch_async(batch, batch=FEED_BATCH)
            MESSAGES.labels("replay").inc(len(batch))

    async def _advance(self, watermark: float) -> None:
        if watermark <= self._watermark:
            return  # a duplicate or older window record: nothing new is complete
        self._watermark = max(self._watermark, watermark)
        await self._feed_until(self._watermark)
        await self._publish(*self.agg.advance(self._watermark))

    async def _finish(self, end_s: float, state: int) -> None:
        end_s = max(0.0, end_s)
        self._end_s = end_s
        await self._feed_until(end_s)
        windows, points = self.agg.finish(end_s)
        await self._publish(windows, points)
        self._watermark = max(self._watermark, end_s)
        unfed = len(self._times) - self._fed
        uncounted = self.agg.late_messages + self.agg.after_end_messages + unfed
        if uncounted:
            UNCOUNTED.labels(self.source_kind).inc(uncounted)
        # The chat's own state: FAILED is kept for the chat's failures; a stream whose media
        # failed leaves a chat that ended normally, with a note.
        self.state = common_pb2.STREAM_STATE_STOPPED if state == common_pb2.STREAM_STATE_STOPPED else common_pb2.STREAM_STATE_ENDED
        if state == common_pb2.STREAM_STATE_FAILED and not self.last_error:
            self.last_error = f"the stream's media failed; chat finished at {end_s:.1f} s"
        self.log.info(
            "chat finished",
            state=common_pb2.StreamState.Name(self.state),
            media_end_s=round(end_s, 3),
            messages=self.agg.total_messages,
            late=self.agg.late_messages,
            after_end=self.agg.after_end_messages + unfed,
            windows=self.windows_published,
            intervals=self.intervals_published,
        )

    async def _idle_finish(self, end_s: float | None = None) -> None:
        end = self._watermark if end_s is None else end_s
        self.last_error = f"no window record or status from the stream's media for {self.idle_timeout_s:.0f} s; chat finished at {end:.1f} s"
        self.log.warning("chat media idle", idle_timeout_s=self.idle_timeout_s, media_time_s=round(end, 3))
        await self._finish(end, common_pb2.STREAM_STATE_ENDED)

    async def _fail(self, reason: str, detail: str) -> None:
        """Record a chat failure and tell the platform; the stream's state is not changed."""
        self.state = common_pb2.STREAM_STATE_FAILED
        self.last_error = detail
        FAILURES.labels(self.source_kind).inc()
        self.log.error("chat reader failed", reason=reason, detail=detail)
        status = events_pb2.StreamStatus(
            stream_id=self.stream_id,
            state=common_pb2.STREAM_STATE_UNSPECIFIED,  # the stream goes on without chat
            reason="chat_failed",
            detail=f"chat failed ({reason}): {detail}",
            media_time_s=self._watermark,
            reporter="chat",
        )
        event_id = f"{self.stream_id}:status:chat:chat_failed:{self.run_id}"
        await self._send("status", lambda: self.publisher.publish_event(self.stream_id, status, event_id))

    async def _publish(self, windows: list[tuple[int, dict[str, float]]], points: list[SeriesPoint]) -> None:
        if not windows and not points:
            return
        await self._publish_new(windows, points)
        self.next_window = max([self.next_window] + [index + 1 for index, _ in windows])
        self.next_interval = max([self.next_interval] + [p.index + 1 for p in points])
        if self.on_progress is not None:
            await self.on_progress(self.next_window, self.next_interval)

    async def _publish_new(self, windows: list[tuple[int, dict[str, float]]], points: list[SeriesPoint]) -> None:
        sid = self.stream_id
        for index, values in windows:
            if index < self.skip_windows:
                continue  # the first reader published it
            start = index * self.agg.window_s
            flags = []
            if values.get("chat_messages", 0) == 0:
                flags.append("empty")
            if index == self._partial_window:
                flags.append("partial")
            end = min(start + self.agg.window_s, max(self._end_s, start))
            record = feature_record("chat", WindowResult(sid, index, start, end, values, tuple(flags)), self._info, self._producer)
            msg_id = subjects.feature_msg_id(sid, "chat", index)
            await self._send("features", lambda: self.publisher.publish(subjects.features("chat", sid), record, msg_id, kind="features"))
            self.windows_published += 1
        for p in points:
            end = min(p.start_s + self.agg.interval_s, max(self._end_s, p.start_s))
            point = events_pb2.SentimentPoint(stream_id=sid, start_s=p.start_s, end_s=end, compound=p.mean_compound, messages=p.messages)
            skip = p.index < self.skip_intervals  # the first reader published it; the forecaster still needs it
            if not skip:
                await self._send("sentiment", lambda: self.publisher.publish_event(sid, point, f"{sid}:sentiment:{p.index}"))
            f = self.forecaster.update(*p.inputs())
            if skip:
                continue
            sent, act = f.sentiment, f.activity
            forecast = events_pb2.SentimentForecast(
                stream_id=sid,
                issued_at_s=end,
                points=[
                    events_pb2.ForecastPoint(
                        start_s=(p.index + h) * self.agg.interval_s, compound=sent.lstm[h - 1], baseline=sent.running_mean[h - 1]
                    )
                    for h in range(1, HORIZON + 1)
                ],
                trustworthy=sent.trustworthy,
                model=self.products.model_name,
                lower=sent.lower,
                upper=sent.upper,
                interval_level=f.level,
                activity=act.lstm,
                activity_lower=act.lower,
                activity_upper=act.upper,
                activity_baseline=act.running_mean,
                activity_trustworthy=act.trustworthy,
            )
            await self._send("forecast", lambda: self.publisher.publish_event(sid, forecast, f"{sid}:forecast:{p.index}"))
            self.intervals_published += 1

    async def _send(self, kind: str, publish: Callable[[], Awaitable[object]]) -> None:
        """Publish, retrying with backoff: the ids make a repeat harmless, and a lost record
        would leave a hole that fusion could only impute."""
        delay = 0.2
        while True:
            try:
                await publish()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                PUBLISH_RETRIES.labels(kind).inc()
                self.log.warning("chat publish failed; retrying", kind=kind, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
