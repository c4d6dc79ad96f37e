"""The floor of a stream's cost: decoding every frame plus the models' inference, nothing else.

Issue 20's goals (the whole file job at 0.6 of decode-only throughput; six live 720p30 streams on
two cores) are bounded below by work that no transport or Python change removes without changing
the answers: every frame of an H.264 stream without B-frames is a reference frame, so each is
decoded; the models run on the frames ingest samples at the default rates. This measures that
work on a real recording (../shared/data/media/openarena_dm2.mp4: 1280x720 30 fps game footage),
in this process, with the services' own settings, each part run `--repeat` times, keeping the least:

- decoding every frame with PyAV, in one thread (ingest's live path) and with FFmpeg's threads
  (a file job); the decode-only wall time with threads is the baseline of bench_analyze's ratio;
- glitch: `GlitchClassifier.tile_probabilities` (glitch_cnn int8, one intra-op thread) on the tiles
  of the 2 fps samples at the source size, as the service calls it;
- vision: `VisionModels` (one intra-op thread, batches of 16) on 5 fps flow pairs at 320 px wide,
  the motion CNN on those flows, the frame CNN on 1 fps 224x224 frames.

It prints CPU seconds per media minute for each part, the floor in cores per real-time stream,
how many streams that floor lets two cores hold, and the ceiling it puts on the file job's
ratio (decode-only wall / (floor core-seconds / 2 cores), reached only with no other work and
both cores busy all the time). CPU seconds are this process's (time.process_time), so a busy
machine inflates them less than it would wall time.

    .venv/bin/python bench/bench_floor.py [--seconds 60] [--source FILE] [--cores 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np

from bench_glitch import cpu_best  # the least CPU seconds of `repeat` calls
from services.glitch import tiles as tiling
from services.glitch.classifier import GlitchClassifier
from services.ingest.sampling import SamplingConfig
from services.vision.runtime import VisionModels

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media" / "openarena_dm2.mp4"


def decode(path: Path, seconds: float, threads: int) -> tuple[float, float, int, float]:
    """(CPU s, wall s, frames, frame rate) to decode the first `seconds` of video; threads 0 = FFmpeg's choice."""
    cpu, wall, n = time.process_time(), time.perf_counter(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.codec_context.thread_count = threads
        else:
            stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds:
                break
            n += 1
        rate = float(stream.average_rate or 30)
    return time.process_time() - cpu, time.perf_counter() - wall, n, rate


def samples(path: Path, seconds: float) -> dict[str, list[np.ndarray]]:
    """Frames at ingest's default rates and sizes: the first frame of every 1/fps slot."""
    consumers = SamplingConfig().consumers()
    out: dict[str, list[np.ndarray]] = {name: [] for name in consumers}
    next_slot = dict.fromkeys(consumers, 0.0)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if t >= seconds:
                break
            for name, spec in consumers.items():
                if t + 1e-6 >= next_slot[name]:
                    next_slot[name] = (int(t * spec.fps + 1e-6) + 1) / spec.fps
                    w, h = spec.output_size(frame.width, frame.height)
                    out[name].append(frame.reformat(width=w, height=h, format=spec.format).to_ndarray())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED_MEDIA, help="a 720p30 recording (default: the shared one)")
    parser.add_argument("--seconds", type=float, default=60.0, help="media seconds measured")
    parser.add_argument("--cores", type=int, default=2, help="cores the stack has")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each part; the least is kept")
    args = parser.parse_args()

    live = min(decode(args.source, args.seconds, 1) for _ in range(args.repeat))
    threaded = min((decode(args.source, args.seconds, 0) for _ in range(args.repeat)), key=lambda r: r[1])
    live_cpu, frames, (file_cpu, file_wall, _, _) = live[0], live[2], threaded
    media_s = frames / live[3]
    sampled = samples(args.source, args.seconds)

    glitch = GlitchClassifier(intra_threads=1)
    vision = VisionModels(intra_threads=1)
    glitch.warm_up()
    vision.warm_up()
    tiles = np.concatenate([tiling.cut(frame)[0] for frame in sampled["glitch"]])
    pairs = list(zip(sampled["flow"], sampled["flow"][1:]))
    flows = vision.flow_pairs(pairs)
    cnn_frames = np.stack(sampled["cnn"])
    costs = {
        "decode, 1 thread (live)": live_cpu,
        "glitch classifier": cpu_best(lambda: glitch.tile_probabilities(tiles), args.repeat),
        "vision flow": cpu_best(lambda: vision.flow_pairs(pairs), args.repeat),
        "vision motion CNN": cpu_best(lambda: vision.motion_probability(flows), args.repeat),
        "vision frame CNN": cpu_best(lambda: vision.embed(cnn_frames), args.repeat),
    }
    per_minute = 60.0 / media_s
    print(f"{args.source.name}: {frames} frames ({media_s:.1f} s); samples: glitch {len(sampled['glitch'])} "
          f"({len(tiles)} tiles), flow pairs {len(pairs)}, frame CNN {len(sampled['cnn'])}")
    print(f"decode with FFmpeg's threads (the file job's baseline): {file_wall:.2f} s wall, {file_cpu:.2f} CPU s "
          f"({media_s / file_wall:.1f}x real time)")
    print(f"{'part':28s} {'CPU s per media minute':>24s}")
    for name, cpu in costs.items():
        print(f"{name:28s} {cpu * per_minute:24.2f}")
    live_floor = sum(costs.values()) / media_s
    file_floor_s = sum(costs.values()) - live_cpu + min(live_cpu, file_cpu)  # a job may decode in one thread
    print(f"floor of one real-time stream: {live_floor:.3f} cores -> at most {args.cores / live_floor:.2f} streams "
          f"on {args.cores} cores with nothing else running")
    ceiling = file_wall / (file_floor_s / args.cores)
    print(f"file job: floor {file_floor_s:.2f} core-s -> job / decode-only ratio at most {ceiling:.3f} on {args.cores} cores")


if __name__ == "__main__":
    main()
