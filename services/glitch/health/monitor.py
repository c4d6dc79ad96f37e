"""One stream's health checks, fed the MEDIA messages in the order they were stored.

Inputs (plain values, so that tests and the service feed it alike; see `feed`):
- `frame(pts_s, width, height, rgb)`: a sampled glitch frame (2 fps): black, resolution;
- `signals([(pts_s, frozen, diff), ...])`: every decoded frame's signal: freeze, frame rate, and the
  video clock that audio_gap and no_audio are judged against;
- `audio(start_s, rate, samples, source_start_s, source_layout, source_rate, demux_lead_max_s)`:
  ingest's mono chunks: silence, loudness, audio_gap, av_drift, and the source's channel layout
  and sample rate from the chunk's first sample (a chunk ends where they change);
- `source_formats([SourceFact, ...], at)`: a window record's source formats (picture size,
  nominal frame rate, codecs, channel layout, sample rate as ingest's decoder saw them);
- `finish(end_s)`: the stream's last window record ends whatever is open.

What MEDIA lets each check see (ingest sends mono 32 kHz audio in chunks of its
`audio_chunk_s`, 1 s by default, 0.25 s for sub-second audio health, whose start is re-anchored to the source's
timestamps when they slip by more than 0.2 s; what a chunk tells is known once it is whole):
- audio_gap: a hole of at least `audio_gap_min_s` between one chunk's end and the next one's
  start, or, live, the video clock running `audio_gap_min_s` past the usual lead of video over
  the last chunk's end (a chunk's length plus the interleaving: 0.5 s, or the bound the chunks
  carry for their container, 1 s for MP4) with no audio at all, or a chunk cut short of
  ingest's regular length (ingest flushes what it holds on reading audio that does not follow
  on) coming when video is already the interleaving + `audio_gap_min_s` past its end;
- av_drift: the source's audio timestamps slipping against the audio delivered, summed, reaching
  `av_drift_max_s` either way. From each chunk's `source_start_s` (the source's timestamp of its
  first sample) against the previous chunk's plus its length: exact to the sample. Chunks without
  it (older ingest) give the former rule: the sum of ingest's re-anchoring jumps (0.2 s resolution);
- format_change: the source's picture size, nominal frame rate, video codec, audio codec, channel
  layout or sample rate (window records' source formats; layout and rate also from each audio
  chunk, so known within a chunk), a different sampled picture size, a frame rate that changed by
  more than 15 % (median frame interval), a different chunk sample rate. A change seen by two of
  these (sampled and source size, measured and nominal rate) within `SAME_CHANGE_S` is one.
- no_audio: no audio chunk at all by `no_audio_after_s` of video: one incident, START then END
  at the stream's end, never UPDATEs, and no silence or audio_gap on top of it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import median

import numpy as np

from services.glitch.health.incidents import HealthEvent, Incidents
from services.glitch.health.loudness import BLOCK_S, Block, LoudnessMeter
from services.glitch.health.picture import measure

KINDS = ("black", "freeze", "silence", "loudness", "audio_gap", "av_drift", "format_change", "no_audio")
RATE_WINDOW = 15  # frame intervals whose median is the current frame period
RATE_CHANGE = 0.15  # relative change of the median period that is a frame-rate change
OWN_LEVEL_MIN_S = 30.0  # audio measured before the stream's own level is trusted
OWN_LEVEL_KEEP_S = 600.0
LOUD_HOLD_BLOCKS = 5  # 0.5 s of momentary loudness over the ceiling (clean real footage: at most -10.3 LUFS held 0.5 s)
# An encoder fed a frozen picture refines it at keyframes and just after: a frame or two that
# differ by a little (mean luma difference 0.4-2.5 on real footage) interrupt the frozen run.
# The run survives up to FREEZE_BLIP_FRAMES such frames in a row under FREEZE_BLIP_DIFF.
FREEZE_BLIP_FRAMES = 2
FREEZE_BLIP_DIFF = 3.0
# How far the video clock may run ahead of the audio ingest has read (demuxing interleaves the
# two): on the shared footage video never ran further past the last chunk's end than the chunk
# ingest holds (1, 0.5 or 0.25 s chunks); the 0.5 s is for muxers that interleave more loosely.
# A container whose demuxer has a known bound says so on each chunk (demux_lead_max_s: 1 s for
# MP4, where a file muxed with its audio after its video gave false gaps with 0.5 s).
INTERLEAVE_S = 0.5
DEMUX_LEAD_MAX_S = 5.0  # a larger bound from a producer is not believed (it would blind the live rule)
CHUNK_S = 1.0  # ingest's audio chunk length (its audio_chunk_s default) until the stream shows its own
TIMING_S = 0.01  # timestamps that say the same time (a frame's pts in its time base, a chunk's in samples)
SAME_CHANGE_S = 2.0  # two reports of one kind of format change this close are the same change
NAME_MAX = 40  # a codec or layout name longer than this is cut (it is only read, in the detail)


@dataclass(frozen=True)
class SourceFact:
    """One source format of a window record (0 or "": not known, or no such track)."""

    since_s: float
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    audio_layout: str = ""
    audio_sample_rate: int = 0


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds (the glitch section's health_* settings give them)."""

    black_luma: float = 24.0
    black_ratio: float = 0.98
    black_min_s: float = 0.5
    freeze_min_s: float = 10.0
    silence_dbfs: float = -60.0
    silence_min_s: float = 3.0
    target_lufs: float = -14.0
    loud_lu: float = 9.0
    quiet_lu: float = 20.0
    quiet_min_s: float = 10.0
    jump_lu: float = 20.0
    audio_gap_min_s: float = 0.5
    av_drift_max_s: float = 0.2
    no_audio_after_s: float = 5.0
    update_every_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("black_min_s", "freeze_min_s", "silence_min_s", "quiet_min_s", "audio_gap_min_s", "av_drift_max_s",
                     "no_audio_after_s", "update_every_s", "loud_lu", "quiet_lu", "jump_lu"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.black_ratio <= 1:
            raise ValueError(f"black_ratio must be in (0, 1], got {self.black_ratio}")


class StreamHealth:
    """The health checks of one stream. Not thread-safe: one caller at a time."""

    # Defaults for state a snapshot written before these existed does not hold
    _source: dict | None = None  # a source format fact's name -> (value, media time it was seen from)
    _changed: dict | None = None  # what a format change was about -> media time of the last one reported
    _source_next: float | None = None  # the source's timestamp the next audio chunk should carry
    _chunk_n: int | None = None  # samples in ingest's regular chunk: the length two chunks in a row had
    _last_n = 0  # samples in the last chunk
    _demux_lead = 0.0  # the bound the chunks carry on how far their demuxer may hand out video ahead

    def __init__(self, config: HealthConfig = HealthConfig()) -> None:
        self.config = config
        self.incidents = Incidents(update_every_s=config.update_every_s)
        self.video_s: float | None = None  # the video clock: latest frame time seen
        # picture
        self._black_since: float | None = None
        self._black_last = 0.0
        self._size: tuple[int, int] | None = None
        self._said_no_audio = False
        # freeze and frame rate
        self._last_pts: float | None = None
        self._frozen_since: float | None = None
        self._frozen_last = 0.0
        self._blips = 0
        self._intervals: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)  # (pts, interval)
        self._period: float | None = None
        # audio
        self._meter = LoudnessMeter()
        self._audio_end: float | None = None
        self._rate: int | None = None
        self._chunk_s: float | None = None  # ingest's regular chunk length: the longest chunk seen
        self._slip = 0.0
        self._slip_since: float | None = None
        self._silent_since: float | None = None
        self._loud_cause = ""
        self._quiet_since: float | None = None
        self._loud_last = -math.inf
        self._loud_run = 0
        self._recent: deque[Block] = deque(maxlen=30)
        self._own: deque[float] = deque(maxlen=int(OWN_LEVEL_KEEP_S / BLOCK_S))  # momentary LUFS of the stream

    # -- video -------------------------------------------------------------------------
    def frame(self, pts_s: float, width: int, height: int, rgb: np.ndarray) -> list[HealthEvent]:
        cfg, inc = self.config, self.incidents
        out = self._video_clock(pts_s)
        if self._size is not None and (width, height) != self._size:
            w0, h0 = self._size
            out += self._format_change("picture size", pts_s, pts_s, f"picture size {w0}x{h0} -> {width}x{height} (as sampled)", 0.0)
        self._size = (width, height)
        pic = measure(rgb, cfg.black_luma)
        if pic.dark_ratio >= cfg.black_ratio:
            if self._black_since is None:
                self._black_since = pts_s
            self._black_last = pts_s
            if pts_s - self._black_since >= cfg.black_min_s - 1e-6:
                if inc.is_open("freeze"):  # a black picture is frozen too: black says more
                    out += inc.clear("freeze", self._frozen_last, pts_s)
                out += inc.raise_("black", self._black_since, pts_s, 1.0 - pic.mean_luma / (cfg.black_luma + 1),
                                  f"black picture: mean luma {pic.mean_luma:.1f}/255, {pic.dark_ratio:.1%} of pixels at or below {cfg.black_luma:g}",
                                  pic.mean_luma)
        else:
            out += inc.clear("black", self._black_last, pts_s)
            self._black_since = None
        return out

    def signals(self, signals: list[tuple[float, bool, float]]) -> list[HealthEvent]:
        """(pts_s, frozen, diff) of every decoded frame, in decode order."""
        cfg, inc = self.config, self.incidents
        out: list[HealthEvent] = []
        for pts, frozen, diff in signals:
            out += self._video_clock(pts)
            if self._last_pts is not None and pts > self._last_pts:
                out += self._frame_rate(pts, pts - self._last_pts)
            if not frozen and self._frozen_since is not None and diff < FREEZE_BLIP_DIFF and self._blips < FREEZE_BLIP_FRAMES:
                self._blips += 1  # an encoder's refinement of a frozen picture, not motion
            elif frozen:
                self._blips = 0
                if self._frozen_since is None:
                    self._frozen_since = self._last_pts if self._last_pts is not None else pts
                self._frozen_last = pts
                run = pts - self._frozen_since
                if run >= cfg.freeze_min_s and not inc.is_open("black"):
                    start = self._frozen_since if not inc.is_open("freeze") else inc.start_of("freeze")
                    out += inc.raise_("freeze", start, pts, min(1.0, run / (3 * cfg.freeze_min_s)),
                                      f"picture unchanged for {run:.1f} s", run)
            else:
                out += inc.clear("freeze", self._frozen_last, pts)
                self._frozen_since, self._blips = None, 0
            self._last_pts = pts if self._last_pts is None else max(self._last_pts, pts)
        return out

    def _frame_rate(self, pts: float, interval: float) -> list[HealthEvent]:
        self._intervals.append((pts, interval))
        if len(self._intervals) < RATE_WINDOW:
            return []
        mid = median(i for _, i in self._intervals)
        near = [i for _, i in self._intervals if abs(i - mid) <= RATE_CHANGE * mid]
        now = sum(near) / len(near)  # timestamps rounded to a coarse time base alternate (33, 34 ms)
        if self._period is None:
            self._period = now
            return []
        if abs(now - self._period) <= RATE_CHANGE * self._period:
            return []
        old, self._period = self._period, now
        onset = next(p for p, i in self._intervals if abs(i - now) < abs(i - old))
        self._intervals.clear()
        return self._format_change("frame rate", onset - interval, pts, f"frame rate {1 / old:.1f} -> {1 / now:.1f} fps", 1 / now)

    def _video_clock(self, t: float) -> list[HealthEvent]:
        """Video moved to `t`: what the lack of audio means by now."""
        cfg, inc = self.config, self.incidents
        self.video_s = t if self.video_s is None else max(self.video_s, t)
        if self._audio_end is None:
            if self.video_s >= cfg.no_audio_after_s and not inc.is_open("no_audio") and not self._said_no_audio:
                self._said_no_audio = True
                return inc.raise_("no_audio", 0.0, self.video_s, 1.0, "the stream has no audio track (no audio by "
                                  f"{cfg.no_audio_after_s:g} s of video)", 0.0)
            return []
        silent_for = self.video_s - self._audio_end
        # on the threshold counts (less TIMING_S): chunk starts and glitch frames (2/s) both lie
        # on a grid of 0.25 s steps, so the threshold often falls on a frame
        if silent_for >= (self._chunk_s or CHUNK_S) + self._interleave() + cfg.audio_gap_min_s - TIMING_S:
            return inc.raise_("audio_gap", self._audio_end, self.video_s, min(1.0, silent_for / 5),
                              f"no audio for {silent_for:.1f} s while video continues", silent_for)
        return []

    def _interleave(self) -> float:
        """How far video may run ahead of the audio ingest has read, nothing missing."""
        return max(INTERLEAVE_S, self._demux_lead)

    # -- audio -------------------------------------------------------------------------
    def audio(self, start_s: float, rate: int, samples: np.ndarray, source_start_s: float = 0.0, source_layout: str = "",
              source_rate: int = 0, demux_lead_max_s: float = 0.0) -> list[HealthEvent]:
        """One of ingest's chunks. `source_start_s` 0 on a chunk that does not start at 0 means
        ingest did not send it (older ingest); "" and 0: the source's format is not known;
        `demux_lead_max_s` 0: the container sets no bound on its interleaving (or older ingest)."""
        cfg, inc = self.config, self.incidents
        out: list[HealthEvent] = []
        if math.isfinite(demux_lead_max_s) and 0.0 <= demux_lead_max_s <= DEMUX_LEAD_MAX_S:
            self._demux_lead = demux_lead_max_s
        duration = len(samples) / rate if rate else 0.0
        arrived = start_s + duration  # what this chunk tells is known once all of it is in
        if inc.is_open("no_audio"):
            out += inc.clear("no_audio", start_s, start_s)
        if self._rate is not None and rate != self._rate:
            out += self._format_change("chunk sample rate", start_s, arrived, f"audio chunk sample rate {self._rate} -> {rate} Hz", float(rate))
        self._rate = rate
        if source_layout:
            out += self._source_fact("audio channel layout", source_layout, start_s, arrived)
        if source_rate:
            out += self._source_fact("audio sample rate", source_rate, start_s, arrived)
        ok = math.isfinite(source_start_s) and source_start_s >= 0
        source = source_start_s if ok and (source_start_s != 0.0 or start_s == 0.0) else None
        if self._audio_end is not None:
            jump = start_s - self._audio_end
            if inc.is_open("audio_gap") and jump < cfg.audio_gap_min_s:
                # the samples ingest still held when the audio stopped, sent late with the next
                # audio: the gap began after them
                inc.move_start("audio_gap", start_s + duration)
            elif jump >= cfg.audio_gap_min_s:
                gap_start = inc.start_of("audio_gap") or self._audio_end
                out += inc.raise_("audio_gap", gap_start, start_s, min(1.0, (start_s - gap_start) / 5),
                                  f"no audio for {start_s - gap_start:.2f} s", start_s - gap_start, at=arrived)
                out += inc.clear("audio_gap", start_s, arrived)
                self._meter.reset()
                self._silent_since = self._quiet_since = None
            elif source is not None and self._source_next is not None:
                # the source's timestamps against its samples, exactly (small slips add up)
                out += self._drift(start_s, source - self._source_next, arrived)
            elif abs(jump) > 1e-3:
                out += self._drift(start_s, jump, arrived)
        self._source_next = source + duration if source is not None else None
        self._audio_end = start_s + duration if self._audio_end is None else max(self._audio_end, start_s + duration)
        self._chunk_s = max(self._chunk_s or 0.0, duration)
        out += self._cut_short(start_s + duration, len(samples), rate)
        for block in self._meter.add(start_s, rate, samples):
            out += self._block(block, arrived)
        return out

    def _cut_short(self, end: float, n: int, rate: int) -> list[HealthEvent]:
        """A chunk ending at `end` came: when ingest cut it short of its regular length, the
        source's audio did not go on from its end (ingest flushes what it holds when the audio
        timestamps jump or the format changes, on reading the audio after it). Coming when
        video is already the interleaving + audio_gap_min_s past its end, the audio that made
        ingest cut it lies at least audio_gap_min_s later: a gap from `end`, known now. Without
        this, a hole that begins 0.15-0.55 s into a chunk waited for the live rule, which the
        flushed chunk itself puts off (its end moves the last audio forward): 2.05-2.5 s after
        a 2 s hole on openarena_dm2 with 1 s chunks, then 1.45-1.85 s."""
        cfg, inc = self.config, self.incidents
        regular = self._chunk_n or int(round(rate * (self._chunk_s or CHUNK_S)))
        if n == self._last_n:
            self._chunk_n = n
        self._last_n = n
        if n == regular or self.video_s is None or inc.is_open("audio_gap"):
            return []
        behind = self.video_s - end
        if behind < self._interleave() + cfg.audio_gap_min_s:
            return []
        return inc.raise_("audio_gap", end, self.video_s, min(1.0, behind / 5),
                          f"no audio for {behind:.1f} s while video continues (audio cut short at {end:.2f} s)", behind)

    # -- the source's format -----------------------------------------------------------
    def source_formats(self, facts: list[SourceFact], at: float) -> list[HealthEvent]:
        """A window record's source formats, in time order; `at`: the window's end (when it is known)."""
        out: list[HealthEvent] = []
        for f in facts:
            if f.width and f.height:
                out += self._source_fact("source picture size", (f.width, f.height), f.since_s, at)
            if math.isfinite(f.frame_rate) and f.frame_rate > 0:
                out += self._source_fact("nominal frame rate", round(f.frame_rate, 2), f.since_s, at)
            if f.video_codec:
                out += self._source_fact("video codec", f.video_codec, f.since_s, at)
            if f.audio_codec:
                out += self._source_fact("audio codec", f.audio_codec, f.since_s, at)
            if f.audio_layout:
                out += self._source_fact("audio channel layout", f.audio_layout, f.since_s, at)
            if f.audio_sample_rate:
                out += self._source_fact("audio sample rate", f.audio_sample_rate, f.since_s, at)
        return out

    def _source_fact(self, name: str, value, t: float, at: float) -> list[HealthEvent]:
        """The source's `name` is `value` from media time `t` on: a format_change when it was
        something else before. A fact older than the one known (a window record's format at its
        start, after a chunk told of a change inside the window) is not news."""
        if self._source is None:
            self._source = {}
        known = self._source.get(name)
        if not math.isfinite(t) or known is not None and t < known[1] - 1e-3:
            return []
        if isinstance(value, str):
            value = value[:NAME_MAX]
        self._source[name] = (value, t)
        if known is None or known[0] == value:
            return []
        about = {"source picture size": "picture size", "nominal frame rate": "frame rate"}.get(name, name)
        old, new = (f"{v[0]}x{v[1]}" if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)
                    for v in (known[0], value))
        unit = {"audio sample rate": " Hz", "nominal frame rate": " fps"}.get(name, "")
        number = float(value) if isinstance(value, (int, float)) else 0.0
        return self._format_change(about, t, at, f"{name} {old} -> {new}{unit}", number)

    def _format_change(self, about: str, t: float, at: float, detail: str, value: float) -> list[HealthEvent]:
        """A format change about `about` at media time `t`, decided at `at`: once, when two
        checks see the same change (sampled and source picture size, measured and nominal rate)."""
        if self._changed is None:
            self._changed = {}
        last = self._changed.get(about)
        self._changed[about] = t
        if last is not None and abs(t - last) <= SAME_CHANGE_S:
            return []
        return self.incidents.instant("format_change", t, 0.5, detail, value, at=at)

    def _drift(self, t: float, jump: float, arrived: float) -> list[HealthEvent]:
        cfg, inc = self.config, self.incidents
        if self._slip_since is None:
            self._slip_since = t
        self._slip += jump
        if abs(self._slip) >= cfg.av_drift_max_s - 1e-6:
            way = "ahead of" if self._slip > 0 else "behind"
            return inc.raise_("av_drift", self._slip_since if not inc.is_open("av_drift") else inc.start_of("av_drift"), t,
                              min(1.0, abs(self._slip) / (4 * cfg.av_drift_max_s)),
                              f"audio timestamps {abs(self._slip):.2f} s {way} the audio delivered", self._slip, at=arrived)
        if abs(self._slip) < cfg.av_drift_max_s / 2:
            self._slip_since = None
            return inc.clear("av_drift", t, arrived)
        return []

    def _block(self, b: Block, arrived: float) -> list[HealthEvent]:
        cfg, inc = self.config, self.incidents
        out: list[HealthEvent] = []
        end = b.start_s + BLOCK_S
        if b.rms_dbfs < cfg.silence_dbfs:
            if self._silent_since is None:
                self._silent_since = b.start_s
            if end - self._silent_since >= cfg.silence_min_s - 1e-6:
                out += inc.raise_("silence", self._silent_since, end, 1.0, f"audio below {cfg.silence_dbfs:g} dBFS for "
                                  f"{end - self._silent_since:.1f} s", b.rms_dbfs, at=arrived)
        else:
            out += inc.clear("silence", b.start_s, arrived)
            self._silent_since = None
        self._recent.append(b)
        if b.momentary_lufs > -70:
            self._own.append(b.momentary_lufs)
        return out + self._loudness(b, end, arrived)

    def _own_level(self) -> float | None:
        """The stream's own level: gated mean loudness (BS.1770 -70 LUFS and -10 LU gates) of the last 10 minutes."""
        if len(self._own) * BLOCK_S < OWN_LEVEL_MIN_S:
            return None
        power = 10 ** ((np.fromiter(self._own, float) + 0.691) / 10)
        gate = -0.691 + 10 * math.log10(power.mean()) - 10
        kept = power[power >= 10 ** ((gate + 0.691) / 10)]
        return -0.691 + 10 * math.log10(kept.mean())

    def _loudness(self, b: Block, end: float, arrived: float) -> list[HealthEvent]:
        cfg, inc = self.config, self.incidents
        s = b.short_term_lufs
        ceiling = cfg.target_lufs + cfg.loud_lu
        own = self._own_level()
        if own is not None:
            ceiling = min(ceiling, own + cfg.jump_lu)
        floor = cfg.target_lufs - cfg.quiet_lu
        if b.momentary_lufs > ceiling:
            self._loud_last = end
            self._loud_run += 1
        else:
            self._loud_run = 0
        # short-term (3 s) over the ceiling, or momentary (400 ms) over it for LOUD_HOLD_BLOCKS in
        # a row: short-term alone took 1.9 s to pass it after a +30 dB fault on quiet game sound
        loud = s > ceiling or self._loud_run >= LOUD_HOLD_BLOCKS
        if loud and end - self._loud_last < 1.0:  # and loud in the last second, not only 3 s ago
            onset = next((r.start_s for r in self._recent if r.momentary_lufs > ceiling), b.start_s)
            start = inc.start_of("loudness") if inc.is_open("loudness") else onset
            self._loud_cause, self._quiet_since = "loud", None
            why = f"the stream's own level {own:.1f} LUFS + {cfg.jump_lu:g} LU" if own is not None and own + cfg.jump_lu < cfg.target_lufs + cfg.loud_lu \
                else f"the target {cfg.target_lufs:g} LUFS + {cfg.loud_lu:g} LU"
            return inc.raise_("loudness", start, end, (s - ceiling) / 10, f"too loud: short-term {s:.1f} LUFS, momentary {b.momentary_lufs:.1f} LUFS, above {why}",
                              max(s, b.momentary_lufs), at=arrived)
        quiet = b.short_term_full and s < floor and self._silent_since is None
        if quiet:
            if self._quiet_since is None:
                self._quiet_since = max(0.0, b.start_s - 3.0 + BLOCK_S)  # float steps put the stream's first at -8e-17
            if end - self._quiet_since >= cfg.quiet_min_s:
                self._loud_cause = "quiet"
                return inc.raise_("loudness", self._quiet_since, end, (floor - s) / 10,
                                  f"too quiet: short-term {s:.1f} LUFS, below the target {cfg.target_lufs:g} LUFS - {cfg.quiet_lu:g} LU", s, at=arrived)
            return []
        self._quiet_since = None
        if inc.is_open("loudness"):
            return inc.clear("loudness", self._loud_last if self._loud_cause == "loud" else b.start_s, arrived)
        return []

    # -- the end -------------------------------------------------------------------------
    def finish(self, end_s: float | None = None) -> list[HealthEvent]:
        """The stream ended (its last window record, or it went idle): end what is open."""
        t = max(x for x in (end_s, self.video_s, self._audio_end, 0.0) if x is not None)
        out: list[HealthEvent] = []
        if self.incidents.is_open("no_audio"):
            out += self.incidents.clear("no_audio", t, t)
        return out + self.incidents.close_all(t)

    def seconds_in(self, start_s: float, end_s: float) -> dict[str, float]:
        """Per-window summary: seconds of [start_s, end_s) under each kind's incidents."""
        return self.incidents.seconds_in(start_s, end_s)


def feed(health: StreamHealth, kind: str, message, rgb: np.ndarray | None = None) -> list[HealthEvent]:
    """Hand one decoded MEDIA message (frames_glitch, signals, audio, windows) to `health`.
    A frame's picture is `rgb` when given (a YUV420P frame converted, services/glitch/picture.py),
    else its data read as RGB24."""
    if kind == "frames_glitch":
        if rgb is None:
            rgb = np.frombuffer(message.data, np.uint8).reshape(message.height, message.width, 3)
        return health.frame(message.pts_s, message.width, message.height, rgb)
    if kind == "signals":
        return health.signals([(s.pts_s, s.frozen, s.diff) for s in message.signals])
    if kind == "audio":
        return health.audio(message.start_s, message.sample_rate, np.frombuffer(message.pcm_f32le, "<f4"),
                            message.source_start_s, message.source_layout, message.source_sample_rate, message.demux_lead_max_s)
    if kind == "windows":
        facts = [SourceFact(f.since_s, f.width, f.height, f.frame_rate, f.video_codec, f.audio_codec, f.audio_layout,
                            f.audio_sample_rate) for f in message.source_formats]
        out = health.source_formats(facts, message.end_s) if facts else []
        return out + health.finish(message.end_s) if message.last else out
    return []
