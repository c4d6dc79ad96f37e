"""The vision service on real NATS with the real ingest service: media in, one record per window out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.vision.service import VisionService
from services.vision.settings import VisionSettings
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.natsd import free_port
from streamsight.rpc import channel
from streamsight.app.synth import make_media

TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}
INFO_KEYS = {"provider", "flow_model", "motion_model", "frame_model"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """28 s of 640x360 H.264: still 0-10 s, a steady camera pan 10-20 s, local action 20-28 s.

    The pan is slow (20 px/s at 640 px: 2 px per 0.2 s flow interval at 320 px): the motion CNN
    is trained to call fast pans (4 px and more per interval) action, and a slow pan is the
    camera work that should score below a fight.
    """
    path = tmp_path_factory.mktemp("media") / "still_pan_action.mp4"
    return make_media(path, duration=28.0, segments=[(0, 10, "still"), (10, 20, "pan"), (20, 28, "action")], pan_speed=20.0)


@pytest.fixture(scope="module")
def sample_b(tmp_path_factory):
    """18 s: local action 0-9.5 s, then still; another texture (seed)."""
    path = tmp_path_factory.mktemp("media") / "action_still.mp4"
    return make_media(path, duration=18.0, segments=[(0, 9.5, "action")], seed=3)


@pytest.fixture(scope="module")
def vtest_30s(shared_data, tmp_path_factory):
    """The first 30 s of the real vtest.avi (people walking, still camera), packets copied as they are."""
    import av

    dest = tmp_path_factory.mktemp("media") / "vtest_30s.avi"
    with av.open(str(shared_data / "media" / "vtest.avi")) as src, av.open(str(dest), "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in src.demux(vin):
            if packet.pts is None or packet.pts * vin.time_base >= 30:
                continue
            packet.stream = vout
            out.mux(packet)
    return dest



@contextlib.asynccontextmanager
async def stack(nats_url: str, data_dir: Path):
    """Vision first (MEDIA keeps messages only for consumers that exist), then ingest."""
    vision = VisionService(VisionSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, intra_threads=2))
    async with vision.serving(timeout_s=60):
        ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, data_dir=data_dir))
        async with ingest.serving(), channel(ingest.address) as ch:
            yield vision, ingest_pb2_grpc.IngestStub(ch)


async def start(stub, stream_id: str, path: Path) -> None:
    await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=stream_id, source=str(path), pacing=common_pb2.PACING_VOD))


async def wait_done(stub, bus: Bus, stream_ids: list[str], timeout: float = 150.0) -> None:
    """Until ingest finished every stream and vision acknowledged all of MEDIA (i.e. published)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        states = [(await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=s))).state for s in stream_ids]
        if all(s in TERMINAL for s in states) and await bus.consumer_pending(subjects.MEDIA_STREAM, "vision") == 0:
            assert set(states) == {common_pb2.STREAM_STATE_ENDED}, states
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"streams {stream_ids} not analysed within {timeout} s")


async def records(bus: Bus, stream_id: str) -> list[features_pb2.FeatureRecord]:
    msgs = await bus.read_all(subjects.FEATURES_STREAM, subjects.features("vision", stream_id))
    return [features_pb2.FeatureRecord.FromString(m.data) for m in msgs]


def one_per_window(recs: list[features_pb2.FeatureRecord], windows: int) -> list[features_pb2.FeatureRecord]:
    counts = Counter(r.window for r in recs)
    assert counts == Counter(range(windows)), f"expected one record per window 0..{windows - 1}, got {dict(counts)}"
    return sorted(recs, key=lambda r: r.window)


