"""Glitch quality at two glitch frame sizes on the same held-out real footage, as the stack sees it.

The stack decodes a stream at its own size and ingest shrinks each glitch frame to fit
`ingest.glitch_max_width` x `glitch_max_height` before the detector sees it. This script plants
every fault at the source's size (1280x720 game footage, 720p Big Buck Bunny, 768x576 vtest),
in the pixels or in the H.264 packets, and runs each faulty file through the real ingest
pipeline once per size (`--sizes`, default 640x360 and 1280x720), then the shipped classifier
(with its second opinion on stripes, as the service runs it; `--no-verifier`: without) and the
detector with default settings. Both sizes judge the very same files, so their counts
are paired.

Sources, none used in training: ../shared/data/media/openarena_dm2.mp4 (60 s of a bot match,
HUD, kill feed, death-screen scoreboards) in 20 s excerpts, bigbuckbunny.mp4 and vtest.avi.
Faults, as training/glitch/evaluate.py plants them: 1 s incidents of stripes (wrong-stride
reads), green and grey every 6 s, in two copies of each clip 3 s apart; P-frame packets garbled, and dropped, every 5 s. Clean: each
excerpt's clean encode and the three original files.

    PYTHONPATH=. .venv/bin/python -m training.glitch.evaluate_sizes [--sizes 640x360,1280x720] [--out FILE]

Writes training/glitch/results/glitch_sizes.eval.json (`--stripes-only --seed 21 --out
training/glitch/results/glitch_sizes_stripes.eval.json`: stripes alone, 3 s apart, other settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from services.glitch.classifier import GlitchClassifier, shipped_verifier
from services.glitch.detector import DetectorConfig, GlitchEvent, Signal, StreamDetector
from services.ingest.decode import DecodeConfig
from services.ingest.items import FrameSignals, SampledFrame
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.sampling import ConsumerSpec, SamplingConfig
from training.glitch import corrupt, scenes
from training.glitch.evaluate import MEDIA, Truth, match, model_id, plant_damage, plant_synthetic

OUT = Path(__file__).resolve().parent / "results" / "glitch_sizes.eval.json"
GAME = "openarena_dm2.mp4"
# Two planted copies of each clip, the second with its incidents 3 s later (other content, other settings).
SYNTHETIC_OFFSETS_S = (0.0, 3.0)
KINDS = ("stripes", "green", "grey", "garble", "drop")


def ingest_config(size: tuple[int, int]) -> IngestConfig:
    """Glitch frames only, at most `size`, as ingest's pipeline_config builds them from settings."""
    glitch = ConsumerSpec(fps=2.0, format="rgb24", max_width=size[0], max_height=size[1])
    return IngestConfig(decode=DecodeConfig(sampling=SamplingConfig(flow=None, cnn=None, glitch=glitch), audio=False))


def detect(path: Path, size: tuple[int, int], clf: GlitchClassifier, config: DetectorConfig) -> tuple[list[GlitchEvent], float, list[float]]:
    """Events, media seconds and each sample's stripes score for a file ingested at `size`."""
    det = StreamDetector(config)
    events: list[GlitchEvent] = []
    stripes: list[float] = []
    duration = 0.0

    async def go() -> None:
        nonlocal duration
        async for item in IngestPipeline(str(path), ingest_config(size)).items():
            if isinstance(item, SampledFrame) and item.consumer == "glitch":
                if item.image.shape[1] > size[0] or item.image.shape[0] > size[1]:
                    raise AssertionError(f"glitch frame {item.image.shape} larger than {size}")
                score = clf.classify([item.image])[0]
                stripes.append(score.kinds["stripes"])
                det.add_frame(item.media_time, score, item.image)
                duration = max(duration, item.media_time)
            elif isinstance(item, FrameSignals):
                det.add_signals([Signal(s.media_time, s.is_corrupt, s.missing_frames, s.frozen, s.key_frame) for s in item.signals], item.decode_errors)
                events.extend(det.advance())
        events.extend(det.finish())

    asyncio.run(go())
    return events, duration, stripes


