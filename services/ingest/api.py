"""The ingest control API (streamsight.ingest.v1.Ingest).

ExportClip with ``vertical`` also cuts a 9:16 copy of the stored clip (services/ingest/vertical.py,
in a worker thread) and keeps it in the clip store under its own random id, remembered under the
key ``<key>.vertical`` so a retry gives the same copy (a retry during the cut waits for it; a caller
that gives up does not stop it). A clip that cannot be made vertical (too
narrow, no video) is still returned, without ``vertical``; the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets

import av
import grpc
import structlog
from prometheus_client import Counter

from streamsight import subjects
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import StatusError, invalid, not_found, precondition

from .clipstore import ClipStore
from .errors import IngestError
from .streams import IngestedStream
from .vertical import VerticalError, export_vertical

log = structlog.get_logger(__name__)

VERTICAL_FAILED = Counter(
    "streamsight_ingest_vertical_failed_total", "Vertical 9:16 clip copies that could not be cut (the 16:9 clip is still returned)"
)

CHUNK = 256 * 1024
MAX_SOURCE_LEN = 4096
MAX_EXTRA = 16
MAX_EXTRA_LEN = 256


def _check_text(value: str, what: str, limit: int) -> None:
    if len(value) > limit:
        raise invalid(f"{what} is {len(value)} characters long; at most {limit} are accepted")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise invalid(f"{what} contains control characters (NUL, newline, ...)")


def _status_error(err: IngestError) -> StatusError:
    return StatusError(getattr(grpc.StatusCode, err.code.grpc_status), err.message)


class IngestApi(ingest_pb2_grpc.IngestServicer):
    def __init__(self, service):
        self.service = service  # IngestService: owns the streams
        self._verticals: dict[tuple[str, str], asyncio.Future] = {}  # (stream, key): copies being cut

    def _stream(self, stream_id: str) -> IngestedStream:
        if not subjects.is_valid_stream_id(stream_id):
            raise invalid(f"stream id {stream_id!r} is not valid")
        stream = self.service.streams.get(stream_id)
        if stream is None:
            keep = self.service.settings
            raise not_found(f"ingest has no stream {stream_id!r} (finished streams are kept {keep.finished_keep_s:.0f} s, "
                            f"at most {keep.max_finished} of them)")
        return stream

    @staticmethod
    def _status(stream: IngestedStream) -> ingest_pb2.IngestStatus:
        stats = stream.pipeline.stats
        return ingest_pb2.IngestStatus(
            stream_id=stream.stream_id,
            state=stream.state,
            media_time_s=stats.media_time,
            duration_s=stream.duration_s,
            frames_decoded=stats.frames_decoded,
            last_error=stream.last_error,
            replica=stream.replica,
            taken_over_from=stream.taken_from,
        )

    async def StartIngest(self, request, context):
        if not subjects.is_valid_stream_id(request.stream_id):
            raise invalid(f"stream id {request.stream_id!r} is not valid")
        if not request.source:
            raise invalid("source is empty")
        _check_text(request.source, "source", MAX_SOURCE_LEN)
        if len(request.extra) > MAX_EXTRA:
            raise invalid(f"extra has {len(request.extra)} entries; at most {MAX_EXTRA} are accepted")
        for key, value in request.extra.items():
            _check_text(key, "an extra key", 64)
            _check_text(value, f"extra[{key[:64]!r}]", MAX_EXTRA_LEN)
        try:
            stream = await self.service.start_stream(request)
        except IngestError as err:
            raise _status_error(err) from None
        return self._status(stream)

    async def StopIngest(self, request, context):
        stream = self._stream(request.stream_id)
        await self.service.stop_stream(stream)
        return self._status(stream)

    async def GetIngest(self, request, context):
        return self._status(self._stream(request.stream_id))

    async def ExportClip(self, request, context):
        stream = self._stream(request.stream_id)
        if not (0 <= request.start_s < request.end_s):
            raise invalid(f"clip times must satisfy 0 <= start < end (got {request.start_s}, {request.end_s})")
        if request.end_s - request.start_s > self.service.settings.buffer_seconds:
            raise invalid(f"a clip may be at most {self.service.settings.buffer_seconds:.0f} s long (the buffer's length)")
        if request.clip_id and not subjects.is_valid_stream_id(request.clip_id):
            raise invalid(f"clip id {request.clip_id!r} is not valid")
        # the same default key the stream derives: the vertical copy is remembered beside it
        key = request.clip_id or hashlib.sha1(f"{request.start_s:.3f}-{request.end_s:.3f}".encode()).hexdigest()[:12]
        try:
            clip = await stream.export(request.start_s, request.end_s, key, self.service.clip_store)
        except IngestError as err:
            raise _status_error(err) from None
        if request.vertical:
            vertical = await self._vertical_once(stream, key, clip)
            if vertical is not None:
                clip.vertical.CopyFrom(vertical)
        return clip

    async def _vertical_once(self, stream: IngestedStream, key: str, clip: common_pb2.ClipRef) -> common_pb2.ClipRef | None:
        """One cut per key at a time, finished even when the caller gives up (its retry then finds it)."""
        name = (stream.stream_id, key)
        task = self._verticals.get(name)
        if task is None:
            task = asyncio.ensure_future(self._vertical(stream, key, clip, self.service.clip_store))
            self._verticals[name] = task
            task.add_done_callback(lambda _: self._verticals.pop(name, None))
        return await asyncio.shield(task)

    @staticmethod
    async def _vertical(stream: IngestedStream, key: str, clip: common_pb2.ClipRef, store: ClipStore) -> common_pb2.ClipRef | None:
        """The 9:16 copy of the stored `clip`, cut once per key; None (logged, counted) when it cannot be made."""
        sid, folder = stream.stream_id, stream.clip_dir
        span = folder / f"{key}.vertical.json"
        if span.exists():
            saved = json.loads(span.read_text())
            found = await store.find(sid, folder, saved["file"])
            if found is not None and saved.get("source") == clip.clip_id:
                return common_pb2.ClipRef(clip_id=saved["clip_id"], uri=found[0], start_s=clip.start_s, end_s=clip.end_s, size_bytes=found[1])
        clip_id = secrets.token_hex(16)
        tmp, dest = folder / f"{clip_id}.part.mp4", folder / f"{clip_id}.mp4"
        stream.exporting += 1  # the finished-stream sweep waits for it
        try:
            async with store.open(sid, folder, clip.clip_id) as path:
                if path is None:
                    raise VerticalError(f"the stored clip {clip.clip_id} is gone")
                await asyncio.to_thread(export_vertical, path, tmp)
            tmp.replace(dest)
        except (VerticalError, av.error.FFmpegError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            VERTICAL_FAILED.inc()
            log.warning("vertical clip failed; the clip is returned without one", stream_id=sid, key=key, error=str(exc))
            return None
        finally:
            stream.exporting -= 1
        uri, size = await store.keep(sid, dest)
        span.write_text(json.dumps({"clip_id": clip_id, "file": dest.name, "source": clip.clip_id}))
        return common_pb2.ClipRef(clip_id=clip_id, uri=uri, start_s=clip.start_s, end_s=clip.end_s, size_bytes=size)

    async def ReadClip(self, request, context):
        if not subjects.is_valid_stream_id(request.stream_id) or not subjects.is_valid_stream_id(request.clip_id or "-"):
            raise invalid("stream id or clip id is not valid")
        folder = self.service.clip_dir(request.stream_id)
        async with self.service.clip_store.open(request.stream_id, folder, request.clip_id) as path:
            if path is None:
                raise not_found(f"no clip {request.clip_id!r} for stream {request.stream_id!r}")
            total = path.stat().st_size
            mime = "video/x-matroska" if path.suffix == ".mkv" else "video/mp4"
            with path.open("rb") as f:
                offset = 0
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    yield ingest_pb2.ClipData(data=chunk, offset=offset, total_size=total, content_type=mime)
                    offset += len(chunk)

__all__ = ["IngestApi", "precondition"]
