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
