"""Ingest throughput against PyAV decode-only throughput on the same file, plus memory per stream.

    python bench/bench_ingest.py [--seconds 20] [--repeats 5] [--no-service]

For generated 720p30 and 1080p30 H.264 + AAC files it times, in the same run:

* decode-only: PyAV demux + decode of every video and audio packet (frame threading on),
  nothing else -- the ceiling for any ingest;
* pipeline: the full :class:`services.ingest.pipeline.IngestPipeline` (sampling for the three
  consumers, per-frame signals, audio resampling, windows, clip buffer on disk) drained by
  an asyncio consumer in ``vod`` pacing;
* service path: an :class:`services.ingest.streams.IngestedStream` -- the pipeline plus protobuf
  and JetStream publishing with VOD backpressure -- on a real nats-server, read by a durable
  consumer in a separate process that acknowledges every message; the clock stops when the
  consumer has acknowledged the last message.

The machine is shared, so the three runs alternate (A B C, C B A, ...) and each ratio is the
median over repeats of the ratio within one repeat (runs back to back see similar load).
Wall-clock ratios are the figure of merit (goal >= 0.85); CPU ratios (process CPU seconds of
decode-only / of ingest, every thread counted) say how much extra work ingest does regardless of
load. The service path's CPU ratio counts this process only; "nats+cons" is the CPU that
nats-server and the consumer used meanwhile, in decode-only CPU units (on a 2-core machine
they compete with ingest, so the service path's wall ratio includes their work too).
Memory per stream is the rise of the peak RSS (VmHWM) over the RSS before, in a fresh
interpreter: decode-only of one stream (the reference), one ingest stream, and three ingest
streams at once (divided by three).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.clips import ClipBufferConfig  # noqa: E402
from services.ingest.decode import DecodeConfig  # noqa: E402
from services.ingest.pipeline import IngestConfig, IngestPipeline  # noqa: E402
from streamsight.app.synth import make_media  # noqa: E402

SEGMENTS = [(0, 4, "still"), (4, 10, "pan"), (10, 14, "action"), (14, 20, "pan")]
CONSUMER = "bench-ingest"


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    frames: int


def _timed(fn) -> Run:
    w, c = time.perf_counter(), time.process_time()
    frames = fn()
    return Run(time.perf_counter() - w, time.process_time() - c, frames)


def decode_only(path: Path) -> int:
    frames = 0
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        v.codec_context.thread_type = "AUTO"
        for packet in c.demux(v, a):
            for frame in packet.decode():
                frames += packet.stream is v
    return frames


async def _pipeline(path: Path, clip_dir: Path) -> int:
    config = IngestConfig(decode=DecodeConfig(clip_buffer=ClipBufferConfig(directory=clip_dir)))
    pipeline = IngestPipeline(str(path), config)
    async for _ in pipeline.items():
        pass
    await pipeline.wait_stopped(5)
    if pipeline.clip_buffer is not None:
        pipeline.clip_buffer.remove()
    return pipeline.stats.frames_decoded


def pipeline(path: Path, clip_dir: Path) -> int:
    return asyncio.run(_pipeline(path, clip_dir))


class ServicePath:
    """A nats-server, a consumer process that acks everything, and one IngestedStream per run."""

    def __init__(self, work: Path) -> None:
        from streamsight.natsd import NatsServer

        self.work = work
        self.server = NatsServer(work / "nats", log_file=work / "nats.log").start()
        asyncio.run(self._provision())
        self.consumer = subprocess.Popen([sys.executable, __file__, "--consumer", self.server.url])
        self.runs = 0
        self.others: list[float] = []  # CPU seconds of nats-server + consumer per run

    async def _provision(self) -> None:
        from streamsight.bus import Bus

        bus = await Bus.connect(self.server.url, "bench")
        await bus.ensure_streams()
        await bus.close()

    def others_cpu(self) -> float:
        """CPU seconds used so far by nats-server and the consumer process."""
        ticks = 0
        for pid in (self.server.process.pid, self.consumer.pid):  # type: ignore[union-attr]
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.consumer.terminate()
        self.consumer.wait(10)
        self.server.stop()

    def run(self, path: Path) -> Run:
        self.runs += 1
        return asyncio.run(self._run(path, f"bench{self.runs}"))

    async def _run(self, path: Path, stream_id: str) -> Run:
        from services.ingest.settings import IngestSettings
        from services.ingest.streams import IngestedStream, pipeline_config
        from streamsight import subjects
        from streamsight.bus import Bus

        settings = IngestSettings(nats_url=self.server.url, data_dir=self.work / "data")
        clip_dir = self.work / "data" / "clips" / stream_id
        clip_dir.mkdir(parents=True, exist_ok=True)
        bus = await Bus.connect(self.server.url, "ingest")
        stream = IngestedStream(stream_id, str(path), pipeline_config(settings, clip_dir, False, {}), bus, settings, clip_dir)
        w, c, o = time.perf_counter(), time.process_time(), self.others_cpu()
        await stream.run()
        while await bus.backlog(subjects.MEDIA_STREAM, subjects.media("*", stream_id)) > 0:
            await asyncio.sleep(0.005)
        run = Run(time.perf_counter() - w, time.process_time() - c, stream.pipeline.stats.frames_decoded)
        self.others.append(self.others_cpu() - o)
        await bus.close()
        if stream.pipeline.clip_buffer is not None:
            stream.pipeline.clip_buffer.remove()
        return run


async def _consume(url: str) -> None:
    from streamsight import subjects
    from streamsight.bus import Bus

    bus = await Bus.connect(url, "bench-consumer")

    async def ack(msg) -> None:
        pass

    bus.consume(CONSUMER, f"{subjects.PREFIX}.media.v1.>", ack, subjects.MEDIA_STREAM, batch=64)
    await asyncio.Event().wait()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_per_stream_mb(path: Path, clip_dir: Path, streams: int) -> float | None:
    """Peak RSS rise per stream for ``streams`` concurrent pipelines, in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(clip_dir), str(streams)],
                         capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _memory_child(path: Path, clip_dir: Path, streams: int) -> None:
    asyncio.run(asyncio.sleep(0))  # import-time and event-loop memory belong to the baseline
    before = _status_kb("VmRSS")

    async def many() -> None:
        await asyncio.gather(*(_pipeline(path, clip_dir / str(i)) for i in range(streams)))

    if streams == 0:  # the reference: decode-only of one stream
        decode_only(path)
        streams = 1
    else:
        asyncio.run(many())
    print((_status_kb("VmHWM") - before) / 1024 / streams)


