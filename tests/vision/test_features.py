"""Window features: a still scene, a camera pan and a burst of local action order as expected;
real footage (vtest.avi) gives moderate motion; a hard cut is counted."""

from __future__ import annotations

import numpy as np
import pytest

from services.vision.analyzer import StreamAnalyzer, WindowFeatures
from services.vision.features import FEATURE_NAMES, SECOND_PREFIX

FPS = 5.0
H, W = 180, 320


def run_stream(models, frames: list[np.ndarray], fps: float = FPS) -> list[WindowFeatures]:
    analyzer = StreamAnalyzer(models)
    windows: list[WindowFeatures] = []
    for i, frame in enumerate(frames):
        analyzer.submit_flow_frame(frame, i / fps)
    windows += analyzer.flush()
    return windows


def canvas(vtest_gray) -> np.ndarray:
    """A real frame, upscaled so a virtual camera can move over it."""
    import cv2

    return cv2.resize(vtest_gray[0][120], (W * 3, H * 3), interpolation=cv2.INTER_LINEAR)


def noisy(frame: np.ndarray, rng) -> np.ndarray:
    return np.clip(frame.astype(np.float32) + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)


def still_scene(big, rng, n=50):
    return [noisy(big[H : 2 * H, W : 2 * W], rng) for _ in range(n)]


def camera_pan(big, rng, n=50, speed=8):
    return [noisy(big[H : 2 * H, 40 + speed * i : 40 + speed * i + W], rng) for i in range(n)]


def action_burst(big, sprite_src, rng, n=50, burst=range(20, 35)):
    """Still background; during the burst, six patches jump about fast in different directions."""
    base = big[H : 2 * H, W : 2 * W]
    positions = rng.integers(10, [H - 60, W - 60], size=(6, 2)).astype(float)
    velocity = rng.normal(0, 12, size=(6, 2))
    frames = []
    for i in range(n):
        f = base.copy()
        if i in burst:
            positions = np.clip(positions + velocity, 0, [H - 50, W - 50])
            for k, (y, x) in enumerate(positions.astype(int)):
                f[y : y + 50, x : x + 50] = sprite_src[30 + 20 * k : 80 + 20 * k, 100:150]
        frames.append(noisy(f, rng))
    return frames


@pytest.fixture(scope="module")
def scenes(models, vtest_gray, bbb_gray):
    rng = np.random.default_rng(0)
    big = canvas(vtest_gray)
    return {
        "still": run_stream(models, still_scene(big, rng))[0].features,
        "pan": run_stream(models, camera_pan(big, rng))[0].features,
        "action": run_stream(models, action_burst(big, bbb_gray[0][40], rng))[0].features,
    }


def test_every_feature_is_present_and_finite(scenes):
    for feats in scenes.values():
        assert {k for k in feats if not k.startswith(SECOND_PREFIX)} == set(FEATURE_NAMES)
        assert all(np.isfinite(v) for v in feats.values())
        seconds = sorted(int(k[len(SECOND_PREFIX):]) for k in feats if k.startswith(SECOND_PREFIX))
        assert seconds and seconds[0] >= 0 and seconds[-1] <= 9


def test_per_second_motion_follows_the_window_and_the_action(scenes):
    still, action = scenes["still"], scenes["action"]
    per_still = [v for k, v in still.items() if k.startswith(SECOND_PREFIX)]
    per_action = [v for k, v in action.items() if k.startswith(SECOND_PREFIX)]
    # the per-second means average back to the window's mean (each second holds about the same pairs)
    assert np.mean(per_action) == pytest.approx(action["flow_mag_mean"], rel=0.25)
    assert max(per_action) > 3 * max(max(per_still), 0.1)


def test_motion_ordering(scenes):
    still, pan, action = scenes["still"], scenes["pan"], scenes["action"]
    assert still["flow_mag_mean"] < 0.3 and still["moving_fraction"] < 0.02
    assert pan["flow_mag_mean"] > 5 * max(still["flow_mag_mean"], 0.1)
    assert action["flow_mag_max"] > 5.0 > still["flow_mag_max"]
    assert action["flow_mag_mean"] > still["flow_mag_mean"]
    # a pan moves the whole picture one way; local action moves parts in many directions
    assert pan["direction_coherence"] > 0.9
    assert action["direction_coherence"] < 0.6
    assert pan["moving_fraction"] > 0.8 > action["moving_fraction"]
    assert still["motion_prob_max"] < action["motion_prob_max"]
    assert still["motion_prob_mean"] < pan["motion_prob_mean"]
    assert pan["scene_cuts"] == still["scene_cuts"] == 0


def test_pan_speed_is_measured(scenes):
    # the camera moves 8 px per frame interval at 320 px width
    assert scenes["pan"]["flow_mag_mean"] == pytest.approx(8.0, abs=0.8)


def test_real_footage_gives_moderate_motion(models, vtest_gray):
    frames, times = vtest_gray
    take = np.arange(0, len(frames), 2)[:100]  # 10 fps -> the service's 5 fps, 20 s
    windows = run_stream(models, [frames[i] for i in take])
    assert len(windows) == 2
    for w in windows:
        f = w.features
        assert 0.2 < f["flow_mag_mean"] < 3.0  # people walking: visible, not fast
        assert 0.02 < f["moving_fraction"] < 0.5
        assert f["flow_mag_p95"] < 10.0
        assert f["motion_prob_mean"] < 0.5
        assert f["scene_cuts"] == 0
        assert 50 < f["brightness_mean"] < 200


def test_hard_cut_is_counted(models, vtest_gray, bbb_gray):
    v, b = vtest_gray[0], bbb_gray[0]
    frames = [v[2 * i] for i in range(25)] + [b[5 * i] for i in range(25)]
    f = run_stream(models, frames)[0].features
    assert f["scene_cuts"] == 1
    assert f["flow_pairs"] == 48  # the pair across the cut is not measured
    assert f["brightness_change"] > 0


def test_direction_coherence_is_the_mean_unit_vector_of_the_moving_pixels(models, vtest_gray, bbb_gray):
    # flow_pair_stats takes the moving pixels one component at a time (for speed); the value
    # must be exactly the straightforward formula's, on real flows and on a uniform pan
    from services.vision.features import BORDER, MOVING_THRESHOLD, REFERENCE_WIDTH, flow_pair_stats

    v, b = vtest_gray[0], bbb_gray[0]
    flows = list(models.flow(np.stack([v[0], v[40], v[80]]), np.stack([v[2], v[42], v[82]])))
    flows += list(models.flow(np.stack([b[0], b[60]]), np.stack([b[5], b[65]])))
    pan = np.zeros((2, H, W), np.float32)
    pan[0], pan[1] = 3.0, -1.0
    checked = 0
    for flow in flows + [pan]:
        h, w = flow.shape[1:]
        f = flow[:, BORDER : h - BORDER, BORDER : w - BORDER].astype(np.float32) * (REFERENCE_WIDTH / w)
        mag = np.hypot(f[0], f[1])
        moving = mag > MOVING_THRESHOLD
        unit = f[:, moving] / mag[moving]
        expected = float(np.hypot(unit[0].mean(), unit[1].mean())) if moving.sum() >= 0.005 * mag.size else 0.0
        assert flow_pair_stats(flow).coherence == expected
        checked += expected > 0
    assert checked >= 3  # real motion took the coherence path, not only the pan
    assert flow_pair_stats(pan).coherence == pytest.approx(1.0)
