"""What a restarted ingest needs to resume the streams a crash cut off, kept in JetStream KV.

Bucket `ingest.resume_bucket` (ingest's own; see streamsight/natsauth.py), one key per stream
id, a JSON value:

  request       the StartIngestRequest, base64 protobuf: how to open the source again
  live          the source is live (a live source resumes from now, a file from its windows)
  windows       window records published so far (the next window's index)
  media_time_s  media time reached when saved
  samples       per frame consumer, sampled frames numbered so far; audio_chunks likewise
  run           how many times ingest has (re)started the stream (its status ids differ per run)
  started_at    wall clock of the first start (a stop the gateway published after it cancels the resume)
  saved_at      wall clock of the save

Written when a stream starts and after each window record goes out; deleted when the stream
ends, fails or is stopped. A key found when ingest starts is a stream a crash (kill -9, OOM)
left RUNNING: service.py starts it again from this point. A store that fails (NATS away) is
logged and counted and never stops a stream: it only costs the resume.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field

from streamsight.gen.ingest.v1 import ingest_pb2
from streamsight.resume import PointStore

SAMPLE_MARGIN = 10_000  # a resumed live stream numbers its frames past what the killed run may have sent after its last save


@dataclass
class ResumePoint:
    """Where one stream is; what a restart resumes from."""

    request: str  # base64 StartIngestRequest
    live: bool
    windows: int = 0
    media_time_s: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)
    audio_chunks: int = 0
    run: int = 0
    started_at: float = 0.0
    saved_at: float = 0.0

    @classmethod
    def new(cls, request: ingest_pb2.StartIngestRequest, live: bool) -> "ResumePoint":
        now = time.time()
        return cls(base64.b64encode(request.SerializeToString()).decode(), live, started_at=now, saved_at=now)

    def start_request(self) -> ingest_pb2.StartIngestRequest:
        return ingest_pb2.StartIngestRequest.FromString(base64.b64decode(self.request))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ResumePoint":
        raw = json.loads(data)
        return cls(
            request=str(raw["request"]), live=bool(raw["live"]), windows=int(raw.get("windows", 0)),
            media_time_s=float(raw.get("media_time_s", 0.0)), samples={str(k): int(v) for k, v in (raw.get("samples") or {}).items()},
            audio_chunks=int(raw.get("audio_chunks", 0)), run=int(raw.get("run", 0)), started_at=float(raw.get("started_at", 0.0)),
            saved_at=float(raw.get("saved_at", 0.0)),
        )


class ResumeStore(PointStore[ResumePoint]):
    """The bucket of resume points (one per stream ingest is running)."""

    service = "ingest"
    point_type = ResumePoint

    async def save(self, stream_id: str, point: ResumePoint) -> None:
        point.saved_at = time.time()
        await super().save(stream_id, point)
