"""Where on the tile grid a "stripes" call lies: true wrong-stride reads against clean-footage false alarms.

A wrong-stride read shears every row below the point where it goes wrong, so its stripes tiles
should span several tile rows; the death-screen scoreboard's yellow highlight bar, which the
shipped model calls stripes on real game takes, is one band across the picture. This script
measures, for every stripes incident the detector (default settings) opens, the tiles flagged
in the sample that opens it (count, tile rows, tile columns, at stripes probability >= 0.5 and
>= 0.95), and replays the same samples through the detector with candidate spread rules
(`DetectorConfig.stripes_min_tile_rows`, `stripes_min_tiles`, `stripes_tile_score`):

- held out: evaluate_sizes' stripes at 1280x720, seed 20 (its full run's plants, the same random
  draws; only the planted synthetic files are judged) and seed 21 (`--stripes-only`);
- development: val scenes 5000-5019 rendered at 1280x720, 12 s, stripes planted every 3 s;
- clean takes given on the command line (every incident is a false alarm).

Each file is ingested and classified once; the detector is cheap and is replayed per rule.

    python -m training.glitch.stripes_tiles [--sets heldout20,heldout21,dev] [--takes FILE ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np

from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import DetectorConfig, GlitchEvent, Signal, StreamDetector
from services.ingest.items import FrameSignals, SampledFrame
from services.ingest.pipeline import IngestPipeline
from training.glitch import evaluate_sizes as es
from training.glitch import scenes
from training.glitch.evaluate import MEDIA, Truth, match, plant_damage

OUT = Path(__file__).resolve().parent / "results" / "glitch_stripes_tiles.json"
SIZE = (1280, 720)
DEV_SEEDS = range(5000, 5020)
DOT = np.zeros((8, 8, 3), np.uint8)  # stands in for the picture: only the thumbnail uses it
# (tile rows, tiles, tile score, edge rows pass): the rules replayed; the first is today's detector.
RULES = [(1, 1, 0.5, False)] + [(r, n, s, e) for e, s, r, n in product((False, True), (0.3, 0.5, 0.8, 0.95), (1, 2, 3), (1, 2, 3, 4, 6))
                                if (r, n, e) != (1, 1, False)]

Log = list[tuple]  # ("f", pts, FrameScore) and ("s", [Signal], decode_errors), in ingest order


def record(path: Path, clf: GlitchClassifier, ingest=None) -> Log:
    """Ingest a file (glitch frames at most 1280x720 unless `ingest` says), classify each frame."""
    log: Log = []

    async def go() -> None:
        async for item in IngestPipeline(str(path), ingest).items() if ingest is not None else IngestPipeline(str(path)).items():
            if isinstance(item, SampledFrame) and item.consumer == "glitch":
                log.append(("f", item.media_time, clf.classify([item.image])[0]))
            elif isinstance(item, FrameSignals):
                log.append(("s", [Signal(s.media_time, s.is_corrupt, s.missing_frames, s.frozen, s.key_frame) for s in item.signals],
                            item.decode_errors))

    asyncio.run(go())
    return log


def replay(log: Log, config: DetectorConfig) -> list[GlitchEvent]:
    det, events = StreamDetector(config), []
    for entry in log:
        if entry[0] == "f":
            det.add_frame(entry[1], entry[2], DOT)
        else:
            det.add_signals(entry[1], entry[2])
            events += det.advance()
    return events + det.finish()


def spread(score: FrameScore, at: float) -> dict:
    g = score.stripes_grid
    hit = g >= at
    return {"tiles": int(hit.sum()), "rows": [int(r) for r in np.flatnonzero(hit.any(axis=1))],
            "cols": [int(c) for c in np.flatnonzero(hit.any(axis=0))]}


def opened(log: Log, events: list[GlitchEvent], where: str) -> list[dict]:
    """Each stripes incident's opening sample: its stripes score, misread flags and flagged tiles."""
    frames = {round(e[1], 3): e[2] for e in log if e[0] == "f"}
    out = []
    for e in events:
        if e.phase != "start" or e.kind != "stripes":
            continue
        s = frames.get(round(e.end_s, 3))
        if s is None:
            continue
        out.append({"where": where, "t": round(e.end_s, 2), "stripes": round(s.kinds["stripes"], 4), "sheared": s.sheared,
                    "chroma": s.chroma_shifted, "grid": list(s.stripes_grid.shape), "p05": spread(s, 0.5), "p095": spread(s, 0.95)})
    return out


class SetTally:
    """Per rule: stripes truths found, and false alarms (clean files: every incident; planted files: outside truths)."""

    def __init__(self) -> None:
        self.rules = {r: {"truths": 0, "found": 0, "false_alarms": 0, "missed": []} for r in RULES}
        self.incidents: list[dict] = []
        self.logs: list[tuple[Log, list[Truth], str]] = []  # kept so that other rules can be replayed (--cache)

    def add(self, log: Log, truths: list[Truth], where: str) -> None:
        self.logs.append((log, truths, where))
        for rule in RULES:
            cfg = DetectorConfig(report_freeze=False, stripes_min_tile_rows=rule[0], stripes_min_tiles=rule[1], stripes_tile_score=rule[2],
                                 stripes_edge_rows_pass=rule[3])
            events = replay(log, cfg)
            stripes = [t for t in truths if t.kind == "stripes"]
            r = match(stripes, events, cfg.close_after_s, [t for t in truths if t.kind != "stripes"])
            k = self.rules[rule]
            k["truths"] += r["truths"]
            k["found"] += r["found"]
            k["false_alarms"] += r["false_alarms"]
            k["missed"] += [f"{where}: {m}" for m in r["missed_kinds"]]
            if rule == RULES[0]:
                self.incidents += opened(log, events, where)

    def report(self) -> dict:
        base = self.rules[RULES[0]]
        rules = {f"rows>={r} tiles>={n} at {s}{' or edge' if e else ''}": {"found": v["found"], "truths": v["truths"], "false_alarms": v["false_alarms"],
                                                    "lost": sorted(set(v["missed"]) - set(base["missed"]))}
                 for (r, n, s, e), v in self.rules.items()}
        return {"today": {"found": base["found"], "truths": base["truths"], "false_alarms": base["false_alarms"], "missed": base["missed"]},
                "rules": rules, "incidents": self.incidents}


