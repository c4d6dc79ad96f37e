"""False alarms of the glitch detector and the health checks on clean REAL game footage, an hour built up over sessions.

Issue 17 asks for the false-alarm rate on at least an hour of real (not generated) clean footage,
game footage included. This machine renders OpenArena takes slowly
(../shared/tools/record-gameplay.sh: about 10 minutes of machine time per 2-minute take), the
recordings must stay out of git and nothing outside git outlives a session. So each session
records a few takes, judges them here, and appends the counts (never the footage) to
training/glitch/results/clean_footage.json; the hour accumulates in that file.

Each recording goes through
- ingest's real decoding pipeline (IngestPipeline, default sampling: glitch frames at 2 fps, at
  most 1280x720) into the shipped classifier and the detector with the service's default
  settings (freeze left to health, as the service does); what the classifier and the decoder said
  of each frame is kept in git as the take's evidence (training.glitch.evidence, about 58 KB
  a 125 s take, in results/clean_evidence/, named by the file and the classifier);
- ingest's real decoder turned into the messages ingest publishes, through the health checks
  with the service's default thresholds (training.glitch.health_media.media and run).
Every incident either raises on clean footage is a false alarm.

One entry per recording and judge (keyed by the file's sha256, the model's sha256 and the judge
version: a file judged before by the same model and judge is not added again) holds the file
name, map, media seconds, the glitch and health incidents (kind, start, end) and what judged it:
the classifier model's sha256 (with the service's second opinion on stripes, glitch.stripes_verifier,
a digest of both models' sha256; `--no-verifier` judges with the classifier alone), the "judge version" (a digest of the glitch modules this judge
runs, `JUDGE_SOURCES`: classifier, detector, health checks, default settings), the "detector
version" (a digest of every file in services/glitch/ and services/glitch/health/, kept for the
record) and the git commit of the tree. The totals printed count only entries judged by the
current model and judge version; after a change to either, the hour starts again. A change to
the service's own plumbing (service.py, snapshot.py, state.py, picture.py, __main__.py), which
this judge never runs, leaves it counting. Entries judged before the judge version existed get
it from `--backfill`: recomputed from the sources at their git commit, only where that commit's
detector version equals the one they were judged by (so the commit is the code that judged).
After a change to the detector or the health checks, `--rejudge` judges again every recording
whose evidence was kept, without the recording (gone with the session that made it): its glitch
incidents replayed from the evidence, when the evidence's scoring sources (`SCORER_SOURCES`) are
unchanged, as `scorer_version` says. Its health incidents are carried over when the health checks
(`HEALTH_SOURCES` and the settings, `health_version`) are unchanged too; else judged again from
the recording when it is among the files given, else left unjudged (`"health": null`; a file
given later fills them in). The totals count glitch false alarms over every take and health
false alarms over the takes whose health today's checks judged: two hours. A take the model was trained on
(training.glitch.game.TRAINING_TAKE_SHA256, for every model but the synthetic-only ones in
game.SYNTHETIC_ONLY_MODELS) is judged and kept with `"training_take": true` but left out of the
totals, which count held-out footage only.

    python -m training.glitch.clean_footage media/footage/openarena_oa_dm5.mp4 ...
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import av

from services.glitch.classifier import GlitchClassifier
from services.glitch.detector import DetectorConfig
from services.glitch.settings import GlitchSettings
from training.glitch import evidence, game, health_media

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "training" / "glitch" / "results" / "clean_footage.json"


# The glitch modules this judge imports (a test checks the list against a fresh import of this module),
# in three parts: what scores a frame (its evidence), the detector's decision, and the health checks.
SCORER_SOURCES = tuple(f"services/glitch/{name}.py" for name in ("__init__", "bands", "chroma", "classifier", "shear", "tiles"))
DECISION_SOURCES = ("services/glitch/detector.py", "services/glitch/settings.py", "services/glitch/thumbnail.py")
HEALTH_SOURCES = tuple(f"services/glitch/health/{name}.py" for name in ("__init__", "incidents", "loudness", "monitor", "picture"))
JUDGE_SOURCES = SCORER_SOURCES + DECISION_SOURCES + HEALTH_SOURCES
EVIDENCE = ROOT / "training" / "glitch" / "results" / "clean_evidence"


def _digest(sources: dict[str, bytes]) -> str:
    """sha256 over (relative path, bytes) of the sources, sorted by path."""
    h = hashlib.sha256()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel] + b"\0")
    return h.hexdigest()


def all_glitch_sources() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "services/glitch").glob("*.py"), *(ROOT / "services/glitch/health").glob("*.py")])


def detector_version() -> str:
    """Digest of every glitch service and health check source."""
    return _digest({rel: (ROOT / rel).read_bytes() for rel in all_glitch_sources()})


def judge_version(sources: tuple[str, ...] = JUDGE_SOURCES) -> str:
    """Digest of the glitch sources this judge runs (JUDGE_SOURCES), or of a part of them."""
    return _digest({rel: (ROOT / rel).read_bytes() for rel in sources if (ROOT / rel).is_file()})


def part_versions() -> dict[str, str]:
    """The digests that say whether a take's recorded evidence and health verdict still hold: the
    scoring sources (the evidence) and the health checks with the settings (the health incidents)."""
    return {"scorer_version": judge_version(SCORER_SOURCES), "health_version": judge_version(HEALTH_SOURCES + ("services/glitch/settings.py",))}


@functools.lru_cache(maxsize=None)
def _glitch_sources_at(commit: str) -> dict[str, bytes] | None:
    """Every glitch source at a git commit with its bytes (read once per commit); None when the commit is unknown."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", commit, "services/glitch/", "services/glitch/health/"],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        return None
    out = {}
    for rel in listed.stdout.split():
        if rel.endswith(".py"):
            out[rel] = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, check=True).stdout
    return out


