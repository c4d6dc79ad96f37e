"""Motion CNN quality on real footage it was never trained on, through the service runtime.

Held out from training (see training/vision/train_motion_cnn.py): all of Big Buck Bunny and
vtest.avi from frame 550 on. Labels were set by watching the footage (training/vision/footage.py
documents them; they are restated here so the test stands on its own).
"""

from __future__ import annotations

import numpy as np
import pytest

VTEST_HELD_OUT_FROM = 550
BBB_ACTION, BBB_CALM = (0.0, 2.4), (2.8, 5.28)
ACCURACY_THRESHOLD = 0.8


def held_out_pairs(vtest_gray, bbb_gray):
    pairs, labels = [], []
    v = vtest_gray[0]
    for t in range(VTEST_HELD_OUT_FROM, len(v) - 10, 4):
        pairs += [(v[t], v[t + 2]), (v[t], v[t + 10])]  # 5 fps: calm; 1 s apart (10x fast-forward): action
        labels += [0, 1]
    b, times = bbb_gray
    for t in range(len(b) - 5):
        t0, t1 = times[t], times[t + 5]
        if BBB_ACTION[0] <= t0 and t1 <= BBB_ACTION[1]:
            pairs.append((b[t], b[t + 5]))
            labels.append(1)
        elif BBB_CALM[0] <= t0 and t1 <= BBB_CALM[1]:
            pairs.append((b[t], b[t + 5]))
            labels.append(0)
    return pairs, np.asarray(labels)


@pytest.mark.slow
def test_motion_cnn_accuracy_on_held_out_footage(models, vtest_gray, bbb_gray):
    pairs, labels = held_out_pairs(vtest_gray, bbb_gray)
    assert 150 < len(labels) and 0.3 < labels.mean() < 0.7
    probs = models.motion_probability(models.flow_pairs(pairs))
    accuracy = float(((probs > 0.5) == labels).mean())
    assert accuracy >= ACCURACY_THRESHOLD, accuracy
    # both classes are found, not one class everywhere
    assert probs[labels == 1].mean() > probs[labels == 0].mean() + 0.3
