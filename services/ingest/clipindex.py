"""A finished stream's record beside its clip segments, so that a restarted ingest still cuts its clips.

Ingest keeps a finished stream (its state, stats and clip buffer) for `finished_keep_s`; the
buffer's segments are files, the rest was memory only, so after a restart ExportClip answered
NOT_FOUND although the segments were still there. When a stream ends, `save` writes
`stream.json` into its clip folder (a temporary file, then a rename: never half written):

  stream_id, replica    the stream and the ingest replica that ran it
  taken_from            the dead replica it was taken over from, if any
  source                its source (GetIngest's answer does not need it; logs do)
  state, last_error     how it ended
  duration_s, media_time_s, frames_decoded
  ended_at              wall clock of the end (retention counts from it)
  buffer                ClipBuffer.index(): what the segments hold, their times and keyframes

`candidates` reads them back on start; the service restores the ones whose placement it may
claim (its own, or a dead replica's sharing the folder), within retention. An unreadable record
is logged, counted and skipped (its folder is left for the operator). `drop` removes it when the
stream is forgotten.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from streamsight.bus import Bus
from streamsight.telemetry import MESSAGES_FAILED

from .clips import ClipBuffer
from .settings import IngestSettings
from .streams import IngestedStream, pipeline_config

log = structlog.get_logger(__name__)
FILE = "stream.json"


def save(stream: IngestedStream) -> None:
    """Write the finished stream's record (blocking: run in a thread). No buffer, no record: nothing to cut."""
    buffer = stream.clip_buffer
    if buffer is None:
        return
    stats = stream.pipeline.stats
    record = {
        "stream_id": stream.stream_id, "replica": stream.replica, "taken_from": stream.taken_from, "source": stream.source, "state": int(stream.state),
        "last_error": stream.last_error, "duration_s": stream.duration_s, "media_time_s": stats.media_time,
        "frames_decoded": stats.frames_decoded, "ended_at": time.time(), "buffer": buffer.index(),
    }
    path = stream.clip_dir / FILE
    tmp = path.with_name(FILE + ".tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: only the clips after a restart are lost
        MESSAGES_FAILED.labels("ingest", "clip_index").inc()
        log.warning("clip index not written", stream_id=stream.stream_id, error=str(exc))


def drop(clip_dir: Path) -> None:
    (clip_dir / FILE).unlink(missing_ok=True)


@dataclass
class Finished:
    """One record found on start."""

    folder: Path
    record: dict

    @property
    def stream_id(self) -> str:
        return str(self.record["stream_id"])

    @property
    def replica(self) -> str:
        return str(self.record.get("replica", ""))

    def age_s(self) -> float:
        return max(0.0, time.time() - float(self.record["ended_at"]))

    def stream(self, bus: Bus, settings: IngestSettings) -> IngestedStream:
        """The finished stream as it was: its state, stats and a closed clip buffer over its segments."""
        r = self.record
        config = pipeline_config(settings, self.folder, False, {})
        stream = IngestedStream(self.stream_id, str(r.get("source", "")), config, bus, settings, self.folder, replica=self.replica,
                                taken_from=str(r.get("taken_from", "")))
        assert config.decode.clip_buffer is not None
        stream.pipeline.decoder.clip_buffer = ClipBuffer.restored(config.decode.clip_buffer, r["buffer"])
        stream.state = int(r["state"])
        stream.last_error = str(r.get("last_error", ""))
        stream.duration_s = float(r.get("duration_s", 0.0))
        stream.pipeline.stats.media_time = float(r.get("media_time_s", 0.0))
        stream.pipeline.stats.frames_decoded = int(r.get("frames_decoded", 0))
        stream.ended_at = time.monotonic() - self.age_s()
        return stream


def candidates(root: Path, keep_s: float) -> list[Finished]:
    """The finished streams' records under `root` (data_dir/clips) still within `keep_s` of their end."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        path = folder / FILE
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
            item = Finished(folder, record)
            if item.stream_id != folder.name:
                raise ValueError(f"it names stream {item.stream_id!r}")
            if item.age_s() < keep_s:
                found.append(item)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            MESSAGES_FAILED.labels("ingest", "clip_index").inc()
            log.error("unreadable clip index skipped", folder=str(folder), error=repr(exc))
    return found
