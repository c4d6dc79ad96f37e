"""Chat service: starts and stops one chat reader per stream and ties it to the stream's media.

StartChat (api.py) -> `start_chat`: the source is checked (a replay is read in full here,
in short slices of the event loop, so a bad file is refused at once, naming the file and line), then a `ChatSession` runs
as its own task. Each session follows two subjects of its stream, from the stream's
start:

  streamsight.media.v1.windows.<stream>   ingest's WindowRecords (MEDIA): the media clock
  streamsight.events.v1.status.<stream>   StreamStatus events (EVENTS): the stream's end

through ordered consumers: ephemeral, in order, no acks, no state left on the server.
A session's reading position lives in this process's memory only, so a durable consumer
would keep a position nobody resumes from; and a window record seen twice is harmless (the
watermark only moves forward). What a restart needs is in KV (resume.py): a chat service that
starts resumes every reader its predecessor left running (killed, or shut down), reading the
chat again from the stream's start and publishing only what was not out yet.
Both start at the stream's start time (`media_start`, less a little clock skew), so what
ingest published before StartChat arrived is still seen while JetStream holds it: status
events always (EVENTS keeps them), window records while another consumer has not taken
them yet (MEDIA has interest retention). A missed record costs nothing: any later record
or the end status (whose media time is the media's end) closes the earlier windows too.

Sessions publish per-window FeatureRecords on streamsight.features.v1.chat.<stream> and
sentiment/forecast/status CloudEvents (see session.py). One session's failure never
touches another: each runs in its own task and catches its own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

import grpc
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.chat.api import ChatApi
from services.chat.resume import ReaderPoint, ReaderStore
from services.chat.client import IrcConfig, TwitchIrcClient
from services.chat.forecast import ForecastModel
from services.chat.session import ChatSession, Products
from services.chat.settings import ChatSettings
from services.chat.encoder import EncoderSentiment
from services.chat.sentiment import ChatSentiment
from services.chat.sources import LiveSource, ReplaySource, SourceError, check_replay_path, load_replay_checked_async, parse_source
from services.chat.windows import INTERVAL_S, ChatAggregator
from streamsight import events, subjects
from streamsight.bus import BadMessage
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2
from streamsight.inference import model_digest
from streamsight.media import window_record
from streamsight.rpc import Servicer, StatusError, invalid, not_found, precondition, unavailable
from streamsight.service import Service
from streamsight.telemetry import ACTIVE_STREAMS

CLOCK_SKEW_S = 5.0  # follow the stream's subjects from this long before its media_start
STOP_WAIT_S = 10.0  # StopChat waits this long for the last windows to be published


def make_scorer(backend: str) -> ChatSentiment | EncoderSentiment:
    """The message scorer the `sentiment_backend` setting names."""
    if backend == "encoder":
        return EncoderSentiment()
    return ChatSentiment()


def make_products(settings: ChatSettings) -> Products:
    """What every chat session shares (scorer, forecaster, model facts); training's offline
    extraction makes its sessions with the same."""
    scorer = make_scorer(settings.sentiment_backend)
    model = ForecastModel(settings.forecast_model)
    return Products(
        new_aggregator=lambda start_s: ChatAggregator(scorer, window_s=settings.window_s, start_s=start_s),
        new_forecaster=lambda: model.stream(INTERVAL_S),
        model_name=f"{settings.forecast_model.stem}@sha256:{model_digest(settings.forecast_model)}",
        lexicon_version=scorer.lexicon.version + ("+encoder" if isinstance(scorer, EncoderSentiment) else ""),
    )


class ChatService(Service):
    name = "chat"
    Settings = ChatSettings
    settings: ChatSettings

    async def start(self) -> None:
        self.products = make_products(self.settings)
        self.sessions: dict[str, ChatSession] = {}  # running ones
        self.finished: OrderedDict[str, ChatSession] = OrderedDict()
        self._starting: set[str] = set()
        self._tasks: dict[str, asyncio.Task] = {}
        self.api = ChatApi(self)
        self.readers = await ReaderStore.open(self.bus, self.settings.resume_bucket) if self.settings.resume_bucket else None
        if self.readers is not None:
            await self._resume_readers()

    async def _resume_readers(self) -> None:
        """Start again the readers a previous chat service left running."""
        assert self.readers is not None
        for stream_id, point in (await self.readers.left()).items():
            try:
                await self.start_chat(stream_id, point.source, point.media_start, point.pacing, resume=point)
            except Exception as exc:  # the replay is gone, NATS refused: say so, keep the others
                self.log.error("chat reader not resumed", stream_id=stream_id, error=str(exc))
                await self.readers.forget(stream_id)
            else:
                self.log.info("chat reader resumed", stream_id=stream_id, next_window=point.next_window, next_interval=point.next_interval)

    def servicers(self) -> list[Servicer]:
        full_name = chat_pb2.DESCRIPTOR.services_by_name["Chat"].full_name
        return [Servicer(chat_pb2_grpc.add_ChatServicer_to_server, self.api, full_name)]

    def health_info(self) -> dict[str, str]:
        return {
            "forecast_model": self.products.model_name,
            "lexicon": self.products.lexicon_version,
            "max_streams": str(self.settings.max_streams),
        }

    async def stop(self) -> None:
        """Shutdown: readers are cancelled; their open windows are not published. Their points
        stay in KV, so the next chat service resumes them (and the message ids keep the published
        windows single)."""
        if self.sessions:
            self.log.warning("chat readers cancelled at shutdown", streams=sorted(self.sessions))
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------ control API

    async def start_chat(self, stream_id: str, source: str, media_start: float | None, pacing: int,
                         resume: ReaderPoint | None = None) -> ChatSession:
        if stream_id in self.sessions or stream_id in self._starting:
            raise precondition(f"chat for stream {stream_id!r} is already running; StopChat it first")
        if len(self.sessions) + len(self._starting) >= self.settings.max_streams:
            raise StatusError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this chat service already reads {self.settings.max_streams} streams (STREAMSIGHT_CHAT_MAX_STREAMS); stop one or add an instance",
            )
        self._starting.add(stream_id)
        try:
            session = await self._new_session(stream_id, source, media_start, pacing, resume)
            try:
                subs = await self._follow_media(session)
            except Exception as exc:
                self.log.error("cannot follow the stream's media", stream_id=stream_id, error=repr(exc))
                raise unavailable(f"cannot subscribe to stream {stream_id!r}'s media on NATS ({type(exc).__name__}); try again") from None
        finally:
            self._starting.discard(stream_id)
        self.finished.pop(stream_id, None)
        self.sessions[stream_id] = session
        if self.readers is not None:
            point = ReaderPoint(source, session.media_start, pacing, session.started_wall, session.next_window, session.next_interval)
            await self.readers.save(stream_id, point)
            session.on_progress = lambda window, interval: self._progress(stream_id, point, window, interval)
        ACTIVE_STREAMS.labels(self.name).set(len(self.sessions))
        self._tasks[stream_id] = asyncio.create_task(self._run(session, subs), name=f"chat:{stream_id}")
        return session

    async def stop_chat(self, stream_id: str) -> chat_pb2.ChatStatus:
        session = self.sessions.get(stream_id)
        if session is None:
            over = self.finished.get(stream_id)
            if over is None:
                raise not_found(f"no chat reader for stream {stream_id!r}")
            return over.status()  # already over: stopping again changes nothing
        session.stop()
        task = self._tasks.get(stream_id)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if not done:  # publishing is stuck (NATS away): give up on the last windows
                self.log.warning("chat reader did not stop in time; cancelling", stream_id=stream_id)
                session.state = common_pb2.STREAM_STATE_STOPPED
                session.last_error = f"stopped before its last windows could be published (NATS did not answer for {STOP_WAIT_S:.0f} s)"
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return session.status()

    def get_chat(self, stream_id: str) -> chat_pb2.ChatStatus:
        session = self.sessions.get(stream_id) or self.finished.get(stream_id)
        if session is None:
            raise not_found(f"no chat reader for stream {stream_id!r}")
        return session.status()

    # ------------------------------------------------------------ sessions

    async def _progress(self, stream_id: str, point: ReaderPoint, next_window: int, next_interval: int) -> None:
        point.next_window, point.next_interval = next_window, next_interval
        if self.readers is not None and stream_id in self.sessions:
            await self.readers.save(stream_id, point)

    async def _new_session(self, stream_id: str, source: str, media_start: float | None, pacing: int,
                           resume: ReaderPoint | None = None) -> ChatSession:
        try:
            parsed = parse_source(source)
        except SourceError as exc:
            raise invalid(str(exc)) from None
        run_id = uuid.uuid4().hex[:8]
        media_start = media_start or time.time()  # none given: the stream starts now
        common = dict(publisher=self.bus, products=self.products, media_start=media_start, idle_timeout_s=self.settings.stream_idle_s)
        if resume is not None:
            common.update(started_wall=resume.started_wall, skip_windows=resume.next_window, skip_intervals=resume.next_interval)
        if isinstance(parsed, LiveSource):
            client = self._irc_client(parsed, media_start)
            return ChatSession(stream_id, run_id, client=client, **common)
        assert isinstance(parsed, ReplaySource)
        s = self.settings
        try:
            path = check_replay_path(parsed.path, s.replay_roots, int(s.max_replay_mb * 1e6))
            loaded = await load_replay_checked_async(path)
        except SourceError as exc:
            raise invalid(str(exc)) from None
        realtime = pacing == common_pb2.PACING_LIVE
        return ChatSession(stream_id, run_id, replay=loaded, realtime=realtime, **common)

    def _irc_client(self, src: LiveSource, media_start: float) -> TwitchIrcClient:
        s = self.settings
        tls = s.irc_tls if src.tls is None else src.tls
        ctx = ssl.create_default_context(cafile=s.irc_ca_file) if tls and s.irc_ca_file else None
        if src.host is None:  # twitch:<channel>: the configured server, with the account if one is set
            config = IrcConfig(host=s.irc_host, port=s.irc_port, tls=tls, ssl_context=ctx, nick=s.irc_nick or None, token=s.irc_token or None)
        else:  # a server the caller named: anonymous, the account's token never leaves for it
            config = IrcConfig(host=src.host, port=src.port or s.irc_port, tls=tls, ssl_context=ctx)
        try:
            return TwitchIrcClient(src.channel, media_start, config)
        except ValueError as exc:
            raise invalid(f"chat source: {exc}") from None

    async def _run(self, session: ChatSession, subs: list) -> None:
        try:
            await session.run()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            self.sessions.pop(session.stream_id, None)
            self._tasks.pop(session.stream_id, None)
            ACTIVE_STREAMS.labels(self.name).set(len(self.sessions))
            if session.finished:
                self.finished[session.stream_id] = session
                while len(self.finished) > self.settings.finished_kept:
                    self.finished.popitem(last=False)
                if self.readers is not None and session.stream_id not in self.sessions:  # after GetChat can see it finished: this awaits
                    await self.readers.forget(session.stream_id)

    async def _follow_media(self, session: ChatSession) -> list:
        """Ordered consumers on the stream's window records and status events."""
        assert self.bus is not None
        since = datetime.fromtimestamp(session.media_start, timezone.utc) - timedelta(seconds=CLOCK_SKEW_S)
        sid = session.stream_id

        def config() -> ConsumerConfig:
            return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)

        async def on_window(msg: Msg) -> None:
            try:
                record = window_record(msg.data, sid)
            except BadMessage as exc:
                await self._dead_letter(msg, str(exc))
                return
            session.media_window(record.index, record.end_s, record.last)

        async def on_status(msg: Msg) -> None:
            try:
                event = events.decode(msg.headers, msg.data)
            except events.BadEvent as exc:
                self.log.warning("bad status event ignored", stream_id=sid, error=str(exc))  # the gateway dead-letters it
                return
            status = event.status
            if event.WhichOneof("payload") != "status" or status.reporter == self.name:
                return
            if status.state in (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_STOPPED, common_pb2.STREAM_STATE_FAILED):
                session.media_ended(status.state, status.media_time_s)
            else:
                session.media_alive()

        js = self.bus.js
        windows = await js.subscribe(
            subjects.media("windows", sid), stream=subjects.MEDIA_STREAM, cb=on_window, ordered_consumer=True, config=config()
        )
        try:
            status = await js.subscribe(
                subjects.event("status", sid), stream=subjects.EVENTS_STREAM, cb=on_status, ordered_consumer=True, config=config()
            )
        except Exception:
            await windows.unsubscribe()
            raise
        return [windows, status]

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        self.log.warning("bad media message dead-lettered", subject=msg.subject, reason=reason)
        try:
            await self.bus.dead_letter(msg, reason)  # type: ignore[union-attr]
        except Exception as exc:
            self.log.error("dead-lettering failed", subject=msg.subject, error=repr(exc))
