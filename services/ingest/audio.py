"""Audio resampled to mono float32 at a fixed rate, cut into chunks tagged with media time."""

from __future__ import annotations

import av
import numpy as np

from .items import AudioChunk


class AudioChunker:
    """Feeds decoded audio frames through ``av.AudioResampler`` and emits fixed-length chunks.

    The chunk's media time is the first input frame's time plus the samples emitted
    since, so resampler delay never shifts the clock. A jump in the input timestamps
    (a live gap) of more than ``resync_tolerance`` seconds flushes the pending samples
    and re-anchors the clock.

    Decoded frames are short (AAC: 1024 samples), and each resampler call has a fixed
    cost, so input is gathered for ``batch_seconds`` and resampled in one go.

    Each chunk also carries the source's own timestamp of its first sample and the source's
    channel layout and sample rate there (``source_*``): each input frame leaves a mark (its
    place in output samples since the anchor, its time, its format). A change of the source's
    format ends the chunk, so the next chunk starts with the new format.
    """

    def __init__(self, rate: int = 32000, chunk_seconds: float = 1.0, resync_tolerance: float = 0.2,
                 batch_seconds: float = 0.25) -> None:
        if rate <= 0 or chunk_seconds <= 0:
            raise ValueError("audio rate and chunk length must be positive")
        self.rate = rate
        self.chunk_samples = max(1, int(round(rate * chunk_seconds)))
        self.resync_tolerance = resync_tolerance
        self.batch_seconds = batch_seconds
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._anchor: float | None = None  # media time of sample 0 since the last anchor
        self._emitted = 0  # samples emitted (or pending) since the anchor
        self._inputs: list[np.ndarray] = []  # gathered input, not resampled yet
        self._input_kind: tuple[str, str, int] | None = None  # (format, layout, rate) of the gathered input
        self._input_samples = 0
        self._in_pos = 0.0  # input pushed since the anchor, in output samples
        self._marks: list[tuple[float, float, tuple[str, str, int]]] = []  # (position, media time, kind)
        self.total_seconds = 0.0
        # Live sources: resample as soon as the gathered input completes a chunk, not after a
        # whole batch: at the live edge the batch's rest comes with the next segment, and a
        # window's record waits for its last chunk (files keep the batching, and so their chunks).
        self.eager = False

    def push(self, frame: av.AudioFrame, media_time: float) -> list[AudioChunk]:
        out: list[AudioChunk] = []
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._anchor is None:
            self._anchor = media_time
        else:
            gathered = self._input_samples / self._input_kind[2] if self._input_kind else 0.0
            expected = self._anchor + (self._emitted + self._pending) / self.rate + gathered
            if abs(media_time - expected) > self.resync_tolerance:
                out.extend(self.flush())
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                self._anchor, self._emitted = media_time, 0
                self._in_pos, self._marks = 0.0, []
        if kind != self._input_kind:
            if self._input_kind is not None:  # the source changed its format: a chunk ends, a resampler for the new one
                out.extend(self.flush())
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            self._input_kind = kind
        self._marks.append((self._in_pos, media_time, kind))
        self._in_pos += frame.samples * self.rate / frame.sample_rate
        self._inputs.append(frame.to_ndarray())
        self._input_samples += frame.samples
        if self._input_samples >= self.batch_seconds * frame.sample_rate or (self.eager and self._in_pos >= self._emitted + self.chunk_samples):
            self._resample_gathered()
        while self._pending >= self.chunk_samples:
            out.append(self._take(self.chunk_samples))
        return out

    def flush(self) -> list[AudioChunk]:
        """Emit what is pending (the resampler's tail included): regular chunks, then a last,
        shorter one. What was gathered for resampling (up to ``batch_seconds``) may make more
        than a chunk; no chunk is longer than the regular length, which health takes as the
        most ingest may hold."""
        self._resample_gathered()
        self._drain()
        out = []
        while self._pending:
            out.append(self._take(min(self._pending, self.chunk_samples)))
        return out

    def _resample_gathered(self) -> None:
        if not self._inputs:
            return
        fmt, layout, rate = self._input_kind  # type: ignore[misc]
        data = np.concatenate(self._inputs, axis=1) if len(self._inputs) > 1 else self._inputs[0]
        self._inputs, self._input_samples = [], 0
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = rate
        for res in self._resampler.resample(frame):
            self._add(res.to_ndarray().reshape(-1))

    def _drain(self) -> None:
        for res in self._resampler.resample(None):
            self._add(res.to_ndarray().reshape(-1))

    def _add(self, samples: np.ndarray) -> None:
        before_zero = -((self._anchor or 0.0) + (self._emitted + self._pending) / self.rate)
        if before_zero > 0 and not self._pending:
            # Samples before media time 0 (AAC's priming on a live HLS source starts ~21 ms early)
            # are dropped, the clock moved past them: no chunk starts at a negative time.
            skip = min(len(samples), int(round(before_zero * self.rate)))
            samples, self._emitted = samples[skip:], self._emitted + skip
        if len(samples):
            self._parts.append(samples)
            self._pending += len(samples)

    def _take(self, n: int) -> AudioChunk:
        data = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        chunk, rest = data[:n], data[n:]
        self._parts = [rest] if len(rest) else []
        self._pending = len(rest)
        start = (self._anchor or 0.0) + self._emitted / self.rate
        source_start, layout, source_rate = self._source_at(self._emitted)
        self._emitted += n
        self.total_seconds += n / self.rate
        return AudioChunk(media_time=start, sample_rate=self.rate, samples=np.ascontiguousarray(chunk, np.float32),
                          source_start=source_start, source_layout=layout, source_rate=source_rate)

    def _source_at(self, pos: int) -> tuple[float, str, int]:
        """The source's time, layout and rate of output sample `pos` (since the anchor); marks
        before the one that holds it are dropped."""
        marks = self._marks
        i = 0
        while i + 1 < len(marks) and marks[i + 1][0] <= pos + 1e-6:
            i += 1
        if not marks:
            return (self._anchor or 0.0) + pos / self.rate, "", 0
        del marks[:i]
        at, t, (_, layout, rate) = marks[0]
        return t + (pos - at) / self.rate, layout, rate
