"""Where on the tile grid a "stripes" call lies: true wrong-stride reads against clean-footage false alarms.

A wrong-stride read shears every row below the point where it goes wrong, so its stripes tiles
should span several tile rows; the death-screen scoreboard's yellow highlight bar, which the
shipped model calls stripes on real game takes, is one band across the picture. This script
measures, for every stripes incident the detector (default settings) opens, the tiles flagged
in the sample that opens it (count, tile rows, tile columns, at stripes probability >= 0.5 and
>= 0.95), and replays the same samples through the detector with candidate spread rules
(`DetectorConfig.stripes_min_tile_rows`, `stripes_min_tiles`, `stripes_tile_score`,
`stripes_edge_rows_pass`); the first rule is the detector's defaults:

- held out: evaluate_sizes' stripes at 1280x720, seed 20 (its full run's plants, the same random
  draws; only the planted synthetic files are judged) and seed 21 (`--stripes-only`);
- development: val scenes 5000-5019 rendered at 1280x720, 12 s, stripes planted every 3 s;
- clean takes given on the command line (every incident is a false alarm).

Each file is ingested and classified once (training.glitch.evidence); the detector is cheap and
is replayed per rule. `--cache DIR` keeps each file's evidence there and replays from it when it is
there (same ingest only: delete it after changing ingest; evidence of another model is refused).

    python -m training.glitch.stripes_tiles [--sets heldout20,heldout21,dev] [--takes FILE ...] [--out FILE] [--cache DIR] [--model ONNX]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np

from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import DetectorConfig, GlitchEvent
from training.glitch import evaluate_sizes as es
from training.glitch import scenes
from training.glitch.evidence import Evidence, load, record, replay, save
from training.glitch.evaluate import Truth, match
from training.glitch.game import sha256_file

OUT = Path(__file__).resolve().parent / "results" / "glitch_stripes_tiles.json"
SIZE = (1280, 720)
DEV_SEEDS = range(5000, 5020)
# (tile rows, tiles, tile score, edge rows pass): the rules replayed; the first is the detector's defaults.
_D = DetectorConfig()
TODAY = (_D.stripes_min_tile_rows, _D.stripes_min_tiles, _D.stripes_tile_score, _D.stripes_edge_rows_pass)
RULES = [TODAY] + [rule for rule in [(1, 1, 0.5, False)]
                   + [(r, n, s, e) for e, s, r, n in product((False, True), (0.3, 0.5, 0.8, 0.95), (1, 2, 3), (1, 2, 3, 4, 6)) if (r, n, e) != (1, 1, False)]
                   if rule != TODAY]


def name_of(rule: tuple) -> str:
    r, n, s, e = rule
    return f"rows>={r} tiles>={n} at {s}{' or edge' if e else ''}"


def config_of(rule: tuple) -> DetectorConfig:
    r, n, s, e = rule
    return DetectorConfig(report_freeze=False, stripes_min_tile_rows=r, stripes_min_tiles=n, stripes_tile_score=s, stripes_edge_rows_pass=e)


def spread(score: FrameScore, at: float) -> dict:
    g = score.stripes_grid
    hit = g >= at
    return {"tiles": int(hit.sum()), "rows": [int(r) for r in np.flatnonzero(hit.any(axis=1))],
            "cols": [int(c) for c in np.flatnonzero(hit.any(axis=0))]}


def opened(evidence: Evidence, events: list[GlitchEvent], where: str) -> list[dict]:
    """Each stripes incident's opening sample: its stripes score, misread flags and flagged tiles."""
    frames = evidence.scores()
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

    def add(self, evidence: Evidence, truths: list[Truth], where: str) -> None:
        for rule in RULES:
            cfg = config_of(rule)
            events = replay(evidence, cfg)
            stripes = [t for t in truths if t.kind == "stripes"]
            r = match(stripes, events, cfg.close_after_s, [t for t in truths if t.kind != "stripes"])
            k = self.rules[rule]
            k["truths"] += r["truths"]
            k["found"] += r["found"]
            k["false_alarms"] += r["false_alarms"]
            k["missed"] += [f"{where}: {m}" for m in r["missed_kinds"]]
            if rule == RULES[0]:
                self.incidents += opened(evidence, events, where)

    def report(self) -> dict:
        base = self.rules[RULES[0]]
        rules = {name_of(rule): {"found": v["found"], "truths": v["truths"], "false_alarms": v["false_alarms"],
                                 "lost": sorted(set(v["missed"]) - set(base["missed"])), "gained": sorted(set(base["missed"]) - set(v["missed"]))}
                 for rule, v in self.rules.items()}
        return {"today": {"rule": name_of(RULES[0]), "found": base["found"], "truths": base["truths"], "false_alarms": base["false_alarms"], "missed": base["missed"]},
                "rules": rules, "incidents": self.incidents}


