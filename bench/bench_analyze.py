"""The whole job's speed: `analyze` on a 720p30 file with every service in its own process.

Reports the job's media seconds per wall second (a multiple of real time) and that throughput
as a ratio of PyAV decode-only throughput on the same file, measured in the same run. The
stack is started (and its models loaded) before the clock starts, as it is for a running
`streamsight up`.

    python bench/bench_analyze.py [--seconds 60] [--width 1280 --height 720]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path

import av

from streamsight.app.analyze import JobOptions, Progress, run_job
from streamsight.app.demo import make_chat
from streamsight.app.supervisor import Supervisor
from streamsight.config import env_name
from streamsight.app.synth import SoundEvent, make_media


def decode_only(path: Path) -> float:
    """Seconds PyAV takes to decode every video and audio frame (FFmpeg's default threading)."""
    started = time.perf_counter()
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for _ in container.decode(video=0, audio=0):
            pass
    return time.perf_counter() - started


async def timed_job(sup: Supervisor, source: Path, chat: Path, out: Path, progress: Progress | None = None) -> tuple[float, dict]:
    options = JobOptions(source=str(source), chat=str(chat), out=out, gateway=sup.addresses()["gateway"], wait_s=600)
    started = time.perf_counter()
    results = await run_job(sup.addresses()["gateway"], options, [c.spec.name for c in sup.children], progress or Progress(io.StringIO()))
    took = time.perf_counter() - started
    missing = sum(1 for score in results.scores.values() if score.missing)
    return took, {"windows": len(results.scores), "missing": missing, "highlights": len(results.highlights), "duration": results.duration_s}


def make_inputs(folder: Path, seconds: float, width: int, height: int,
                source: Path | None = None, chat: Path | None = None) -> tuple[Path, Path, float]:
    """The job's file and chat: the given ones, or a generated game-like file with its chat."""
    if source is not None:
        with av.open(str(source)) as container:
            d = float(container.duration / av.time_base)
        return source, chat or make_chat(folder / "chat.jsonl", d, [0.25 * d, 0.7 * d]), d
    d = seconds
    source = make_media(
        folder / "game.mp4", duration=d, width=width, height=height, fps=30,
        segments=[(0.2 * d, 0.3 * d, "action"), (0.5 * d, 0.6 * d, "pan"), (0.7 * d, 0.8 * d, "action")], facecam=True,
    ).path
    return source, make_chat(folder / "chat.jsonl", d, [0.2 * d, 0.7 * d]), d


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, chat, d = make_inputs(folder, args.seconds, args.width, args.height)
        decode_s = min(decode_only(source) for _ in range(2))
        with (folder / "stack.log").open("w") as log:
            sup = Supervisor(folder / "var", free_ports=True, out=log, extra_env={env_name("gateway", "local_roots"): json.dumps([str(folder)])})
            await sup.start()
            try:
                await sup.wait_serving(timeout_s=240)
                job_s, facts = await timed_job(sup, source, chat, folder / "out")
            finally:
                await sup.stop()
    print(f"file: {args.width}x{args.height} 30 fps H.264 + AAC, {d:.0f} s, with chat; services: {', '.join(c.spec.name for c in sup.children)}")
    print(f"decode only (PyAV):  {decode_s:7.2f} s  = {d / decode_s:6.1f}x real time")
    print(f"analyze job:         {job_s:7.2f} s  = {d / job_s:6.1f}x real time  ({facts['windows']} windows scored, {facts['missing']} of them with a modality missing, {facts['highlights']} highlights)")
    print(f"job / decode-only throughput ratio: {decode_s / job_s:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
