"""Pipeline items -> the MEDIA messages ingest publishes, without NATS.

`OutboundEncoder` is the one place that decides what ingest sends for a stream: each sampled
frame gets the next `sample_index` of its consumer, each audio chunk the next `chunk_index`,
and every message its subject and deduplication id. The newest window record is held back
until the next item shows whether the stream goes on, so exactly one record per stream
carries `last=True`; that last record ends where the media does (not at the window grid).

The service (streams.py) publishes what it returns; training's offline extractor
(training/fusion/extract.py) hands the same messages to the stages' step logic, so both see
exactly the bytes a stage would fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from streamsight import subjects
from streamsight.windows import DEFAULT_WINDOW_S

from . import messages
from .items import AudioChunk, FrameSignals, SampledFrame, StatusEvent, StatusKind, WindowRecord


class Outbound(NamedTuple):
    """One message for MEDIA: its subject, serialized payload and deduplication id (None: no
    id, the message may repeat). `kind`: "frame", "audio", "signals" or "window" (the bus's
    metric label); a frame also says its consumer and window (a live source may drop frames)."""

    subject: str
    data: bytes
    msg_id: str | None
    kind: str
    consumer: str = ""
    window: int = -1


class OutboundEncoder:
    """One stream's outbound messages, item by item.

    `media_time()` is how far the stream's decoding has got (the pipeline's
    `stats.media_time`); it is read when the last window record goes out, to trim its end.
    `dropped_in(i)`, when given, is how many frames of window i were dropped on the way out
    (the service's admission of a live source); it is stamped on record i when it goes out.
    `window_s` is the window length the pipeline cuts with, stamped on every record.
    """

    def __init__(self, stream_id: str, media_time: Callable[[], float], dropped_in: Callable[[int], int] | None = None,
                 window_s: float = DEFAULT_WINDOW_S) -> None:
        self.stream_id = stream_id
        self.window_s = window_s
        self._media_time = media_time
        self._dropped_in = dropped_in
        self.samples: dict[str, int] = {}  # sampled frames so far per consumer (the next sample_index)
        self._audio_chunks = 0
        self._held: WindowRecord | None = None
        self.windows = 0  # window records encoded so far (highest index + 1)

    def encode(self, item: object) -> list[Outbound]:
        """The messages `item` makes, in order; a held window record comes first when the
        item shows the stream goes on (last=False) or ends (ENDED/FAILED: last=True). Other
        statuses are not MEDIA messages: the caller reports them, and nothing is returned."""
        out: list[Outbound] = []
        if isinstance(item, StatusEvent):
            if item.kind in (StatusKind.ENDED, StatusKind.FAILED):
                out += self.finish()
            return out
        if self._held is not None:
            out.append(self._window(last=False))
        sid = self.stream_id
        if isinstance(item, SampledFrame):
            n = self.samples.get(item.consumer, 0)
            self.samples[item.consumer] = n + 1  # a frame dropped later keeps its number: consumers see the gap
            data = messages.video_frame(sid, item, n)
            out.append(Outbound(subjects.media(f"frames_{item.consumer}", sid), data, f"{sid}:{item.consumer}:{n}", "frame", item.consumer, item.window))
        elif isinstance(item, AudioChunk):
            n = self._audio_chunks
            self._audio_chunks += 1
            data = messages.audio_chunk(sid, item, n).SerializeToString()
            out.append(Outbound(subjects.media("audio", sid), data, f"{sid}:audio:{n}", "audio"))
        elif isinstance(item, FrameSignals):
            # Named by its first frame's media time (ms): a resumed file sends the same batch under
            # the same id (JetStream drops the copy); a resumed live stream's clock has moved on.
            msg_id = f"{sid}:signals:{round(item.signals[0].media_time * 1000)}" if item.signals else None
            out.append(Outbound(subjects.media("signals", sid), messages.frame_signals(sid, item).SerializeToString(), msg_id, "signals"))
        elif isinstance(item, WindowRecord):
            self._held = item
        else:
            raise TypeError(f"not a pipeline item: {type(item).__name__}")
        return out

    def finish(self) -> list[Outbound]:
        """The held window record as the stream's last (nothing when none is held): when the
        pipeline ends, fails or is stopped."""
        return [self._window(last=True)] if self._held is not None else []

    def _window(self, last: bool) -> Outbound:
        record, self._held = self._held, None
        assert record is not None
        msg = messages.window_record(self.stream_id, record, last, self.window_s)
        if self._dropped_in is not None:
            msg.frames_dropped = self._dropped_in(record.index)
        self.windows = max(self.windows, record.index + 1)
        if last:  # the last window ends where the media does, not at the 10 s grid
            reached = max(self._media_time(), record.start + record.audio_seconds)
            msg.end_s = min(msg.end_s, max(msg.start_s, reached))
        sid = self.stream_id
        return Outbound(subjects.media("windows", sid), msg.SerializeToString(), f"{sid}:window:{record.index}", "window")
