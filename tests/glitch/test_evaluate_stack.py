"""How evaluate_stack counts a report's glitches against the planted faults, and that a seed gives it the
same faults as evaluate_sizes (training.glitch.evaluate_stack, evaluate_sizes.planted_cases)."""

from __future__ import annotations

from pathlib import Path

from training.glitch.evaluate import Truth, match
from training.glitch.evaluate_stack import reported_events


def _report(*glitches: tuple[str, float, float]) -> dict:
    return {"glitches": [{"kind": k, "start_s": a, "end_s": b, "severity": 0.9, "confidence": 0.97, "open": False} for k, a, b in glitches]}


def test_a_reported_incident_counts_from_its_start_and_covers_its_span() -> None:
    planted = [Truth("stripes", 2.0, 2.967, "width+7"), Truth("green", 8.0, 8.967, ""), Truth("grey", 14.0, 14.967, "")]
    report = _report(("stripes", 2.5, 3.5), ("grey", 9.5, 10.0), ("green", 13.5, 14.5))
    r = match(planted, reported_events(report), close_s=1.0)
    assert r["found"] == 2 and r["missed_kinds"] == ["green"]  # the grey at 9.5-10.0 s is not the green fault of 8 s
    assert r["delays_s"] == [0.5, -0.5]  # onset: the reported start minus the fault's first frame
    assert r["kind_right"] == 1  # the fault at 14 s was reported as green, not grey
    assert r["false_alarms"] == 1 and r["false_alarm_kinds"] == ["grey"]


def test_an_empty_report_finds_nothing_and_raises_nothing() -> None:
    r = match([Truth("stripes", 2.0, 2.967, "height-23")], reported_events(_report()), close_s=1.0)
    assert (r["found"], r["false_alarms"], r["missed_kinds"]) == (0, 0, ["stripes (height-23)"])


def test_a_seed_plants_the_same_faults_for_every_consumer(shared_data, tmp_path) -> None:
    """evaluate_sizes and evaluate_stack judge the same files only if planted_cases draws the same
    faults from the same seed, in the same order; the planted frames must differ from the source."""
    import numpy as np

    from training.glitch import scenes
    from training.glitch.evaluate_sizes import frames_of, planted_cases

    pieces = [("bigbuckbunny.mp4", 0.0, 1e9)]

    def draw(seed: int, work: Path) -> list:
        work.mkdir()
        out = []
        for case in planted_cases(pieces, np.random.default_rng(seed), work, stripes_only=True):
            frames = scenes.decode(case.path, max_width=10_000, max_height=10_000)[0]
            out.append((case.kind, case.where, case.truths, frames))
        return out

    first, again, other = draw(21, tmp_path / "a"), draw(21, tmp_path / "b"), draw(22, tmp_path / "c")
    assert [(k, w, t) for k, w, t, _ in first] == [(k, w, t) for k, w, t, _ in again]
    assert [t for _, _, t, _ in first] != [t for _, _, t, _ in other], "another seed, other settings"
    (kind, _, truths, planted), = first
    assert kind == "synthetic" and [t.kind for t in truths] == ["stripes"]
    source, fps = frames_of(shared_data / "media" / "bigbuckbunny.mp4")
    inside = int(round(truths[0].start_s * fps)) + 2
    before = int(round(truths[0].start_s * fps)) - 5
    assert np.abs(planted[inside].astype(int) - source[inside]).mean() > 10 * np.abs(planted[before].astype(int) - source[before]).mean()
