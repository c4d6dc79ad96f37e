"""The glitch detector at ingest's default glitch frame size, on held-out real game footage.

Frame level: real 720p game frames read back with a height 40-96 rows too small (a wrong-stride
read, shown at the source's size) and shrunk to the default size as ingest shrinks them are
called. This is why the default is 1280x720: shrunk to 640x360, the same reads mostly score under
the open score (training/glitch/size_frames.py: 5 of 30 too-small heights called, 22 of 30 at
1280x720).

Incident level: 10 s of openarena_dm2.mp4 (never used in training) at its own 1280x720, with
stripes (a wrong-stride read), green and grey planted for 1 s each at the source's size, as a
broken source makes them, goes through ingest's real pipeline, which shrinks glitch frames to
the default glitch_max_width x glitch_max_height, then the shipped classifier and the detector:
every incident is found with its onset within 1 s and its kind, and nothing else is reported.
(Packet damage is found the same at both sizes: training/glitch/evaluate_sizes.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.detector import DetectorConfig
from services.ingest.settings import IngestSettings
from training.glitch import corrupt, scenes
from training.glitch.evaluate import MEDIA, match, plant_synthetic
from training.glitch.evaluate_sizes import detect, frames_of
from training.glitch.size_frames import frame_pairs

GAME = MEDIA / "openarena_dm2.mp4"
FIELDS = IngestSettings.model_fields
SIZE = (FIELDS["glitch_max_width"].default, FIELDS["glitch_max_height"].default)


@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
def test_too_small_height_reads_of_game_frames_are_called_at_the_default_size(classifier) -> None:
    open_score = DetectorConfig().open_score
    pairs = frame_pairs(GAME, [1.5 + 3.0 * i for i in range(8)])
    called = []
    for (a, b), d in zip(pairs, range(40, 97, 8)):
        bad = corrupt.resize(corrupt.read_as(a, b, 1280, 720 - d), 1280, 720)
        scale = min(1.0, SIZE[0] / 1280, SIZE[1] / 720)  # shrunk to fit, never enlarged, as ingest does
        if scale < 1.0:
            bad = corrupt.resize(bad, round(1280 * scale) // 2 * 2, round(720 * scale) // 2 * 2)
        score = classifier.classify([bad])[0]
        called.append((d, round(score.corrupt, 3), score.corrupt >= open_score or score.misread))
    assert sum(hit for _, _, hit in called) >= 7, called


@pytest.mark.slow
@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
def test_planted_faults_in_720p_game_footage_found_at_the_default_glitch_size(classifier, tmp_path) -> None:
    config, rng = DetectorConfig(report_freeze=False), np.random.default_rng(23)
    frames, fps = frames_of(GAME, 24.0, 34.0)
    assert frames.shape[1:] == (720, 1280, 3)
    planted, truths = plant_synthetic(frames, fps, rng, every_s=2.5)
    assert [t.kind for t in truths] == ["stripes", "green", "grey"]
    path = tmp_path / "planted.mkv"
    scenes.encode(planted, path, crf=23, gop=2 * fps, fps=fps)
    events, seconds, _ = detect(path, SIZE, classifier, config)
    assert seconds >= 9.0
    result = match(truths, events, config.close_after_s)
    assert result["found"] == 3 and result["kind_right"] == 3 and result["false_alarms"] == 0, result
    assert max(result["delays_s"]) <= 1.0, result
