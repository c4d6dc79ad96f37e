"""Crash safety on the real stack (`up`'s supervisor, every service in its own process): ingest or
chat killed with SIGKILL mid-job is restarted by the supervisor and resumes its streams, and the
`analyze` job ends with every window scored exactly once (and, for chat, later windows with chat)."""

from __future__ import annotations

import json

import pytest

from streamsight.app.analyze import JobOptions
from streamsight.app.demo import make_sample
from streamsight.app.results import StreamResults

from ..conftest import JobWithAKill

pytestmark = pytest.mark.slow


def _run_job(stack, tmp_path, monkeypatch, name: str, kill: str, after_scores: int, duration: float, live: bool):
    """Analyse a generated sample, SIGKILL service `kill` once `after_scores` windows are scored;
    returns (report, every WindowScore window seen, printed progress)."""
    sample = make_sample(tmp_path / name, duration=duration)
    out = tmp_path / "out"
    scored: list[int] = []
    original = StreamResults.add

    def recording(self, event):
        if event.HasField("score"):
            scored.append(event.score.window)
        return original(self, event)

    monkeypatch.setattr(StreamResults, "add", recording)
    options = JobOptions(source=str(sample.video), chat=str(sample.chat), out=out, gateway=stack.addresses()["gateway"], live=live, wait_s=240)
    job = JobWithAKill(options)
    job.wait_until(lambda: len(scored) >= after_scores, 240, f"fewer than {after_scores} windows scored")
    job.kill_and_finish(stack, kill, 420)
    return json.loads((out / "report.json").read_text()), scored, job.printed.getvalue()


def test_a_killed_ingest_resumes_its_file_and_every_window_is_scored_once(stack, stack_log, tmp_path, monkeypatch):
    doc, scored, printed = _run_job(stack, tmp_path, monkeypatch, "ingest_kill", "ingest", after_scores=2, duration=60.0, live=True)
    assert doc["state"] == "ended", (doc.get("error"), printed)
    assert [w["index"] for w in doc["windows"]] == list(range(6)), doc["windows"]
    assert sorted(scored) == list(range(6)), f"each window scored exactly once: {scored}"
    log = stack_log.read_text()
    assert "stream resumed" in log, "the restarted ingest resumed the stream"


def test_a_killed_chat_resumes_its_reader_and_later_windows_have_chat(stack, stack_log, tmp_path, monkeypatch):
    doc, scored, printed = _run_job(stack, tmp_path, monkeypatch, "chat_kill", "chat", after_scores=2, duration=60.0, live=True)
    assert doc["state"] == "ended", (doc.get("error"), printed)
    assert sorted(scored) == list(range(6)), f"each window scored exactly once: {scored}"
    late = [w for w in doc["windows"] if w["index"] >= 4]
    assert late and all("chat" not in (w.get("missing") or []) for w in late), late
    assert "chat reader resumed" in stack_log.read_text(), "the restarted chat resumed the reader"
