"""Per-stream corruption detector: classifier scores + decoder evidence -> glitch incidents.

Inputs, in any interleaving (as they arrive on NATS):
- `add_frame(pts_s, score, rgb)`: a sampled glitch frame and its `FrameScore`;
- `add_signals(signals, decode_errors)`: decoder evidence for every decoded frame;
- `advance(until_s)`: ingest has moved past `until_s` (a window record's end).

Samples are judged in media-time order once the decoder evidence for their time is known
(signals arrive in ~1 s batches, so judging waits for them, or for a window record). A
sample is bad when
- the classifier's probability of a `standalone_kinds` kind (stripes) on some tile is at least
  `open_score` (for stripes only when its tiles of `stripes_tile_score` or more span
  `stripes_min_tile_rows` tile rows or reach the top or bottom one, and its tiles of
  `stripes_cols_score` or more lie in `stripes_min_tile_cols` tile columns: a wrong-stride read
  garbles whole rows, down to an edge or over many, while a real game's scoreboard bar lit one
  inner row and its bright green acid pool two columns at the edge;
  for stripes also: the frame's rows shear like a wrong width's, shear.py, after
  a tile reached the classifier's SHEAR_GATE, or its colour slid like a wrong height's,
  chroma.py), or its probability of any corrupted kind is at least `suspect_score` while the
  decoder evidence makes the picture suspect: a corrupt frame, a decode error or a gap (a
  dropped packet raises no error) since which no keyframe has come, as every frame until the
  next keyframe may reference what was damaged or lost. The classifier's macroblocking score
  alone never opens an incident: on generated validation tiles it does not separate smeared
  blocks from heavy but normal compression well enough; nor do its green and grey scores, which
  reached 0.95 on clean cartoon scenes while the fill-band check below finds every planted band
  (see models/MODEL.md);
- a flat green or grey fill band (bands.py) appeared: one that the stream's last sample judged
  clean (or its first sample) did not have, and that has not been there for `band_persist_s`
  (after that it is part of the picture: a grey HUD strip, a slate);
- the decoder flagged a frame corrupt or raised an error since the previous sample;
- the picture has been frozen for `freeze_min_s` or longer.

The debouncer turns bad samples into incidents: the first bad sample opens one (START), an
incident ends (END) once `close_after_s` of media time has passed with no bad sample, and
an UPDATE goes out when the kind changes or every `update_every_s` while it lasts. So one
incident gives one START, one END and only a few UPDATEs, never one event per frame.
`finish()` (the stream's last window) ends whatever is open.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.glitch.bands import Band, new_bands
from services.glitch.classifier import FrameScore
from services.glitch.thumbnail import jpeg

START, UPDATE, END = "start", "update", "end"
CNN_KINDS = ("stripes", "macroblocking", "green", "grey")
KINDS = CNN_KINDS + ("freeze", "decode_error")


@dataclass(frozen=True)
class Signal:
    """Decoder evidence about one decoded frame (media.v1.FrameSignal)."""

    pts_s: float
    is_corrupt: bool = False
    frames_missing: int = 0
    frozen: bool = False
    keyframe: bool = False


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds; the defaults are the ones measured in services/glitch/models/MODEL.md."""

    open_score: float = 0.95
    suspect_score: float = 0.35  # only frames with decoder evidence: 0.5 missed 7 of 17 dropped-packet incidents
    close_after_s: float = 1.5
    freeze_min_s: float = 10.0  # a static slate or pause screen for a few seconds is normal
    update_every_s: float = 10.0
    band_persist_s: float = 10.0  # a fill band there this long is part of the picture
    standalone_kinds: tuple[str, ...] = ("stripes",)  # classifier kinds that open an incident without decoder evidence
    decode_error_weight: float = 0.5  # a decoder flag names the kind only when the classifier has no better one
    report_freeze: bool = True  # the service leaves freeze to the health checks (services/glitch/health)
    # The classifier's stripes score opens an incident only when the tiles scoring stripes_tile_score or more
    # lie in stripes_min_tile_rows tile rows (and number stripes_min_tiles), or reach the top or bottom tile row
    # (stripes_edge_rows_pass): a wrong-stride read garbles the picture from where it goes wrong to an edge, or
    # over many rows, while the death-screen scoreboard's highlight bar of real game footage lights one inner
    # tile row (models/MODEL.md, Session 7). The shear and chroma checks are not subject to it.
    stripes_min_tile_rows: int = 2
    stripes_min_tiles: int = 1
    stripes_tile_score: float = 0.95
    stripes_edge_rows_pass: bool = True
    # And the tiles scoring stripes_cols_score or more must lie in stripes_min_tile_cols tile columns: a
    # wrong-stride read shears whole rows, so it reaches across the picture, while a bright green acid pool
    # of a real game lit the right two columns (models/MODEL.md, Session 16)
    stripes_min_tile_cols: int = 3
    stripes_cols_score: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.suspect_score <= self.open_score <= 1:
            raise ValueError(f"need 0 < suspect_score <= open_score <= 1, got {self.suspect_score}, {self.open_score}")
        if not set(self.standalone_kinds) <= set(CNN_KINDS):
            raise ValueError(f"standalone_kinds must be among {CNN_KINDS}, got {self.standalone_kinds}")
        if min(self.stripes_min_tile_rows, self.stripes_min_tiles, self.stripes_min_tile_cols) < 1 \
                or not 0 < self.stripes_tile_score <= 1 or not 0 < self.stripes_cols_score <= 1:
            raise ValueError("stripes_min_tile_rows, stripes_min_tiles and stripes_min_tile_cols must be >= 1, "
                             "stripes_tile_score and stripes_cols_score in (0, 1]")
        if min(self.close_after_s, self.freeze_min_s, self.update_every_s, self.band_persist_s) <= 0:
            raise ValueError("close_after_s, freeze_min_s, update_every_s and band_persist_s must be > 0")