def _median_ratio(base: list[Run], other: list[Run], key: str) -> float:
    return statistics.median(getattr(b, key) / getattr(o, key) for b, o in zip(base, other))


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # status lines off
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
        _memory_child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--consumer":
        asyncio.run(_consume(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-service", action="store_true", help="skip the service path (no nats-server)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    service = None if args.no_service else ServicePath(work)
    rows = []
    try:
        for name, (w, h) in (("720p30", (1280, 720)), ("1080p30", (1920, 1080))):
            path = work / f"{name}.mp4"
            make_media(path, duration=args.seconds, width=w, height=h, fps=30, segments=SEGMENTS, preset="veryfast")
            decode_only(path)  # warm the page cache and the codec
            kinds = {"decode": lambda: _timed(lambda: decode_only(path)),
                     "pipeline": lambda: _timed(lambda: pipeline(path, work / "clips"))}
            if service is not None:
                kinds["service"] = lambda: service.run(path)
            runs: dict[str, list[Run]] = {k: [] for k in kinds}
            for r in range(args.repeats):
                for kind in (list(kinds) if r % 2 == 0 else list(reversed(kinds))):
                    runs[kind].append(kinds[kind]())
            frames = {run.frames for rs in runs.values() for run in rs}
            assert len(frames) == 1, f"frame counts differ between runs: {runs}"
            row = {"name": name, "frames": frames.pop(),
                   "decode_fps": statistics.median(r.frames / r.wall for r in runs["decode"]),
                   "decode_cpu": statistics.median(r.cpu for r in runs["decode"])}
            for kind in runs:
                if kind != "decode":
                    row[f"{kind}_fps"] = statistics.median(r.frames / r.wall for r in runs[kind])
                    row[f"{kind}_ratio"] = _median_ratio(runs["decode"], runs[kind], "wall")
                    row[f"{kind}_cpu_ratio"] = _median_ratio(runs["decode"], runs[kind], "cpu")
            if service is not None:
                row["others_cpu"] = statistics.median(service.others[-args.repeats:]) / row["decode_cpu"]
            row["mem0"] = memory_per_stream_mb(path, work / "mem", 0)
            row["mem1"] = memory_per_stream_mb(path, work / "mem", 1)
            row["mem3"] = memory_per_stream_mb(path, work / "mem", 3)
            rows.append(row)
    finally:
        if service is not None:
            service.close()

    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if value is not None else "n/a".rjust(int(fmt.split(".")[0]))

    print(f"\n{'file':8} {'frames':>6} {'decode fps':>10} {'pipe fps':>9} {'ratio':>6} {'cpu ratio':>9} "
          f"{'svc fps':>8} {'svc ratio':>9} {'svc cpu':>8} {'nats+cons':>9} {'MB decode':>9} {'MB/stream':>9} {'MB/3 streams':>12}")
    for row in rows:
        print(f"{row['name']:8} {row['frames']:6d} {row['decode_fps']:10.1f} {cell(row, 'pipeline_fps', '9.1f')} "
              f"{cell(row, 'pipeline_ratio', '6.3f')} {cell(row, 'pipeline_cpu_ratio', '9.3f')} "
              f"{cell(row, 'service_fps', '8.1f')} {cell(row, 'service_ratio', '9.3f')} "
              f"{cell(row, 'service_cpu_ratio', '8.3f')} {cell(row, 'others_cpu', '9.2f')} {cell(row, 'mem0', '9.1f')} "
              f"{cell(row, 'mem1', '9.1f')} {cell(row, 'mem3', '12.1f')}")
    print(f"\n(ratios: medians over {args.repeats} alternating repeats; goal: ratio >= 0.85; "
          f"{av.__version__=}, cores available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
