"""The frame label for packet damage: visible damage, global (PSNR) or local (wrong blocks)."""

from __future__ import annotations

import numpy as np

from training.glitch import damage

STEP, BLOCK = damage.ERROR_STEP, damage.BLOCK // damage.ERROR_STEP


def frame(error: np.ndarray) -> damage.DamagedFrame:
    h, w = error.shape[0] * STEP, error.shape[1] * STEP
    blank = np.zeros((h, w, 3), np.uint8)
    return damage.DamagedFrame(0, blank, blank, damage.mse_to_db(float(error.mean())), error, False, damage.visible_blocks(error))


def test_a_few_far_off_blocks_make_a_frame_corrupted_though_its_psnr_is_high() -> None:
    error = np.zeros((360, 640), np.float32)  # a 1280x720 frame's error map
    error[:BLOCK, : 2 * BLOCK] = 50.0**2  # two 16x16 blocks 50 off: a smeared sprite
    f = frame(error)
    assert f.psnr_db > 40.0 and f.visible_blocks == 2 and f.corrupted


def test_one_block_or_faint_error_everywhere_is_not_corrupted() -> None:
    one = np.zeros((360, 640), np.float32)
    one[:BLOCK, :BLOCK] = 80.0**2
    faint = np.full((360, 640), (damage.VISIBLE_BLOCK_RMSE - 5) ** 2 / 20, np.float32)  # ~33 dB over the frame
    assert frame(one).visible_blocks == 1 and not frame(one).corrupted
    assert frame(faint).psnr_db > damage.CORRUPT_PSNR_DB and frame(faint).visible_blocks == 0 and not frame(faint).corrupted


def test_heavy_error_over_the_frame_is_corrupted_by_psnr() -> None:
    error = np.full((180, 320), 20.0**2, np.float32)  # 22 dB, every block under the local threshold
    f = frame(error)
    assert f.psnr_db < damage.CORRUPT_PSNR_DB and f.visible_blocks == 0 and f.corrupted