def detector_version_at(commit: str) -> str | None:
    """The detector version of the sources at a git commit; None when the commit is unknown."""
    sources = _glitch_sources_at(commit)
    return None if sources is None else _digest(sources)


def judge_version_at(commit: str, detector: str) -> str | None:
    """The judge version of a commit whose detector version is `detector`; None when it is not
    (the entry was judged from a tree that differed from its commit) or the commit is unknown."""
    sources = _glitch_sources_at(commit)
    if sources is None or _digest(sources) != detector:
        return None
    return _digest({rel: data for rel, data in sources.items() if rel in JUDGE_SOURCES})


def backfill(data: dict) -> tuple[int, int]:
    """Give entries without a judge version the one of their commit; (filled, left without)."""
    filled = left = 0
    for entry in data["entries"]:
        if "judge_version" in entry:
            continue
        version = judge_version_at(entry.get("git_head", "unknown"), entry["detector_version"])
        if version is None:
            left += 1
        else:
            entry["judge_version"] = version
            filled += 1
    return filled, left


def git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def map_of(path: Path) -> str:
    """The map of a take named by record-gameplay.sh (openarena_<map>.mp4); the first shared
    take, openarena_dm2.mp4, dropped the map's oa_ prefix."""
    m = re.fullmatch(r"openarena_(?:oa_)?(.+)", path.stem)
    if m is None:
        raise ValueError(f"{path.name}: not named openarena_<map>; give the map with --map")
    return "oa_" + m.group(1)


