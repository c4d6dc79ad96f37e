"""The real game takes model 7 trains on: checked by sha256, and left out of that model's clean-footage totals."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.glitch import clean_footage, game


def test_a_missing_take_names_the_recording_command(tmp_path: Path) -> None:
    with pytest.raises(game.TakeError, match=r"missing: record it with .*record-gameplay\.sh"):
        game.check_takes(tmp_path)


def test_a_re_recorded_take_is_refused(tmp_path: Path) -> None:
    for rel in game.TRAINING_TAKES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"another recording")
    with pytest.raises(game.TakeError, match="re-recorded"):
        game.check_takes(tmp_path)


def _entry(file_sha: str, model_sha: str, seconds: float, alarms: int) -> dict:
    return {"sha256": file_sha, "model_sha256": model_sha, "judge_version": "v", "media_seconds": seconds,
            "glitch": [{"kind": "stripes", "start_s": 1.0, "end_s": 2.0}] * alarms, "health": []}


def test_totals_count_only_takes_held_out_for_the_model() -> None:
    trained_on = sorted(game.TRAINING_TAKE_SHA256)[0]
    held_out = "f" * 64
    new_model = "a" * 64
    synthetic_only = sorted(game.SYNTHETIC_ONLY_MODELS)[0]
    entries = [_entry(trained_on, new_model, 125.0, 2), _entry(held_out, new_model, 60.0, 1),
               _entry(trained_on, synthetic_only, 125.0, 2), _entry(held_out, synthetic_only, 60.0, 0)]
    entries.append({**_entry(held_out, new_model, 60.0, 3), "judged_again": True})  # the same file again: counted once
    new = clean_footage.totals(entries, new_model, "v")
    assert (new["recordings"], new["seconds"], new["glitch_false_alarms"], new["training_takes_left_out"]) == (1, 60.0, 1, 1)
    old = clean_footage.totals(entries, synthetic_only, "v")  # every take is held out for a model trained without them
    assert (old["recordings"], old["seconds"], old["glitch_false_alarms"], old["training_takes_left_out"]) == (2, 185.0, 2, 0)
