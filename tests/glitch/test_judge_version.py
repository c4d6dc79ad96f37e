"""The clean-footage judge's version: the glitch sources it runs, and its backfill from git history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from training.glitch import clean_footage


def test_the_judge_sources_are_the_glitch_modules_the_judge_imports() -> None:
    code = ("import json, sys, training.glitch.clean_footage; "
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('services.glitch'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=clean_footage.ROOT, capture_output=True, text=True, check=True)
    imported = {str(Path(f).resolve().relative_to(clean_footage.ROOT)) for f in json.loads(out.stdout)}
    assert imported == set(clean_footage.JUDGE_SOURCES)
    # the service's plumbing is left out, so changing it does not restart the clean hour
    assert {"services/glitch/service.py", "services/glitch/snapshot.py"} <= set(clean_footage.all_glitch_sources()) - imported


def test_backfill_takes_the_judge_version_of_the_commit_that_judged() -> None:
    head = clean_footage.git_head()
    at_head = clean_footage.judge_version_at(head, clean_footage.detector_version_at(head))
    assert at_head is not None and len(at_head) == 64
    data = {"entries": [
        {"git_head": head, "detector_version": clean_footage.detector_version_at(head)},
        {"git_head": head, "detector_version": "0" * 64},  # judged from a tree that was not its commit
        {"git_head": "unknown", "detector_version": "0" * 64},
        {"git_head": head, "detector_version": "0" * 64, "judge_version": "kept"},
    ]}
    assert clean_footage.backfill(data) == (1, 2)
    assert [e.get("judge_version") for e in data["entries"]] == [at_head, None, None, "kept"]


def test_the_judge_is_its_scorer_its_decision_and_its_health_checks() -> None:
    parts = (clean_footage.SCORER_SOURCES, clean_footage.DECISION_SOURCES, clean_footage.HEALTH_SOURCES)
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == len(clean_footage.JUDGE_SOURCES)
    versions = clean_footage.part_versions()
    assert set(versions) == {"scorer_version", "health_version"} and len(set(versions.values())) == 2


def _edge_call_evidence(path: Path, sha: str) -> None:
    """A take whose one sample (2.0 s) calls stripes at 0.953 in the bottom tile row."""
    import numpy as np

    from services.glitch.classifier import FrameScore
    from services.glitch.detector import Signal
    from training.glitch import evidence

    def score(bottom: float) -> FrameScore:
        grid = np.full((4, 6), 0.02, np.float32)
        grid[3, 1:4] = bottom  # three tile columns: a wrong-stride read reaches across the picture
        kinds = {"stripes": float(grid.max()), "macroblocking": 0.01, "green": 0.0, "grey": 0.0}
        return FrameScore(float(grid.max()), "stripes", grid.ravel(), kinds, stripes_grid=grid)

    rows = []
    for i in range(8):
        t = 0.5 * i
        rows += [("f", t, score(0.953 if t == 2.0 else 0.1)), ("s", [Signal(t + k / 30, keyframe=(i == 0 and k == 0)) for k in range(15)], 0)]
    evidence.save(evidence.Evidence(rows, {"sha256": sha, "model_sha256": "m"}), path)


def test_rejudge_replays_kept_evidence_under_todays_detector_and_carries_the_health_verdict(tmp_path) -> None:
    from services.glitch.detector import DetectorConfig

    parts = clean_footage.part_versions()
    kept = tmp_path / "take.jsonl.gz"
    _edge_call_evidence(kept, "s1")
    health = [{"kind": "silence", "start_s": 1.0, "end_s": 5.0}]
    old = {"file": "take.mp4", "sha256": "s1", "model_sha256": "m", "judge_version": "old", **parts, "evidence": str(kept),
           "glitch": [], "health": health, "media_seconds": 4.0}  # as an older detector judged it
    data = {"entries": [old,
                        {**old, "sha256": "s2", "scorer_version": "another"},  # other scoring: its evidence does not hold
                        {**old, "sha256": "s3", "evidence": str(tmp_path / "gone.jsonl.gz")},
                        {**old, "sha256": "s4", "model_sha256": "other model"},
                        {**old, "sha256": "s5", "health_version": "older checks"}]}  # its health must be judged again
    _edge_call_evidence(tmp_path / "s5.jsonl.gz", "s5")
    data["entries"][-1]["evidence"] = str(tmp_path / "s5.jsonl.gz")
    new, refused = clean_footage.rejudge(data, "m", "new", DetectorConfig(report_freeze=False))
    assert refused == 2 and [e["sha256"] for e in new] == ["s1", "s5"]
    assert [(g["kind"], g["start_s"]) for g in new[0]["glitch"]] == [("stripes", 2.0)] and new[0]["health"] == health
    assert (new[0]["judge_version"], new[0]["rejudged_from"], new[0]["sha256"]) == ("new", "old", "s1")
    # the health checks changed and the recording is gone: its glitch verdict holds, its health is not judged
    assert new[1]["glitch"] == new[0]["glitch"] and new[1]["health"] is None and new[1]["health_version"] is None
    stricter, _ = clean_footage.rejudge(data, "m", "new", DetectorConfig(report_freeze=False, open_score=0.96))
    assert stricter[0]["glitch"] == []
    data["entries"] += new
    assert clean_footage.rejudge(data, "m", "new", DetectorConfig(report_freeze=False)) == ([], 2)  # judged once
    counted = clean_footage.totals(data["entries"], "m", "new")
    assert (counted["recordings"], counted["seconds"], counted["glitch_false_alarms"]) == (2, 8.0, 2)
    assert (counted["health_recordings"], counted["health_seconds"], counted["health_false_alarms"]) == (1, 4.0, 1)


def test_rejudge_judges_the_health_of_a_recording_it_is_given_when_the_checks_changed(shared_data, tmp_path) -> None:
    from training.glitch import game

    settings, config = clean_footage.service_configs()
    parts = clean_footage.part_versions()
    path = shared_data / "media" / "openarena_dm2.mp4"
    sha = game.sha256_file(path)
    kept = tmp_path / "take.jsonl.gz"
    _edge_call_evidence(kept, sha)
    old = {"file": path.name, "sha256": sha, "model_sha256": "m", "judge_version": "old", **parts, "health_version": "older",
           "evidence": str(kept), "glitch": [], "health": [{"kind": "audio_gap", "start_s": 6.0, "end_s": 6.0}], "media_seconds": 59.9}
    new, refused = clean_footage.rejudge({"entries": [old]}, "m", "new", config, {sha: path}, settings)
    assert refused == 0 and new[0]["health"] == [] and new[0]["health_version"] == parts["health_version"]


def test_evidence_is_kept_for_a_recording_judged_before_only_when_it_replays_to_the_same_incidents(classifier, shared_data, tmp_path, monkeypatch) -> None:
    from training.glitch import evidence, game

    monkeypatch.setattr(clean_footage, "EVIDENCE", tmp_path)
    path = shared_data / "media" / "bigbuckbunny.mp4"  # real and clean: no glitch incident (tests/glitch/test_pipeline.py)
    settings, config = clean_footage.service_configs()
    parts, sha = clean_footage.part_versions(), game.sha256_file(path)
    meta = {"file": path.name, "sha256": sha, "model_sha256": "m"}
    wrong = {"glitch": [{"kind": "stripes", "start_s": 1.0, "end_s": 1.0}]}
    said = clean_footage.keep_evidence(wrong, path, classifier, config, meta, parts)
    assert said.startswith("evidence not kept: it replays to []") and "evidence" not in wrong and not list(tmp_path.iterdir())
    right = {"glitch": []}
    clean_footage.keep_evidence(right, path, classifier, config, meta, parts)
    assert right["evidence"] == str(tmp_path / f"{sha[:16]}.m.jsonl.gz") and right["scorer_version"] == parts["scorer_version"]
    kept = evidence.load(tmp_path / f"{sha[:16]}.m.jsonl.gz")
    assert kept.meta == meta and kept.frames >= 8  # 2 fps over the clip
