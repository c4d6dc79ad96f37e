"""Glitch incidents through the whole stack: evaluate_sizes' held-out files, each analysed as a user would.

evaluate_sizes judges its planted files through ingest's pipeline, the classifier and the detector
in one process. This judges the very same files (the same seed draws the same faults) through
every service in its own process on a real NATS server, as `streamsight up` runs them: each file
is one `streamsight analyze` job, and what counts is its report's `glitches` list, what a user
reads. A difference from evaluate_sizes at 1280x720 (the stack's default glitch frame size) is
the stack's doing: frames lost or reordered on the data path, or a setting that differs.

Onset here is the reported incident's start minus the fault's first frame (the report keeps no
opening sample). Sources and faults: evaluate_sizes' docstring (none used in training).

`--takes` judges clean recordings instead (clean_footage's takes, as they are): every glitch is a
false alarm, and so is every health incident (the takes carry game audio throughout).

    python -m training.glitch.evaluate_stack [--seed 20] [--stripes-only] [--out FILE]
    python -m training.glitch.evaluate_stack --takes TAKE.mp4 ... --out FILE

Writes training/glitch/results/glitch_stack.eval.json (`--stripes-only --seed 21 --out
training/glitch/results/glitch_stack_stripes.eval.json`: stripes alone, 3 s apart).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from services.glitch.detector import DetectorConfig, GlitchEvent
from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.app.stack import running_stack
from streamsight.config import env_name
from training.glitch.evaluate import MEDIA
from training.glitch.evaluate_sizes import Case, Tally, held_out_pieces, planted_cases
from training.glitch.game import sha256_file

OUT = Path(__file__).resolve().parent / "results" / "glitch_stack.eval.json"


def reported_events(report: dict) -> list[GlitchEvent]:
    """The report's glitches as start and end events, for evaluate.match."""
    events = []
    for n, g in enumerate(report["glitches"]):
        events.append(GlitchEvent(n, "start", g["kind"], g["severity"], g["start_s"], g["start_s"], g["confidence"]))
        events.append(GlitchEvent(n, "end", g["kind"], g["severity"], g["start_s"], g["end_s"], g["confidence"]))
    return events


async def judge_all(cases: Iterator[Case], gateway: str, work: Path, tally: Tally) -> list[dict]:
    """Each case analysed by the stack at `gateway` in turn (one event loop for every job), tallied
    from its report; what each job was and took."""
    close_after_s, started, jobs = DetectorConfig().close_after_s, time.time(), []
    for n, case in enumerate(cases):
        out = work / f"job{n}"
        options = JobOptions(source=str(case.path), out=out, gateway=gateway, wait_s=600, stream_id=f"glitch-stack-{n}")
        t0 = time.time()
        results = await analyze(options, Progress(io.StringIO()))
        report = json.loads((out / "report.json").read_text())
        if report["state"] != "ended":
            raise SystemExit(f"{case.where} ({case.kind}): the stream {report['state']}: {results.last_error}")
        if case.kind == "clean":
            tally.clean_s += report["duration_s"]
            tally.clean_false += [f"{case.where}: {g['kind']} at {g['start_s']:.1f} s" for g in report["glitches"]]
        else:
            tally.add(case.kind, case.truths, reported_events(report), close_after_s, case.ignore, case.where)
        jobs.append({"where": case.where, "kind": case.kind, "seconds": report["duration_s"], "glitches": len(report["glitches"]),
                     "windows": len(report["windows"]), "windows_incomplete": report["windows_incomplete"],
                     "health": [f"{h['kind']} at {h['start_s']:.1f} s" for h in report["health"]],
                     "wall_s": round(time.time() - t0, 1), "load_1m": round(os.getloadavg()[0], 2)})
        print(case.where, case.kind, (tally.report()["found"], tally.report()["truths"], len(tally.clean_false)),
              f"{time.time() - started:.0f}s", file=sys.stderr, flush=True)  # noqa: T201
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the game excerpts")
    ap.add_argument("--stripes-only", action="store_true", help="plant only stripes, every 3 s (evaluate_sizes --stripes-only)")
    ap.add_argument("--takes", nargs="+", type=Path, help="clean recordings to judge instead of the held-out plants")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    started = time.time()
    rng, tally = np.random.default_rng(args.seed), Tally()
    pieces = held_out_pieces(args.seconds)
    with tempfile.TemporaryDirectory(prefix="glitch-stack-") as tmp:
        work, log_path = Path(tmp), Path(tmp) / "stack.log"
        (work / "files").mkdir()
        folders = {str(work / "files"), str(MEDIA)} | {str(t.resolve().parent) for t in args.takes or ()}
        readable = {env_name("gateway", "local_roots"): json.dumps(sorted(folders))}
        cases = [Case(t.resolve(), "clean", [], [], t.name) for t in args.takes] if args.takes else \
            planted_cases(pieces, rng, work / "files", args.stripes_only)
        with log_path.open("w") as log, running_stack(work / "var", log, extra_env=readable) as sup:
            jobs = asyncio.run(judge_all(iter(cases), sup.addresses()["gateway"], work, tally))
        stack_lost = [line for line in log_path.read_text().splitlines() if "nats disconnected" in line or "Slow Consumer" in line]
    if args.takes:
        result = {"recordings": len(jobs), "seconds": round(tally.clean_s, 1), "glitch_false_alarms": tally.clean_false,
                  "health_false_reports": [f"{j['where']}: {h}" for j in jobs for h in j["health"]]}
    else:
        result = tally.report()
        result["clean"] = {"seconds": round(tally.clean_s, 1), "false_alarms": tally.clean_false}  # the report keeps no sample scores
    doc = {"sources": [{"file": t.name, "sha256": sha256_file(t)} for t in args.takes] if args.takes else [f"{n} {a:.0f}-{b:.0f}s" if b < 1e9 else n for n, a, b in pieces], "how": "streamsight analyze per file, every service, the stack's defaults",
           "rng_seed": None if args.takes else args.seed, "stripes_only": args.stripes_only, "result": result, "stack_connection_losses": stack_lost,
           "jobs": jobs, "eval_seconds": round(time.time() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "by_kind"}
    if "by_kind" in result:
        summary["by_kind"] = {k: (v["found"], v["truths"], v["within_1s"]) for k, v in result["by_kind"].items()}
    print(json.dumps(summary, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