def frames_of(path: Path, a: float = 0.0, b: float = 1e9) -> tuple[np.ndarray, int]:
    """The source's RGB frames at its own size between media times a and b, and its frame rate."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        fps = int(round(float(stream.average_rate)))
        for frame in c.decode(stream):
            t = float(frame.pts * frame.time_base)
            if a <= t < b:
                out.append(frame.to_ndarray(format="rgb24"))
            elif t >= b:
                break
    return np.stack(out), fps


def plant_at(frames: np.ndarray, fps: int, rng: np.random.Generator, offset_s: float, stripes_only: bool = False
             ) -> tuple[np.ndarray, list[Truth]]:
    """plant_synthetic's incidents (stripes, green, grey every 6 s from 2 s) shifted by `offset_s`;
    with `stripes_only`, 1 s of stripes every 3 s instead (each with its own wrong width or height)."""
    off = int(round(offset_s * fps))
    planted, truths = plant_stripes(frames[off:], fps, rng) if stripes_only else plant_synthetic(frames[off:], fps, rng)
    for tr in truths:
        tr.start_s += off / fps
        tr.end_s += off / fps
    return np.concatenate([frames[:off], planted]), truths


def plant_stripes(frames: np.ndarray, fps: int, rng: np.random.Generator, every_s: float = 3.0) -> tuple[np.ndarray, list[Truth]]:
    out, truths, t = frames.copy(), [], 2.0
    while t + 1.0 < len(frames) / fps - 1.0:
        a, b = int(round(t * fps)), int(round((t + 1.0) * fps))
        setting = int(rng.integers(0, 1 << 30))
        for i in range(a, b):
            out[i], _, what = corrupt.corrupt(frames[i], frames[min(i + 1, len(frames) - 1)], "stripes", np.random.default_rng(setting))
        truths.append(Truth("stripes", a / fps, (b - 1) / fps, what))
        t += every_s
    return out, truths


def held_out_pieces(seconds: float) -> list[tuple[str, float, float]]:
    """(file, from, to): the game recording in `seconds` excerpts, then the two other files whole."""
    pieces = [(GAME, float(a), float(min(a + seconds, 60.0))) for a in np.arange(0.0, 59.0, seconds)]
    return pieces + [("bigbuckbunny.mp4", 0.0, 1e9), ("vtest.avi", 0.0, 1e9)]


@dataclass
class Case:
    """One file to judge: clean (every incident a false alarm), synthetic (stripes, green, grey
    planted in the pixels), garble or drop (packet damage, `ignore`: its spans up to the next keyframe)."""

    path: Path
    kind: str
    truths: list[Truth]
    ignore: list[Truth]
    where: str
    offset_s: float = 0.0  # synthetic: how much later than the first copy its incidents come


def planted_cases(pieces: list[tuple[str, float, float]], rng: np.random.Generator, work: Path, stripes_only: bool = False) -> Iterator[Case]:
    """The files this evaluation judges, written into `work` one at a time (each file is
    overwritten by a later case: judge it before asking for the next). The plants draw from
    `rng` in a fixed order, so a seed gives the same faults to every consumer."""
    for name in () if stripes_only else (GAME, "bigbuckbunny.mp4", "vtest.avi"):  # the original files, clean
        yield Case(MEDIA / name, "clean", [], [], name)
    for name, a, b in pieces:
        frames, fps = frames_of(MEDIA / name, a, b)
        where = f"{name} {a:.0f}-{min(b, len(frames) / fps + a):.0f}s"
        if not stripes_only:
            src = work / "src.mkv"
            scenes.encode(frames, src, crf=23, gop=2 * fps, fps=fps)
            yield Case(src, "clean", [], [], f"{where} re-encoded")
        for offset_s in (0.0,) if stripes_only else SYNTHETIC_OFFSETS_S:
            planted, truths = plant_at(frames, fps, rng, offset_s, stripes_only=stripes_only)
            path = work / "planted.mkv"
            scenes.encode(planted, path, crf=23, gop=2 * fps, fps=fps)
            del planted
            yield Case(path, "synthetic", truths, [], where, offset_s)
        if stripes_only:  # no packet damage
            continue
        decoded, _, _ = scenes.decode(src, max_width=10_000, max_height=10_000)
        for mode in ("garble", "drop"):
            dst = work / f"{mode}.mkv"
            truths, damaged, _ = plant_damage(src, dst, decoded, fps, rng, mode)
            yield Case(dst, mode, truths, damaged, where)
        del decoded, frames


class Tally:
    """Per size: incidents found per kind, onset delays, false alarms, clean seconds."""

    def __init__(self) -> None:
        self.kinds = {k: {"truths": 0, "found": 0, "kind_right": 0, "delays_s": [], "missed": []} for k in KINDS}
        self.planted_false: list[str] = []
        self.clean_s = 0.0
        self.clean_false: list[str] = []
        self.clean_stripes_max: dict[str, float] = {}

    def add(self, kind_of: str, truths: list[Truth], events: list[GlitchEvent], close_s: float, ignore: list[Truth], where: str) -> None:
        by_kind: dict[str, list[Truth]] = {}
        for tr in truths:
            by_kind.setdefault(kind_of if kind_of != "synthetic" else tr.kind, []).append(tr)
        for kind, trs in by_kind.items():
            r = match(trs, events, close_s, ignore)
            k = self.kinds[kind]
            k["truths"] += r["truths"]
            k["found"] += r["found"]
            k["kind_right"] += r["kind_right"]
            k["delays_s"] += r["delays_s"]
            k["missed"] += [f"{where}: {m}" for m in r["missed_kinds"]]
        whole = match(truths, events, close_s, ignore)
        self.planted_false += [f"{where} {kind_of}: {k}" for k in whole["false_alarm_kinds"]]

    def report(self) -> dict:
        kinds = {}
        for name, k in self.kinds.items():
            d = np.asarray(k["delays_s"] or [0.0])
            kinds[name] = {"truths": k["truths"], "found": k["found"], "recall": round(k["found"] / max(1, k["truths"]), 3),
                           "kind_right": k["kind_right"], "within_1s": int((np.asarray(k["delays_s"]) <= 1.0).sum()),
                           "onset_mean_s": round(float(d.mean()), 3), "onset_max_s": round(float(d.max()), 3), "missed": k["missed"]}
        truths = sum(k["truths"] for k in self.kinds.values())
        found = sum(k["found"] for k in self.kinds.values())
        within = sum(v["within_1s"] for v in kinds.values())
        return {"by_kind": kinds, "truths": truths, "found": found, "recall": round(found / max(1, truths), 3),
                "within_1s": within, "false_alarms_in_planted_files": self.planted_false,
                "clean": {"seconds": round(self.clean_s, 1), "false_alarms": self.clean_false, "stripes_max_by_file": self.clean_stripes_max}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a candidate classifier (ONNX); default the shipped one (glitch.model_precision)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="classifier threads (the counts do not depend on them)")
    ap.add_argument("--sizes", default="640x360,1280x720")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the game excerpts")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-verifier", action="store_true", help="the classifier alone, without the second opinion on stripes (glitch.stripes_verifier false)")
    ap.add_argument("--stripes-only", action="store_true",
                    help="plant only stripes, every 3 s, once per clip, and skip packet damage and the clean runs (the kind where the sizes differ)")
    args = ap.parse_args()
    sizes = {s: tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")}
    missing = [n for n in (GAME, "bigbuckbunny.mp4", "vtest.avi") if not (MEDIA / n).exists()]
    if missing:
        raise SystemExit(f"needs the shared test media ({', '.join(missing)} absent from {MEDIA})")
    started = time.time()
    config, rng = DetectorConfig(report_freeze=False), np.random.default_rng(args.seed)
    clf = GlitchClassifier(args.model, intra_threads=args.threads, verifier=None if args.no_verifier else shipped_verifier(), verify_from=config.open_score)
    tallies = {s: Tally() for s in sizes}
    pieces = held_out_pieces(args.seconds)

    def run_all(path: Path, kind: str, truths: list[Truth], ignore: list[Truth], where: str) -> None:
        for name, size in sizes.items():
            events, dur, stripes = detect(path, size, clf, config)
            if kind == "clean":
                tallies[name].clean_s += dur
                tallies[name].clean_false += [f"{where}: {e.kind} at {e.start_s:.1f} s" for e in events if e.phase == "start"]
                tallies[name].clean_stripes_max[where] = round(max(stripes), 4)
            else:
                tallies[name].add(kind, truths, events, config.close_after_s, ignore, where)

    with tempfile.TemporaryDirectory() as tmp:
        for case in planted_cases(pieces, rng, Path(tmp), args.stripes_only):
            run_all(case.path, case.kind, case.truths, case.ignore, case.where)
            if case.kind == "drop" or args.stripes_only:  # the piece's last file
                print(case.where, {s: (t.report()["found"], t.report()["truths"], len(t.clean_false)) for s, t in tallies.items()},
                      f"{time.time() - started:.0f}s", file=sys.stderr, flush=True)  # noqa: T201
    report = {"sources": [f"{n} {a:.0f}-{b:.0f}s" if b < 1e9 else n for n, a, b in pieces],
              "detector": "DetectorConfig(report_freeze=False)", "model": model_id(clf), "stripes_verifier": model_id(clf.verifier) if clf.verifier is not None else None, "rng_seed": args.seed, "stripes_only": args.stripes_only,
              "sizes": {s: t.report() for s, t in tallies.items()}, "eval_seconds": round(time.time() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({s: {k: v for k, v in r.items() if k != "by_kind"} | {"by_kind": {k: (v["found"], v["truths"], v["within_1s"]) for k, v in r["by_kind"].items()}}
                      for s, r in report["sizes"].items()}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
