"""Vision's optical flow: the service's session against onnxruntime's fully optimised one.

One minute of real gameplay (openarena_dm2.mp4) sampled as the flow consumer gets it (gray,
320 px wide, 5 fps: 300 pairs) runs through flow.onnx opened two ways, alternating batch by
batch so both see the same load:

* ``all``: graph optimisation level ALL (onnxruntime's default, with the NCHWc layout transforms);
* ``service``: as `VisionModels` opens it (`create_session(..., layout_optimizations=False)`).

It prints CPU and wall milliseconds per pair (min and median over the repeats, each repeat a
pass over all pairs), their ratio, and whether the two sessions' flows are equal bit for bit.

    python bench/bench_flow_session.py [--threads 1] [--repeat 3] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np

from services.vision.runtime import FLOW_MODEL, MODEL_DIR
from streamsight.inference import create_session

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media" / "openarena_dm2.mp4"


def flow_frames(path: Path, fps: float = 5.0, width: int = 320) -> np.ndarray:
    """Gray frames [N,1,H,W] float32, the first frame of every 1/fps slot, like ingest's sampler."""
    out, last = [], -1
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            slot = int(float(frame.pts * stream.time_base) * fps + 1e-6)
            if slot > last:
                last = slot
                h = int(round(frame.height * width / frame.width / 2)) * 2
                out.append(frame.reformat(width=width, height=h, format="gray", interpolation="AREA").to_ndarray())
    return np.stack(out).astype(np.float32)[:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    if not MEDIA.exists():
        print(f"skipped: the real recording {MEDIA} is absent (../shared/data is not beside the checkout)")
        return
    frames = flow_frames(MEDIA)
    a, b = frames[:-1], frames[1:]
    sessions = {
        "all": create_session(MODEL_DIR / FLOW_MODEL, args.threads),
        "service": create_session(MODEL_DIR / FLOW_MODEL, args.threads, layout_optimizations=False),
    }
    outputs = {name: [] for name in sessions}
    cpu = {name: [] for name in sessions}
    wall = {name: [] for name in sessions}
    for s in sessions.values():  # warm-up
        s.run(None, {"frame1": a[: args.batch], "frame2": b[: args.batch]})
    for rep in range(args.repeat):
        spent = {name: [0.0, 0.0] for name in sessions}
        for i in range(0, len(a), args.batch):
            feed = {"frame1": a[i : i + args.batch], "frame2": b[i : i + args.batch]}
            for name, s in sessions.items():
                c, w = time.process_time(), time.perf_counter()
                flow = s.run(None, feed)[0]
                spent[name][0] += time.process_time() - c
                spent[name][1] += time.perf_counter() - w
                if rep == 0:
                    outputs[name].append(flow)
        for name, (c, w) in spent.items():
            cpu[name].append(1000 * c / len(a))
            wall[name].append(1000 * w / len(a))
    equal = all(np.array_equal(x, y) for x, y in zip(outputs["all"], outputs["service"]))
    print(f"{len(a)} flow pairs of {a.shape[3]}x{a.shape[2]} (openarena_dm2, 5 fps), batch {args.batch}, "
          f"{args.threads} thread(s), {args.repeat} repeats")
    for name in sessions:
        print(f"  {name:8s} cpu ms/pair min {min(cpu[name]):6.2f} median {statistics.median(cpu[name]):6.2f}   "
              f"wall ms/pair min {min(wall[name]):6.2f} median {statistics.median(wall[name]):6.2f}")
    ratios = [s / f for s, f in zip(cpu["service"], cpu["all"])]
    print(f"  service / all CPU per pair: min {min(ratios):.3f} median {statistics.median(ratios):.3f}")
    print(f"  flows equal bit for bit: {equal}")


if __name__ == "__main__":
    main()
