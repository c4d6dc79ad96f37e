"""How evaluate_stack counts a report's glitches against the planted faults (training.glitch.evaluate_stack)."""

from __future__ import annotations

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
