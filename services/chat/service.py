"""Chat service: runs one chat reader per stream and ties it to the stream's media; replicas share the streams.

StartChat (api.py) -> `request_chat`: the source is checked (a replay is read in full here,
in short slices of the event loop, so a bad file is refused at once, naming the file and line)
and the reader is recorded in the KV bucket `resume_bucket` (resume.py, readers.py). The reader
itself runs on the replica holding the stream's partition (streamsight.partitions, group
"chat"; `subjects.partition_of(stream_id)`): at once when that is the replica that took the
call, else when the holder sees the new point through its watch of the bucket (milliseconds).
StopChat sets the point's `stop` flag (the holder stops the reader and writes its final status;
the call waits for it, up to STOP_WAIT_S), and GetChat answers from the bucket's mirror, so any
replica takes any call: a k8s Service or compose may balance them. A replica that gains a
partition starts the partition's unfinished readers from their points (publishing only the
windows and intervals not out yet); one that loses it cancels them, leaving their points. With
`resume_bucket` empty nothing is kept, there are no partitions, and this process runs every
reader it is asked for (one replica only).

Each reader, a `ChatSession` in a task of its own, follows two subjects of its stream, from the
stream's start:

  streamsight.media.v1.windows.<stream>   ingest's WindowRecords (MEDIA): the media clock
  streamsight.events.v1.status.<stream>   StreamStatus events (EVENTS): the stream's end

through ordered consumers: ephemeral, in order, no acks, no state left on the server
(follow.py). A restarted nats-server keeps none of them: after each reconnect, and every
FOLLOW_CHECK_S, every running reader's consumers are checked and the lost ones subscribed again
from the last message seen, so a reader hears the media's later windows and its end.
A session's reading position lives in this process's memory only, so a durable consumer
would keep a position nobody resumes from; and a window record seen twice is harmless (the
watermark only moves forward). What a takeover needs is in KV: the reader is started again,
reading the chat again from the stream's start and publishing only what was not out yet.
Both start at the stream's start time (`media_start`, less a little clock skew), so what
ingest published before the reader started is still seen while JetStream holds it: status
events always (EVENTS keeps them), window records while another consumer has not taken
them yet (MEDIA has interest retention). A missed record costs nothing: any later record
or the end status (whose media time is the media's end) closes the earlier windows too.

Sessions publish per-window FeatureRecords on streamsight.features.v1.chat.<stream> and
sentiment/forecast/status CloudEvents (see session.py), with ids that JetStream deduplicates,
so a window a dead replica published and its successor publishes again is stored once. One
session's failure never touches another: each runs in its own task and catches its own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

import grpc
from nats.aio.msg import Msg

from services.chat.api import ChatApi
from services.chat.client import IrcConfig, TwitchIrcClient
from services.chat.encoder import EncoderSentiment
from services.chat.follow import FOLLOW_CHECK_S, MediaFollow
from services.chat.forecast import ForecastModel
from services.chat.readers import ReaderExists, ReaderTable
from services.chat.resume import FINISHED_KEEP_S, ReaderPoint
from services.chat.sentiment import ChatSentiment
from services.chat.session import ChatSession, Products
from services.chat.settings import ChatSettings
from services.chat.sources import LiveSource, LoadedReplay, ReplaySource, SourceError, check_replay_path, load_replay_checked_async, parse_source
from services.chat.windows import INTERVAL_S, ChatAggregator
from streamsight import events, subjects
from streamsight.bus import BadMessage
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2
from streamsight.inference import model_digest
from streamsight.media import window_record
from streamsight.partitions import Partitions
from streamsight.rpc import Servicer, StatusError, invalid, not_found, precondition, unavailable
from streamsight.service import Service
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import ACTIVE_STREAMS, MESSAGES_FAILED

CLOCK_SKEW_S = 5.0  # follow the stream's subjects from this long before its media_start
STOP_WAIT_S = 10.0  # StopChat waits this long for the last windows to be published
SWEEP_S = 60.0  # finished readers' points are looked over for deletion this often


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

    def __init__(self, settings: ChatSettings, replica: str | None = None) -> None:
        super().__init__(settings)
        self.replica = replica  # None: streamsight.partitions.replica_id() (STREAMSIGHT_REPLICA_ID); tests name in-process replicas

    async def start(self) -> None:
        self.products = make_products(self.settings)
        self.sessions: dict[str, ChatSession] = {}  # running ones
        self.finished: OrderedDict[str, ChatSession] = OrderedDict()
        self._starting: set[str] = set()
        self._tasks: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one change of a stream's reader at a time
        self._gaining: set[int] = set()
        self._background: set[asyncio.Task] = set()
        self._follows: dict[str, MediaFollow] = {}  # running readers' media consumers
        self.bus.on_reconnect.append(self._check_follows)
        self._follow_guard = asyncio.create_task(self._guard_follows(), name="chat:follow-guard")
        self.api = ChatApi(self)
        self.table: ReaderTable | None = None
        self.partitions: Partitions | None = None
        s = self.settings
        if s.resume_bucket:
            self.table = ReaderTable(self.bus, s.resume_bucket, self._changed)
            await self.table.start()
            self.partitions = Partitions(self.bus, self.name, self.replica, ttl_s=s.partition_lease_s, heartbeat_s=s.partition_heartbeat_s)
            await self.partitions.start(self._gain, self._lose)
            self._sweeper = asyncio.create_task(self._sweep(), name="chat:sweep")
            if not await self.partitions.settled():
                self.log.warning("partitions not all taken at start; going on taking them", held=sorted(self.partitions.held))

    def servicers(self) -> list[Servicer]:
        full_name = chat_pb2.DESCRIPTOR.services_by_name["Chat"].full_name
        return [Servicer(chat_pb2_grpc.add_ChatServicer_to_server, self.api, full_name)]

    def health_info(self) -> dict[str, str]:
        info = {
            "forecast_model": self.products.model_name,
            "lexicon": self.products.lexicon_version,
            "max_streams": str(self.settings.max_streams),
        }
        if self.partitions is not None:
            info["partitions"] = ",".join(map(str, sorted(self.partitions.held)))
        return info

    async def stop(self) -> None:
        """Shutdown: every partition is handed over (its readers cancelled, their open windows not
        published; their points stay, so the next holder resumes them and the message ids keep
        the published windows single), then anything left is cancelled."""
        if self.sessions:
            self.log.warning("chat readers cancelled at shutdown", streams=sorted(self.sessions))
        if self.partitions is not None:
            await self.partitions.stop()
        with contextlib.suppress(ValueError):
            self.bus.on_reconnect.remove(self._check_follows)
        tasks = list(self._tasks.values()) + list(self._background)
        for task in tasks:
            task.cancel()
        loops = [self._follow_guard, self._sweeper if self.partitions is not None else None]
        await asyncio.gather(*tasks, cancel_and_wait(loops), return_exceptions=True)
        if self.table is not None:
            await self.table.stop()

    # ------------------------------------------------------------ control API

    async def request_chat(self, stream_id: str, source: str, media_start: float | None, pacing: int) -> chat_pb2.ChatStatus:
        """StartChat: check the source, record the reader, and start it here if this replica
        holds the stream's partition (else its holder starts it)."""
        parsed = self._parse(source)
        loaded = await self._load(parsed) if isinstance(parsed, ReplaySource) else None
        now = time.time()
        point = ReaderPoint(source, media_start or now, pacing, now, format=loaded.format if loaded else "irc",
                            rejected=loaded.rejected if loaded else 0,
                            state=common_pb2.STREAM_STATE_RUNNING if loaded else common_pb2.STREAM_STATE_STARTING)
        if self.table is None:
            return (await self.start_chat(stream_id, point, loaded)).status()
        if self._mine(stream_id):
            self._check_room(stream_id)
        try:
            entry = await self.table.create(stream_id, point)
        except ReaderExists:
            raise precondition(f"chat for stream {stream_id!r} is already running; StopChat it first") from None
        except Exception as exc:
            self.log.error("chat reader not recorded", stream_id=stream_id, error=repr(exc))
            raise unavailable(f"cannot record chat for stream {stream_id!r} on NATS ({type(exc).__name__}); try again") from None
        if not self._mine(stream_id):
            self.log.info("chat reader recorded for its partition's holder", stream_id=stream_id, partition=subjects.partition_of(stream_id))
            return entry.point.status(stream_id)
        async with self._lock(stream_id):
            session = self.sessions.get(stream_id)
            if session is None:
                try:
                    session = await self.start_chat(stream_id, point, loaded)
                except StatusError:
                    with contextlib.suppress(Exception):
                        await self.table.delete(stream_id, entry.revision)  # as if never asked: it may be asked again
                    raise
        return session.status()

    async def stop_chat(self, stream_id: str) -> chat_pb2.ChatStatus:
        session = self.sessions.get(stream_id)
        if session is not None:
            return await self._stop_here(session)
        entry = self.table.get(stream_id) if self.table is not None else None
        if entry is None:
            over = self.finished.get(stream_id)
            if over is None:
                raise not_found(f"no chat reader for stream {stream_id!r}")
            return over.status()  # already over: stopping again changes nothing
        if entry.point.finished:
            return entry.point.status(stream_id)
        assert self.table is not None
        try:
            await self.table.update(stream_id, lambda p: None if p.finished or p.stop else dataclasses.replace(p, stop=True))
        except Exception as exc:
            raise unavailable(f"cannot record the stop of chat {stream_id!r} on NATS ({type(exc).__name__}); try again") from None
        deadline = time.monotonic() + STOP_WAIT_S  # the holder stops the reader and writes its final status
        while time.monotonic() < deadline:
            entry = self.table.get(stream_id)
            if entry is None or entry.point.finished:
                break
            await asyncio.sleep(0.05)
        if entry is None:
            raise not_found(f"no chat reader for stream {stream_id!r}")
        return entry.point.status(stream_id)

    def get_chat(self, stream_id: str) -> chat_pb2.ChatStatus:
        session = self.sessions.get(stream_id)
        if session is not None:
            return session.status()
        entry = self.table.get(stream_id) if self.table is not None else None
        if entry is not None:
            return entry.point.status(stream_id)
        over = self.finished.get(stream_id)
        if over is None:
            raise not_found(f"no chat reader for stream {stream_id!r}")
        return over.status()

    async def _stop_here(self, session: ChatSession) -> chat_pb2.ChatStatus:
        stream_id = session.stream_id
        if self.table is not None:  # should this replica die before the reader is over, its successor stops it
            with contextlib.suppress(Exception):
                await self.table.update(stream_id, lambda p: None if p.finished or p.stop else dataclasses.replace(p, stop=True))
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
                await self._save(session)
        return session.status()

    # ------------------------------------------------------------ partitions

    def _mine(self, stream_id: str) -> bool:
        """Whether this replica runs the stream's reader: it holds (or is taking) the partition."""
        if self.partitions is None:
            return True
        k = subjects.partition_of(stream_id)
        return (k in self.partitions.held or k in self._gaining) and self.partitions.holds(k)

    def _lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks.setdefault(stream_id, asyncio.Lock())

    async def _gain(self, partition: int) -> None:
        """Start the partition's unfinished readers from their points."""
        assert self.table is not None
        self._gaining.add(partition)
        try:
            ids = [sid for sid in self.table.ids() if subjects.partition_of(sid) == partition]
            await asyncio.gather(*(self._reconcile(sid) for sid in ids))
        finally:
            self._gaining.discard(partition)
        self.log.info("partition taken", partition=partition, readers=sum(subjects.partition_of(s) == partition for s in self.sessions))

    async def _lose(self, partition: int) -> None:
        """Cancel the partition's readers (their points stay: the next holder resumes them)."""
        ids = [sid for sid in list(self.sessions) + list(self._starting) if subjects.partition_of(sid) == partition]
        for sid in ids:
            async with self._lock(sid):  # a start in progress finishes first
                task = self._tasks.get(sid)
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        self.log.info("partition handed over", partition=partition, readers=len(ids))

    def _changed(self, stream_id: str) -> None:
        """Another process changed a reader's point (the table's watch)."""
        if self._mine(stream_id):
            task = asyncio.create_task(self._reconcile_logged(stream_id), name=f"chat:reconcile:{stream_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reconcile_logged(self, stream_id: str) -> None:
        try:
            await self._reconcile(stream_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # NATS away: the next change, or the partition's next holder, tries again
            self.log.error("chat reader change not applied", stream_id=stream_id, error=repr(exc))

    async def _reconcile(self, stream_id: str) -> None:
        """Make this replica's reader of the stream what its point says (holder only)."""
        assert self.table is not None
        async with self._lock(stream_id):
            if not self._mine(stream_id):
                return
            entry = self.table.get(stream_id)
            session = self.sessions.get(stream_id)
            if entry is None:
                if session is not None and not session.finished:
                    self.log.warning("chat reader's point deleted; stopping it", stream_id=stream_id)
                    session.stop()
                return
            point = entry.point
            if point.finished:
                if session is not None and not session.finished:  # someone else finished it (a stale holder's write)
                    self.log.warning("chat reader finished elsewhere; cancelling this one", stream_id=stream_id)
                    self._tasks[stream_id].cancel()
                elif session is None and time.time() - point.finished_at > FINISHED_KEEP_S:
                    await self.table.delete(stream_id, entry.revision)
                return
            if point.stop:
                if session is not None:
                    session.stop()
                else:  # asked to stop while no reader ran (its holder died): nothing more to publish
                    await self.table.update(stream_id, lambda p: None if p.finished else dataclasses.replace(
                        p, state=common_pb2.STREAM_STATE_STOPPED, replica=self._replica_name(), finished_at=time.time()))
                return
            if session is not None:
                return
            try:
                await self.start_chat(stream_id, point)
            except StatusError as exc:  # the replay is gone, this replica is full, NATS refused: say so in its status
                self.log.error("chat reader not started", stream_id=stream_id, error=exc.message)
                await self.table.update(stream_id, lambda p: None if p.finished else dataclasses.replace(
                    p, state=common_pb2.STREAM_STATE_FAILED, last_error=f"not started on {self._replica_name()}: {exc.message}",
                    replica=self._replica_name(), finished_at=time.time()))
            else:
                if point.next_window or point.next_interval:
                    self.log.info("chat reader resumed", stream_id=stream_id, next_window=point.next_window, next_interval=point.next_interval)

    async def _sweep(self) -> None:
        """Now and then: delete the points of readers finished FINISHED_KEEP_S ago (in the partitions
        held), and forget the locks of streams that have no reader here."""
        assert self.table is not None
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.time()
            for sid in self.table.ids():
                entry = self.table.get(sid)
                if entry is not None and entry.point.finished and now - entry.point.finished_at > FINISHED_KEEP_S and self._mine(sid):
                    with contextlib.suppress(Exception):
                        await self.table.delete(sid, entry.revision)
            for sid, lock in list(self._locks.items()):
                # A released lock reads unlocked until its next waiter runs: one with waiters stays.
                if not lock.locked() and not getattr(lock, "_waiters", None) and sid not in self.sessions and sid not in self._starting:
                    del self._locks[sid]

    def _replica_name(self) -> str:
        return self.partitions.replica if self.partitions is not None else ""

    # ------------------------------------------------------------ sessions

    def _check_room(self, stream_id: str) -> None:
        if stream_id in self.sessions or stream_id in self._starting:
            raise precondition(f"chat for stream {stream_id!r} is already running; StopChat it first")
        if len(self.sessions) + len(self._starting) >= self.settings.max_streams:
            raise StatusError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this chat service already reads {self.settings.max_streams} streams (STREAMSIGHT_CHAT_MAX_STREAMS); stop one or add an instance",
            )

    async def start_chat(self, stream_id: str, point: ReaderPoint, loaded: LoadedReplay | None = None) -> ChatSession:
        """Run the stream's reader here, from `point` (a new one: nothing published yet)."""
        self._check_room(stream_id)
        self._starting.add(stream_id)
        try:
            session = await self._new_session(stream_id, point, loaded)
            try:
                follow = await self._follow_media(session)
            except Exception as exc:
                self.log.error("cannot follow the stream's media", stream_id=stream_id, error=repr(exc))
                raise unavailable(f"cannot subscribe to stream {stream_id!r}'s media on NATS ({type(exc).__name__}); try again") from None
        finally:
            self._starting.discard(stream_id)
        self.finished.pop(stream_id, None)
        self.sessions[stream_id] = session
        session.on_progress = lambda window, interval: self._save(session)
        ACTIVE_STREAMS.labels(self.name).set(len(self.sessions))
        self._follows[stream_id] = follow
        self._tasks[stream_id] = asyncio.create_task(self._run(session, follow), name=f"chat:{stream_id}")
        await self._save(session)
        return session

    async def _save(self, session: ChatSession) -> None:
        """Write the reader's progress and status into its point (only while this replica holds its partition)."""
        if self.table is None:
            return
        sid = session.stream_id
        if self.partitions is not None and not self.partitions.holds(subjects.partition_of(sid)):
            return  # the lease lapsed: another replica may be writing it now
        status = session.status()
        replica = self._replica_name()

        def progressed(p: ReaderPoint) -> ReaderPoint | None:
            if p.finished and not session.finished:
                return None  # finished elsewhere meanwhile: left as it is (reconcile cancels this reader)
            return dataclasses.replace(
                p, next_window=session.next_window, next_interval=session.next_interval, state=status.state,
                messages=status.messages, rejected=status.rejected, format=status.format, last_error=status.last_error,
                replica=replica, finished_at=time.time() if session.finished else 0.0,
            )

        try:
            entry = await self.table.update(sid, progressed)
        except Exception as exc:  # NATS away: the reader goes on, only a takeover would miss the progress
            MESSAGES_FAILED.labels(self.name, "resume_save").inc()
            self.log.warning("chat reader point not saved", stream_id=sid, error=repr(exc))
            return
        if entry is None and not session.finished:
            self.log.warning("chat reader's point is gone; stopping it", stream_id=sid)
            session.stop()

    def _parse(self, source: str) -> LiveSource | ReplaySource:
        try:
            return parse_source(source)
        except SourceError as exc:
            raise invalid(str(exc)) from None

    async def _load(self, parsed: ReplaySource) -> LoadedReplay:
        s = self.settings
        try:
            path = check_replay_path(parsed.path, s.replay_roots, int(s.max_replay_mb * 1e6))
            return await load_replay_checked_async(path)
        except SourceError as exc:
            raise invalid(str(exc)) from None

    async def _new_session(self, stream_id: str, point: ReaderPoint, loaded: LoadedReplay | None = None) -> ChatSession:
        parsed = self._parse(point.source)
        run_id = uuid.uuid4().hex[:8]
        common = dict(publisher=self.bus, products=self.products, media_start=point.media_start, idle_timeout_s=self.settings.stream_idle_s,
                      started_wall=point.started_wall, skip_windows=point.next_window, skip_intervals=point.next_interval)
        if isinstance(parsed, LiveSource):
            client = self._irc_client(parsed, point.media_start)
            return ChatSession(stream_id, run_id, client=client, **common)
        if loaded is None:
            loaded = await self._load(parsed)
        realtime = point.pacing == common_pb2.PACING_LIVE
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

    async def _run(self, session: ChatSession, follow: MediaFollow) -> None:
        try:
            await session.run()
        finally:
            if self._follows.get(session.stream_id) is follow:
                del self._follows[session.stream_id]
            await follow.stop()
            if session.finished:
                # Its final status goes into its point before it leaves `sessions`: a change of the
                # point seen meanwhile finds it still running here, not a reader to start.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._save(session)
                self.finished[session.stream_id] = session
                while len(self.finished) > self.settings.finished_kept:
                    self.finished.popitem(last=False)
            if self.sessions.get(session.stream_id) is session:
                self.sessions.pop(session.stream_id, None)
                self._tasks.pop(session.stream_id, None)
            ACTIVE_STREAMS.labels(self.name).set(len(self.sessions))

    async def _follow_media(self, session: ChatSession) -> MediaFollow:
        """Ordered consumers on the stream's window records and status events (follow.py)."""
        assert self.bus is not None
        since = datetime.fromtimestamp(session.media_start, timezone.utc) - timedelta(seconds=CLOCK_SKEW_S)
        sid = session.stream_id

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

        follow = MediaFollow(self.bus.js, sid, since, {
            "windows": (subjects.MEDIA_STREAM, subjects.media("windows", sid), on_window),
            "status": (subjects.EVENTS_STREAM, subjects.event("status", sid), on_status),
        })
        await follow.start()
        return follow

    async def _check_follows(self) -> None:
        """Subscribe again every running reader's media consumers that NATS dropped (after a
        reconnect: a restarted nats-server keeps none)."""
        again = 0
        for follow in list(self._follows.values()):
            again += await follow.check()
        if again:
            self.log.info("chat media consumers made again", consumers=again, readers=len(self._follows))

    async def _guard_follows(self) -> None:
        """Between reconnects too: a lost cluster node, or nats-py's own failed reset of an ordered
        consumer that missed its heartbeats, leaves a reader without its consumer."""
        while True:
            await asyncio.sleep(FOLLOW_CHECK_S)
            try:
                await self._check_follows()
            except Exception as exc:  # one failed round must not end the guard
                self.log.warning("chat media consumers not checked", error=repr(exc))

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        self.log.warning("bad media message dead-lettered", subject=msg.subject, reason=reason)
        try:
            await self.bus.dead_letter(msg, reason)  # type: ignore[union-attr]
        except Exception as exc:
            self.log.error("dead-lettering failed", subject=msg.subject, error=repr(exc))