def media_seconds(path: Path) -> float:
    """Length of the file's video stream (the container's length when the stream has none)."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: no video stream")
        v = c.streams.video[0]
        if v.duration is not None:
            return float(v.duration * v.time_base)
        if c.duration is not None:
            return c.duration / 1e6
    raise ValueError(f"{path}: length unknown")


def service_configs(model: Path | None = None, verifier: bool = True) -> tuple[GlitchSettings, DetectorConfig]:
    """The glitch service's default settings (`model`: another classifier file; `verifier` False: no second
    opinion on stripes) and its detector config, built as GlitchService.start builds it."""
    s = GlitchSettings(stripes_verifier=verifier) if model is None else GlitchSettings(model_path=model, stripes_verifier=verifier)
    return s, s.detector_config()


def classifier_of(settings: GlitchSettings, intra_threads: int) -> GlitchClassifier:
    """The classifier as GlitchService.start builds it."""
    return GlitchClassifier(settings.model_path, intra_threads, verifier=settings.verifier_path(), verify_from=settings.open_score)


def classifier_sha256(settings: GlitchSettings) -> str:
    """What judged a take: the model's sha256, or with a second opinion on stripes, the digest of both models'."""
    sha = game.sha256_file(Path(settings.model_path))
    verifier = settings.verifier_path()
    return sha if verifier is None else hashlib.sha256(f"{sha}+{game.sha256_file(verifier)}".encode()).hexdigest()


def classifier_name(settings: GlitchSettings) -> str:
    verifier = settings.verifier_path()
    return Path(settings.model_path).name + ("" if verifier is None else f" + {verifier.name}")


def incidents(events) -> list[dict]:
    """One row per incident number from its phases: kind, and the span its last phase gave."""
    spans: dict[int, dict] = {}
    for e in events:
        spans[e.incident] = {"kind": e.kind, "start_s": round(e.start_s, 3), "end_s": round(e.end_s, 3)}
    return [spans[k] for k in sorted(spans)]


def judge(path: Path, clf: GlitchClassifier, settings: GlitchSettings, config: DetectorConfig, evidence_meta: dict) -> dict:
    """Glitch and health incidents on one recording; its glitch evidence is kept in EVIDENCE."""
    t0 = time.monotonic()
    recorded = evidence.record(path, clf, meta=evidence_meta)
    glitch_events = evidence.replay(recorded, config)
    kept = evidence_path(evidence_meta["sha256"], evidence_meta["model_sha256"])
    evidence.save(recorded, kept)
    t1 = time.monotonic()
    health = judge_health(path, settings)
    t2 = time.monotonic()
    return {"glitch": incidents(glitch_events), "glitch_frames": recorded.frames, "health": health,
            "evidence": _in_repo(kept), "wall_s": {"glitch": round(t1 - t0, 1), "health": round(t2 - t1, 1)}}


def judge_health(path: Path, settings: GlitchSettings) -> list[dict]:
    """The health incidents of one recording: ingest's messages through the health checks."""
    return incidents(health_media.run(health_media.media(path), settings.health_config()))


def evidence_path(file_sha256: str, model_sha256: str) -> Path:
    """Where a recording's evidence is kept, named by its file's and the classifier's sha256 (the
    evidence holds the classifier's scores: a candidate model's must not replace the shipped one's)."""
    return EVIDENCE / f"{file_sha256[:16]}.{model_sha256[:8]}.jsonl.gz"