async def test_one_record_per_window_with_the_planted_motion_ordering(nats_server, bus, tmp_path, sample):
    async with stack(nats_server.url, tmp_path) as (vision, stub):
        async with channel(vision.address) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert vision.health_info()["provider"] in ("cpu", "cuda")
        await start(stub, "solo", sample.path)
        await wait_done(stub, bus, ["solo"])
    still, pan, action = one_per_window(await records(bus, "solo"), 3)

    for r in (still, pan, action):
        assert r.modality == common_pb2.MODALITY_VISION and r.stream_id == "solo"
        assert set(r.info) == INFO_KEYS and r.info["provider"] == "cpu"  # the tests force the CPU provider
        assert r.info["flow_model"].startswith("flow.onnx@sha256:")
        assert list(r.flags) == [], (r.window, list(r.flags))
        seconds = min(r.end_s, sample.duration) - r.start_s
        assert r.values["flow_pairs"] >= 5 * seconds - 2 and abs(r.values["cnn_frames"] - seconds) <= 1
    assert (still.start_s, still.end_s, action.start_s) == (0.0, 10.0, 20.0)
    # ingest's record says where the last window ends (the proto promises the media end, 28 s;
    # ingest sends the nominal 30 s today); vision passes on what ingest says
    assert 27.8 <= action.end_s <= 30.0

    flow = {name: r.values["flow_mag_mean"] for name, r in (("still", still), ("pan", pan), ("action", action))}
    assert flow["still"] < 0.2 * min(flow["pan"], flow["action"]), flow
    assert pan.values["flow_mag_mean"] == pytest.approx(2.0, abs=0.3)  # the planted pan speed, px/interval
    # The pan moves more pixels further than the action does, yet the motion CNN tells them apart.
    assert action.values["motion_prob_max"] > 0.9 > 0.5 > pan.values["motion_prob_max"]
    assert action.values["direction_coherence"] < 0.8 < pan.values["direction_coherence"]  # a pan moves all one way
    assert still.values["motion_prob_max"] < 0.1


async def test_two_streams_at_once_complete_independently(nats_server, bus, tmp_path, sample, sample_b):
    async with stack(nats_server.url, tmp_path) as (_, stub):
        await start(stub, "alone", sample_b.path)
        await wait_done(stub, bus, ["alone"])
        await asyncio.gather(start(stub, "duo-a", sample.path), start(stub, "duo-b", sample_b.path))
        await wait_done(stub, bus, ["duo-a", "duo-b"])
    alone = one_per_window(await records(bus, "alone"), 2)
    duo_a = one_per_window(await records(bus, "duo-a"), 3)
    duo_b = one_per_window(await records(bus, "duo-b"), 2)

    # Frames of both streams shared inference batches, yet each stream's result is its own.
    for a, b in zip(alone, duo_b):
        assert not a.flags and not b.flags
        for name, value in a.values.items():
            assert b.values[name] == pytest.approx(value, rel=1e-3, abs=1e-4), (a.window, name)
    action_b, still_b = duo_b
    assert 17.8 <= still_b.end_s <= 20.0
    assert action_b.values["motion_prob_max"] > 0.9 > 0.5 > still_b.values["motion_prob_max"]
    assert still_b.values["flow_mag_mean"] < 0.2 * action_b.values["flow_mag_mean"]
    still_a, pan_a, action_a = duo_a
    assert not any(r.flags for r in duo_a)
    assert action_b.values["flow_mag_mean"] > 5 * still_a.values["flow_mag_mean"]  # b's action vs a's still window
    assert pan_a.values["direction_coherence"] > 0.8 > action_a.values["direction_coherence"]


@pytest.mark.slow
async def test_real_footage_gives_moderate_motion(nats_server, bus, tmp_path, vtest_30s):
    async with stack(nats_server.url, tmp_path) as (_, stub):
        await start(stub, "vtest", vtest_30s)
        await wait_done(stub, bus, ["vtest"])
    for r in one_per_window(await records(bus, "vtest"), 3):
        assert not r.flags, (r.window, list(r.flags))
        v = r.values
        assert v["flow_pairs"] >= 45, r.window
        # Some people walk across a still camera: a small share of the picture moves, slowly,
        # and not all one way (that would be a pan).
        assert 0.002 < v["moving_fraction"] < 0.25, (r.window, v["moving_fraction"])
        assert 0.02 < v["flow_mag_mean"] < 1.0, (r.window, v["flow_mag_mean"])
        assert v["flow_mag_max"] > 1.0, (r.window, v["flow_mag_max"])
        assert v["direction_coherence"] < 0.9, (r.window, v["direction_coherence"])  # a pan gives > 0.95
        assert v["scene_cuts"] == 0


