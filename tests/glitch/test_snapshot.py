"""A stream's glitch state saved and read back after every message gives the very events of an
uninterrupted run (a takeover by another replica is such a read), thumbnails byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.glitch.detector import DetectorConfig, Signal
from services.glitch.health.monitor import HealthConfig, StreamHealth, feed
from services.glitch.snapshot import ResumableDetector, SnapshotError, dumps, loads
from streamsight.windows import WindowBounds
from training.glitch.health_media import SHARED, media, recode_audio

from .conftest import TEST_SEEDS, encode, held_out_scene, plant

GAME = SHARED / "media" / "openarena_dm2.mp4"


def scores(msgs, classifier) -> dict[int, object]:
    """The classifier's score of each glitch frame (by position), made once for both runs."""
    frames = [(i, np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3)) for i, (k, m) in enumerate(msgs) if k == "frames_glitch"]
    return dict(zip((i for i, _ in frames), classifier.classify([f for _, f in frames])))


def run(msgs, scored: dict[int, object] | None, save_every: int | None) -> tuple[list, list, list[int]]:
    """Glitch and health events of `msgs` as the service makes them (`scored` None: health only);
    with `save_every`, the state is written and read back after that many messages each time.
    Also the snapshot sizes."""
    dcfg, hcfg = DetectorConfig(report_freeze=False), HealthConfig()
    state = {"detector": ResumableDetector(dcfg), "health": StreamHealth(hcfg), "bounds": WindowBounds()}
    glitches, health, sizes = [], [], []
    for n, (kind, m) in enumerate(msgs, 1):
        i = n - 1
        det = state["detector"]
        health += feed(state["health"], kind, m)
        if kind == "frames_glitch" and scored is not None:
            rgb = np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3)
            state["bounds"].saw_media(m.pts_s)
            det.add_frame(m.pts_s, scored[i], rgb)
        elif kind == "signals" and scored is not None:
            det.add_signals([Signal(s.pts_s, s.is_corrupt, s.frames_missing, s.frozen, s.keyframe) for s in m.signals], m.decode_errors)
            glitches += det.advance()
        elif kind == "windows" and scored is not None:
            state["bounds"].check(m)
            glitches += det.finish() if m.last else det.advance(m.end_s)
        if save_every and n % save_every == 0:
            det.thumbnails()
            data = dumps(state)
            sizes.append(len(data))
            state = loads(data, dcfg, hcfg)
    return glitches, health, sizes


@pytest.fixture(scope="module")
def planted_msgs(tmp_path_factory):
    frames = held_out_scene(TEST_SEEDS[0], 14.0)
    frames = plant(plant(frames, "green", 3.0, seed=3), "grey", 9.0, seed=9)
    return media(encode(frames, tmp_path_factory.mktemp("snap") / "planted.mkv"))


def test_glitch_incidents_are_the_same_read_back_after_every_message(classifier, planted_msgs) -> None:
    scored = scores(planted_msgs, classifier)
    whole, _, _ = run(planted_msgs, scored, None)
    resumed, _, sizes = run(planted_msgs, scored, 1)
    assert [e.phase for e in whole].count("start") == 2, [(e.phase, e.kind, e.start_s) for e in whole]
    assert resumed == whole  # every field, the END's thumbnail JPEG included
    assert all(e.thumbnail_jpeg[:2] == b"\xff\xd8" for e in resumed if e.phase != "update")
    assert max(sizes) < 256_000, f"snapshots up to {max(sizes)} bytes"


@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
def test_health_incidents_are_the_same_read_back_every_few_messages(tmp_path: Path) -> None:
    def mute(x, t, rate):  # 5 s of silence from 8 s of real game sound
        n = np.arange(x.shape[1]) / rate + t
        x[:, (n >= 8.0) & (n < 13.0)] = 0.0
        return x

    # 32 s: the loudness check's own-level history (30 s) is in the state by the end
    msgs = media(recode_audio(GAME, tmp_path / "muted.mkv", mute, until_s=32.0))
    _, whole, _ = run(msgs, None, None)
    _, resumed, sizes = run(msgs, None, 3)
    assert [e.kind for e in whole if e.phase == "start"] == ["silence"], [(e.phase, e.kind, e.start_s) for e in whole]
    assert resumed == whole
    assert max(sizes) < 256_000, f"snapshots up to {max(sizes)} bytes"


def test_a_snapshot_cannot_make_other_objects_nor_hold_bad_data() -> None:
    cfg, hcfg = DetectorConfig(), HealthConfig()
    evil = json.dumps({"format": 1, "state": {"o": "Popen", "s": {"args": "rm -rf /"}}}).encode()
    with pytest.raises(SnapshotError, match="not one a snapshot may hold"):
        loads(evil, cfg, hcfg)
    for bad in (b"\x80garbage", b"[]", json.dumps({"format": 99, "state": {}}).encode(),
                json.dumps({"format": 1, "state": {"a": "bm90IGFuIGFycmF5"}}).encode()):
        with pytest.raises(SnapshotError):
            loads(bad, cfg, hcfg)
    with pytest.raises(SnapshotError, match="not a class"):
        dumps({"x": object()})
