"""Ingest throughput against PyAV decode-only throughput on the same file, plus peak memory per stream.

    python bench/bench_ingest.py [--seconds 20] [--repeats 2]

For generated 720p30 and 1080p30 H.264 + AAC files it times, in the same run:

* decode-only: PyAV demux + decode of every video and audio packet (frame threading on),
  nothing else -- the ceiling for any ingest;
* ingest: the full :class:`services.ingest.pipeline.IngestPipeline` (sampling for the three
  consumers, per-frame signals, audio resampling, windows, clip buffer on disk) drained by
  an asyncio consumer in ``vod`` pacing.

The ratio ingest / decode-only is the figure of merit (goal >= 0.85). Runs alternate and
the best of ``--repeats`` is kept for each. Peak memory per stream is the rise of the peak
RSS (VmHWM) over the RSS before the ingest, in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.clips import ClipBufferConfig  # noqa: E402
from services.ingest.decode import DecodeConfig  # noqa: E402
from services.ingest.pipeline import IngestConfig, IngestPipeline  # noqa: E402
from streamsight.synth import make_media  # noqa: E402

SEGMENTS = [(0, 4, "still"), (4, 10, "pan"), (10, 14, "action"), (14, 20, "pan")]


def decode_only(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    frames = 0
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        v.codec_context.thread_type = "AUTO"
        for packet in c.demux(v, a):
            for frame in packet.decode():
                frames += frame is not None and packet.stream is v
    return time.perf_counter() - t0, frames


async def _ingest(path: Path, clip_dir: Path) -> int:
    config = IngestConfig(decode=DecodeConfig(clip_buffer=ClipBufferConfig(directory=clip_dir)))
    pipeline = IngestPipeline(str(path), config)
    async for _ in pipeline.items():
        pass
    if pipeline.clip_buffer is not None:
        pipeline.clip_buffer.remove()
    return pipeline.stats.frames_decoded


def ingest(path: Path, clip_dir: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    frames = asyncio.run(_ingest(path, clip_dir))
    return time.perf_counter() - t0, frames


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_delta_mb(path: Path, clip_dir: Path) -> float | None:
    """Peak RSS rise of one ingest, measured in a fresh interpreter (so no earlier run's heap is reused)."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(clip_dir)],
                         capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _memory_child(path: Path, clip_dir: Path) -> None:
    asyncio.run(asyncio.sleep(0))  # import-time and event-loop memory belong to the baseline
    before = _status_kb("VmRSS")
    ingest(path, clip_dir)
    print((_status_kb("VmHWM") - before) / 1024)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        _memory_child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    rows = []
    for name, (w, h) in (("720p30", (1280, 720)), ("1080p30", (1920, 1080))):
        path = work / f"{name}.mp4"
        t0 = time.perf_counter()
        make_media(path, duration=args.seconds, width=w, height=h, fps=30, segments=SEGMENTS, preset="veryfast")
        gen = time.perf_counter() - t0
        decode_only(path)  # warm the page cache and the codec
        base, ing = [], []
        for _ in range(args.repeats):
            base.append(decode_only(path))
            ing.append(ingest(path, work / "clips"))
        (tb, fb), (ti, fi) = min(base), min(ing)
        assert fb == fi, f"frame counts differ: decode-only {fb}, ingest {fi}"
        mem = peak_rss_delta_mb(path, work / "clips")
        rows.append((name, fb, fb / tb, fi / ti, (fi / ti) / (fb / tb), mem, gen))
    print(f"\n{'file':9} {'frames':>6} {'decode fps':>11} {'ingest fps':>11} {'ratio':>6} {'peak RSS MB':>12}")
    for name, n, fb, fi, ratio, mem, _ in rows:
        mem_s = f"{mem:12.1f}" if mem is not None else f"{'n/a':>12}"
        print(f"{name:9} {n:6d} {fb:11.1f} {fi:11.1f} {ratio:6.3f} {mem_s}")
    print(f"\n(goal: ratio >= 0.85; files generated in {', '.join(f'{r[6]:.1f} s' for r in rows)}; "
          f"{av.__version__=}, cores available: {len(__import__('os').sched_getaffinity(0))})")


if __name__ == "__main__":
    main()
