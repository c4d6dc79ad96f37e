"""The main job end to end: every service in its own process on a real NATS server.

One embedded stack (the same Supervisor `streamsight up` uses, on free ports) serves all the
jobs of this module; `analyze` talks to it through the gateway like a user would.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import av
import jsonschema
import pytest

from streamsight import natsauth, subjects
from streamsight.app import report
from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.app.demo import make_sample
from streamsight.app.supervisor import Supervisor

pytestmark = pytest.mark.slow


def _media_folder(stack: Supervisor) -> Path:
    """Where the stack's gateway may read local files by default: its data folder."""
    folder = stack.data_dir / "gateway" / "media"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _job(stack: Supervisor, source: Path, out: Path, chat: Path | None = None) -> tuple[dict, str]:
    text = io.StringIO()
    options = JobOptions(source=str(source), chat=str(chat) if chat else "", out=out, gateway=stack.addresses()["gateway"], wait_s=240)
    asyncio.run(analyze(options, Progress(text)))
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, json.loads(report.SCHEMA_PATH.read_text()))
    return doc, text.getvalue()


def _clips_play(doc: dict, out: Path) -> None:
    for h in doc["highlights"]:
        assert h["clip"], f"highlight {h['start_s']}-{h['end_s']} has no clip"
        with av.open(str(out / h["clip"])) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames > 30, f"clip {h['clip']} has only {frames} frames"
        assert h["clip_start_s"] <= h["start_s"], "the clip has a lead-in"


DONE = "all results in: fusion's analysed status came"  # analyze ended on fusion's last word, without waiting for quiet
# Fusion publishes that status only where NATS users let it publish statuses (streamsight.natsauth); where they
# do not, analyze must still end, after its quiet time, with the same report.
FUSION_SAYS_DONE = subjects.event("status", ">") in natsauth.service_subjects("fusion")


def _ended_as_expected(printed: str, what: str) -> None:
    if FUSION_SAYS_DONE:
        assert DONE in printed, f"{what}: analyze waited for quiet instead of ending on fusion's analysed status"
    else:
        assert DONE not in printed, f"{what}: an analysed status came though NATS users do not let fusion publish statuses"


def _windows_overlap(spans: list[tuple[float, float]]) -> set[int]:
    return {i for s, e in spans for i in range(int(s // 10), int((e - 1e-6) // 10) + 1)}


def test_generated_sample_highlights_are_found(stack, tmp_path):
    sample = make_sample(_media_folder(stack) / "sample", duration=60.0)
    doc, printed = _job(stack, sample.video, tmp_path / "out", sample.chat)
    assert doc["state"] == "ended" and doc["duration_s"] == pytest.approx(60.0, abs=0.5)
    assert [w["index"] for w in doc["windows"]] == list(range(6)), "every window scored exactly once"
    assert all(not w["missing"] for w in doc["windows"]), "all modalities arrived"
    planted = _windows_overlap(sample.highlights)
    found = _windows_overlap([(h["start_s"], h["end_s"]) for h in doc["highlights"]])
    tp = len(planted & found)
    f1 = 2 * tp / (len(planted) + len(found)) if planted or found else 1.0
    print(f"planted windows {sorted(planted)}, found {sorted(found)}, F1 {f1:.2f}")
    assert f1 >= 0.66
    _clips_play(doc, tmp_path / "out")
    assert "HIGHLIGHT" in printed
    _ended_as_expected(printed, "the sample")
    assert doc["sentiment"]["series"] and doc["sentiment"]["series"][0]["messages"] > 0
    assert doc["glitches"] == [], "a clean sample raises no glitch"
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<video") == len(doc["highlights"])


def test_real_files(stack, tmp_path, shared_data):
    for name, duration, windows in (("bigbuckbunny.mp4", 5.3, 1), ("vtest.avi", 79.5, 8)):
        out = tmp_path / name
        source = shared_data / "media" / name
        local = _media_folder(stack) / f"copy-{name}"  # a folder the gateway may read; keep shared/ untouched
        shutil.copy(source, local)
        doc, printed = _job(stack, local, out)
        assert doc["state"] == "ended", doc.get("error")
        _ended_as_expected(printed, name)
        assert doc["duration_s"] == pytest.approx(duration, abs=0.6)
        assert [w["index"] for w in doc["windows"]] == list(range(windows))
        _clips_play(doc, out)
        assert doc["glitches"] == [], f"{name} is clean footage"
