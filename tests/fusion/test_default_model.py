"""The shipped default model on a generated stream it never saw, with features made by the
analysers' real code (ingest decode, vision ONNX models, audio meters, chat aggregator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.fusion.highlights import HighlightConfig, HighlightTracker, ScoredWindow
from services.fusion.model import FusionModel, choose
from training.fusion import extract, records, synth
from training.fusion.labels import Interval, window_label

MODELS = Path(__file__).resolve().parents[2] / "services" / "fusion" / "models"
SEED = 9100  # training uses seeds 1000.., the card's held-out set 5000..


@pytest.fixture(scope="module")
def stream(tmp_path_factory, shared_data):
    from services.vision.runtime import VisionModels

    plan = synth.plan_stream("unseen", SEED, 64.5, shared_data / "sounds", n_highlights=2)
    media, chat = synth.write_stream(plan, tmp_path_factory.mktemp("fusion-unseen"), fps=15)
    recs = extract.extract(media, plan.stream_id, VisionModels(intra_threads=2), chat)
    return plan, recs


@pytest.mark.slow
def test_the_analysers_give_one_record_per_window_and_modality(stream):
    plan, recs = stream
    n = int(plan.duration // 10)
    for modality in ("vision", "audio", "chat"):
        windows = sorted(r.window for r in recs if records.MODALITY_NAMES[r.modality] == modality)
        assert windows[:n] == list(range(n)), modality


@pytest.mark.slow
def test_default_models_find_the_planted_highlights(stream):
    plan, recs = stream
    rows = records.to_rows(recs)
    truth = [Interval(plan.stream_id, m.start, m.end) for m in plan.highlights]
    models = [FusionModel.load(MODELS / "default.json"), FusionModel.load(MODELS / "default_av.json")]
    for present in ({"vision", "audio", "chat"}, {"vision", "audio"}):
        model = choose(models, present)
        tracker = HighlightTracker(HighlightConfig(threshold=model.threshold))
        spans = []
        labels, scores = [], []
        for (sid, w), row in sorted(rows.items()):
            values = {k: v for k, v in row["features"].items() if k.split(".", 1)[0] in present}
            p = model.predict(values).probability
            labels.append(window_label(truth, sid, row["start_s"], row["end_s"]))
            scores.append(p)
            spans += tracker.add(ScoredWindow(w, row["start_s"], row["end_s"], p))
        spans += tracker.finish()
        best_negative = max(p for p, y in zip(scores, labels) if not y)
        found = [t for t in truth if any(s.start_s < t.end and t.start < s.end_s for s in spans)]
        false = [s for s in spans if not any(s.start_s < t.end and t.start < s.end_s for t in truth)]
        assert len(found) == len(truth), (sorted(present), scores, labels)
        assert len(false) <= 1, (sorted(present), scores, labels)
        assert min(p for p, y in zip(scores, labels) if y) > best_negative or len(false) == 0