def _frame(sid: str, consumer: str, pts: float, sample_index: int, image: np.ndarray, fmt: int) -> bytes:
    h, w = image.shape[:2]
    return media_pb2.VideoFrame(
        stream_id=sid, consumer=consumer, pts_s=pts, frame_number=sample_index, width=w, height=h, format=fmt,
        data=image.tobytes(), sample_index=sample_index,
    ).SerializeToString()


async def test_bad_frames_are_dead_lettered_and_other_streams_go_on(nats_server, bus, tmp_path, sample_b):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (180, 320), dtype=np.uint8)
    async with stack(nats_server.url, tmp_path) as (_, stub):
        await start(stub, "neighbour", sample_b.path)
        flow, cnn = subjects.media("frames_flow", "hand"), subjects.media("frames_cnn", "hand")
        await bus.publish(flow, _frame("hand", "flow", 0.0, 0, gray, media_pb2.PIXEL_FORMAT_GRAY8))
        await bus.publish(flow, b"\x00 this is not a protobuf \xff")
        await bus.publish(cnn, _frame("hand", "cnn", 0.0, 0, rng.integers(0, 256, (100, 100, 3), dtype=np.uint8), media_pb2.PIXEL_FORMAT_RGB24))
        await bus.publish(flow, _frame("hand", "flow", 0.2, 1, np.roll(gray, 2, axis=1), media_pb2.PIXEL_FORMAT_GRAY8))
        record = media_pb2.WindowRecord(stream_id="hand", index=0, start_s=0.0, end_s=0.4, frames_decoded=2, last=True, complete=False)
        await bus.publish(subjects.media("windows", "hand"), record)
        await wait_done(stub, bus, ["neighbour"])

    dead = await bus.read_all(subjects.DEADLETTER_STREAM, subjects.deadletter("vision"))
    reasons = {m.headers["streamsight-dlq-subject"]: m.headers["streamsight-dlq-reason"] for m in dead}
    assert set(reasons) == {flow, cnn}
    assert "protobuf" in reasons[flow]
    assert "224x224" in reasons[cnn] and "100x100" in reasons[cnn]

    (hand,) = one_per_window(await records(bus, "hand"), 1)
    assert list(hand.flags) == ["partial"]  # two of its frames were lost
    assert (hand.values["flow_frames"], hand.values["flow_pairs"], hand.values["cnn_frames"]) == (2, 1, 0)
    assert hand.values["flow_mag_mean"] > 0.5 and hand.end_s == pytest.approx(0.4)
    for r in one_per_window(await records(bus, "neighbour"), 2):
        assert not r.flags and r.values["flow_pairs"] >= 35


async def test_main_serves_health_reports_the_provider_and_stops_on_sigterm(nats_server):
    port = free_port()
    env = {**os.environ, "STREAMSIGHT_NATS_URL": nats_server.url, "STREAMSIGHT_VISION_GRPC_PORT": str(port), "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
           "STREAMSIGHT_VISION_INTRA_THREADS": "1", "STREAMSIGHT_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.vision", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        status = None
        for _ in range(120):
            with contextlib.suppress(Exception):
                async with channel(f"127.0.0.1:{port}") as ch:
                    status = (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.25)
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    ready = [json.loads(line) for line in out.decode().splitlines() if '"service ready"' in line]
    assert ready and ready[0]["provider"] == "cpu" and ready[0]["flow_model"].startswith("flow.onnx@sha256:")
