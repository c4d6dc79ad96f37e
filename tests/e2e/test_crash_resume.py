"""Crash safety on the real stack (`up`'s supervisor, every service in its own process): ingest or
chat killed with SIGKILL mid-job is restarted by the supervisor and resumes its streams, and the
`analyze` job ends with every window scored exactly once (and, for chat, later windows with chat)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time

import pytest

from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.app.demo import make_sample
from streamsight.app.results import StreamResults

pytestmark = pytest.mark.slow


def _child(stack, name: str):
    return next(c for c in stack.children if c.spec.name == name)


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
    text = io.StringIO()
    options = JobOptions(source=str(sample.video), chat=str(sample.chat), out=out, gateway=stack.addresses()["gateway"], live=live, wait_s=240)
    outcome: dict = {}

    def job():
        try:
            outcome["results"] = asyncio.run(analyze(options, Progress(text)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=job)
    worker.start()
    deadline = time.monotonic() + 240
    while len(scored) < after_scores and worker.is_alive():
        assert time.monotonic() < deadline, f"only {len(scored)} windows scored\n{text.getvalue()}"
        time.sleep(0.1)
    assert worker.is_alive(), f"the job ended before the kill\n{text.getvalue()}"
    child = _child(stack, kill)
    restarts = child.restarts
    os.kill(child.process.pid, signal.SIGKILL)
    worker.join(420)
    assert not worker.is_alive(), f"the job did not finish after {kill} was killed\n{text.getvalue()}"
    assert "error" not in outcome, f"{outcome.get('error')!r}\n{text.getvalue()}"
    assert child.restarts == restarts + 1, f"the supervisor restarted {kill}"
    return json.loads((out / "report.json").read_text()), scored, text.getvalue()


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
