"""How far behind ingest a stage is, in media seconds: `streamsight_stage_lag_seconds{stage}`.

Per stream, a stage's lag is the media time ingest has reached (the end of the newest window
record it published) minus the media time the stage has finished (the end of its newest
published window, or the newest window record it handled). The gauge is the largest lag
over the streams the stage holds (one label, the stage: bounded whatever the number of
streams), 0 when it holds none.

Ingest's position comes from two places: the window records the stage itself fetched
(`seen`), and, polled every few seconds (`poll_heads`), the newest window record MEDIA still
holds for the stream, which is ahead of the stage when the stage has a backlog (MEDIA keeps a
message until every consumer took it, so a record the stage has not taken yet is there).

Any stage can use it: `handled(stream, end_s)` after its work, `seen(stream, end_s)` for an
input that says where ingest is, `forget(stream)` when the stream ends, and `poll_heads(js)` from
a periodic task (vision, audio and glitch do; fusion may, fed by feature records).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from streamsight import subjects
from streamsight.gen.media.v1 import media_pb2

STAGE_LAG = Gauge(
    "streamsight_stage_lag_seconds",
    "Media seconds a stage is behind ingest: ingest's newest window end minus the stage's newest finished one, largest over its streams",
    ["stage"],
)


class MediaLag:
    """One stage's per-stream media positions and the gauge made of them."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._head: dict[str, float] = {}  # stream -> media seconds ingest reached
        self._done: dict[str, float] = {}  # stream -> media seconds the stage finished
        STAGE_LAG.labels(stage).set(0)

    def seen(self, stream_id: str, media_s: float) -> None:
        """Ingest reached `media_s` in this stream (a window record's end)."""
        self._head[stream_id] = max(self._head.get(stream_id, 0.0), media_s)
        self._done.setdefault(stream_id, 0.0)
        self._update()

    def handled(self, stream_id: str, media_s: float) -> None:
        """The stage finished the stream up to `media_s`."""
        self._done[stream_id] = max(self._done.get(stream_id, 0.0), media_s)
        self._head[stream_id] = max(self._head.get(stream_id, 0.0), media_s)
        self._update()

    def forget(self, stream_id: str) -> None:
        """The stream ended (or went idle): nothing to lag behind."""
        self._head.pop(stream_id, None)
        self._done.pop(stream_id, None)
        self._update()

    def lag(self, stream_id: str) -> float:
        return max(0.0, self._head.get(stream_id, 0.0) - self._done.get(stream_id, 0.0))

    @property
    def streams(self) -> list[str]:
        return list(self._done)

    def _update(self) -> None:
        STAGE_LAG.labels(self.stage).set(max((self.lag(s) for s in self._done), default=0.0))

    async def poll_heads(self, js: JetStreamContext) -> None:
        """Read, for every stream held, the newest window record MEDIA holds (ingest's position)."""
        for stream_id in self.streams:
            try:
                msg = await js.get_last_msg(subjects.MEDIA_STREAM, subjects.media("windows", stream_id))
                end_s = float(media_pb2.WindowRecord.FromString(msg.data or b"").end_s)
            except NotFoundError:
                continue  # every consumer took the stream's records: the stage's own view stands
            except Exception:  # NATS away, or a record that does not parse: keep the last value
                continue
            if stream_id in self._done:  # it may have ended while we asked
                self.seen(stream_id, end_s)
