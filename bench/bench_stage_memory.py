"""Stage memory benchmark: each service's RSS at rest, and MB per active stream.

The whole stack runs as `streamsight up` runs it (every service in its own process, the
embedded nats-server), on an event loop of its own thread (streamsight.app.stack). One
warm-up job is run first (models, codecs and pools are loaded once); the resident memory of
every process is then read from /proc: the rest level. Then N = 1, 2, 4 jobs are run at once
(720p H.264 with audio: the first seconds of openarena_dm2.mp4, or a generated 1280x720 clip
when ../shared is absent), every process's RSS sampled every 0.2 s; what each holds per
active stream is (peak_N - rest) / N. After each round the rest level is read again, so
memory a round kept shows up there.

    .venv/bin/python bench/bench_stage_memory.py [--seconds 10] [--streams 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import av

from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.app.stack import running_stack
from streamsight.config import env_name
from streamsight.app.supervisor import Supervisor

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media" / "openarena_dm2.mp4"
SAMPLE_S = 0.2
SETTLE_S = 3.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def pids(sup: Supervisor) -> dict[str, int]:
    out = {name: child["pid"] for name, child in sup.state()["services"].items() if child["pid"]}
    out["nats-server"] = sup.nats.process.pid
    return out


def cut(source: Path, seconds: float, out: Path) -> Path:
    """The first `seconds` of `source`, its packets copied (no re-encoding)."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
        for packet in src.demux(*[src.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            if packet.pts is not None and float(packet.pts * packet.time_base) >= seconds:
                if packet.stream.type == "video" and packet.is_keyframe:
                    break  # past the end at a keyframe: stop cleanly
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return out


def media(seconds: float, folder: Path) -> tuple[Path, str]:
    if MEDIA.is_file():
        return cut(MEDIA, seconds, folder / "clip.mp4"), f"{MEDIA.name}, first {seconds:g} s (1280x720 H.264 + AAC)"
    from streamsight.app.synth import make_media

    path = folder / "clip.mp4"
    make_media(path, duration=seconds, width=1280, height=720)
    return path, f"generated {seconds:g} s 1280x720 clip (../shared absent)"


class Sampler:
    """Every process's highest RSS while running, sampled on a thread."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs
        self.peak = {name: rss_mb(pid) for name, pid in procs.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            for name, pid in self.procs.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def jobs(sup: Supervisor, clip: Path, n: int, out: Path, tag: str) -> None:
    gateway = sup.addresses()["gateway"]
    runs = [analyze(JobOptions(source=str(clip), out=out / f"{tag}-{k}", gateway=gateway, wait_s=600, stream_id=f"mem-{tag}-{k}"),
                    Progress(io.StringIO())) for k in range(n)]
    await asyncio.gather(*runs)
    for k in range(n):
        doc = json.loads((out / f"{tag}-{k}" / "report.json").read_text())
        if doc["state"] != "ended":
            raise SystemExit(f"job {tag}-{k} did not end: {doc.get('error')}")


def at_rest(procs: dict[str, int]) -> dict[str, float]:
    time.sleep(SETTLE_S)
    return {name: rss_mb(pid) for name, pid in procs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each job's clip")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip, desc = media(args.seconds, folder)
        with (folder / "stack.log").open("w") as log, running_stack(folder / "var", log, extra_env={env_name("gateway", "local_roots"): json.dumps([str(folder)])}) as sup:
            procs = pids(sup)
            asyncio.run(jobs(sup, clip, 1, folder, "warm"))
            rest = at_rest(procs)
            first_rest = dict(rest)
            rows: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
            for n in args.streams:
                with Sampler(procs) as sampler:
                    started = time.monotonic()
                    asyncio.run(jobs(sup, clip, n, folder, f"n{n}"))
                    took = time.monotonic() - started
                rows[n] = (dict(sampler.peak), rest)
                print(f"N={n}: {n} job(s) of {desc} in {took:.0f} s", flush=True)
                rest = at_rest(procs)
            final_rest = rest
    names = sorted(procs)
    print(f"\nRSS per process (MB): rest after a warm-up job; per active stream = (peak_N - rest) / N; {desc}")
    header = f"{'process':<12}{'rest':>8}" + "".join(f"{'peak N=' + str(n):>11}{'/stream':>9}" for n in args.streams) + f"{'rest end':>10}"
    print(header)
    for name in names:
        cells = ""
        for n in args.streams:
            peak, before = rows[n]
            cells += f"{peak[name]:>11.0f}{(peak[name] - before[name]) / n:>9.1f}"
        print(f"{name:<12}{first_rest[name]:>8.0f}{cells}{final_rest[name]:>10.0f}")


if __name__ == "__main__":
    main()
