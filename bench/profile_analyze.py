"""Where the whole file job's core-seconds go: per service process and per stage inside it.

Runs the same job as bench_analyze.py (`analyze` on a 720p30 file with chat, every service in
its own process, the stack started before the clock) and reads, around the job:

- each process's CPU seconds (user + system, all threads) from /proc: the services, nats-server
  and this process (the `analyze` client);
- with ``--py-spy PATH`` (py-spy is not a dependency: ``pip install --target DIR py-spy``), a
  sampling profile of every service during the job. py-spy samples only threads that are on a
  CPU, so samples per frame are proportional to its core-seconds; each sample is charged to the
  innermost frame of the project's own code on its stack (a C call such as FFmpeg's decode or an
  ONNX Runtime run is charged to the project line that made it).

    python bench/profile_analyze.py [--seconds 60] [--source FILE --chat FILE] [--py-spy /tmp/pyspy/bin/py-spy]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analyze import decode_only, make_inputs, timed_job  # noqa: E402

from streamsight.app.analyze import Progress  # noqa: E402

from streamsight.app.supervisor import Supervisor  # noqa: E402
from streamsight.config import env_name  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
_OURS = re.compile(r"\((?:[^()]*?/)?((?:services|streamsight|gateway)/[^():]+\.py):(\d+)\)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)


class Timeline(Progress):
    """Progress that remembers when media was ingested and windows were scored (seconds into the job)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.ingested_at: list[tuple[float, float]] = []
        self.scored_at: list[tuple[float, int]] = []

    def show(self, r, force: bool = False) -> None:
        t = time.monotonic() - self.started
        if not self.ingested_at or r.media_time_s > self.ingested_at[-1][1]:
            self.ingested_at.append((t, r.media_time_s))
        if not self.scored_at or len(r.scores) > self.scored_at[-1][1]:
            self.scored_at.append((t, len(r.scores)))

    def summary(self, duration: float) -> str:
        ends = [t for t, m in self.ingested_at if m >= duration - 0.5]
        first = next((t for t, n in self.scored_at if n > 0), None)
        last = self.scored_at[-1][0] if self.scored_at else None
        return (f"ingest reached the end at {ends[0] if ends else float('nan'):.1f} s; windows scored: first at "
                f"{first if first is not None else float('nan'):.1f} s, last at {last if last is not None else float('nan'):.1f} s")


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of a process: tid -> (thread name, seconds)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