def heldout(clf: GlitchClassifier, seed: int, stripes_only: bool, work: Path) -> SetTally:
    """evaluate_sizes' planted files at 1280x720, with its random draws in its order."""
    tally, rng = SetTally(), np.random.default_rng(seed)
    ingest = es.ingest_config(SIZE)
    pieces = [(es.GAME, float(a), float(min(a + 20.0, 60.0))) for a in np.arange(0.0, 59.0, 20.0)]
    pieces += [("bigbuckbunny.mp4", 0.0, 1e9), ("vtest.avi", 0.0, 1e9)]
    for name, a, b in pieces:
        frames, fps = es.frames_of(MEDIA / name, a, b)
        where = f"{name} {a:.0f}-{min(b, len(frames) / fps + a):.0f}s"
        offsets = (0.0,) if stripes_only else es.SYNTHETIC_OFFSETS_S
        for offset_s in offsets:
            planted, truths = es.plant_at(frames, fps, rng, offset_s, stripes_only=stripes_only)
            path = work / "planted.mkv"
            scenes.encode(planted, path, crf=23, gop=2 * fps, fps=fps)
            del planted
            tally.add(record(path, clf, ingest), truths, f"{where} +{offset_s:.0f}s")
        if not stripes_only:  # the packet damage draws come next in evaluate_sizes: draw them the same
            src = work / "src.mkv"
            scenes.encode(frames, src, crf=23, gop=2 * fps, fps=fps)
            decoded, _, _ = scenes.decode(src, max_width=10_000, max_height=10_000)
            for mode in ("garble", "drop"):
                plant_damage(src, work / f"{mode}.mkv", decoded, fps, rng, mode)
            del decoded
        print(where, tally.rules[RULES[0]]["found"], tally.rules[RULES[0]]["truths"], file=sys.stderr, flush=True)  # noqa: T201
    return tally


def dev(clf: GlitchClassifier, work: Path) -> SetTally:
    """Development scenes (val seeds) at 1280x720 with 1 s of stripes every 3 s."""
    tally = SetTally()
    for seed in DEV_SEEDS:
        rng = np.random.default_rng(seed)
        spec = scenes.random_spec(rng, seed, frames=int(12.0 * scenes.FPS))
        spec.width, spec.height = SIZE
        spec.crf = min(spec.crf, 38)
        frames = scenes.render(spec, rng)
        planted, truths = es.plant_stripes(frames, scenes.FPS, np.random.default_rng(seed + 100))
        path = work / "dev.mkv"
        scenes.encode(planted, path, crf=23, gop=2 * scenes.FPS, fps=scenes.FPS)
        tally.add(record(path, clf, es.ingest_config(SIZE)), truths, f"dev {seed}")
        print(f"dev {seed}", tally.rules[RULES[0]]["found"], tally.rules[RULES[0]]["truths"], file=sys.stderr, flush=True)  # noqa: T201
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="heldout20,heldout21,dev", help="comma list of heldout20, heldout21, dev (or empty)")
    ap.add_argument("--takes", nargs="*", type=Path, default=[], help="clean recordings: every incident is a false alarm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, help="a folder: pickle each set's samples there, or replay them from there when present")
    args = ap.parse_args()
    clf = GlitchClassifier(None, intra_threads=args.threads)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("rules_replayed", [list(r) for r in RULES])
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in [s for s in args.sets.split(",") if s]:
            t0 = time.time()
            cached = args.cache / f"{name}.pkl" if args.cache else None
            if cached is not None and cached.exists():
                tally = SetTally()
                for log, truths, where in pickle.loads(cached.read_bytes()):
                    tally.add(log, truths, where)
                report[name] = tally.report() | {"seconds": report.get(name, {}).get("seconds")}
                args.out.write_text(json.dumps(report, indent=1) + "\n")
                continue
            tally = {"heldout20": lambda: heldout(clf, 20, False, work), "heldout21": lambda: heldout(clf, 21, True, work),
                     "dev": lambda: dev(clf, work)}[name]()
            report[name] = tally.report() | {"seconds": round(time.time() - t0, 1)}
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps(tally.logs))
            args.out.write_text(json.dumps(report, indent=1) + "\n")
        if args.takes:
            takes = report.setdefault("takes", {})
            for path in args.takes:
                tally = SetTally()
                cached = args.cache / f"take_{path.stem}.pkl" if args.cache else None
                if cached is not None and cached.exists():
                    tally.add(pickle.loads(cached.read_bytes()), [], path.name)
                else:
                    log = record(path, clf)
                    tally.add(log, [], path.name)
                    if cached is not None:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        cached.write_bytes(pickle.dumps(log))
                takes[path.name] = tally.report()
                args.out.write_text(json.dumps(report, indent=1) + "\n")
                print(path.name, tally.rules[RULES[0]]["false_alarms"], file=sys.stderr, flush=True)  # noqa: T201
    print(f"{time.time() - started:.0f} s", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
