"""Exact takeover of a stage's streams: state saved mid-stream and loaded into a fresh logic
(another replica) goes on to the same windows as a logic that never stopped, on real media."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from services.ingest.decode import DecodeConfig
from services.ingest.outbound import OutboundEncoder
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.sampling import SamplingConfig
from streamsight import statecodec

os.environ.setdefault("STREAMSIGHT_ONNX_PROVIDER", "cpu")

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"
BBB = MEDIA / "bigbuckbunny.mp4"
WINDOW_S = 2.0  # 5.3 s of media: three windows, two of them whole
BATCH = 16


@pytest.fixture(scope="module")
def messages() -> list[tuple[str, bytes]]:
    if not BBB.exists():
        pytest.skip(f"needs {BBB} (../shared/data)")
    return asyncio.run(_encode())


async def _encode() -> list[tuple[str, bytes]]:
    config = IngestConfig(decode=DecodeConfig(window_seconds=WINDOW_S, sampling=SamplingConfig(glitch=None)))
    pipeline = IngestPipeline(str(BBB), config, stream_id="bbb")
    enc = OutboundEncoder("bbb", lambda: pipeline.stats.media_time, window_s=WINDOW_S)
    out = []
    async for item in pipeline.items():
        out += enc.encode(item)
    out += enc.finish()
    return [(m.subject, m.data) for m in out]


def _run(make, msgs, cut: int | None, batch: int = BATCH) -> tuple[list, list[int]]:
    """Windows of `msgs` stepped in batches; at batch `cut`, the stream moves to a fresh logic."""
    logic, windows, sizes = make(), [], []
    for n, start in enumerate(range(0, len(msgs), batch)):
        if n == cut and "bbb" in logic.streams:
            started = time.perf_counter()
            data = logic.export_state("bbb")
            logic = make()
            logic.import_state("bbb", data)
            sizes.append((len(data), time.perf_counter() - started))
        windows += logic.step(msgs[start:start + batch]).windows
    return [(w.window, w.start_s, w.end_s, w.values, w.flags) for w in windows], sizes


def _cuts(msgs, batch: int = BATCH) -> list[int]:
    batches = (len(msgs) + batch - 1) // batch
    return sorted({1, batches // 3, batches // 2, (2 * batches) // 3, batches - 1})


def test_vision_state_moves_mid_stream_and_the_windows_stay_exact(messages):
    from services.vision.runtime import VisionModels
    from services.vision.settings import VisionSettings
    from services.vision.streams import VisionStreams

    media = [m for m in messages if ".audio." not in m[0] and ".signals." not in m[0]]
    models = VisionModels(VisionSettings().model_dir, 1, 16)
    make = lambda: VisionStreams(models, window_s=WINDOW_S)  # noqa: E731
    whole, _ = _run(make, media, None)
    assert len(whole) == 3 and all(not w[4] or w[4] == ("partial",) for w in whole)
    for cut in _cuts(media):
        moved, sizes = _run(make, media, cut)
        assert moved == whole, f"cut at batch {cut}"
        assert sizes and sizes[0][0] < 1024 * 1024  # fits a KV value
        print(f"vision snapshot at batch {cut}: {sizes[0][0]} bytes, {sizes[0][1] * 1000:.1f} ms")


def test_audio_state_moves_mid_stream_and_the_windows_stay_exact(messages):
    from services.audio.streams import AudioStreams

    media = [m for m in messages if ".audio." in m[0] or ".windows." in m[0]]
    make = lambda: AudioStreams(window_s=WINDOW_S)  # noqa: E731
    whole, _ = _run(make, media, None)
    assert len(whole) == 3
    assert len(media) > 6
    for cut in range(1, len(media)):  # one message a batch: a move after every message
        moved, sizes = _run(make, media, cut, batch=1)
        assert moved == whole, f"cut at message {cut}"
        print(f"audio snapshot at batch {cut}: {sizes[0][0]} bytes, {sizes[0][1] * 1000:.1f} ms")


def test_state_refuses_what_it_may_not_make():
    class Foreign:
        pass

    with pytest.raises(statecodec.StateError, match="not among the allowed"):
        statecodec.dumps({"x": Foreign()}, ())
    data = statecodec.dumps([1.5, float("inf"), (1, 2), {3: {"a"}}], ())
    assert statecodec.loads(data, ()) == [1.5, float("inf"), (1, 2), {3: {"a"}}]
    with pytest.raises(statecodec.StateError):
        statecodec.loads(b"garbage", ())
