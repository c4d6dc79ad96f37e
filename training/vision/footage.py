"""Real footage for the vision models: decode with PyAV into the service's frame format.

Gray frames are 320 px wide with the height following the aspect ratio (rounded to even),
as ingest delivers them for flow. Labels of real footage were set by watching it:
- vtest.avi (people walking in a hall, 10 fps): calm at the service's 5 fps;
  the same footage sampled 1 s apart (10x fast-forward) is high motion.
- bigbuckbunny.mp4 (25 fps): 0-2.4 s the bunny climbs out of its burrow while the camera
  follows (high motion); 2.8-5.28 s it stands, stretches and yawns (calm).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "media"
FLOW_WIDTH = 320

BBB_ACTION = (0.0, 2.4)
BBB_CALM = (2.8, 5.28)
VTEST_HELD_OUT_FROM = 550  # frame index: vtest frames from here on are never trained on


def gray_frames(path: Path, width: int = FLOW_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """All frames of a file as gray uint8 [T,H,W] and their PTS in seconds [T]."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            height = int(round(frame.height * width / frame.width / 2) * 2)
            frames.append(frame.reformat(width=width, height=height, format="gray").to_ndarray())
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else len(times) / float(stream.average_rate))
    return np.stack(frames), np.asarray(times)


def frame_pairs(frames: np.ndarray, stride: int, start: int = 0, stop: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """All pairs (t, t+stride) with both frames in [start, stop)."""
    stop = len(frames) if stop is None else stop
    return [(frames[t], frames[t + stride]) for t in range(start, stop - stride)]


def bbb_labelled_pairs(media: Path = MEDIA) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Big Buck Bunny pairs 0.2 s apart (the 5 fps interval) with labels 1 = action, 0 = calm."""
    frames, times = gray_frames(media / "bigbuckbunny.mp4")
    pairs, labels = [], []
    for t in range(len(frames) - 5):
        t0, t1 = times[t], times[t + 5]
        if BBB_ACTION[0] <= t0 and t1 <= BBB_ACTION[1]:
            labels.append(1)
        elif BBB_CALM[0] <= t0 and t1 <= BBB_CALM[1]:
            labels.append(0)
        else:
            continue
        pairs.append((frames[t], frames[t + 5]))
    return pairs, np.asarray(labels)
