"""Flow accuracy on known motions of real frames, agreement with OpenCV DIS and with torch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

MARGIN = 28  # px: beyond the largest test shift, so only pixels visible in both frames count
EPE_BOUND = 0.35  # px, average endpoint error on every case (measured 0.03-0.2)
DIS_SLACK = 0.3  # px: our EPE may exceed DIS's by at most this much


def affine_case(base: np.ndarray, kind: str, param) -> tuple[np.ndarray, np.ndarray]:
    """Second frame and ground-truth flow for a translation (dx,dy), rotation (deg) or zoom."""
    h, w = base.shape
    if kind == "translate":
        a = np.float32([[1, 0, param[0]], [0, 1, param[1]]])
    elif kind == "rotate":
        a = cv2.getRotationMatrix2D((w / 2, h / 2), param, 1.0)
    else:
        a = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, param)
    second = cv2.warpAffine(base, cv2.invertAffineTransform(a), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    truth = np.stack([a[0, 0] * xs + a[0, 1] * ys + a[0, 2] - xs, a[1, 0] * xs + a[1, 1] * ys + a[1, 2] - ys])
    return second, truth


def epe(flow: np.ndarray, truth: np.ndarray) -> float:
    d = (flow - truth)[:, MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.sqrt((d**2).sum(0)).mean())


CASES = [
    ("translate", (3.5, -2.25)),
    ("translate", (12.3, 7.6)),
    ("translate", (-20.0, 4.0)),
    ("rotate", 2.0),
    ("rotate", 5.0),
    ("zoom", 1.05),
]


@pytest.mark.parametrize("kind,param", CASES)
def test_flow_endpoint_error_on_real_frames(models, vtest_gray, bbb_gray, kind, param):
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for base in (vtest_gray[0][100], bbb_gray[0][60]):
        second, truth = affine_case(base, kind, param)
        ours = models.flow(base[None], second[None])[0]
        theirs = dis.calc(base, second, None).transpose(2, 0, 1)
        assert epe(ours, truth) < EPE_BOUND, (kind, param, epe(ours, truth))
        assert epe(ours, truth) < epe(theirs, truth) + DIS_SLACK
        assert epe(ours, theirs) < EPE_BOUND + DIS_SLACK


def test_flow_on_real_motion_is_close_to_dis(models, vtest_gray):
    frames = vtest_gray[0]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    a, b = frames[200], frames[202]
    ours = models.flow(a[None], b[None])[0]
    theirs = dis.calc(a, b, None).transpose(2, 0, 1)
    mag = np.hypot(*theirs)
    moving = mag > 1.0
    assert moving.mean() > 0.01  # people are walking
    # on the moving pixels the two methods agree in direction
    cos = (ours[:, moving] * theirs[:, moving]).sum(0) / (np.hypot(*ours[:, moving]) * mag[moving] + 1e-6)
    assert np.median(cos) > 0.8
    assert abs(np.hypot(*ours).mean() - mag.mean()) < 0.5


def test_onnx_flow_matches_torch(models, vtest_gray):
    from training.vision.flow import PyramidalLucasKanade

    frames = vtest_gray[0]
    a, b = frames[[10, 300]], frames[[12, 302]]
    with torch.no_grad():
        ref = PyramidalLucasKanade().eval()(torch.from_numpy(a[:, None].astype(np.float32)), torch.from_numpy(b[:, None].astype(np.float32))).numpy()
    out = models.flow(a, b)
    assert out.shape == ref.shape == (2, 2) + a.shape[1:]
    assert np.abs(out - ref).max() < 1e-2


def test_flow_pairs_batches_mixed_sizes(models, vtest_gray, bbb_gray):
    v, b = vtest_gray[0], bbb_gray[0]
    pairs = [(v[0], v[2]), (b[0], b[5]), (v[50], v[52])]
    flows = models.flow_pairs(pairs)
    for (x, y), f in zip(pairs, flows):
        assert f.shape == (2,) + x.shape
        np.testing.assert_allclose(f, models.flow(x[None], y[None])[0], atol=1e-3)


def test_flow_rejects_bad_input(models):
    with pytest.raises(ValueError, match="same shape"):
        models.flow(np.zeros((1, 64, 64)), np.zeros((1, 64, 80)))
    with pytest.raises(ValueError, match="too small"):
        models.flow(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="one size"):
        models.flow_pairs([(np.zeros((64, 64)), np.zeros((32, 64)))])


def test_flow_session_without_layout_transforms_gives_the_same_flow(models, vtest_gray, bbb_gray):
    # The service opens flow.onnx below onnxruntime's layout transforms (faster for this graph);
    # the flow must be the one the fully optimised session gives, bit for bit, at both sizes.
    from services.vision.runtime import FLOW_MODEL, MODEL_DIR
    from streamsight.inference import create_session

    full = create_session(MODEL_DIR / FLOW_MODEL, 2)
    for frames in (vtest_gray[0], bbb_gray[0]):
        a = frames[[0, 40, 80]][:, None].astype(np.float32)
        b = frames[[2, 42, 82]][:, None].astype(np.float32)
        expected = full.run(None, {"frame1": a, "frame2": b})[0]
        assert np.abs(expected).max() > 0.5  # real motion, not an all-zero field
        assert np.array_equal(models.flow(a[:, 0], b[:, 0]), expected)
