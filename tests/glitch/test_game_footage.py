"""Real gameplay raises no glitch: openarena_dm2.mp4 with its HUD, kill feed and four death-screen
scoreboards (rows of names and numbers over the game, which the issue saw called "stripes" in
other footage) goes through ingest's real decoder, the shipped classifier and the detector with
the service's settings: no incident, and the stripes score stays under the open score.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.detector import DetectorConfig, Signal, StreamDetector
from training.glitch.health_media import SHARED, media

GAME = SHARED / "media" / "openarena_dm2.mp4"


@pytest.mark.slow
@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
def test_real_gameplay_with_scoreboards_raises_no_glitch(classifier) -> None:
    config = DetectorConfig(report_freeze=False)
    detector, events, stripes = StreamDetector(config), [], []
    for kind, m in media(GAME):
        if kind == "frames_glitch":
            rgb = np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3)
            score = classifier.classify([rgb])[0]
            stripes.append(score.kinds["stripes"])
            assert not score.misread, f"shear/chroma check fired at {m.pts_s} s"
            detector.add_frame(m.pts_s, score, rgb)
        elif kind == "signals":
            detector.add_signals([Signal(s.pts_s, s.is_corrupt, s.frames_missing, s.frozen, s.keyframe) for s in m.signals], m.decode_errors)
            events += detector.advance()
        elif kind == "windows" and m.last:
            events += detector.finish()
    assert len(stripes) == 120
    assert events == [], [(e.phase, e.kind, e.start_s) for e in events]
    assert max(stripes) < config.open_score, max(stripes)
