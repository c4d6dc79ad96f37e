"""What a finished stream leaves behind in ingest: no decoders, no threads, a bounded record.

A stream that ends frees its decoding state at once (decoders and their frame threads,
swscale contexts, the clip buffer's input streams); its record and clip segments stay for
`finished_keep_s` or until more than `max_finished` streams have finished, and then go too.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

import grpc
import pytest

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel
from streamsight.app.synth import make_media

ENDED = common_pb2.STREAM_STATE_ENDED


@pytest.fixture(scope="module")
def hd_clip(tmp_path_factory):
    """6 s of 1280x720 30 fps H.264 + AAC: big enough that a kept decoder shows in RSS."""
    path = tmp_path_factory.mktemp("media") / "hd.mp4"
    return make_media(path, duration=6.0, width=1280, height=720, segments=[(1, 4, "pan")], keyframe_interval=2.0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _ffmpeg_threads() -> int:
    """Native threads FFmpeg started (its codec threads are named av:<codec>:...)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                count += f.read().startswith("av:")
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return count


async def _ingest(stub, stream_id: str, source) -> ingest_pb2.IngestStatus:
    await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=stream_id, source=str(source), pacing=common_pb2.PACING_VOD))
    while (status := await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=stream_id))).state not in (
            ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED):
        await asyncio.sleep(0.1)
    return status


def _service(nats_server, tmp_path, **overrides) -> IngestService:
    return IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path, **overrides))


async def test_finished_streams_free_their_decoders(nats_server, bus, tmp_path, hd_clip):
    ingest = _service(nats_server, tmp_path)
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        rss, threads = [], []
        for n in range(6):
            status = await _ingest(stub, f"hd{n}", hd_clip.path)
            assert status.state == ENDED, status.last_error
            assert await ingest.streams[f"hd{n}"].pipeline.wait_stopped(timeout=10)
            gc.collect()
            rss.append(_rss_mb())
            threads.append(_ffmpeg_threads())
        first = ingest.streams["hd0"]
        assert first.pipeline.decoder.samplers == [] and first.pipeline.decoder.tracker is None
        # The finished stream still answers for its status and its clips.
        assert status.frames_decoded == hd_clip.frame_count and status.media_time_s == pytest.approx(6.0, abs=0.1)
        clip = await stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id="hd0", start_s=2.5, end_s=5.0))
        assert clip.start_s == pytest.approx(2.0, abs=0.01) and clip.size_bytes > 0
    print(f"\ningest RSS after each finished 720p stream (MB): {[round(r) for r in rss]}; FFmpeg threads: {threads}")
    assert threads[-1] == threads[0] == 0, "every stream's decoder threads ended with it"
    # Kept decoders cost ~28 MB per 720p stream (130 -> 326 MB over 8); allow noise, not that.
    assert rss[-1] - rss[0] < 40, f"RSS grew {rss[-1] - rss[0]:.0f} MB over 5 finished streams"


async def test_finished_streams_are_forgotten_by_count_and_age(nats_server, bus, tmp_path, hd_clip):
    ingest = _service(nats_server, tmp_path, max_finished=1, finished_keep_s=600)
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        assert (await _ingest(stub, "old", hd_clip.path)).state == ENDED
        kept = await stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id="old", start_s=0.5, end_s=3.0, clip_id="keep"))
        segments = ingest.clip_dir("old") / "buffer"
        assert list(segments.glob("seg_*.mkv"))
        assert (await _ingest(stub, "new", hd_clip.path)).state == ENDED
        await asyncio.sleep(0)  # the done callback of "new" runs the count rule
        assert set(ingest.streams) == {"new"}, "only max_finished=1 finished stream is held"
        assert not list(segments.glob("seg_*.mkv")), "a forgotten stream's clip buffer is deleted"
        for call in (stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="old")),
                     stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id="old", start_s=0.5, end_s=3.0))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "kept 600 s" in err.value.details()
        served = b"".join([c.data async for c in stub.ReadClip(ingest_pb2.ReadClipRequest(stream_id="old", clip_id=kept.clip_id))])
        assert len(served) == kept.size_bytes, "a clip exported before the stream was forgotten stays readable"
        # The age rule: nothing is forgotten before finished_keep_s, everything after.
        assert ingest.forget_finished(now=time.monotonic() + 1) == []
        assert ingest.forget_finished(now=time.monotonic() + 601) == ["new"]
        assert ingest.streams == {}
