"""Health benchmark: the stream-health checks' cost per glitch frame and per media second, one core.

The MEDIA messages of real gameplay (openarena_dm2.mp4: 60 s, 1280x720, 30 fps, AAC) are made
once with ingest's real decoder (2 glitch frames a second at 1280x720, every frame's signal, 1 s
audio chunks at 32 kHz); then `StreamHealth` is fed them, timed in CPU seconds of this process
(time.process_time, so a shared machine inflates them less than wall time). The baseline,
measured in the same run, is decoding the same file with PyAV on one thread: the ratio says
what health adds to ingest's own decode.

    PYTHONPATH=. .venv/bin/python bench/bench_health.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.glitch.health.monitor import StreamHealth, feed  # noqa: E402
from training.glitch.health_media import media  # noqa: E402

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"


def cpu_best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def decode(path: Path) -> None:
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "NONE"
        for _ in c.decode(video=0):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file", default="openarena_dm2.mp4")
    args = ap.parse_args()
    path = MEDIA / args.file
    if not path.exists():
        raise SystemExit(f"needs {path} (the shared test media)")
    msgs = media(path)
    frames = sum(1 for k, _ in msgs if k == "frames_glitch")
    seconds = max(m.end_s for k, m in msgs if k == "windows")

    def health() -> None:
        h = StreamHealth()
        for kind, m in msgs:
            feed(h, kind, m)

    def pictures() -> None:
        h = StreamHealth()
        for kind, m in msgs:
            if kind == "frames_glitch":
                feed(h, kind, m)

    def sound() -> None:
        h = StreamHealth()
        for kind, m in msgs:
            if kind == "audio":
                feed(h, kind, m)

    total, pic, aud = (cpu_best(f, args.repeat) for f in (health, pictures, sound))
    base = cpu_best(lambda: decode(path), 1)
    print(f"{args.file}: {seconds:.1f} s of media, {frames} glitch frames ({frames / seconds:.1f}/s), {len(msgs)} messages")
    print(f"health, all checks: {total:.3f} CPU s = {seconds / total:.0f} media s per CPU s, {frames / total:.0f} glitch frames/s/core")
    print(f"  picture checks (black, size): {pic / frames * 1e3:.2f} ms per 1280x720 frame = {frames / pic:.0f} frames/s/core")
    print(f"  audio checks (silence, loudness, gap, drift): {aud / seconds * 1e3:.2f} ms per media second")
    print(f"baseline, PyAV decode of every frame (1 thread): {base:.2f} CPU s; health / decode = {total / base:.4f}")


if __name__ == "__main__":
    main()