class Pieces:
    """Where a set's files go once ingested and classified: the tally, and the cache folder when there is one."""

    def __init__(self, tally: SetTally, folder: Path | None, model_sha256: str) -> None:
        self.tally, self.folder, self.model_sha256, self.count = tally, folder, model_sha256, 0

    def add(self, evidence: Evidence, truths: list[Truth], where: str) -> None:
        self.tally.add(evidence, truths, where)
        if self.folder is not None:
            evidence.meta.update(where=where, truths=[[t.kind, t.start_s, t.end_s, t.detail] for t in truths], model_sha256=self.model_sha256)
            save(evidence, self.folder / f"{self.count:03d}.evidence.jsonl.gz")
        self.count += 1
        print(where, self.tally.rules[RULES[0]]["found"], self.tally.rules[RULES[0]]["truths"], file=sys.stderr, flush=True)  # noqa: T201

    def done(self) -> None:
        if self.folder is not None:
            (self.folder / "complete").write_text(f"{self.count}\n")


def load_made_by(path: Path, model_sha256: str) -> Evidence:
    """Cached evidence, refused when another model made it (a file cached before the cache named
    its model is taken as is)."""
    evidence = load(path)
    made_by = evidence.meta.get("model_sha256", model_sha256)
    if made_by != model_sha256:
        raise SystemExit(f"{path} holds model {made_by[:12]}'s scores, not {model_sha256[:12]}'s: give this model its own --cache folder")
    return evidence


def cached_set(folder: Path, model_sha256: str) -> SetTally | None:
    """A set replayed from its cached evidence (None unless every piece was cached; another
    model's evidence is refused)."""
    if not (folder / "complete").exists():
        return None
    tally = SetTally()
    for path in sorted(folder.glob("*.evidence.jsonl.gz")):
        evidence = load_made_by(path, model_sha256)
        tally.add(evidence, [Truth(*t) for t in evidence.meta["truths"]], evidence.meta["where"])
    return tally


def heldout(clf: GlitchClassifier, seed: int, stripes_only: bool, work: Path, out: Pieces) -> None:
    """evaluate_sizes' planted files at 1280x720, with its random draws in its order (the files with
    faults planted in the pixels only)."""
    ingest = es.ingest_config(SIZE)
    for case in es.planted_cases(es.held_out_pieces(20.0), np.random.default_rng(seed), work, stripes_only):
        if case.kind == "synthetic":
            out.add(record(case.path, clf, ingest), case.truths, f"{case.where} +{case.offset_s:.0f}s")
    out.done()


def dev(clf: GlitchClassifier, work: Path, out: Pieces) -> None:
    """Development scenes (val seeds) at 1280x720 with 1 s of stripes every 3 s."""
    for seed in DEV_SEEDS:
        rng = np.random.default_rng(seed)
        spec = scenes.random_spec(rng, seed, frames=int(12.0 * scenes.FPS))
        spec.width, spec.height = SIZE
        spec.crf = min(spec.crf, 38)
        frames = scenes.render(spec, rng)
        planted, truths = es.plant_stripes(frames, scenes.FPS, np.random.default_rng(seed + 100))
        path = work / "dev.mkv"
        scenes.encode(planted, path, crf=23, gop=2 * scenes.FPS, fps=scenes.FPS)
        out.add(record(path, clf, es.ingest_config(SIZE)), truths, f"dev {seed}")
    out.done()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="heldout20,heldout21,dev", help="comma list of heldout20, heldout21, dev (or empty)")
    ap.add_argument("--takes", nargs="*", type=Path, default=[], help="clean recordings: every incident is a false alarm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, help="a folder: keep each file's evidence there, or replay it from there when present")
    ap.add_argument("--model", type=Path, help="a candidate classifier (ONNX; its own --cache folder); default the shipped one")
    args = ap.parse_args()
    clf = GlitchClassifier(args.model, intra_threads=args.threads)
    model_sha256 = sha256_file(clf.path)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["rules_replayed"] = [list(r) for r in RULES]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in [s for s in args.sets.split(",") if s]:
            t0 = time.time()
            folder = args.cache / name if args.cache else None
            tally = cached_set(folder, model_sha256) if folder is not None else None
            if tally is not None:
                report[name] = tally.report() | {"seconds": report.get(name, {}).get("seconds")}
                args.out.write_text(json.dumps(report, indent=1) + "\n")
                continue
            tally = SetTally()
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            pieces = Pieces(tally, folder, model_sha256)
            {"heldout20": lambda: heldout(clf, 20, False, work, pieces), "heldout21": lambda: heldout(clf, 21, True, work, pieces),
             "dev": lambda: dev(clf, work, pieces)}[name]()
            report[name] = tally.report() | {"seconds": round(time.time() - t0, 1)}
            args.out.write_text(json.dumps(report, indent=1) + "\n")
        if args.takes:
            takes = report.setdefault("takes", {})
            for path in args.takes:
                tally = SetTally()
                cached = args.cache / "takes" / f"{path.stem}.evidence.jsonl.gz" if args.cache else None
                if cached is not None and cached.exists():
                    evidence = load_made_by(cached, model_sha256)
                else:
                    evidence = record(path, clf, meta={"model_sha256": model_sha256})
                    if cached is not None:
                        save(evidence, cached)
                tally.add(evidence, [], path.name)
                takes[path.name] = tally.report()
                args.out.write_text(json.dumps(report, indent=1) + "\n")
                print(path.name, tally.rules[RULES[0]]["false_alarms"], file=sys.stderr, flush=True)  # noqa: T201
    print(f"{time.time() - started:.0f} s", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