@dataclass
class GlitchEvent:
    """One phase of one incident, ready to publish as events_pb2.Glitch."""

    incident: int
    phase: str
    kind: str
    severity: float
    start_s: float
    end_s: float
    confidence: float
    thumbnail_jpeg: bytes = b""
    update: int = 0  # number of this UPDATE within its incident (0 for START/END)


@dataclass
class _Sample:
    pts_s: float
    score: FrameScore
    rgb: np.ndarray


@dataclass
class _Incident:
    number: int
    start_s: float
    end_s: float
    announced_kind: str
    votes: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    weights: list[float] = field(default_factory=list)
    confidence: float = 0.0
    worst: np.ndarray | None = None
    worst_weight: float = -1.0
    last_update_s: float = 0.0
    updates: int = 0

    @property
    def kind(self) -> str:
        return max(self.votes.items(), key=lambda kv: kv[1])[0]

    @property
    def severity(self) -> float:
        return float(np.mean(self.weights)) if self.weights else 0.0


class StreamDetector:
    """The detector of one stream. Not thread-safe: one caller at a time."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), on_verdict: Callable[[float, bool, str], None] | None = None) -> None:
        """`on_verdict(pts_s, bad, kind)` is called for every judged sample (evaluation uses it)."""
        self.config = config
        self._on_verdict = on_verdict
        self._pending: list[_Sample] = []
        self._signals_until = -math.inf  # decoder evidence is complete up to here
        self._errors: list[float] = []  # media times of corrupt frames and decode errors
        self._suspect: list[list[float]] = []  # [start, end) spans after a gap, end = next keyframe
        self._frozen_since: float | None = None
        self._freeze: list[list[float]] = []  # [start, end] spans frozen for freeze_min_s or more
        self._last_pts: float | None = None
        self._prev_sample = -math.inf
        self._incident: _Incident | None = None
        self._incidents = 0
        self._bands_seen: list[tuple[Band, float]] = []  # bands of the last sample, with when each was first seen
        self._bands_known: tuple[Band, ...] = ()  # bands of the last sample judged clean

    # -- inputs --------------------------------------------------------------------
    def add_frame(self, pts_s: float, score: FrameScore, rgb: np.ndarray) -> None:
        self._pending.append(_Sample(pts_s, score, rgb))

    def add_signals(self, signals: list[Signal], decode_errors: int = 0) -> None:
        if decode_errors and signals:
            self._errors.append(signals[0].pts_s)
            self._suspect.append([signals[0].pts_s, math.inf])
        for s in signals:
            if s.is_corrupt:
                self._errors.append(s.pts_s)
                self._suspect.append([s.pts_s, math.inf])
            if s.frames_missing > 0 and not s.keyframe:
                self._suspect.append([self._last_pts if self._last_pts is not None else s.pts_s, math.inf])
            if s.keyframe:
                for span in self._suspect:
                    if span[1] == math.inf:
                        span[1] = s.pts_s
            if s.frozen:
                if self._frozen_since is None:
                    self._frozen_since = self._last_pts if self._last_pts is not None else s.pts_s
                if s.pts_s - self._frozen_since >= self.config.freeze_min_s:
                    if self._freeze and self._freeze[-1][0] == self._frozen_since:
                        self._freeze[-1][1] = s.pts_s
                    else:
                        self._freeze.append([self._frozen_since, s.pts_s])
            else:
                self._frozen_since = None
            self._last_pts = s.pts_s
            self._signals_until = max(self._signals_until, s.pts_s)

    def advance(self, until_s: float | None = None) -> list[GlitchEvent]:
        """Judge every sample whose decoder evidence is complete (or up to `until_s`)."""
        limit = self._signals_until if until_s is None else max(self._signals_until, until_s)
        self._pending.sort(key=lambda s: s.pts_s)
        events: list[GlitchEvent] = []
        while self._pending and self._pending[0].pts_s <= limit + 1e-6:
            events += self._judge(self._pending.pop(0))
        self._forget_before(self._prev_sample - 2 * self.config.close_after_s)
        return events

    def finish(self) -> list[GlitchEvent]:
        """The stream ended: judge what is left and end the open incident."""
        events = self.advance(math.inf)
        if self._incident is not None:
            events.append(self._close())
        return events

    @property
    def open_incident(self) -> bool:
        return self._incident is not None

    # -- judging -------------------------------------------------------------------
    def _judge(self, sample: _Sample) -> list[GlitchEvent]:
        cfg, t, prev = self.config, sample.pts_s, self._prev_sample
        self._prev_sample = t
        decoder_bad = [e for e in self._errors if prev < e <= t]
        suspect = bool(decoder_bad) or any(a <= t < b for a, b in self._suspect)
        frozen = self.config.report_freeze and any(a <= t <= b for a, b in self._freeze)
        kinds = sample.score.kinds or {sample.score.kind: sample.score.corrupt}
        strong = {k: v for k, v in kinds.items() if k in cfg.standalone_kinds}
        strong_kind = max(strong, key=strong.__getitem__) if strong else ""
        if strong and strong[strong_kind] >= cfg.open_score and (strong_kind != "stripes" or self._stripes_spread(sample.score)):
            cnn_kind, score = strong_kind, strong[strong_kind]
        elif sample.score.misread and "stripes" in cfg.standalone_kinds:
            cnn_kind, score = "stripes", cfg.open_score
        else:  # only decoder evidence can make this frame bad: lost data smears, so name a damage kind
            damage = {k: v for k, v in kinds.items() if k not in cfg.standalone_kinds} or kinds
            cnn_kind = max(damage, key=damage.__getitem__)
            score = max(kinds.values()) if suspect else 0.0
        cnn_bad = score >= cfg.open_score or (suspect and score >= cfg.suspect_score)
        if prev == -math.inf:  # the first sample's bands are the picture as the stream began
            self._bands_known = sample.score.bands
        fill = self._fill_bands(t, sample.score.bands)
        if fill and not (cnn_bad and cnn_kind in ("green", "grey")):
            cnn_bad, cnn_kind, score = True, max(fill, key=lambda b: b.rows).kind, 1.0
        events: list[GlitchEvent] = []
        inc = self._incident
        if self._on_verdict is not None:
            self._on_verdict(t, bool(cnn_bad or decoder_bad or frozen), cnn_kind if cnn_bad else "decode_error" if decoder_bad else "freeze" if frozen else "")
        if not (cnn_bad or decoder_bad or frozen):
            self._bands_known = sample.score.bands
            if inc is not None:
                inc.weights.append(0.0)
                if t - inc.end_s >= cfg.close_after_s:
                    events.append(self._close())
            return events

        votes: dict[str, float] = {}
        if cnn_bad:
            votes[cnn_kind] = score
        if decoder_bad:
            votes["decode_error"] = cfg.decode_error_weight
        if frozen:
            votes["freeze"] = 1.0
        weight = max(score if cnn_bad else 0.0, 1.0 if (decoder_bad or frozen) else 0.0)
        onset = min([t] + decoder_bad + [a for a, b in self._freeze if a <= t <= b])
        if inc is None:
            self._incidents += 1
            inc = self._incident = _Incident(self._incidents - 1, onset, t, "", last_update_s=t)
        inc.end_s = t
        for kind, v in votes.items():
            inc.votes[kind] += v
        inc.weights.append(weight)
        inc.confidence = max(inc.confidence, score)
        if weight > inc.worst_weight or (cnn_bad and score >= inc.confidence):
            inc.worst, inc.worst_weight = sample.rgb, weight
        if not inc.announced_kind:
            inc.announced_kind = inc.kind
            events.append(self._event(inc, START))
        elif inc.kind != inc.announced_kind or t - inc.last_update_s >= cfg.update_every_s:
            inc.announced_kind, inc.last_update_s = inc.kind, t
            inc.updates += 1
            events.append(self._event(inc, UPDATE))
        return events

    def _stripes_spread(self, score: FrameScore) -> bool:
        """The frame's stripes tiles cover enough tile columns, and tile rows and tiles (a frame with
        fewer columns, rows or tiles needs them all)."""
        grid = getattr(score, "stripes_grid", None)
        if grid is None:
            return True
        cfg, hit = self.config, grid >= self.config.stripes_tile_score
        columns = int((grid >= cfg.stripes_cols_score).any(axis=0).sum())
        if columns < min(cfg.stripes_min_tile_cols, grid.shape[1]):
            return False
        rows = hit.any(axis=1)
        if cfg.stripes_edge_rows_pass and (rows[0] or rows[-1]):
            return True
        return int(rows.sum()) >= min(cfg.stripes_min_tile_rows, grid.shape[0]) and int(hit.sum()) >= min(cfg.stripes_min_tiles, grid.size)

    def _fill_bands(self, t: float, bands: tuple[Band, ...]) -> list[Band]:
        """The sample's fill bands that count as damage: new, and not there for band_persist_s."""
        seen = [(b, next((t0 for p, t0 in self._bands_seen if b.same_as(p)), t)) for b in bands]
        self._bands_seen = seen
        return new_bands([b for b, t0 in seen if t - t0 < self.config.band_persist_s], self._bands_known)

    def _close(self) -> GlitchEvent:
        inc = self._incident
        assert inc is not None
        while inc.weights and inc.weights[-1] == 0.0:  # the clean samples that closed it
            inc.weights.pop()
        self._incident = None
        return self._event(inc, END)

    def _event(self, inc: _Incident, phase: str) -> GlitchEvent:
        thumb = jpeg(inc.worst) if phase != UPDATE and inc.worst is not None else b""
        return GlitchEvent(inc.number, phase, inc.kind, round(inc.severity, 4), inc.start_s, inc.end_s, round(inc.confidence, 4), thumb,
                           inc.updates if phase == UPDATE else 0)

    def _forget_before(self, t: float) -> None:
        self._errors = [e for e in self._errors if e > t]
        self._suspect = [s for s in self._suspect if s[1] > t]
        self._freeze = [s for s in self._freeze if s[1] > t or s[0] == self._frozen_since]
