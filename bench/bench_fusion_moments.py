"""Moment tracker benchmark: what finding moments at 1 s costs per window, against the window rule.

Run: `python bench/bench_fusion_moments.py [--hours 4]`

A stream of `--hours` of 10 s windows with 1 s values (loudness, onsets, motion, chat; a planted
moment every 15-40 s, chat reacting 2-10 s later) goes through HighlightTracker twice in the
same run: with the 1 s values (moments) and without them (the window rule, the baseline).
Printed: microseconds per window for both and their ratio, the highlights found, and whether
the cost per window stays flat over the stream (last hour against the first: the tracker keeps
a bounded history).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from services.fusion.highlights import HighlightTracker, ScoredWindow  # noqa: E402


def stream(hours: float, seed: int = 0) -> tuple[list[ScoredWindow], int]:
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    loud, onset = -40 + rng.normal(0, 1, n), np.abs(rng.normal(0.5, 0.4, n))
    motion, chat = np.abs(rng.normal(0.4, 0.1, n)), rng.poisson(1.0, n).astype(float)
    t, moments = float(rng.uniform(10, 20)), 0
    while t + 20 < n:
        a, length, lag = int(t), int(rng.integers(3, 8)), int(rng.integers(2, 10))
        loud[a], onset[a] = -12.0, 25.0
        motion[a : a + length] = 6.0
        chat[a + lag : a + lag + 6] = 7.0
        moments += 1
        t += float(rng.uniform(15, 40))
    windows = []
    for i in range(n // 10):
        s = slice(10 * i, 10 * i + 10)
        high = motion[s].max() > 3 or chat[s].max() > 5
        features = {}
        for name, values in (("audio.loudness_s", loud), ("audio.onset_s", onset), ("vision.motion_s", motion), ("chat.chat_messages_s", chat)):
            features.update({f"{name}{k}": float(v) for k, v in enumerate(values[s])})
        windows.append(ScoredWindow(i, 10.0 * i, 10.0 * i + 10, 0.9 if high else 0.1, (), (), features))
    return windows, moments


def run(windows: list[ScoredWindow]) -> tuple[float, list[float], int]:
    tracker = HighlightTracker()
    per: list[float] = []
    found = 0
    t0 = time.perf_counter()
    for w in windows:
        a = time.perf_counter()
        found += len(tracker.add(w))
        per.append(time.perf_counter() - a)
    found += len(tracker.finish())
    return time.perf_counter() - t0, per, found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=4.0)
    args = p.parse_args()
    windows, planted = stream(args.hours)
    plain = [ScoredWindow(w.window, w.start_s, w.end_s, w.score) for w in windows]
    moment_s, per, found = run(windows)
    window_s, _, runs = run(plain)
    n = len(windows)
    hour = min(360, n // 2)
    first, last = np.mean(per[:hour]), np.mean(per[-hour:])
    print(f"{n} windows ({args.hours:g} h), {planted} planted moments")
    print(f"moments: {1e6 * moment_s / n:8.1f} us/window, {found} highlights")
    print(f"windows: {1e6 * window_s / n:8.1f} us/window, {runs} highlights (the window rule, baseline)")
    print(f"ratio moments / windows: {moment_s / window_s:.1f}; last hour / first hour per window: {last / first:.2f}")


if __name__ == "__main__":
    main()
