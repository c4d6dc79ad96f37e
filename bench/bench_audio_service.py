"""Audio service end to end: audio seconds per second through nats-server, ingest and the service.

    python bench/bench_audio_service.py [--seconds 60] [--taggers none,MobileNetV1] [--repeats 2]

A generated clip (320x180 video, AAC audio with the minigun and laughter from
../shared/data/sounds mixed in when present) is ingested by the real ingest service into a
real nats-server. Timed from StartIngest until the last window's record arrives:

* baseline: a bare durable consumer on the same two subjects (audio chunks, window records)
  that only acknowledges -- what ingest, NATS and the client cost without any analysis;
* audio service without a tagger, and with each named PANNs tagger at full size with random
  weights (exported by training.audio.convert_panns; needs torch).

Printed per run (best of the repeats): end-to-end audio seconds per wall second and its ratio
to the baseline; the service's busy time (wall time inside its message handler, analysis
threads included) as audio seconds per busy second; and the process CPU time, whose excess
over the baseline's is what the service costs (audio seconds per added CPU second, a per-core
figure that a loaded host does not shrink). ONNX Runtime and BLAS are held to one thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("STREAMSIGHT_ONNX_PROVIDER", "cpu")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import structlog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.audio.service import AudioService  # noqa: E402
from services.audio.settings import AudioSettings  # noqa: E402
from services.ingest.service import IngestService  # noqa: E402
from services.ingest.settings import IngestSettings  # noqa: E402
from streamsight import subjects  # noqa: E402
from streamsight.bus import Bus  # noqa: E402
from streamsight.gen.common.v1 import common_pb2  # noqa: E402
from streamsight.gen.features.v1 import features_pb2  # noqa: E402
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402
from streamsight.gen.media.v1 import media_pb2  # noqa: E402
from streamsight.natsd import NatsServer, free_port  # noqa: E402
from streamsight.rpc import channel  # noqa: E402
from streamsight.app.synth import SoundEvent, make_media  # noqa: E402

SOUNDS = REPO.parent / "shared" / "data" / "sounds"


class TimedAudioService(AudioService):
    """The real service, adding up the wall time spent handling messages."""

    busy_s = 0.0

    async def on_message(self, msg) -> None:
        started = time.perf_counter()
        try:
            await super().on_message(msg)
        finally:
            self.busy_s += time.perf_counter() - started


def make_sample(folder: Path, seconds: float) -> Path:
    sounds = []
    if SOUNDS.is_dir():
        for t in range(5, int(seconds) - 5, 20):
            sounds += [SoundEvent(SOUNDS / "minigun.ogg", t), SoundEvent(SOUNDS / "voice_classic_laugh.ogg", t + 10)]
    return make_media(folder / "bench.mp4", duration=seconds, width=320, height=180, fps=15, sounds=sounds).path


def make_tagger(folder: Path, arch: str) -> Path:
    import torch

    from training.audio import convert_panns
    from training.audio.panns import build

    torch.manual_seed(0)
    torch.set_num_threads(1)
    pth, out = folder / f"{arch}.pth", folder / f"{arch}.onnx"
    torch.save({"model": build(arch).state_dict()}, pth)
    if convert_panns.main(["--checkpoint", str(pth), "--arch", arch, "--out", str(out)]) != 0:
        raise SystemExit(f"conversion of {arch} failed")
    pth.unlink()
    return out


async def run_once(
    nats_url: str, work: Path, sample: Path, windows: int, tagger: Path | None, sid: str, baseline: bool
) -> tuple[float, float, float]:
    """(wall s StartIngest -> last record, process CPU s meanwhile, service busy s (0 for the baseline))."""
    done = asyncio.Event()
    bus = await Bus.connect(nats_url, "bench")
    await bus.ensure_streams()
    service = None
    durable = f"null-{sid}" if baseline else AudioService.name
    if baseline:

        async def on_media(msg) -> None:
            if msg.subject.split(".")[3] == "windows" and media_pb2.WindowRecord.FromString(msg.data).last:
                done.set()

        bus.consume(durable, [subjects.media("audio", sid), subjects.media("windows", sid)], on_media, subjects.MEDIA_STREAM, batch=32)
    else:
        settings = AudioSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=free_port(), tagger_path=tagger or None, intra_threads=1)
        service = TimedAudioService(settings)

        async def on_record(msg) -> None:
            if features_pb2.FeatureRecord.FromString(msg.data).window == windows - 1:
                done.set()

        await bus.nc.subscribe(subjects.features("audio", sid), cb=on_record)
    ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=free_port(), data_dir=work))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if service is not None:
                await stack.enter_async_context(service.serving())
            await stack.enter_async_context(ingest.serving())
            stub = ingest_pb2_grpc.IngestStub(await stack.enter_async_context(channel(ingest.address)))
            await asyncio.sleep(0.5)  # consumers are in place
            started, cpu_started = time.perf_counter(), time.process_time()
            await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(sample), pacing=common_pb2.PACING_VOD))
            await asyncio.wait_for(done.wait(), 600)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        # MEDIA keeps messages for every consumer that exists: one left behind would stall the next run.
        await bus.js.delete_consumer(subjects.MEDIA_STREAM, durable)
    finally:
        await bus.close()
    return wall, cpu, (service.busy_s if service is not None else 0.0)


async def main_async(args) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = make_sample(work, args.seconds)
        windows = math.ceil(args.seconds / 10)
        taggers: dict[str, Path | None] = {}
        for name in args.taggers.split(","):
            taggers[name] = None if name == "none" else make_tagger(work, name)
        server = NatsServer(work / "nats").start()
        try:
            results: dict[str, list[tuple[float, float]]] = {}
            for r in range(args.repeats):
                for name, path in [("baseline", None), *taggers.items()]:
                    sid = f"{name.lower()}-{r}".replace("_", "-")
                    run = await run_once(server.url, work, sample, windows, path, sid, baseline=name == "baseline")
                    results.setdefault(name, []).append(run)
        finally:
            server.stop()
    base_wall = min(r[0] for r in results["baseline"])
    base_cpu = min(r[1] for r in results["baseline"])
    print(f"{args.seconds:.0f} s sample, {windows} windows, best of {args.repeats}; 1 ONNX/BLAS thread; load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':<26} {'wall s':>7} {'audio s/s':>10} {'vs baseline':>12} {'busy s':>7} {'audio s/busy s':>15} {'CPU s':>6} {'audio s/added CPU s':>20}")
    for name, runs in results.items():
        wall, cpu, busy = (min(r[i] for r in runs) for i in range(3))
        label = "baseline (ack only)" if name == "baseline" else f"audio, tagger {name}"
        per_busy = f"{args.seconds / busy:>15.0f}" if busy else f"{'-':>15}"
        per_cpu = f"{args.seconds / (cpu - base_cpu):>20.0f}" if busy and cpu > base_cpu else f"{'-':>20}"
        print(f"{label:<26} {wall:>7.2f} {args.seconds / wall:>10.1f} {base_wall / wall:>12.2f} {busy:>7.2f} {per_busy} {cpu:>6.2f} {per_cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--taggers", default="none", help="comma-separated: none, Cnn14, Cnn14_16k, MobileNetV1")
    parser.add_argument("--repeats", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
