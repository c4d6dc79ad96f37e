"""Ingest service: sources in, frames / audio / signals / window records out on NATS, clips on request.

Finished streams: when a stream ends its pipeline frees its decoding state at once (see
pipeline.py); the stream's record (state, stats) and its clip buffer's segments on disk stay,
so fusion can still cut highlight clips after the end. They are forgotten `finished_keep_s`
after the end, or sooner when more than `max_finished` finished streams are held (oldest
first): the buffer's segments are deleted, exported clips stay readable (ReadClip), and
GetIngest / ExportClip answer NOT_FOUND.

Crash safety: every running stream keeps its resume point in KV (resume.py). On start the
service resumes each stream a killed predecessor left unfinished, before it serves: a file from
its next window, a live source from now (streams.py). A stream that cannot be opened again is
reported FAILED (reason "resume_failed") and forgotten; one the gateway stopped or failed while
ingest was down (its terminal status is on EVENTS) is forgotten. A graceful stop stops the
streams (STOPPED), so they are not resumed.

Replicas (replicas.py, streamsight/ingestroute.py): each ingest registers itself with a heartbeat
(address, capacity = max_streams, running streams) and names itself in the placement of every
stream it starts. Every `replica_ttl_s / 3` seconds it looks at the resume points: a stream whose
placement names a replica without a live record (its heartbeat expired) is claimed with a
compare-and-set on the placement, so exactly one survivor resumes it, as a restart would (reason
"resumed", the gap reported). A stream of its own whose placement another replica took (this one
was cut off from NATS past the TTL) is handed over: stopped here without a status.

Clips after a restart: a stream's clip folder keeps `stream.json` (clipindex.py), written when the
stream ends; on start the service restores the finished streams it held that are still within
`finished_keep_s`, so ExportClip and GetIngest answer for them as before the restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

from google.protobuf.message import DecodeError

from streamsight import subjects
from streamsight.ingestroute import replica_id
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import Servicer, exhausted, precondition
from streamsight.service import Service
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import ACTIVE_STREAMS

from streamsight import heap
from .api import IngestApi
from .clipstore import ClipStore, LocalClipStore, NatsClipStore
from . import clipindex
from .errors import IngestError
from .replicas import ReplicaAgent
from .resume import ResumePoint, ResumeStore
from .settings import IngestSettings
from .source import check_network, resolve
from .streams import TERMINAL, IngestedStream, pipeline_config, source_options


def reachable_hostname() -> str:
    """This host's name if it resolves (a container's name is its id, which Docker's DNS
    resolves for the other containers), else loopback."""
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"
    return name


class IngestService(Service):
    name = "ingest"
    Settings = IngestSettings

    async def start(self) -> None:
        self.streams: dict[str, IngestedStream] = {}
        self.api = IngestApi(self)
        self.clip_store: ClipStore = (
            NatsClipStore(self.bus.js, self.settings.clip_bucket, self.bus.replicas or 1) if self.settings.clip_store == "nats" else LocalClipStore()
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="ingest:forget-finished")
        self._trims: set[asyncio.Task] = set()
        self.replica = ReplicaAgent(self.bus, replica_id(), self.advertised, self.settings.max_streams, self.settings.replica_ttl_s,
                                    self.running)
        await self.replica.open()
        await self.replica.beat()  # first: the others must not take this replica's streams while it resumes them
        self.resume_store = await ResumeStore.open(self.bus, self.settings.resume_bucket) if self.settings.resume_bucket else None
        self._unclaimed = clipindex.candidates(Path(self.settings.data_dir) / "clips", self.settings.finished_keep_s)
        await self._restore_finished()
        if self.resume_store is not None:
            await self._resume_cut_off()
        self._watcher = asyncio.create_task(self._watch_replicas(), name="ingest:replicas")

    def advertised(self) -> str:
        """The address other services reach this replica at (`advertise_address`, else where it listens)."""
        if self.settings.advertise_address:
            return self.settings.advertise_address
        if self.rpc is not None:
            return self.address
        if not self.settings.grpc_port:
            return ""  # a free port, not picked yet: no stream is placed here until the record says where
        host = self.settings.grpc_host
        if host in ("0.0.0.0", "::", ""):
            # Listening on every interface: a loopback address would send other hosts' gateways
            # to themselves; the host name is what a container or pod is reached by.
            host = reachable_hostname()
        return f"{host}:{self.settings.grpc_port}"

    def health_info(self) -> dict[str, str]:
        return {"replica": self.replica.id, "advertise_address": self.advertised(), "max_streams": str(self.settings.max_streams),
                "streams": str(len(self.running()))}

    def running(self) -> list[str]:
        return [sid for sid, s in self.streams.items() if s.task is not None and not s.task.done()]

    async def _watch_replicas(self) -> None:
        """Heartbeat; take over a dead replica's streams; hand over ours that another replica took."""
        while self.rpc is None:  # serving soon: say where at once (a free port is known only now)
            await asyncio.sleep(0.05)
        await self.replica.beat()
        while True:
            await asyncio.sleep(self.settings.replica_ttl_s / 3)
            try:
                await self.replica.beat()
                await self._restore_finished()
                if self.resume_store is not None:
                    await self._resume_cut_off()
                for sid in self.running():
                    holder = await self.replica.holder(sid)
                    if holder is not None and holder != self.replica.id:
                        self.log.warning("stream handed over: another replica took it", stream_id=sid, holder=holder)
                        await self.stop_stream(self.streams[sid], hand_over=True)
            except Exception as exc:  # noqa: BLE001 -- NATS away: the next round tries again
                self.log.warning("replica round failed", error=repr(exc))

    async def _resume_cut_off(self) -> None:
        """Start every stream left unfinished that this replica may claim (see the module docstring)."""
        assert self.resume_store is not None
        left = await self.resume_store.left()
        if not left:
            return
        live = await self.replica.live()
        for stream_id, point in left.items():
            current = self.streams.get(stream_id)
            if current is not None and current.task is not None and not current.task.done():
                continue  # running here
            if current is not None and current.state in TERMINAL:  # it ended here and its point's deletion failed
                await self.resume_store.forget(stream_id)
                continue
            if len(self.running()) >= self.settings.max_streams:
                break  # full: another replica takes the rest
            taken_from = await self.replica.claim(stream_id, live)
            if taken_from is None:
                continue  # another live replica holds it, or won the race
            await self._resume_one(stream_id, point, taken_from)

    async def _resume_one(self, stream_id: str, point: ResumePoint, taken_from: str) -> None:
        ended = await self._ended_meanwhile(stream_id, point)
        if ended:
            self.log.info("stream not resumed: the gateway ended it meanwhile", stream_id=stream_id, state=ended)
            await self.resume_store.forget(stream_id)  # type: ignore[union-attr]
            return
        other = taken_from if taken_from and taken_from != self.replica.id else ""
        try:
            await self.start_stream(point.start_request(), resume=point, taken_from=other)
        except Exception as exc:  # the file is gone, a bad entry: say so, keep serving the others
            detail = exc.message if isinstance(exc, IngestError) else getattr(exc, "message", f"{type(exc).__name__}: {exc}")
            self.log.error("stream not resumed", stream_id=stream_id, error=detail)
            status = events_pb2.StreamStatus(stream_id=stream_id, state=common_pb2.STREAM_STATE_FAILED, reason="resume_failed",
                                             detail=f"ingest restarted and could not resume the stream: {detail}", reporter="ingest",
                                             media_time_s=point.media_time_s, windows=point.windows)
            await self.bus.publish_event(stream_id, status, f"{stream_id}:status:ingest:r{point.run + 1}:failed")
            await self.resume_store.forget(stream_id)  # type: ignore[union-attr]
        else:
            self.log.info("stream resumed", stream_id=stream_id, live=point.live, windows=point.windows, run=point.run + 1,
                          taken_from=other or None)

    async def _restore_finished(self) -> None:
        """The finished streams held before a restart, within finished_keep_s, whose placement this replica may
        claim (clipindex.py); one whose replica still looks live is tried again next round."""
        if not self._unclaimed:
            return
        live = await self.replica.live()
        waiting, restored = [], []
        for item in self._unclaimed:
            if item.stream_id in self.streams or item.age_s() >= self.settings.finished_keep_s:
                continue
            if item.replica != self.replica.id and item.replica in live:
                waiting.append(item)
                continue
            if await self.replica.claim(item.stream_id, live) is None:
                continue  # the stream runs elsewhere now
            try:
                self.streams[item.stream_id] = item.stream(self.bus, self.settings)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.log.error("finished stream not restored", stream_id=item.stream_id, error=repr(exc))
                continue
            restored.append(item.stream_id)
        self._unclaimed = waiting
        if restored:
            self.log.info("finished streams restored for their clips", streams=restored)

    async def _ended_meanwhile(self, stream_id: str, point: ResumePoint) -> str:
        """The state of a terminal status the gateway published for the stream since it started
        (StopStream while ingest was down), or ""."""
        try:
            found = await self.bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", stream_id))
        except Exception as exc:  # cannot tell: resume (a stopped stream is stopped again by its owner)
            self.log.warning("could not read the stream's statuses", stream_id=stream_id, error=repr(exc))
            return ""
        for msg in reversed(found):
            try:
                status = events_pb2.StreamStatus.FromString(msg.data)
            except DecodeError:
                continue
            if status.reporter == "gateway" and status.state in TERMINAL and msg.metadata.timestamp.timestamp() >= point.started_at - 1.0:
                return common_pb2.StreamState.Name(status.state)
        return ""

    def servicers(self) -> list[Servicer]:
        name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
        return [Servicer(ingest_pb2_grpc.add_IngestServicer_to_server, self.api, name)]

    def clip_dir(self, stream_id: str) -> Path:
        return Path(self.settings.data_dir) / "clips" / stream_id

    async def start_stream(self, request: ingest_pb2.StartIngestRequest, resume: ResumePoint | None = None,
                           taken_from: str = "") -> IngestedStream:
        """Start ingesting `request`'s source; `resume`: the point a killed ingest saved for it
        (`taken_from`: the dead replica that ran it, when another)."""
        current = self.streams.get(request.stream_id)
        if current is not None and current.task is not None and not current.task.done():
            raise precondition(f"stream {request.stream_id!r} is already being ingested")
        active = sum(1 for s in self.streams.values() if s.task and not s.task.done())
        if active >= self.settings.max_streams:
            raise exhausted(f"ingest replica {self.replica.id} is at its limit of {self.settings.max_streams} streams; "
                            "stop one or add an ingest replica")
        options = source_options(self.settings)
        src = await asyncio.to_thread(resolve, request.source, options)  # IngestError now for a source it cannot use
        await asyncio.to_thread(check_network, src, options)  # a refused host: INVALID_ARGUMENT now, not a failed stream later
        live = request.pacing == common_pb2.PACING_LIVE or request.play_file_as_live
        clip_dir = self.clip_dir(request.stream_id)
        clip_dir.mkdir(parents=True, exist_ok=True)
        clipindex.drop(clip_dir)  # an earlier run's record would name segments this run overwrites
        config = pipeline_config(self.settings, clip_dir, live, dict(request.extra))
        window_s = config.decode.window_seconds
        point = None
        if self.resume_store is not None:
            point = ResumePoint.new(request, live=src.live_hint)
            if resume is not None:
                point = dataclasses.replace(resume, run=resume.run + 1)
                if resume.live:  # from now: the media clock goes on past the outage, in a window not published yet
                    start_at = max(resume.media_time_s + max(0.0, time.time() - resume.saved_at), resume.windows * window_s)
                    config = dataclasses.replace(config, decode=dataclasses.replace(config.decode, start_at=start_at))
                else:  # a file: decoded again from its start, played fast up to its next window
                    config = dataclasses.replace(config, fast_until=resume.windows * window_s)
        if current is not None:  # the same id again: the old run's segments would mix with the new ones
            self._forget(current, release=False)
        stream = IngestedStream(request.stream_id, request.source, config, self.bus, self.settings, clip_dir,
                                store=self.resume_store, point=point, resumed=resume, taken_from=taken_from,
                                replica=self.replica.id)
        if resume is None:  # first: another replica must not take a resume point without a placement for its own
            if self.replica.writable:
                await self.replica.placed(request.stream_id)
            else:  # its writes time out (refused?): the start does not wait for it
                self._later(self.replica.placed(request.stream_id), "ingest:place")
        if point is not None:
            await self.resume_store.save(request.stream_id, point)  # type: ignore[union-attr]
        stream.task = asyncio.create_task(stream.run(), name=f"ingest:{request.stream_id}")
        stream.task.add_done_callback(lambda _: self._finished(stream))
        ACTIVE_STREAMS.labels("ingest").inc()
        self.streams[request.stream_id] = stream
        self._later(self.replica.beat(), "ingest:beat")
        self.log.info("stream started", stream_id=request.stream_id, live=live)
        return stream

    def _later(self, work, name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._trims.add(task)
        task.add_done_callback(self._trims.discard)

    def _finished(self, stream: IngestedStream) -> None:
        ACTIVE_STREAMS.labels("ingest").dec()
        stream.ended_at = time.monotonic()
        self.forget_finished()
        # The stream's threads have freed their decoding state by now (or will as they exit).
        self._later(asyncio.to_thread(heap.trim), "ingest:trim-heap")
        self._later(self.replica.beat(), "ingest:beat")
        if stream.handed_over:  # the new holder answers for it; its files are left alone (a shared data_dir is its folder too)
            if self.streams.get(stream.stream_id) is stream:
                del self.streams[stream.stream_id]
        else:
            self._later(self._keep_index(stream), "ingest:clip-index")

    async def _keep_index(self, stream: IngestedStream) -> None:
        """Once its threads are gone (the buffer closed), write what restores the stream after a restart."""
        await stream.pipeline.wait_stopped(timeout=10.0)
        await asyncio.to_thread(clipindex.save, stream)

    def forget_finished(self, now: float | None = None) -> list[str]:
        """Forget the finished streams past `finished_keep_s`, then the oldest beyond `max_finished`.

        A stream with a clip export running is kept until the next sweep. Returns the ids forgotten.
        """
        now = time.monotonic() if now is None else now
        finished = sorted((s for s in self.streams.values() if s.ended_at is not None), key=lambda s: s.ended_at)
        excess = len(finished) - self.settings.max_finished
        gone = []
        for n, stream in enumerate(finished):
            if (n < excess or now - stream.ended_at >= self.settings.finished_keep_s) and not stream.exporting:
                self._forget(stream)
                gone.append(stream.stream_id)
        if gone:
            self.log.info("finished streams forgotten", streams=gone, held=len(self.streams))
        return gone

    def _forget(self, stream: IngestedStream, release: bool = True) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if release:  # its clips are gone: nothing to route to this replica any more
                self._later(self.replica.release(stream.stream_id), "ingest:release")
        clipindex.drop(stream.clip_dir)
        buffer = stream.clip_buffer
        if buffer is not None:
            buffer.remove()  # unlinks a few segment files: quick enough for the event loop

    async def _sweep(self) -> None:
        period = min(60.0, max(1.0, self.settings.finished_keep_s / 4))
        while True:
            await asyncio.sleep(period)
            self.forget_finished()

    async def stop_stream(self, stream: IngestedStream, hand_over: bool = False) -> None:
        """Stop the stream (STOPPED); `hand_over`: another replica runs it now, so say nothing and keep its point."""
        if stream.task is not None and not stream.task.done():
            stream.handed_over = stream.handed_over or hand_over
            stream.request_stop()
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)

    async def stop(self) -> None:
        await cancel_and_wait([self._sweeper, self._watcher])
        streams = list(self.streams.values())
        await asyncio.gather(*(self.stop_stream(s) for s in streams))
        # Let the stopped streams' threads leave FFmpeg before the interpreter goes away.
        await asyncio.gather(*(s.pipeline.wait_stopped(timeout=2.0) for s in streams))
        await asyncio.gather(*list(self._trims), return_exceptions=True)  # the stopped streams' clip indexes
        await self.replica.leave()
