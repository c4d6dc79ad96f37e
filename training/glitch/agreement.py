"""Two classifiers that must agree on stripes: the held-out stripes and the clean takes, replayed.

Model 5 (shipped) and model 8 (hard game negatives, not shipped) raise stripes false alarms on
different real game content (MODEL.md, Session 11): model 5 on yellow-green brick and lit walls,
model 8 on a streaked skybox. This replays the kept evidence of both with each frame's stripes
probability (its frame score and its tile grid) taken as the lower of the two models', everything
else from the first model, through the detector's defaults:

- held-out stripes: `stripes_tiles --cache` folders of the two models (heldout20, heldout21:
  the same plants, in the same order);
- clean takes: the two models' `clean_footage` results files and their kept evidence.

    python -m training.glitch.agreement --sets A_CACHE B_CACHE --clean A.json B.json [--gates 0.93 0.9 ...]

`--gates` replays both at lower stripes gates too: a frame opens a stripes incident from that
probability (frame and tiles, the two models agreeing) instead of 0.95 (MODEL.md, Session 13).

Reading only: no classifier runs, so it takes seconds. Running both models in the service would
double the classifier's cost (0.12 core a 720p stream at 2 fps: MODEL.md, Speed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from services.glitch.classifier import FrameScore
from services.glitch.detector import DetectorConfig
from training.glitch.clean_footage import incidents, service_configs
from training.glitch.evaluate import Truth, match
from training.glitch.evidence import Evidence, load, replay
from training.glitch.stripes_tiles import TODAY, SetTally, config_of

ROOT = Path(__file__).resolve().parents[2]


def lower_stripes(a: FrameScore, b: FrameScore) -> FrameScore:
    """`a` with each tile's stripes probability the lower of `a`'s and `b`'s and its frame stripes
    probability the highest of those, as GlitchClassifier.classify takes its verifier's (evidence without
    tile grids: the lower frame probability)."""
    kinds = dict(a.kinds)
    if a.stripes_grid is None or b.stripes_grid is None:
        kinds["stripes"] = min(a.kinds.get("stripes", 0.0), b.kinds.get("stripes", 0.0))
        return dataclasses.replace(a, kinds=kinds, stripes_grid=None)
    grid = np.minimum(a.stripes_grid, b.stripes_grid)
    kinds["stripes"] = float(grid.max())
    return dataclasses.replace(a, kinds=kinds, stripes_grid=grid)


def agree(a: Evidence, b: Evidence) -> Evidence:
    """`a`'s evidence with each glitch frame's stripes taken as the lower of the two; a frame that
    `b` lacks (it did not see the same file) is a ValueError."""
    scores = b.scores()
    entries = []
    for entry in a.entries:
        if entry[0] == "f":
            other = scores.get(round(entry[1], 3))
            if other is None:
                raise ValueError(f"frame at {entry[1]:.3f} s is in one evidence only: not the same file")
            entry = ("f", entry[1], lower_stripes(entry[2], other))
        entries.append(entry)
    return Evidence(entries, dict(a.meta))


def held_out(a_cache: Path, b_cache: Path, sets: tuple[str, ...] = ("heldout20", "heldout21")) -> dict:
    out = {}
    for name in sets:
        tally = SetTally()
        for path in sorted((a_cache / name).glob("*.evidence.jsonl.gz")):
            a, b = load(path), load(b_cache / name / path.name)
            tally.add(agree(a, b), [Truth(*t) for t in a.meta["truths"]], a.meta["where"])
        out[name] = tally.report()["today"]
    return out


def at_gate(config: DetectorConfig, gate: float) -> DetectorConfig:
    """`config` with stripes opened from `gate` (frame and tiles) instead of open_score: stripes is the
    only kind that opens without decoder evidence, so open_score gates nothing else."""
    return dataclasses.replace(config, open_score=gate, stripes_tile_score=min(config.stripes_tile_score, gate))


def held_out_at(a_cache: Path, b_cache: Path, config: DetectorConfig, sets: tuple[str, ...] = ("heldout20", "heldout21")) -> dict:
    """Held-out stripes incidents the agreeing pair finds under `config`."""
    found = truths = false_alarms = 0
    missed = []
    for name in sets:
        for path in sorted((a_cache / name).glob("*.evidence.jsonl.gz")):
            a = load(path)
            planted = [Truth(*t) for t in a.meta["truths"]]
            stripes = [t for t in planted if t.kind == "stripes"]
            r = match(stripes, replay(agree(a, load(b_cache / name / path.name)), config), config.close_after_s,
                      [t for t in planted if t.kind != "stripes"])
            found, truths, false_alarms = found + r["found"], truths + r["truths"], false_alarms + r["false_alarms"]
            missed += [f"{a.meta['where']}: {m}" for m in r["missed_kinds"]]
    return {"found": found, "truths": truths, "false_alarms": false_alarms, "missed": missed}


def clean(a_results: Path, b_results: Path, config: DetectorConfig | None = None) -> dict:
    """False alarms of the agreeing pair on each take both results files hold evidence of
    (`config`: the detector; default clean_footage's). Evidence kept out of git (a model not
    shipped kept it under var/) is gone with its machine: those takes are counted, not judged."""
    def latest(path: Path) -> dict[str, dict]:
        return {e["sha256"]: e for e in json.loads(path.read_text())["entries"] if e.get("evidence")}

    first, second = latest(a_results), latest(b_results)
    if config is None:
        _, config = service_configs()  # the detector as clean_footage runs it
    takes, seconds, gone = {}, 0.0, []
    for sha, entry in first.items():
        if sha not in second or second[sha].get("training_take") or entry.get("training_take"):
            continue
        if not all((ROOT / e["evidence"]).exists() for e in (entry, second[sha])):
            gone.append(entry["map"])
            continue
        events = replay(agree(load(ROOT / entry["evidence"]), load(ROOT / second[sha]["evidence"])), config)
        takes[entry["map"]] = [i["start_s"] for i in incidents(events)]
        seconds += entry["media_seconds"]
    return {"takes": takes, "seconds": round(seconds, 1), "false_alarms": sum(len(v) for v in takes.values()), "evidence_gone": sorted(gone)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs=2, type=Path, metavar=("A_CACHE", "B_CACHE"))
    ap.add_argument("--clean", nargs=2, type=Path, metavar=("A_JSON", "B_JSON"))
    ap.add_argument("--gates", nargs="*", type=float, default=[], help="lower stripes gates to replay too (needs --sets and --clean)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = {}
    if args.sets:
        report["held_out"] = held_out(*args.sets)
    if args.clean:
        report["clean"] = clean(*args.clean)
    if args.gates and not (args.sets and args.clean):
        ap.error("--gates needs --sets and --clean")
    for gate in args.gates:  # held out as stripes_tiles replays it, clean as clean_footage judges
        report.setdefault("gates", {})[f"{gate:g}"] = {"held_out": held_out_at(*args.sets, at_gate(config_of(TODAY), gate)),
                                                      "clean": clean(*args.clean, at_gate(service_configs()[1], gate))}
    text = json.dumps(report, indent=1)
    print(text)  # noqa: T201
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