def _in_repo(path: Path) -> str:
    """How an entry names a kept evidence file: relative to the checkout when it lies in it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def keep_evidence(entry: dict, path: Path, clf: GlitchClassifier, config: DetectorConfig, meta: dict, parts: dict) -> str:
    """Keep the evidence of a recording judged before evidence was kept, when its replay gives the
    glitch incidents the entry holds (so that it can be judged again later without the recording)."""
    recorded = evidence.record(path, clf, meta=meta)
    replayed = incidents(evidence.replay(recorded, config))
    if replayed != entry["glitch"]:
        return f"evidence not kept: it replays to {replayed}, the entry holds {entry['glitch']}"
    kept = evidence_path(meta["sha256"], meta["model_sha256"])
    evidence.save(recorded, kept)
    entry.update({"evidence": _in_repo(kept), **parts})
    return f"its evidence kept in {entry['evidence']} (it replays to the incidents judged)"


def rejudge(data: dict, model_sha256: str, version: str, config: DetectorConfig,
            recordings: dict[str, Path] | None = None, settings: GlitchSettings | None = None) -> tuple[list[dict], int]:
    """New entries for recordings judged before under another judge version whose kept evidence
    still holds (same model and scorer version): their glitch incidents replayed from the evidence
    under today's detector. Their health incidents are carried over when the health checks are
    the same (health version); else judged again from the recording when it is among
    `recordings` (by file sha256, with `settings`), else left unjudged (`"health": null`, not
    counted in the health hours). Returns the new entries and how many could not be made."""
    parts, judged_by = part_versions(), {"detector_version": detector_version(), "git_head": git_head()}
    recordings = recordings or {}
    done = {e["sha256"] for e in data["entries"] if e["model_sha256"] == model_sha256 and e.get("judge_version") == version}
    latest = {e["sha256"]: e for e in data["entries"] if e.get("evidence") and e["model_sha256"] == model_sha256}
    new, refused = [], 0
    for sha, old in latest.items():
        if sha in done:
            continue
        path = ROOT / old["evidence"]
        if old.get("scorer_version") != parts["scorer_version"] or not path.is_file():
            refused += 1
            continue
        recorded = evidence.load(path)
        if recorded.meta.get("sha256") != sha or recorded.meta.get("model_sha256") != model_sha256:
            refused += 1
            continue
        t0 = time.monotonic()
        events = evidence.replay(recorded, config)
        t1 = time.monotonic()
        health = old["health"] if old.get("health_version") == parts["health_version"] else None
        if health is None and sha in recordings and settings is not None:
            health = judge_health(recordings[sha], settings)
        new.append({**old, "glitch": incidents(events), "health": health, "judge_version": version, **judged_by,
                    "health_version": parts["health_version"] if health is not None else None,
                    "judged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rejudged_from": old["judge_version"],
                    "wall_s": {"glitch": round(t1 - t0, 2), "health": round(time.monotonic() - t1, 1)}})
    return new, refused


def load(path: Path) -> dict:
    if not path.exists():
        return {"about": __doc__.splitlines()[0], "entries": []}
    data = json.loads(path.read_text())
    if not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: no 'entries' list")
    return data


def training_take(file_sha256: str, model_sha256: str) -> bool:
    """The take is one the model was trained on (not held out for it)."""
    return file_sha256 in game.TRAINING_TAKE_SHA256 and model_sha256 not in game.SYNTHETIC_ONLY_MODELS


def _rate(alarms: int, seconds: float) -> tuple[float | None, float | None]:
    """Alarms an hour, and with none, the 95 % upper bound of the rate (Poisson: under 3/T an hour in T hours)."""
    hours = seconds / 3600
    if not hours:
        return None, None
    return round(alarms / hours, 2), (round(3 / hours, 2) if alarms == 0 else None)


def totals(entries: list[dict], model_sha256: str, version: str) -> dict:
    """False alarms of the current model and judge on held-out takes: glitch over every take,
    health over the takes whose health was judged by today's checks (`"health"` not null)."""
    ours = [e for e in entries if e["model_sha256"] == model_sha256 and e.get("judge_version") == version]
    judged = list({e["sha256"]: e for e in reversed(ours)}.values())  # a file judged twice (two detector versions, one judge): once
    mine = [e for e in judged if not training_take(e["sha256"], e["model_sha256"])]
    healthy = [e for e in mine if e["health"] is not None]
    seconds, health_seconds = (sum(e["media_seconds"] for e in es) for es in (mine, healthy))
    glitch, health = sum(len(e["glitch"]) for e in mine), sum(len(e["health"]) for e in healthy)
    glitch_rate, glitch_upper = _rate(glitch, seconds)
    health_rate, health_upper = _rate(health, health_seconds)
    return {"recordings": len(mine), "seconds": round(seconds, 1), "hours": round(seconds / 3600, 4),
            "glitch_false_alarms": glitch, "glitch_per_hour": glitch_rate, "glitch_per_hour_95_upper_if_none": glitch_upper,
            "health_recordings": len(healthy), "health_seconds": round(health_seconds, 1), "health_hours": round(health_seconds / 3600, 4),
            "health_false_alarms": health, "health_per_hour": health_rate, "health_per_hour_95_upper_if_none": health_upper,
            "training_takes_left_out": len(judged) - len(mine), "other_versions_recordings": len(entries) - len(ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="clean recordings to judge")
    parser.add_argument("--map", help="the map, for a file not named openarena_<map>")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--model", type=Path, help="a candidate classifier (ONNX) instead of the shipped one")
    parser.add_argument("--no-verifier", action="store_true", help="judge with the classifier alone (the service's glitch.stripes_verifier false)")
    parser.add_argument("--intra-threads", type=int, default=1, help="classifier threads (1: the service's default)")
    parser.add_argument("--backfill", action="store_true", help="give earlier entries their judge version (see the module docstring)")
    parser.add_argument("--rejudge", action="store_true", help="judge again, from their kept evidence, recordings judged under another judge version")
    args = parser.parse_args()
    if args.map and len(args.paths) > 1:
        parser.error("--map names the map of one recording: give one file with it")
    maps = {}
    for p in args.paths:
        if not p.is_file():
            parser.error(f"{p}: no such file")
        try:
            maps[p] = args.map or map_of(p)
        except ValueError as e:
            parser.error(str(e))
    data = load(args.results)
    if args.backfill:
        filled, left = backfill(data)
        args.results.write_text(json.dumps(data, indent=1) + "\n")
        print(f"judge version given to {filled} entries; {left} left without (commit unknown, or not the code that judged them)")
    if args.model is not None and not args.model.is_file():
        parser.error(f"{args.model}: no such model file")
    settings, config = service_configs(args.model, not args.no_verifier)
    model_sha = classifier_sha256(settings)
    version = judge_version()
    clf = classifier_of(settings, args.intra_threads)
    known = {(e["sha256"], e["model_sha256"], e.get("judge_version")) for e in data["entries"]}
    digests = {p: game.sha256_file(p) for p in args.paths}
    if args.rejudge:
        rejudged, refused = rejudge(data, model_sha, version, config, {d: p for p, d in digests.items()}, settings)
        data["entries"] += rejudged
        args.results.write_text(json.dumps(data, indent=1) + "\n")
        known |= {(e["sha256"], model_sha, version) for e in rejudged}
        print(f"judged again from kept evidence: {len(rejudged)} recordings"
              + "".join(f"\n  {e['file']}: glitch {e['glitch'] or 'none'}, health "
                        + ("not judged (its checks changed, the recording is gone)" if e["health"] is None else str(e["health"] or "none"))
                        + f" (was {e['rejudged_from'][:8]})" for e in rejudged)
              + f"; {refused} not (their evidence is of other scoring sources or another model, or gone)")
    parts, judged_by = part_versions(), {"detector_version": detector_version(), "git_head": git_head()}
    for path in args.paths:
        digest = digests[path]
        meta = {"file": path.name, "sha256": digest, "model_sha256": model_sha, "scorer_version": parts["scorer_version"]}
        if (digest, model_sha, version) in known:
            print(f"{path.name}: judged before by this model and judge (sha256 {digest[:12]}), not added again")
            before = next(e for e in reversed(data["entries"]) if (e["sha256"], e["model_sha256"], e.get("judge_version")) == (digest, model_sha, version))
            if not before.get("evidence"):
                print(f"  {keep_evidence(before, path, clf, config, meta, parts)}")
                args.results.write_text(json.dumps(data, indent=1) + "\n")
            if before["health"] is None:
                before.update(health=judge_health(path, settings), health_version=parts["health_version"])
                args.results.write_text(json.dumps(data, indent=1) + "\n")
                print(f"  health judged now: {before['health'] or 'none'}")
            continue
        entry = {"file": path.name, "map": maps[path], "sha256": digest, "media_seconds": round(media_seconds(path), 3),
                 **judge(path, clf, settings, config, meta), "model": classifier_name(settings), "model_sha256": model_sha,
                 "judge_version": version, **judged_by, **parts,
                 "judged_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if game.sha256_file(path) != digest:  # a take still being written when the run began
            (ROOT / entry["evidence"]).unlink(missing_ok=True)
            raise SystemExit(f"{path}: the file changed while it was judged (is it still being recorded?); nothing kept for it")
        if training_take(digest, model_sha):
            entry["training_take"] = True
        data["entries"].append(entry)
        known.add((digest, model_sha, version))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(data, indent=1) + "\n")  # after each file: a long run keeps what it finished
        print(f"{path.name}{' (a training take of this model: not counted)' if entry.get('training_take') else ''}: {entry['media_seconds']:.1f} s, glitch {entry['glitch'] or 'none'}, health {entry['health'] or 'none'}, "
              f"{entry['wall_s']}")
    t = totals(data["entries"], model_sha, version)
    def rate(kind: str, hours: float) -> str:
        upper = t[f"{kind}_per_hour_95_upper_if_none"]
        return (f"{kind} false alarms {t[f'{kind}_false_alarms']} in {hours} h: {t[f'{kind}_per_hour']} an hour"
                + (f" (under {upper} at 95 %)" if upper is not None else ""))

    print(f"this model ({model_sha[:12]}) and judge version ({version[:12]}): {t['recordings']} recordings, "
          f"{t['seconds']} s of real clean footage, {rate('glitch', t['hours'])}; "
          f"health judged on {t['health_recordings']} of them, {rate('health', t['health_hours'])}"
          + (f"; {t['training_takes_left_out']} training takes of this model not counted" if t["training_takes_left_out"] else "")
          + (f"; {t['other_versions_recordings']} recordings judged by other versions not counted" if t["other_versions_recordings"] else ""))
    json.dump(t, sys.stdout)
    print()


if __name__ == "__main__":
    main()
