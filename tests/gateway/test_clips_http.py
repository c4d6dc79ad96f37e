"""Clips over the gateway's HTTP route with auth on: the token is needed, Range requests get 206 /
416 as Safari and iOS need, and the gateway's calls to ingest carry the service credential while
a call to ingest without it is refused."""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc
import urllib.error
import urllib.request

import av
import grpc
import numpy as np
import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel

TOKEN = "clip-test-token"
_IDS = itertools.count()
DONE = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _noise(path, seconds: int = 8, fps: int = 30):
    """Video noise at high quality: megabytes of clip, so a buffered response would show in memory."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "16", "g": str(2 * fps), "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (180, 320, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.fixture
async def clip_site(nats_server, bus, tmp_path):
    """Ingest and the gateway (web page on) with a token; one stream ingested and one clip cut."""
    sid = f"game{next(_IDS)}"  # the module's NATS keeps every test's registry
    (tmp_path / "media").mkdir()
    media = _noise(tmp_path / "media" / "game.mp4")
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, auth_token=TOKEN, shutdown_grace_s=1.0)
    ingest = IngestService(IngestSettings(data_dir=tmp_path / "ingest", **common))
    async with ingest.serving():
        settings = GatewaySettings(
            ingest_address=ingest.address, chat_address="127.0.0.1:9", http_port=0, allow_local_files=True,
            local_roots=[str(tmp_path / "media")], data_dir=tmp_path / "gateway", **common,
        )
        async with GatewayService(settings).serving() as gateway, channel(gateway.address, TOKEN) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            await stub.StartStream(gw.StartStreamRequest(source=str(media), stream_id=sid))
            while (await stub.GetStream(gw.GetStreamRequest(stream_id=sid))).state not in DONE:
                await asyncio.sleep(0.1)
            async with channel(ingest.address, TOKEN) as ich:
                clip = await ingest_pb2_grpc.IngestStub(ich).ExportClip(
                    ingest_pb2.ExportClipRequest(stream_id=sid, start_s=2.5, end_s=6.0, clip_id="highlight-0")
                )
            yield ingest, gateway, clip, sid


async def test_ingest_refuses_calls_without_the_token(clip_site):
    ingest, _, _, sid = clip_site
    for token in ("", "wrong"):
        async with channel(ingest.address, token) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ingest_pb2_grpc.IngestStub(ch).GetIngest(ingest_pb2.GetIngestRequest(stream_id=sid))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [c async for c in ingest_pb2_grpc.IngestStub(ch).ReadClip(ingest_pb2.ReadClipRequest(stream_id=sid, clip_id="x"))]
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_gateway_dispatched_to_ingest_with_the_token(clip_site):
    _, gateway, _, sid = clip_site
    async with channel(gateway.address, TOKEN) as ch:
        stream = await gateway_pb2_grpc.StreamSightStub(ch).GetStream(gw.GetStreamRequest(stream_id=sid))
    assert stream.state == common_pb2.STREAM_STATE_ENDED, stream.error


async def test_clip_downloads_need_the_token_and_answer_ranges(clip_site):
    _, gateway, clip, sid = clip_site
    base = f"http://127.0.0.1:{gateway.web.port}/clips/{sid}/{clip.clip_id}.mp4"
    loop = asyncio.get_running_loop()

    def get(url, headers=None):
        return loop.run_in_executor(None, _get, url, headers)

    status, _, _ = await get(base)
    assert status == 401, "no token, no clip"
    status, headers, whole = await get(base, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["accept-ranges"] == "bytes" and headers["content-type"] == "video/mp4"
    assert len(whole) == clip.size_bytes == int(headers["content-length"]) > 1000
    status, _, by_query = await get(f"{base}?token={TOKEN}")  # <video src> cannot send headers
    assert status == 200 and by_query == whole

    auth = {"Authorization": f"Bearer {TOKEN}"}
    total = len(whole)
    for spec, lo, hi in (("bytes=0-1", 0, 1), ("bytes=100-", 100, total - 1), ("bytes=-500", total - 500, total - 1),
                         (f"bytes=1000-{total + 50}", 1000, total - 1)):
        status, headers, body = await get(base, {**auth, "Range": spec})
        assert status == 206, spec
        assert headers["content-range"] == f"bytes {lo}-{hi}/{total}", spec
        assert body == whole[lo : hi + 1] and int(headers["content-length"]) == hi - lo + 1, spec
    status, headers, body = await get(base, {**auth, "Range": f"bytes={total}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{total}" and body == b""
    status, _, body = await get(base, {**auth, "Range": "bytes=0-1,5-9"})  # several ranges: the whole clip
    assert status == 200 and body == whole
    status, _, _ = await get(f"http://127.0.0.1:{gateway.web.port}/clips/{sid}/highlight-0.mp4", auth)
    assert status == 404, "the caller's key is no clip id"


async def test_a_clip_is_streamed_not_held_in_memory(clip_site):
    """The gateway relays ingest's chunks as they come: Python's peak allocation while a clip of
    megabytes downloads stays under half the clip (1.5 MB for 5.5 MB here; buffering held it three times)."""
    _, gateway, clip, sid = clip_site
    url = f"http://127.0.0.1:{gateway.web.port}/clips/{sid}/{clip.clip_id}.mp4?token={TOKEN}"

    def download() -> int:
        got = 0
        with urllib.request.urlopen(url, timeout=30) as r:
            while block := r.read(64 * 1024):
                got += len(block)
        return got

    tracemalloc.start()
    try:
        got = await asyncio.get_running_loop().run_in_executor(None, download)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == clip.size_bytes > 4_000_000
    assert peak < clip.size_bytes / 2, f"peak {peak / 1e6:.1f} MB while serving a {clip.size_bytes / 1e6:.1f} MB clip"