class ThreadWatch:
    """Polls every thread of the processes during the job, so threads that end (a stream's
    decoder threads) are counted too; CPU per process and thread name."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {(n, tid): cpu for n, p in pids.items() for tid, (_, cpu) in thread_times(p).items()}
        self.last: dict[tuple[str, int], tuple[str, float]] = {}

    def poll(self) -> None:
        for name, pid in self.pids.items():
            for tid, value in thread_times(pid).items():
                self.last[(name, tid)] = value

    async def run(self, every: float = 0.2) -> None:
        while True:
            self.poll()
            await asyncio.sleep(every)

    def by_name(self) -> dict[str, collections.Counter]:
        out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for (name, tid), (comm, cpu) in self.last.items():
            out[name][re.sub(r"\d+$", "#", comm)] += cpu - self.start.get((name, tid), 0.0)
        return out


def stage_of(stack: str) -> str:
    """The innermost project frame of a py-spy raw stack: ``function (path)``, or the leaf frame."""
    frames = stack.split(";")
    for frame in reversed(frames):
        m = _OURS.search(frame)
        if m:
            return f"{frame.split(' (')[0]} ({m.group(1)})"
    return frames[-1].split(" (")[0] if frames else "?"


# Leaf frames of a thread that waits (py-spy's idle detection misses some of them): not charged.
_WAITING = ("EpollSelector.select", "Condition.wait", "Event.wait", "Lock.acquire", "sleep (", "Thread.join")


def read_profile(path: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit() and not stack.rsplit(";", 1)[-1].startswith(_WAITING):
            counts[stage_of(stack)] += int(n)
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--source", type=Path, help="a media file (default: a generated 720p30 file)")
    parser.add_argument("--chat", type=Path, help="its chat replay (default: generated)")
    parser.add_argument("--py-spy", dest="pyspy", help="py-spy binary: sample every service during the job")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=12, help="stages shown per service")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this folder (<service>.txt)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra stack environment")
    args = parser.parse_args()
    if args.raw:
        args.raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, chat, d = make_inputs(folder, args.seconds, 1280, 720, args.source, args.chat)
        decode_s = min(decode_only(source) for _ in range(2))
        extra = {env_name("gateway", "local_roots"): json.dumps([str(folder), str(source.parent)])}
        extra.update(kv.split("=", 1) for kv in args.env)
        with (folder / "stack.log").open("w") as log:
            sup = Supervisor(folder / "var", free_ports=True, out=log, extra_env=extra)
            await sup.start()
            try:
                await sup.wait_serving(timeout_s=240)
                pids = {c.spec.name: c.process.pid for c in sup.children}
                pids["nats-server"] = sup.nats.process.pid
                pids["analyze (client)"] = os.getpid()
                spies = []
                if args.pyspy:
                    for name, pid in pids.items():
                        if name in ("nats-server", "analyze (client)"):
                            continue
                        out = (args.raw or folder) / f"{name}.txt"
                        spies.append((name, out, subprocess.Popen(
                            [args.pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
                             "--nonblocking", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                    await asyncio.sleep(1.0)  # py-spy attaches
                before = {n: cpu_seconds(p) for n, p in pids.items()}
                watch = ThreadWatch(pids)
                poller = asyncio.create_task(watch.run())
                timeline = Timeline()
                job_s, facts = await timed_job(sup, source, chat, folder / "out", timeline)
                poller.cancel()
                watch.poll()
                after = {n: cpu_seconds(p) for n, p in pids.items()}
                for _, _, spy in spies:
                    spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
                for _, _, spy in spies:
                    spy.wait(30)
                profiles = {name: read_profile(out) for name, out, _ in spies}
            finally:
                await sup.stop()
    cpu = {n: after[n] - before[n] for n in pids}
    total = sum(cpu.values())
    print(f"file: {source.name}, {d:.0f} s; facts: {facts}")
    print(f"decode only (PyAV): {decode_s:7.2f} s = {d / decode_s:5.1f}x real time")
    print(f"analyze job:        {job_s:7.2f} s = {d / job_s:5.1f}x real time")
    print(f"job / decode-only throughput ratio: {decode_s / job_s:.3f}")
    print(timeline.summary(d))
    print(f"\ncore-seconds during the job (wall {job_s:.1f} s, {total / job_s:.2f} cores busy on average):")
    for name, s in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"  {name:18s} {s:7.2f} s  {100 * s / total:5.1f} %  ({s / d * 1000:6.1f} ms per media second)")
    print("\nthreads (by name; 'python' threads are the interpreter's, see the samples below):")
    for name, threads in sorted(watch.by_name().items(), key=lambda kv: -cpu[kv[0]]):
        shown = ", ".join(f"{comm} {s:.2f}" for comm, s in threads.most_common(6) if s >= 0.01)
        print(f"  {name:18s} {shown}")
    threads = watch.by_name()
    for name, counts in sorted(profiles.items(), key=lambda kv: -cpu[kv[0]]):
        n = sum(counts.values())
        if not n:
            continue
        py = threads[name].get("python", cpu[name])
        print(f"\n{name}: {cpu[name]:.2f} core-s, of them {py:.2f} in the interpreter's threads, {n} samples")
        for stage, k in counts.most_common(args.top):
            print(f"  {py * k / n:6.2f} s  {100 * k / n:5.1f} %  {stage}")
    if args.json:
        args.json.write_text(json.dumps({
            "decode_s": decode_s, "job_s": job_s, "ratio": decode_s / job_s, "cpu": cpu, "facts": facts,
            "threads": {n: dict(t) for n, t in watch.by_name().items()},
            "profiles": {n: dict(c.most_common(40)) for n, c in profiles.items()}}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
