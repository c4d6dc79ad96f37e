"""What the glitch detector sees of a file, recorded once and replayed under any detector settings.

Judging a recording is slow because of ingest and the classifier (minutes for a 2-minute take on
this machine); the detector itself takes milliseconds. `record` runs ingest's real pipeline and the
classifier once and keeps, in ingest's order, each glitch frame's `FrameScore` and each batch of
decoder signals. `replay` feeds them to a `StreamDetector` in that same order, so it gives the
events `evaluate.run_detector` gives on the file, without thumbnails (the pictures are not kept).

Evidence answers only for the classifier and ingest that made it: a header line keeps what the
caller says made it (`meta`: the model's sha256, a digest of the scoring sources, ...) for the
caller to check before trusting a replay. `save` and `load` write and read it as gzip'd JSON lines,
floats exactly (float32 values round-trip through JSON's doubles); never pickle.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.glitch.bands import Band
from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import DetectorConfig, GlitchEvent, Signal, StreamDetector
from services.ingest.items import FrameSignals, SampledFrame
from services.ingest.pipeline import IngestPipeline

FORMAT = 1
NO_PICTURE = np.zeros((8, 8, 3), np.uint8)  # stands in for a frame: only incident thumbnails use it


@dataclass
class Evidence:
    """A file's glitch frames (("f", pts_s, FrameScore)) and signal batches (("s", [Signal], decode_errors)), in ingest's order."""

    entries: list[tuple] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(1 for e in self.entries if e[0] == "f")

    def scores(self) -> dict[float, FrameScore]:
        """Each glitch frame's score by its media time (rounded to the millisecond)."""
        return {round(e[1], 3): e[2] for e in self.entries if e[0] == "f"}


def record(path: Path, clf: GlitchClassifier, ingest=None, meta: dict | None = None) -> Evidence:
    """Ingest a file (default settings unless `ingest` is given) and classify each glitch frame."""
    evidence = Evidence(meta=dict(meta or {}))

    async def go() -> None:
        pipeline = IngestPipeline(str(path), ingest) if ingest is not None else IngestPipeline(str(path))
        async for item in pipeline.items():
            if isinstance(item, SampledFrame) and item.consumer == "glitch":
                evidence.entries.append(("f", item.media_time, clf.classify([item.image])[0]))
            elif isinstance(item, FrameSignals):
                signals = [Signal(s.media_time, s.is_corrupt, s.missing_frames, s.frozen, s.key_frame) for s in item.signals]
                evidence.entries.append(("s", signals, item.decode_errors))

    asyncio.run(go())
    return evidence


def replay(evidence: Evidence, config: DetectorConfig, on_verdict=None) -> list[GlitchEvent]:
    """The detector's events on the recorded evidence, fed as `evaluate.run_detector` feeds it."""
    detector, events = StreamDetector(config, on_verdict=on_verdict), []
    for entry in evidence.entries:
        if entry[0] == "f":
            detector.add_frame(entry[1], entry[2], NO_PICTURE)
        else:
            detector.add_signals(entry[1], entry[2])
            events += detector.advance()
    return events + detector.finish()


def _score_row(pts_s: float, s: FrameScore) -> dict:
    grid = None if s.stripes_grid is None else {"shape": list(s.stripes_grid.shape), "values": s.stripes_grid.astype(np.float32).ravel().tolist()}
    return {"f": pts_s, "corrupt": float(s.corrupt), "kind": s.kind, "tiles": np.asarray(s.tile_scores, np.float32).tolist(),
            "kinds": {k: float(v) for k, v in s.kinds.items()}, "bands": [[b.kind, int(b.top), int(b.bottom), float(b.level)] for b in s.bands],
            "sheared": bool(s.sheared), "chroma": bool(s.chroma_shifted), "grid": grid}


def _score_of(row: dict) -> FrameScore:
    grid = row["grid"]
    return FrameScore(row["corrupt"], row["kind"], np.asarray(row["tiles"], np.float32), dict(row["kinds"]),
                      tuple(Band(k, top, bottom, level) for k, top, bottom, level in row["bands"]), row["sheared"], row["chroma"],
                      None if grid is None else np.asarray(grid["values"], np.float32).reshape(grid["shape"]))


def save(evidence: Evidence, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(json.dumps({"evidence": FORMAT, **evidence.meta}) + "\n")
        for entry in evidence.entries:
            if entry[0] == "f":
                row = _score_row(entry[1], entry[2])
            else:
                row = {"s": [[s.pts_s, s.is_corrupt, s.frames_missing, s.frozen, s.keyframe] for s in entry[1]], "errors": entry[2]}
            out.write(json.dumps(row) + "\n")


def load(path: Path) -> Evidence:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())
        if header.pop("evidence", None) != FORMAT:
            raise ValueError(f"{path}: not glitch evidence of format {FORMAT}")
        evidence = Evidence(meta=header)
        for line in f:
            row = json.loads(line)
            if "f" in row:
                evidence.entries.append(("f", row["f"], _score_of(row)))
            else:
                evidence.entries.append(("s", [Signal(t, bool(c), int(m), bool(z), bool(k)) for t, c, m, z, k in row["s"]], row["errors"]))
    return evidence
