"""Fusion benchmark: scoring cost per window, and the service's end-to-end rate on a real NATS.

Run: `python bench/bench_fusion.py [--windows 2000] [--service-windows 300]`

1. Domain: windows per second through join + model + highlight tracker (one core, the
   default model), against scikit-learn's LogisticRegression.predict_proba on one window at a
   time (the baseline a service would otherwise call), same run, same model weights.
2. Service: a nats-server and the fusion service in process; vision+audio FeatureRecords for
   `--service-windows` windows of 4 streams are published and the time until every
   WindowScore is out is measured, against publishing the same records to JetStream alone
   (the floor: what NATS costs without fusion's work, KV state included in fusion's side).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from services.fusion.highlights import HighlightTracker, ScoredWindow  # noqa: E402
from services.fusion.join import JoinConfig, Part, StreamJoin  # noqa: E402
from services.fusion.model import FusionModel  # noqa: E402

MODEL = REPO / "services" / "fusion" / "models" / "default.json"


def _windows(model: FusionModel, n: int, seed: int = 0) -> list[dict[str, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        raw = model.mean + rng.normal(size=len(model.features)) * model.scale
        by_mod: dict[str, dict[str, float]] = {}
        for name, v in zip(model.features, raw):
            m, f = name.split(".", 1)
            by_mod.setdefault(m, {})[f] = float(v)
        out.append(by_mod)
    return out


def bench_domain(n: int) -> None:
    model = FusionModel.load(MODEL)
    data = _windows(model, n)
    join = StreamJoin("bench", JoinConfig(expected=frozenset(model.modalities)))
    join.start(live=False, duration_s=10.0 * n, start_wall=None)  # ingest's "started": a file of n windows
    join.declare(set(model.modalities))
    tracker = HighlightTracker()
    t = time.perf_counter()
    for i, mods in enumerate(data):
        for m, values in mods.items():
            for rw in join.add(Part(m, i, 10.0 * i, 10.0 * i + 10, values)):
                p = model.predict(rw.features())
                tracker.add(ScoredWindow(rw.window, rw.start_s, rw.end_s, p.probability, tuple(p.top(5))))
    ours = n / (time.perf_counter() - t)

    clf = LogisticRegression()
    clf.coef_, clf.intercept_, clf.classes_ = model.coefficients[None, :], np.array([model.intercept]), np.array([0, 1])
    rows = [np.array([[(mods[f.split(".", 1)[0]][f.split(".", 1)[1]] - mu) / sd for f, mu, sd in zip(model.features, model.mean, model.scale)]]) for mods in data]
    t = time.perf_counter()
    for x in rows:
        clf.predict_proba(x)
    sk = n / (time.perf_counter() - t)
    print(f"domain: {ours:,.0f} windows/s (join + model + contributions + highlights)   "
          f"sklearn predict_proba alone, one window a call: {sk:,.0f} windows/s   ratio {ours / sk:.2f}")


async def bench_service(n: int) -> None:
    from services.fusion.service import FusionService
    from services.fusion.settings import FusionSettings
    from streamsight import subjects
    from streamsight.bus import Bus
    from streamsight.gen.common.v1 import common_pb2
    from streamsight.gen.events.v1 import events_pb2
    from streamsight.gen.features.v1 import features_pb2
    from streamsight.natsd import NatsServer, free_port

    model = FusionModel.load(MODEL)
    data = _windows(model, n, seed=1)
    streams = [f"bench-{k}" for k in range(4)]
    mods = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO}
    msgs = []
    for i, values in enumerate(data):
        sid = streams[i % len(streams)]
        w = i // len(streams)
        for m, code in mods.items():
            rec = features_pb2.FeatureRecord(stream_id=sid, window=w, modality=code, start_s=10.0 * w, end_s=10.0 * w + 10, values=values[m])
            msgs.append((subjects.features(m, sid), rec.SerializeToString(), subjects.feature_msg_id(sid, m, w)))
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        bus = await Bus.connect(server.url, "bench")
        await bus.ensure_streams()
        t = time.perf_counter()
        for subject, data_, msg_id in msgs:
            await bus.publish(subject + "x", data_, msg_id + "x")  # other stream ids: nobody consumes them
        floor = len(msgs) / (time.perf_counter() - t)
        settings = FusionSettings(nats_url=server.url, grpc_host="127.0.0.1", grpc_port=free_port(), metrics_port=0)
        scores = 0
        done = asyncio.Event()

        async def on_score(msg) -> None:
            nonlocal scores
            scores += 1
            if scores >= n:
                done.set()

        sub = await bus.nc.subscribe(subjects.event("score", "*"), cb=on_score)
        async with FusionService(settings).serving():
            t = time.perf_counter()
            for sid in streams:  # what starting a stream publishes: a file of n / 4 windows, vision and audio
                status = events_pb2.StreamStatus(stream_id=sid, state=common_pb2.STREAM_STATE_RUNNING, reason="started", reporter="ingest",
                                                 duration_s=10.0 * (n // len(streams) + 1), modalities=list(mods.values()))
                await bus.publish_event(sid, status, f"{sid}:status:ingest:started")
            for subject, data_, msg_id in msgs:
                await bus.publish(subject, data_, msg_id)
            await asyncio.wait_for(done.wait(), 600)
            took = time.perf_counter() - t
        await sub.unsubscribe()
        await bus.close()
    print(f"service: {n} windows ({len(msgs)} records, 4 streams) scored in {took:.2f} s = {n / took:,.0f} windows/s, "
          f"{len(msgs) / took:,.0f} records/s   JetStream publish alone: {floor:,.0f} records/s   ratio {len(msgs) / took / floor:.2f}")


def main() -> None:
    from streamsight.logs import configure_logging

    configure_logging("bench-fusion", "warning", "console")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=2000)
    p.add_argument("--service-windows", type=int, default=300)
    args = p.parse_args()
    bench_domain(args.windows)
    asyncio.run(bench_service(args.service_windows))


if __name__ == "__main__":
    main()
