"""Two classifiers agreeing on stripes (training.glitch.agreement), on the kept evidence of a real
clean take whose three stripes false alarms the shipped model raised."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from training.glitch import agreement, clean_footage
from training.glitch.evidence import Evidence, load, replay

GALMEVISH = clean_footage.ROOT / "training/glitch/results/clean_evidence/2519d2fc1e002454.88c18d31.jsonl.gz"


def _starts(evidence: Evidence) -> list[float]:
    _, config = clean_footage.service_configs()
    return [i["start_s"] for i in clean_footage.incidents(replay(evidence, config))]


def test_a_model_agreeing_with_itself_changes_nothing_and_a_doubting_one_removes_the_alarms() -> None:
    shipped = load(GALMEVISH)
    assert _starts(shipped) == [39.5, 86.0, 111.0], "the evidence replays to the alarms judged"
    assert _starts(agreement.agree(shipped, shipped)) == [39.5, 86.0, 111.0]
    doubting = Evidence([("f", e[1], dataclasses.replace(e[2], kinds={**e[2].kinds, "stripes": 0.5},
                                                        stripes_grid=None if e[2].stripes_grid is None else e[2].stripes_grid * 0.5))
                         if e[0] == "f" else e for e in shipped.entries], dict(shipped.meta))
    assert _starts(agreement.agree(shipped, doubting)) == []
    lowered = agreement.agree(shipped, doubting).scores()
    assert all(s.kinds["stripes"] <= 0.5 for s in lowered.values())
    assert {t: s.kinds.get("grey") for t, s in lowered.items()} == {t: s.kinds.get("grey") for t, s in shipped.scores().items()}, \
        "only stripes is taken from the other model"


def test_evidence_of_another_file_is_refused() -> None:
    shipped = load(GALMEVISH)
    shifted = Evidence([("f", e[1] + 0.25, e[2]) if e[0] == "f" else e for e in shipped.entries], dict(shipped.meta))
    with pytest.raises(ValueError, match="not the same file"):
        agreement.agree(shipped, shifted)


def test_a_stripes_tiles_cache_refuses_evidence_another_model_made() -> None:
    """`stripes_tiles --cache --model`: a cached file names the model whose scores it holds; replaying
    it for another model would measure the wrong model."""
    from training.glitch.stripes_tiles import load_made_by

    made_by = load(GALMEVISH).meta["model_sha256"]
    assert load_made_by(GALMEVISH, made_by).frames == load(GALMEVISH).frames
    with pytest.raises(SystemExit, match="give this model its own --cache folder"):
        load_made_by(GALMEVISH, "0" * 64)


def test_a_lower_stripes_gate_opens_more_incidents_on_the_same_evidence_and_changes_nothing_else() -> None:
    """`agreement --gates`: model 5 alone scores ordinary frames of this take at 0.9-0.95 stripes, so a
    gate under 0.95 calls more of them (the reason the shipped gate stays at 0.95)."""
    shipped = load(GALMEVISH)
    _, config = clean_footage.service_configs()
    assert agreement.at_gate(config, 0.95) == config
    lowered = agreement.at_gate(config, 0.9)
    assert (lowered.open_score, lowered.stripes_tile_score) == (0.9, 0.9)
    assert dataclasses.replace(lowered, open_score=config.open_score, stripes_tile_score=config.stripes_tile_score) == config
    at_95 = _starts(shipped)
    at_90 = [i["start_s"] for i in clean_footage.incidents(replay(shipped, lowered))]
    assert set(at_95) <= set(at_90) and len(at_90) >= len(at_95) + 3, at_90


def test_clean_takes_whose_evidence_is_gone_are_named_not_judged(tmp_path) -> None:
    """Evidence of a model not shipped was kept under var/ and left with its machine: such a take is
    listed apart instead of failing the replay or counting as clean."""
    def results(name: str) -> Path:
        entries = [{"sha256": "a" * 64, "map": "oa_am_galmevish", "media_seconds": 125.0, "evidence": str(GALMEVISH)},
                   {"sha256": "b" * 64, "map": "oa_elsewhere", "media_seconds": 125.0, "evidence": str(tmp_path / "gone.jsonl.gz")}]
        path = tmp_path / name
        path.write_text(json.dumps({"entries": entries}))
        return path

    report = agreement.clean(results("a.json"), results("b.json"))
    assert report == {"takes": {"oa_am_galmevish": [39.5, 86.0, 111.0]}, "seconds": 125.0, "false_alarms": 3, "evidence_gone": ["oa_elsewhere"]}
