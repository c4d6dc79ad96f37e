"""Clips over the aiohttp server with auth on and a real ingest: the token is needed, Range gets
206 / 416, and the EBS's signed clip URL plays the same bytes without the gateway's token."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from gateway.ebs.channel import clip_signature
from gateway.ebs.config import EbsConfig
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel

from .http_helpers import gateway_with_http, http_get

TOKEN = "clip-test-token"
KEY = b"extension-secret-for-clip-tests!"
_IDS = itertools.count()
DONE = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED)


@pytest.fixture
async def clip_site(nats_server, tmp_path):
    sid = f"hclip{next(_IDS)}"
    (tmp_path / "media").mkdir()
    media = make_media(tmp_path / "media" / "game.mp4", duration=8.0, keyframe_interval=2.0)
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, auth_token=TOKEN, shutdown_grace_s=1.0)
    ingest = IngestService(IngestSettings(data_dir=tmp_path / "ingest", **common))
    async with ingest.serving():
        async with gateway_with_http(nats_server.url, auth_token=TOKEN, ebs=EbsConfig(secret=KEY), ingest_address=ingest.address,
                                     allow_local_files=True, local_roots=[str(tmp_path / "media")], data_dir=tmp_path / "gateway") as (gateway, server):
            async with channel(gateway.address, TOKEN) as ch:
                stub = gateway_pb2_grpc.StreamSightStub(ch)
                await stub.StartStream(gw.StartStreamRequest(source=str(media.path), stream_id=sid))
                while (await stub.GetStream(gw.GetStreamRequest(stream_id=sid))).state not in DONE:
                    await asyncio.sleep(0.1)
            async with channel(ingest.address, TOKEN) as ich:
                clip = await ingest_pb2_grpc.IngestStub(ich).ExportClip(ingest_pb2.ExportClipRequest(stream_id=sid, start_s=2.5, end_s=6.0, clip_id="highlight-0"))
            yield server, clip, sid


async def test_clip_downloads_need_the_token_and_answer_ranges(clip_site):
    server, clip, sid = clip_site
    path = f"/clips/{sid}/{clip.clip_id}.mp4"
    assert (await http_get(server.port, path))[0] == 401, "no token, no clip"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, whole = await http_get(server.port, path, auth)
    assert status == 200 and headers["accept-ranges"] == "bytes" and headers["content-type"] == "video/mp4"
    assert len(whole) == clip.size_bytes == int(headers["content-length"]) > 1000
    status, _, by_query = await http_get(server.port, f"{path}?token={TOKEN}")
    assert status == 200 and by_query == whole
    total = len(whole)
    for spec, lo, hi in (("bytes=0-1", 0, 1), ("bytes=100-", 100, total - 1), ("bytes=-500", total - 500, total - 1),
                         (f"bytes=1000-{total + 50}", 1000, total - 1)):
        status, headers, body = await http_get(server.port, path, {**auth, "Range": spec})
        assert status == 206 and headers["content-range"] == f"bytes {lo}-{hi}/{total}", spec
        assert body == whole[lo : hi + 1] and int(headers["content-length"]) == hi - lo + 1, spec
    status, headers, body = await http_get(server.port, path, {**auth, "Range": f"bytes={total}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{total}" and body == b""
    status, _, body = await http_get(server.port, path, {**auth, "Range": "bytes=0-1,5-9"})
    assert status == 200 and body == whole
    assert (await http_get(server.port, f"/clips/{sid}/nothing.mp4", auth))[0] == 404

    expires = int(time.time()) + 60
    signed = f"/ebs/v1/clips/{sid}/{clip.clip_id}.mp4?expires={expires}&sig={clip_signature(KEY, sid, clip.clip_id, expires)}"
    status, _, body = await http_get(server.port, signed)
    assert status == 200 and body == whole, "the signed URL needs no gateway token"
    status, headers, body = await http_get(server.port, signed, {"Range": "bytes=10-19"})
    assert status == 206 and body == whole[10:20]
    past = int(time.time()) - 1
    expired = f"/ebs/v1/clips/{sid}/{clip.clip_id}.mp4?expires={past}&sig={clip_signature(KEY, sid, clip.clip_id, past)}"
    assert (await http_get(server.port, expired))[0] == 401
