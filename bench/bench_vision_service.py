"""Vision service end to end: media seconds per wall second through nats-server, ingest and vision.

    python bench/bench_vision_service.py [--seconds 40] [--width 1280 --height 720] [--threads 2] [--repeats 1]

A generated clip (H.264 + AAC, still / pan / action segments) is ingested by the real ingest
service into a real nats-server, with the vision service in the same process (ingest decodes
in its thread, vision infers in its thread). Timed from StartIngest until ingest has ended and
the "vision" consumer has nothing pending, i.e. every feature record is published:

* baseline: a bare durable consumer on the same three subjects (flow frames, CNN frames,
  window records) that only acknowledges -- what decoding, sampling, NATS and the client cost;
* vision: the real VisionService (`--threads` per inference, `--max-batch`).

Printed: media seconds per wall second and its ratio to the baseline, flow frames/s and CNN
frames/s through vision, vision's busy time (wall time inside its batch handler) as media
seconds per busy second, and the process CPU seconds beyond the baseline's per media second
(a per-core cost that a loaded host does not shrink).
"""

from __future__ import annotations

import os

os.environ.setdefault("STREAMSIGHT_ONNX_PROVIDER", os.environ.get("BENCH_PROVIDER", ""))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import structlog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.ingest.service import IngestService  # noqa: E402
from services.ingest.settings import IngestSettings  # noqa: E402
from services.vision.service import VisionService  # noqa: E402
from services.vision.settings import VisionSettings  # noqa: E402
from streamsight import subjects  # noqa: E402
from streamsight.bus import Bus  # noqa: E402
from streamsight.gen.common.v1 import common_pb2  # noqa: E402
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402
from streamsight.natsd import NatsServer, free_port  # noqa: E402
from streamsight.rpc import channel  # noqa: E402
from streamsight.app.synth import make_media  # noqa: E402

SUBJECTS = [subjects.media("frames_flow"), subjects.media("frames_cnn"), subjects.media("windows")]
TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}


class TimedVisionService(VisionService):
    """VisionService that adds up the wall time spent in its batch handler and counts frames."""

    busy = 0.0
    frames = {"frames_flow": 0, "frames_cnn": 0}

    async def on_batch(self, msgs):
        started = time.perf_counter()
        try:
            return await super().on_batch(msgs)
        finally:
            TimedVisionService.busy += time.perf_counter() - started
            for m in msgs:
                kind = m.subject.split(".")[3]
                if kind in self.frames:
                    self.frames[kind] += 1


async def run_once(url: str, data_dir: Path, media: Path, vision: bool, threads: int, max_batch: int, tag: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for one stream through ingest and the consumer."""
    bus = await Bus.connect(url, "bench")
    await bus.ensure_streams()
    durable = "vision" if vision else f"bench-null-{tag}"
    stack = contextlib.AsyncExitStack()
    try:
        if vision:
            settings = VisionSettings(nats_url=url, grpc_host="127.0.0.1", grpc_port=free_port(), intra_threads=threads, max_batch=max_batch)
            await stack.enter_async_context(TimedVisionService(settings).serving(timeout_s=120))
        else:
            async def ack_all(msgs):
                return {}

            bus.consume_batches(durable, SUBJECTS, ack_all, subjects.MEDIA_STREAM, inactive_threshold_s=60)
            await asyncio.sleep(0.5)  # the consumer exists before ingest publishes (interest retention)
        ingest = IngestService(IngestSettings(nats_url=url, grpc_host="127.0.0.1", grpc_port=free_port(), data_dir=data_dir))
        await stack.enter_async_context(ingest.serving())
        ch = await stack.enter_async_context(channel(ingest.address))
        stub = ingest_pb2_grpc.IngestStub(ch)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=tag, source=str(media), pacing=common_pb2.PACING_VOD))
        while True:
            status = await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=tag))
            if status.state in TERMINAL and await bus.consumer_pending(subjects.MEDIA_STREAM, durable) == 0:
                break
            await asyncio.sleep(0.05)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if status.state != common_pb2.STREAM_STATE_ENDED:
            raise RuntimeError(f"ingest did not end cleanly: {status.last_error}")
    finally:
        await stack.aclose()
        # A durable left behind would hold the next run's MEDIA messages (interest retention)
        with contextlib.suppress(Exception):
            await bus.js.delete_consumer(subjects.MEDIA_STREAM, durable)
        await bus.close()
    return wall, cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--threads", type=int, default=2, help="vision intra-op threads per inference")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n = int(args.seconds)
        segments = [(0, n // 3, "still"), (n // 3, 2 * n // 3, "pan"), (2 * n // 3, n, "action")]
        t = time.perf_counter()
        info = make_media(folder / "sample.mp4", duration=args.seconds, width=args.width, height=args.height, segments=segments)
        print(f"sample: {info.width}x{info.height} {info.fps} fps, {info.duration:.0f} s H.264 + AAC (made in {time.perf_counter() - t:.0f} s)")
        with NatsServer(folder / "nats") as server:
            base, vis = [], []
            for r in range(args.repeats):
                base.append(await run_once(server.url, folder, info.path, False, args.threads, args.max_batch, f"base{r}"))
                TimedVisionService.busy = 0.0
                TimedVisionService.frames = {"frames_flow": 0, "frames_cnn": 0}
                vis.append(await run_once(server.url, folder, info.path, True, args.threads, args.max_batch, f"vision{r}"))
    d = info.duration
    (bw, bc), (vw, vc) = min(base), min(vis)
    flow, cnn = TimedVisionService.frames["frames_flow"], TimedVisionService.frames["frames_cnn"]
    print(f"{'run':<28}{'media s / wall s':>18}{'vs baseline':>13}")
    print(f"{'baseline (ingest + ack)':<28}{d / bw:>18.2f}{1.0:>13.2f}")
    print(f"{'vision (ingest + vision)':<28}{d / vw:>18.2f}{bw / vw:>13.2f}")
    print(f"vision frames/s end to end: flow {flow / vw:.1f}, CNN {cnn / vw:.1f} ({flow} flow + {cnn} CNN frames in {vw:.1f} s)")
    print(f"vision busy (handler wall time): {TimedVisionService.busy:.1f} s = {d / TimedVisionService.busy:.2f} media s per busy s")
    print(f"process CPU beyond the baseline: {(vc - bc) / d:.3f} CPU s per media s ({vc:.1f} vs {bc:.1f} CPU s)")
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
