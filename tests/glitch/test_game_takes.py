"""The real game takes model 8 trains on (and model 7 did): checked by sha256, left out of such a model's clean-footage totals; model 8's hard clean tiles."""

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


def test_hard_tiles_are_the_frames_tiles_the_miner_takes_for_stripes_but_those_drawn_already(shared_data: Path) -> None:
    """Model 8's hard clean tiles: a real game frame read with a wrong width gives tiles the
    shipped classifier scores as stripes; the clean frame itself gives fewer, and a tile drawn
    at random already is not taken twice."""
    import numpy as np

    from services.glitch.classifier import GlitchClassifier, shipped_model
    from services.glitch.tiles import cut
    from training.glitch import corrupt

    pairs = game.sampled_pairs(shared_data / "media" / "openarena_dm2.mp4", every_s=5.0)[:2]
    (_, frame, nxt), _ = pairs
    miner = GlitchClassifier(shipped_model("int8"), intra_threads=1)
    bad = corrupt.read_as(frame, nxt, frame.shape[1] + 7, frame.shape[0])
    found = game.hard_tiles(bad, miner, [])
    assert len(found) >= 6, f"{len(found)} of 24 tiles of a wrong-width read scored {game.HARD_SCORE} stripes or more"
    scores = miner.tile_probabilities(np.stack(found))[:, corrupt.KINDS.index("stripes")]
    assert scores.min() >= game.HARD_SCORE
    assert len(game.hard_tiles(frame, miner, [])) < len(found)
    tiles, _ = cut(bad)
    drawn = [t for t in tiles if any(np.array_equal(t, f) for f in found)][:2]
    assert len(game.hard_tiles(bad, miner, drawn)) == len(found) - 2


def test_a_synthetic_only_run_draws_its_clean_tiles_as_model_5_did() -> None:
    """Model 8's clean pools cost no random draw when there is one pool (model 5's recipe stays reproducible)."""
    import numpy as np

    from training.glitch import train

    rng, twin = np.random.default_rng(1), np.random.default_rng(1)
    pool = np.arange(10)
    assert train._clean_pool([pool], np.asarray([1.0]), rng) is pool
    assert rng.random() == twin.random()
    pools = [np.arange(3), np.arange(3, 6), np.arange(6, 9)]
    picked = {id(train._clean_pool(pools, np.asarray(list(train.CLEAN_POOLS.values())), rng)) for _ in range(200)}
    assert picked == {id(p) for p in pools}
