"""The window model, in one place: window length, one window result, one FeatureRecord builder.

Window `i` of a stream covers media time `[i * window_s, (i + 1) * window_s)`. The length is
the platform-wide setting `window_s` (10 s by default, `STREAMSIGHT_WINDOW_S`); ingest
stamps it on every window record, and a stage refuses records cut with another length.

A stage's domain code turns its inputs into `WindowResult`s; `feature_record` is the only
place a FeatureRecord is made from one, in the services and in training's offline feature
extraction alike, so a model is trained on exactly what it scores.

`WindowBounds` keeps a stage from acting on a window record it cannot have been sent: ingest
publishes one record per window, in order, after that window's media. A record far past
the stream's last record and past its media (a forged `{index: 20000, last: true}` would
make a stage publish 20,001 windows) is bad input, dead-lettered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streamsight.bus import BadMessage
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2

DEFAULT_WINDOW_S = 10.0
# Records a stage may find missing between two it sees (lost on the way, or a stage that
# joined mid-way), before a record's index is judged impossible.
MAX_WINDOW_JUMP = 6
SPAN_TOLERANCE_S = 0.5  # a record's start may differ this much from index * window_s (PTS rounding)

MODALITY = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO, "chat": common_pb2.MODALITY_CHAT}


def index_of(t: float, window_s: float = DEFAULT_WINDOW_S) -> int:
    """The window that media time `t` falls in."""
    return int(t // window_s)


def span_of(index: int, window_s: float = DEFAULT_WINDOW_S) -> tuple[float, float]:
    """The nominal [start, end) of window `index`."""
    return index * window_s, (index + 1) * window_s


@dataclass(frozen=True)
class WindowResult:
    """One modality's finished window of one stream: what a stage publishes."""

    stream_id: str
    window: int
    start_s: float
    end_s: float
    values: dict[str, float]
    flags: tuple[str, ...] = ()
    info: dict[str, str] = field(default_factory=dict)  # facts about how the values were made


def feature_record(modality: str, result: WindowResult, info: dict[str, str] | None = None, producer: str = "") -> features_pb2.FeatureRecord:
    """The FeatureRecord of `result` (the stage's `info` first, the window's own on top)."""
    return features_pb2.FeatureRecord(
        stream_id=result.stream_id,
        window=result.window,
        modality=MODALITY[modality],
        start_s=result.start_s,
        end_s=result.end_s,
        values={k: float(v) for k, v in result.values.items()},
        info={**(info or {}), **result.info},
        flags=list(result.flags),
        producer_version=producer,
    )


def check_span(record: media_pb2.WindowRecord, window_s: float) -> None:
    """BadMessage unless the record was cut with this window length: its start is
    index * window_s and it is no longer than one window."""
    if record.window_s and not math.isclose(record.window_s, window_s, rel_tol=1e-6):
        raise BadMessage(f"window record {record.index} was cut with {record.window_s} s windows; this stage uses {window_s} s")
    start, _ = span_of(record.index, window_s)
    if abs(record.start_s - start) > SPAN_TOLERANCE_S or record.end_s - record.start_s > window_s + SPAN_TOLERANCE_S:
        raise BadMessage(f"window record {record.index} spans [{record.start_s}, {record.end_s}] s, not window {record.index} of {window_s} s")


@dataclass
class WindowBounds:
    """What one stream has shown a stage so far, to judge the next window record by."""

    window_s: float = DEFAULT_WINDOW_S
    last_record: int | None = None
    media_s: float | None = None  # latest media time seen in the stream's frames or audio

    def saw_media(self, t: float) -> None:
        if math.isfinite(t):
            self.media_s = t if self.media_s is None else max(self.media_s, t)

    def check(self, record: media_pb2.WindowRecord) -> None:
        """BadMessage for a record this stream cannot have sent now; else remember it."""
        check_span(record, self.window_s)
        known = [i for i in (self.last_record, None if self.media_s is None else index_of(self.media_s, self.window_s)) if i is not None]
        reach = (max(known) if known else 0) + MAX_WINDOW_JUMP
        if record.index > reach:
            raise BadMessage(f"window record {record.index} is past what the stream has shown (window {reach - MAX_WINDOW_JUMP} so far)")
        self.last_record = record.index if self.last_record is None else max(self.last_record, record.index)
