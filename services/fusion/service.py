"""Fusion service: joins each window's feature records, scores it, decides highlights, asks for clips.

Partitioned (streamsight.partitions, group "fusion"): the replicas share the streams'
partitions, and for each partition k it holds a replica runs three durable pull consumers,
created at its first start and delivering what is new from then on (a first deployment does
not score the history):

  streamsight.features.v1.{vision,audio,chat}.<k>.<stream>   FeatureRecords (FEATURES)  "fusion-p<k>"
  streamsight.media.v1.windows.<k>.<stream>                  WindowRecords (MEDIA)      "fusion-media-p<k>"
  streamsight.events.v1.{status,glitch,health}.<k>.<stream>  events (EVENTS)            "fusion-events-p<k>"

A replica says it is ready once it holds its share of the partitions (Partitions.settled):
the window consumers must exist before a stream starts (MEDIA keeps messages only for
consumers that exist). Per stream, `join.StreamJoin` says when a window is ready (see there:
by progress, not by wall clock: all expected modalities in, or each missing stage cannot
deliver it; a media-time deadline for live sources; a long stall timeout as the last resort),
and whether a record's window index is in the stream's known range (else it is dead-lettered
and nothing is acted on). What the stream is comes from statuses: ingest's "started" (live or
a file and its length), a declaration of its modalities (StreamStatus.modalities, whether it has
chat), a stage's own terminal or "chat_failed" status (it delivers nothing more). The model
(model.py) scores it; one WindowScore event `<stream>:score:<i>` is published; the
`highlights.HighlightTracker` finds the moments in and around high windows at 1 s (moments.py,
from the 1 s values the scores carry; chat's reaction 1-12 s later credited to the moment it
follows) and makes one highlight per moment; a highlight gets a clip from ingest's ExportClip
(lead-in included) and one Highlight event `<stream>:highlight:<n>`. A clip that fails still
publishes the highlight, with an empty clip. With the setting vertical_clips a second ExportClip
(same key: ingest answers with the stored clip) asks for its 9:16 copy too, within
vertical_timeout_s, carried as Highlight.vertical_clip; clips are asked of the ingest replica that
holds the stream (streamsight.ingestroute; `ingest_address` when none is registered). Glitch events
mark the spans whose moments are suppressed or flagged (glitch_highlights); so do the glitch
service's health incidents: black, freeze, silence and audio_gap like a glitch,
loudness and av_drift only flag (Highlight.glitch), format_change and no_audio are ignored.
When a stream's last window is scored and its last highlight published, fusion's last word on it,
the "analysed" StreamStatus (analysed.py), goes out once glitch and chat are done with the stream too.

Exactly once under redelivery and restarts: every accepted record is written to the KV bucket
(`p.<stream>.<i>.<modality>`) before it is acknowledged, every score after it is published
(`s.<stream>.<i>`), every highlight (`h.<stream>.<n>`), every glitch or health span (`g.<stream>.<id>`,
the id escaped to KV's key alphabet),
and the stream's clock (`m.<stream>`); a finished stream's "analysed" status waits in `a.<stream>`
until it is published (a takeover publishes it, under the same event id).
A replica that gains a partition (at its start, or when another replica stopped or died)
rebuilds that partition's joins and trackers from the bucket, then starts its consumers;
records for a scored window are ignored; the event ids let JetStream drop a copy published
twice across a crash (EVENTS' duplicate window, 120 s, is far longer than a takeover: the
lease TTL, 6 s, plus the ack wait of what the dead replica held, ACK_WAIT_S). Losing a
partition stops its consumers after the messages in hand and drops its streams here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from prometheus_client import Counter, Histogram

from streamsight import events, subjects
from streamsight.bus import BadMessage, Consumer, event_payload, kv_entries
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.lifecycle import StreamTable
from streamsight.media import window_record
from streamsight.ingestroute import IngestRoutes
from streamsight.partitions import Partitions
from streamsight.service import Service
from streamsight.tasks import cancel_and_wait

from . import analysed
from .analysed import Pending
from .highlights import HighlightConfig, HighlightSpan, HighlightTracker, ScoredWindow
from .join import JoinConfig, OutOfRange, Part, ReadyWindow, StreamJoin
from .model import FusionModel, choose
from .moments import MomentConfig
from .settings import FusionSettings

MODALITY = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO, "chat": common_pb2.MODALITY_CHAT}
MODALITY_NAME = {v: k for k, v in MODALITY.items()}
TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_STOPPED, common_pb2.STREAM_STATE_FAILED}
STAGES = {"vision", "audio", "chat"}  # reporters whose statuses speak for one modality, not for the stream
# Health faults a highlight should not be cut from (like corruption), and those it is only flagged for.
HEALTH_SUPPRESS = {events_pb2.HEALTH_KIND_BLACK, events_pb2.HEALTH_KIND_FREEZE, events_pb2.HEALTH_KIND_SILENCE, events_pb2.HEALTH_KIND_AUDIO_GAP}
HEALTH_MARK = {events_pb2.HEALTH_KIND_LOUDNESS, events_pb2.HEALTH_KIND_AV_DRIFT}
EVENT_HANDLERS = {"status": "on_status", "glitch": "on_glitch", "health": "on_health"}  # event kind -> handler
# A replica that died with messages in hand: they come back this long after they were fetched
# (a slow handler is kept from it by in-progress beats), so a takeover waits no longer for them.
ACK_WAIT_S = 5.0
# Feature, window and event records are a few KB: three consumers per partition, 48 for all 16,
# share the connection's fetch budget (streamsight.bus.FETCH_BUDGET, 40 MiB) without waiting.
RECORD_FETCH_BYTES = 256 * 1024
POLL_S = 0.1  # how often a finished stream's "analysed" status checks glitch's and chat's progress
KEY_SAFE = frozenset(b"-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

WINDOWS_SCORED = Counter("streamsight_fusion_windows_scored_total", "Windows scored, by why they were scored then", ["completion"])
WINDOWS_MISSING = Counter(
    "streamsight_fusion_windows_missing_total", "Windows scored with a modality missing, by modality and why", ["modality", "completion"]
)
OUT_OF_RANGE = Counter("streamsight_fusion_out_of_range_total", "Records refused: window index outside the stream's known range", ["kind"])
TAKEOVER_SECONDS = Histogram("streamsight_fusion_partition_gain_seconds", "Taking a partition: its streams read back from KV and its consumers made",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
STAGE_STALLS = Counter("streamsight_fusion_stage_stalls_total", "Streams whose windows were scored after a stage delivered nothing for the stall timeout", ["modality"])


@dataclass
class StreamState:
    join: StreamJoin
    tracker: HighlightTracker
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    published: set[int] = field(default_factory=set)  # highlight numbers already published
    stalls_logged: set[str] = field(default_factory=set)  # modalities whose stall was reported
    glitches: set[str] = field(default_factory=set)  # "<stream>.<escaped glitch or incident id>" keys stored (g.<...>)
    forgotten: bool = False  # its windows are all scored and its KV state purged
    released: bool = False  # its partition went to another replica: nothing more is done with it here


class FusionService(Service):
    name = "fusion"
    Settings = FusionSettings
    settings: FusionSettings

    async def start(self) -> None:
        s = self.settings
        self.models = [FusionModel.load(s.model_path)]
        if s.model_av_path is not None:
            self.models.append(FusionModel.load(s.model_av_path))
        self.join_config = JoinConfig(
            expected=frozenset(s.expected_modalities), deadline_s=s.deadline_s, stall_timeout_s=s.stall_timeout_s,
            max_ahead=s.max_ahead_windows, window_s=s.window_s,
        )
        self.highlight_config = HighlightConfig(
            threshold=s.threshold or self.models[0].threshold, merge_gap=s.merge_gap, max_windows=s.max_highlight_windows,
            lead_in_s=s.lead_in_s, tail_s=s.tail_s, min_clip_s=s.min_clip_s, max_clip_s=s.max_clip_s,
            live_wait_s=s.live_chat_wait_s, glitch_policy=s.glitch_highlights,
            moments=MomentConfig(chat_lag_min_s=s.chat_lag_min_s, chat_lag_max_s=s.chat_lag_max_s, sure_cues=s.moment_cues_alone),
        )
        # Streamsight.lifecycle's table: a stream silent for stream_idle_s (at least twice the stall
        # timeout, so the stall has scored what it could) is scored with what is there and forgotten.
        self.streams: StreamTable[StreamState] = StreamTable(self.name, idle_s=max(s.stream_idle_s, 2 * s.stall_timeout_s))
        self.routes = IngestRoutes(self.bus, s.ingest_address, s.auth_token)  # the ingest replica holding a stream, for its clips
        self.kv = await self._bucket()
        self._consumers: dict[int, list[Consumer]] = {}
        self._announcing: dict[str, asyncio.Task] = {}  # stream -> its "analysed" status on its way (analysed.py)
        self._ticker = asyncio.create_task(self._tick(), name="fusion:tick")
        self.partitions = Partitions(self.bus, self.name)
        await self.partitions.start(self._gain, self._lose)
        if not await self.partitions.settled():
            self.log.warning("partitions not all taken at start; going on taking them", held=sorted(self.partitions.held))

    def health_info(self) -> dict[str, str]:
        return {
            "models": ",".join(m.version for m in self.models),
            "expected": ",".join(self.settings.expected_modalities),
            "threshold": f"{self.highlight_config.threshold:.3f}",
            "ingest": self.settings.ingest_address,
            "partitions": ",".join(map(str, sorted(self.partitions.held))),
        }

    async def stop(self) -> None:
        # every partition's batches in hand handled (all at once), then the leases released
        await asyncio.gather(*(c.stop() for consumers in self._consumers.values() for c in consumers))
        await self._cancel_announcements(lambda sid: True)  # a.<stream> stays in KV: the next holder publishes it
        await self.partitions.stop()
        await cancel_and_wait([self._ticker])
        await self.routes.close()

    # ------------------------------------------------------------------ partitions

    async def _gain(self, partition: int) -> None:
        """Take partition `partition` over: its streams from the bucket, then its three consumers."""
        started = time.monotonic()
        await self._restore(partition)
        bus = self.bus
        k = partition
        margin = self.partitions.margin_s
        await asyncio.gather(*(bus.wait_for_redeliveries(stream, durable, ACK_WAIT_S, margin) for stream, durable in (
            (subjects.FEATURES_STREAM, f"fusion-p{k}"), (subjects.MEDIA_STREAM, f"fusion-media-p{k}"), (subjects.EVENTS_STREAM, f"fusion-events-p{k}"))))
        holds = lambda: self.partitions.holds(k)  # noqa: E731
        self._consumers[k] = [
            bus.consume(f"fusion-p{k}", [subjects.features(m, partition=k) for m in MODALITY], self.on_feature, subjects.FEATURES_STREAM,
                        batch=64, deliver_new=True, ack_wait_s=ACK_WAIT_S, max_bytes=RECORD_FETCH_BYTES, holds=holds),
            bus.consume(f"fusion-media-p{k}", subjects.media("windows", partition=k), self.on_window, subjects.MEDIA_STREAM,
                        deliver_new=True, inactive_threshold_s=300, ack_wait_s=ACK_WAIT_S, max_bytes=RECORD_FETCH_BYTES, holds=holds),
            bus.consume(f"fusion-events-p{k}", [subjects.event(kind, partition=k) for kind in EVENT_HANDLERS], self.on_event,
                        subjects.EVENTS_STREAM, deliver_new=True, ack_wait_s=ACK_WAIT_S, max_bytes=RECORD_FETCH_BYTES, holds=holds),
        ]
        for consumer in self._consumers[k]:
            await bus.wait_consumer(consumer.spec.stream, consumer.durable)
        TAKEOVER_SECONDS.observe(time.monotonic() - started)

    async def _lose(self, partition: int) -> None:
        """Hand partition `partition` back: its consumers stop after the messages in hand (each
        written to the bucket before it was acknowledged), then its streams are dropped here."""
        await asyncio.gather(*(c.stop() for c in self._consumers.pop(partition, [])))
        await self._cancel_announcements(lambda sid: subjects.partition_of(sid) == partition)
        dropped = 0
        for sid, state in self.streams.items():
            if subjects.partition_of(sid) != partition:
                continue
            async with state.lock:  # the ticker may be scoring it
                state.released = True
            self.streams.release(sid)
            dropped += 1
        self.log.info("partition handed over", partition=partition, streams=dropped)

    # ------------------------------------------------------------------ setup

    async def _bucket(self) -> KeyValue:
        """The state bucket, made with the platform's `nats_replicas` copies (Bus.kv)."""
        assert self.bus is not None
        return await self.bus.kv(self.settings.state_bucket, history=1, ttl_s=self.settings.state_ttl_s)

    def _state(self, sid: str, from_start: bool = False) -> StreamState | None:
        """The stream's state (lifecycle policy); None for a message of a finished stream.
        `from_start`: the stream's start or registration, which may use a finished id again."""
        make = lambda: StreamState(StreamJoin(sid, self.join_config), HighlightTracker(self.highlight_config))  # noqa: E731
        return self.streams.entry(sid, make, from_start)

    def _known(self, sid: str) -> bool:
        """Whether fusion holds or finished this stream (else a record must be in range to start it)."""
        return sid in self.streams or self.streams.finished(sid)

    async def _restore(self, partition: int) -> None:
        """Rebuild the joins and trackers of partition `partition`'s streams from the KV bucket
        (after a restart, or taking the partition over from another replica)."""
        parts: list[tuple[str, Part]] = []
        scores: dict[str, list[events_pb2.WindowScore]] = {}
        mine: set[str] = set()
        for key, value in sorted((e.key, e.value or b"") for e in await kv_entries(self.bus.js, self.settings.state_bucket)):
            kind, _, rest = key.partition(".")
            sid = rest.split(".", 1)[0]
            if subjects.partition_of(sid) != partition or (sid in self.streams and sid not in mine):
                continue
            mine.add(sid)
            if kind == "d":
                self.streams.finish(rest)
            elif kind == "a":
                self._announce(Pending.from_json(value))
            elif kind == "m":
                self._restore_meta(rest, json.loads(value))
            elif kind == "p":
                record = features_pb2.FeatureRecord.FromString(value)
                parts.append((record.stream_id, _part(record)))
            elif kind == "s":
                score = events_pb2.WindowScore.FromString(value)
                scores.setdefault(score.stream_id, []).append(score)
            elif kind == "g":
                sid, _, _ = rest.rpartition(".")
                if (state := self._state(sid)) is not None:
                    state.glitches.add(rest)
                    state.tracker.glitch(*json.loads(value))
            elif kind == "h":
                sid, _, n = rest.rpartition(".")
                if (state := self._state(sid)) is not None:
                    state.published.add(int(n))
        # The ticker may look at these streams from now on: each is worked on under its lock.
        for sid, items in scores.items():
            if (state := self._state(sid)) is None:
                continue
            async with state.lock:
                for score in sorted(items, key=lambda s: s.window):
                    state.join.mark_scored(score.window)
                    for modality in {name.partition(".")[0] for name in score.features} & STAGES:
                        state.join.reached(modality, score.window)
                    spans = state.tracker.add(_scored(score))
                    await self._publish_highlights(state, spans)  # those decided but not published before the restart
        for sid, part in parts:
            if (state := self._state(sid)) is not None:
                async with state.lock:
                    await self._score(state, state.join.add(part))
        restored = [sid for sid in mine if sid in self.streams]
        for sid in restored:
            state = self.streams.get(sid)
            if state is not None:
                async with state.lock:
                    await self._score(state, state.join.ready())
        self.log.info("state restored", partition=partition, streams=len(restored), open_parts=len(parts))

    def _restore_meta(self, sid: str, meta: dict) -> None:
        if (state := self._state(sid)) is not None:
            state.join = StreamJoin.from_meta(sid, self.join_config, meta)
            state.tracker.live = state.join.live
            state.tracker.chat = state.join.declared is None or "chat" in state.join.expected

    async def _save_meta(self, state: StreamState) -> None:
        await self.kv.put(f"m.{state.join.stream_id}", json.dumps(state.join.to_meta()).encode())

    def _check_index(self, join: StreamJoin, index: int, what: str, relative: bool = True) -> None:
        """BadMessage (dead letter, nothing acted on) for an index outside the stream's known range."""
        try:
            join.check_index(index, time.time(), relative)
        except OutOfRange as exc:
            OUT_OF_RANGE.labels(what).inc()
            self.log.warning("record outside the stream's range refused", stream_id=join.stream_id, kind=what, window=index, error=str(exc))
            raise BadMessage(f"{what}: {exc}") from None

    # ------------------------------------------------------------------ handlers

    async def on_feature(self, msg: Msg) -> None:
        try:
            record = features_pb2.FeatureRecord.FromString(msg.data)
        except DecodeError:
            raise BadMessage("not a streamsight.features.v1.FeatureRecord") from None
        modality = msg.subject.split(".")[3]
        sid = subjects.stream_of(msg.subject)
        if record.stream_id != sid or MODALITY_NAME.get(record.modality) != modality:
            raise BadMessage(f"record for stream {record.stream_id!r}, modality {record.modality} on subject {msg.subject}")
        if record.window < 0 or not (math.isfinite(record.start_s) and math.isfinite(record.end_s)) or record.end_s < record.start_s:
            raise BadMessage(f"window {record.window} [{record.start_s}, {record.end_s}] is not a valid window")
        if not self._known(sid):  # a forged record must not leave a stream behind
            self._check_index(StreamJoin(sid, self.join_config), record.window, f"{modality} record")
        state = self._state(sid)
        if state is None:
            return  # the stream is finished: a late or redelivered record (counted)
        async with state.lock:
            join = state.join
            if join.is_scored(record.window) or join.has(record.window, modality):
                join.add(_part(record))  # counted as late or duplicate, and moves the clock
                return
            self._check_index(join, record.window, f"{modality} record")
            await self.kv.put(f"p.{sid}.{record.window}.{modality}", msg.data)
            if modality == "chat" and not join.chat_seen:
                join.chat_seen = True
                await self._save_meta(state)
            await self._score(state, join.add(_part(record)))

    async def on_window(self, msg: Msg) -> None:
        sid = subjects.stream_of(msg.subject)
        record = window_record(msg.data, sid)
        if not self._known(sid):
            self._check_index(StreamJoin(sid, self.join_config), record.index, "window record")
        state = self._state(sid)
        if state is None:
            return
        async with state.lock:
            join = state.join
            if not join.is_scored(record.index):
                self._check_index(join, record.index, "window record")
            ready = join.media_window(record.index, record.start_s, record.end_s, record.last)
            if record.last:
                join.end_seq = msg.metadata.sequence.stream  # glitch is done with the stream once it acknowledged this
                ready += join.end(record.end_s)
            await self._save_meta(state)
            await self._score(state, ready)

    async def on_event(self, msg: Msg) -> None:
        """A status, glitch or health event (one consumer per partition carries the three)."""
        handler = getattr(self, EVENT_HANDLERS.get(msg.subject.split(".")[3], ""), None)
        if handler is None:
            raise BadMessage(f"unexpected subject {msg.subject}")
        await handler(msg)

    async def on_status(self, msg: Msg) -> None:
        try:
            event = events.decode(msg.headers, msg.data)
        except events.BadEvent as exc:
            raise BadMessage(str(exc)) from None
        if event.WhichOneof("payload") != "status":
            raise BadMessage(f"{event.type} on a status subject")
        status = event.status
        sid = subjects.stream_of(msg.subject)
        if status.reporter == self.name:
            return
        is_start = status.state == common_pb2.STREAM_STATE_RUNNING and status.reporter == "ingest" and status.reason == "started"
        registered = bool(status.modalities) and status.state == common_pb2.STREAM_STATE_PENDING  # the gateway's declaration
        if (is_start or registered) and self.streams.finished(sid):  # the stream id is used again for a new run
            await self.kv.purge(f"d.{sid}")
        stage_done = status.reporter in STAGES and (status.state in TERMINAL or status.reason == "chat_failed")
        stream_end = status.reporter not in STAGES and status.state in TERMINAL
        if not (is_start or status.modalities or stage_done or stream_end):
            return
        if sid not in self.streams and not (is_start or status.modalities):
            return  # the end of a stream fusion holds nothing of (or finished): nothing to finish
        state = self._state(sid, from_start=is_start or registered)
        if state is None:
            return
        async with state.lock:
            join = state.join
            if stream_end:  # checked before anything changes
                implied = join.implied_last(status.media_time_s, status.windows)
                if join.last_window is None and implied is not None:
                    self._check_index(join, implied, "terminal status", relative=False)  # may come before the last window records
            if status.modalities:
                join.declare({MODALITY_NAME[m] for m in status.modalities if m in MODALITY_NAME})
                state.tracker.chat = join.declared is None or "chat" in join.expected
            if is_start:
                started = event.time.ToSeconds() if event.HasField("time") else time.time()
                join.start(live=status.duration_s <= 0, duration_s=status.duration_s, start_wall=min(started, time.time()))
                state.tracker.live = join.live
            if stage_done:
                join.stage_done(status.reporter)
            ready = join.ready()
            if stream_end:
                ready += join.end(status.media_time_s, windows=status.windows)
            await self._save_meta(state)
            await self._score(state, ready)

    async def on_glitch(self, msg: Msg) -> None:
        """A glitch (video corruption) of a stream fusion holds: moments overlapping it are
        suppressed or marked (glitch_highlights). Glitches of other streams are ignored."""
        glitch = event_payload(msg, "glitch")
        await self._fault_span(subjects.stream_of(msg.subject), "glitch", glitch.glitch_id, glitch.start_s, glitch.end_s, mark_only=False)

    async def on_health(self, msg: Msg) -> None:
        """A health incident of a stream fusion holds: black, freeze, silence and audio_gap are
        treated like a glitch, loudness and av_drift only flag an overlapping moment,
        format_change and no_audio (the whole stream) do not touch highlights."""
        incident = event_payload(msg, "health")
        if incident.kind not in HEALTH_SUPPRESS | HEALTH_MARK:
            return
        await self._fault_span(subjects.stream_of(msg.subject), "health", incident.incident_id, incident.start_s, incident.end_s,
                               mark_only=incident.kind in HEALTH_MARK)

    async def _fault_span(self, sid: str, what: str, fault_id: str, start_s: float, end_s: float, mark_only: bool) -> None:
        """Remember the latest span of a glitch or health incident (KV first, for a restart)."""
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s or start_s < 0:
            raise BadMessage(f"{what} span [{start_s}, {end_s}] is not a valid span")
        state = self.streams.get(sid) if sid in self.streams else None
        if state is None:
            return
        async with state.lock:
            key = f"{sid}.{kv_token(fault_id or what + '-unnamed')}"
            value = [start_s, end_s, True] if mark_only else [start_s, end_s]
            await self.kv.put(f"g.{key}", json.dumps(value).encode())  # the latest span of the incident
            state.glitches.add(key)
            state.tracker.glitch(start_s, end_s, mark_only)

    async def _tick(self) -> None:
        """Wall-clock checks, the last resort: a stage that delivered nothing for a stream for the stall timeout."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for _, state in self.streams.items():
                if not state.join.stall_due(now):
                    continue
                async with state.lock:
                    if state.released:
                        continue
                    try:
                        await self._score(state, state.join.ready(now))
                    except Exception as exc:  # NATS away: the next tick tries again
                        self.log.warning("scoring a stalled stream failed", stream_id=state.join.stream_id, error=repr(exc))
            for sid, state in self.streams.idle():
                await self._finish_idle(sid, state, now)

    async def _finish_idle(self, sid: str, state: StreamState, now: float) -> None:
        """Nothing came for the stream for the idle time (its ingest vanished without an end):
        its open windows are scored with what is there, its highlights decided, its state purged."""
        self.log.warning("stream idle: open windows scored with what arrived, state dropped", stream_id=sid,
                         open_windows=state.join.open_windows)
        async with state.lock:
            if state.released:
                return
            try:
                await self._score(state, state.join.end(state.join.clock, now))
                if not state.forgotten:
                    await self._publish_highlights(state, state.tracker.finish())
                    await self._forget(state)
            except Exception as exc:  # NATS away: what was not scored is lost with the state; said loudly
                self.log.error("finishing an idle stream failed", stream_id=sid, error=repr(exc))

    # ------------------------------------------------------------------ scoring

    async def _score(self, state: StreamState, ready: list[ReadyWindow]) -> None:
        sid = state.join.stream_id
        for rw in ready:
            score = self._window_score(sid, rw)
            await self.bus.publish_event(sid, score, f"{sid}:score:{rw.window}")
            await self.kv.put(f"s.{sid}.{rw.window}", score.SerializeToString())
            for modality in rw.parts:
                await self.kv.purge(f"p.{sid}.{rw.window}.{modality}")
            self._count(state, rw)
            await self._publish_highlights(state, state.tracker.add(_scored(score)))
        if state.join.finished and state.join.ended:
            await self._publish_highlights(state, state.tracker.finish())
            pending = self._pending(state)
            if pending is not None:
                await self.kv.put(f"a.{sid}", pending.to_json())  # before the rest is purged: a takeover publishes it
            await self._forget(state)
            if pending is not None:
                self._announce(pending)

    def _count(self, state: StreamState, rw: ReadyWindow) -> None:
        """Metrics and logs of one scored window; a stalled stage is reported loudly, once per stream."""
        sid = state.join.stream_id
        WINDOWS_SCORED.labels(rw.reason).inc()
        for modality in rw.missing:
            WINDOWS_MISSING.labels(modality, rw.reason).inc()
        if rw.reason == "stage_stalled":
            for modality in rw.missing:
                if modality in state.stalls_logged:
                    continue
                state.stalls_logged.add(modality)
                STAGE_STALLS.labels(modality).inc()
                silent = state.join.silent_for(modality, time.monotonic())
                self.log.error(f"stage {modality} delivered nothing for stream {sid} in {silent:.0f} s; its windows are scored without it",
                               stream_id=sid, modality=modality, stall_timeout_s=self.join_config.stall_timeout_s)
        if rw.missing:
            self.log.info("window scored without a modality", stream_id=sid, window=rw.window, missing=rw.missing, completion=rw.reason)
        else:
            self.log.debug("window scored", stream_id=sid, window=rw.window, completion=rw.reason)

    def _window_score(self, sid: str, rw: ReadyWindow) -> events_pb2.WindowScore:
        features = {k: v for k, v in rw.features().items() if math.isfinite(v)}
        model = choose(self.models, set(rw.parts))
        prediction = model.predict(features)
        why = [
            common_pb2.Contribution(feature=c.feature, weight=c.weight, value=c.value)
            for c in prediction.top(self.settings.top_features)
            if c.weight != 0.0
        ]
        return events_pb2.WindowScore(
            stream_id=sid, window=rw.window, start_s=rw.start_s, end_s=rw.end_s, score=prediction.probability,
            missing=[MODALITY[m] for m in rw.missing], why=why, features=features, completion=rw.reason,
        )

    async def _publish_highlights(self, state: StreamState, spans: list[HighlightSpan]) -> None:
        for span in spans:
            if span.number in state.published:
                continue
            await self._publish_highlight(state, span)

    async def _publish_highlight(self, state: StreamState, span: HighlightSpan) -> None:
        sid = state.join.stream_id
        media_end = state.join.last_end if state.join.ended else None
        start_s, end_s = span.clip_range(self.highlight_config, media_end)
        clip_id = f"highlight-{span.number}"
        request = ingest_pb2.ExportClipRequest(stream_id=sid, start_s=start_s, end_s=end_s, clip_id=clip_id)
        ingest = await self._ingest_for(sid)
        try:
            clip = await ingest.ExportClip(request, timeout=self.settings.clip_timeout_s)
        except grpc.aio.AioRpcError as exc:
            self.log.warning("clip failed; highlight published without a clip", stream_id=sid, highlight=span.number,
                             code=exc.code().name, detail=exc.details())
            clip = common_pb2.ClipRef()
        vertical = common_pb2.ClipRef()
        if self.settings.vertical_clips and clip.clip_id:
            # asked apart, with its own deadline: a slow re-encode must not cost the clip itself
            request.vertical = True
            try:
                vertical = (await ingest.ExportClip(request, timeout=self.settings.vertical_timeout_s)).vertical
            except grpc.aio.AioRpcError as exc:
                self.log.warning("vertical clip failed", stream_id=sid, highlight=span.number, code=exc.code().name, detail=exc.details())
            if not vertical.clip_id:
                self.log.warning("highlight published without a vertical clip", stream_id=sid, highlight=span.number)
        highlight = events_pb2.Highlight(
            stream_id=sid, highlight_id=clip_id, start_s=span.start_s, end_s=span.end_s, score=span.score,
            why=list(span.best.why), clip=clip, windows=list(span.windows), missing=[MODALITY[m] for m in span.missing],
            rank=span.rank, reason=span.reason, peak_s=span.peak_s, chat_lag_s=span.chat_lag_s, latency_s=span.latency_s,
            wait_s=span.wait_s, glitch=span.glitch, resolution=span.resolution,
        )
        if vertical.clip_id:
            highlight.vertical_clip.CopyFrom(vertical)
        await self.bus.publish_event(sid, highlight, f"{sid}:highlight:{span.number}")
        await self.kv.put(f"h.{sid}.{span.number}", b"1")
        state.published.add(span.number)
        self.log.info("highlight", stream_id=sid, highlight=span.number, start_s=span.start_s, end_s=span.end_s,
                      score=round(span.score, 3), rank=span.rank, reason=span.reason, latency_s=span.latency_s, clip=clip.uri or "none",
                      **({"vertical_clip": vertical.uri or "none"} if self.settings.vertical_clips else {}))

    # ------------------------------------------------------------------ the stream's last word

    def _pending(self, state: StreamState) -> Pending | None:
        """The "analysed" status of a finished stream; None when it ended without a last window record."""
        join = state.join
        if not join.end_seq:
            self.log.info("stream ended without a last window record: no analysed status", stream_id=join.stream_id)
            return None
        return Pending(
            stream_id=join.stream_id, event_id=analysed.event_id(join.stream_id, join.start_wall), end_seq=join.end_seq,
            end_s=join.last_end if join.last_end is not None else join.clock,
            chat="chat" in join.expected and not join.said_done("chat"), highlights=len(state.published),
            windows_scored=len(join.scored_windows), since=time.time(),
        )

    def _announce(self, pending: Pending) -> None:
        sid = pending.stream_id
        if sid in self._announcing and not self._announcing[sid].done():
            return
        self._announcing[sid] = asyncio.create_task(self._publish_analysed(pending), name=f"fusion:analysed:{sid}")

    async def _cancel_announcements(self, which) -> None:
        tasks = [self._announcing.pop(sid) for sid in list(self._announcing) if which(sid)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_analysed(self, pending: Pending) -> None:
        """Publish the stream's "analysed" status once glitch and chat are done with it (see analysed.py)."""
        sid = pending.stream_id
        deadline = pending.since + self.settings.analysed_wait_s
        glitch: bool | None = None
        failures = 0
        try:
            while True:
                try:
                    if glitch is None:
                        glitch = await analysed.glitch_runs(self.bus, sid)
                    if (not glitch or await analysed.glitch_done(self.bus.js, pending)) and (
                            not pending.chat or await analysed.chat_done(self.bus.js, pending)):
                        await self.bus.publish_event(sid, pending.status(), pending.event_id)
                        await self.kv.purge(f"a.{sid}")
                        self.log.info("stream analysed", stream_id=sid, highlights=pending.highlights, windows=pending.windows_scored,
                                      waited_s=round(time.time() - pending.since, 3))
                        return
                except Exception as exc:  # NATS away, or the publish refused (NATS users without fusion's status permission)
                    (self.log.debug if failures else self.log.warning)("analysed status not published yet; trying again until the deadline",
                                                                     stream_id=sid, error=repr(exc))
                    failures += 1
                    await asyncio.sleep(1.0)
                if time.time() > deadline:
                    self.log.warning("no analysed status: glitch or chat not done with the stream, or publishing failed, in time",
                                     stream_id=sid, wait_s=self.settings.analysed_wait_s, glitch=glitch, chat=pending.chat, failures=failures)
                    with contextlib.suppress(Exception):  # NATS away: a takeover finds it and gives up the same way
                        await self.kv.purge(f"a.{sid}")
                    return
                await asyncio.sleep(POLL_S)
        finally:
            if self._announcing.get(sid) is asyncio.current_task():
                del self._announcing[sid]

    async def _ingest_for(self, sid: str) -> ingest_pb2_grpc.IngestStub:
        """The ingest replica that holds the stream (its clip buffer); the configured address when unknown."""
        try:
            return (await self.routes.stub_for(sid))[0]
        except Exception as exc:  # NATS away: the configured ingest is the best guess
            self.log.warning("ingest replica of the stream unknown; asking the configured one", stream_id=sid, error=repr(exc))
            return self.routes.stub(self.settings.ingest_address)

    async def _forget(self, state: StreamState) -> None:
        """Every window of an ended stream is scored: drop its state, remember it is done."""
        sid = state.join.stream_id
        state.forgotten = True
        await self.kv.put(f"d.{sid}", b"1")
        keys = [f"s.{sid}.{i}" for i in state.join.scored_windows] + [f"h.{sid}.{n}" for n in sorted(state.published)]
        keys += [f"p.{sid}.{i}.{m}" for i, m in state.join.open_parts] + [f"m.{sid}"]
        keys += [f"g.{key}" for key in sorted(state.glitches)]
        for key in keys:
            await self.kv.purge(key)
        self.streams.finish(sid)
        self.log.info("stream finished", stream_id=sid, late_records=state.join.late, duplicates=state.join.duplicates,
                      highlights=state.tracker.emitted, suppressed_for_glitches=state.tracker.suppressed)


def kv_token(text: str) -> str:
    """`text` in KV's key alphabet, one key token (no dots): other bytes as =XX. Real ids carry
    colons ("<stream>:glitch:3"), which nats refuses in a key."""
    return "".join(chr(b) if b in KEY_SAFE else f"={b:02X}" for b in text.encode())


def _part(record: features_pb2.FeatureRecord) -> Part:
    return Part(MODALITY_NAME[record.modality], record.window, record.start_s, record.end_s, dict(record.values), tuple(record.flags))


def _scored(score: events_pb2.WindowScore) -> ScoredWindow:
    return ScoredWindow(score.window, score.start_s, score.end_s, score.score, tuple(score.why),
                        tuple(MODALITY_NAME[m] for m in score.missing if m in MODALITY_NAME), dict(score.features))
