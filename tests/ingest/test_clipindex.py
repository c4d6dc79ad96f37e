"""A finished stream's clips after an ingest restart (clipindex.py; real NATS, in-process ingest, generated media)."""

from __future__ import annotations

import json

import grpc
import pytest

from services.ingest import clipindex
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel


def _service(nats_server, tmp_path, **overrides) -> IngestService:
    return IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "var",
                                        shutdown_grace_s=1.0, **overrides))


async def test_a_finished_streams_clips_are_cut_after_a_restart(nats_server, bus, tmp_path, ingest_vod, monkeypatch):
    video = make_media(tmp_path / "short.mp4", duration=10.0, width=320, height=180, fps=15, keyframe_interval=1.0).path
    monkeypatch.setenv("STREAMSIGHT_REPLICA_ID", "ingest-clips")
    async with _service(nats_server, tmp_path).serving() as ingest, channel(ingest.address) as ch:
        await ingest_vod(ingest_pb2_grpc.IngestStub(ch), {"idx1": video})
    record = json.loads((tmp_path / "var" / "clips" / "idx1" / clipindex.FILE).read_text())
    assert record["replica"] == "ingest-clips" and record["buffer"]["segments"], record
    (tmp_path / "var" / "clips" / "junk1").mkdir()
    (tmp_path / "var" / "clips" / "junk1" / clipindex.FILE).write_text("{half a reco")

    async with _service(nats_server, tmp_path).serving() as ingest, channel(ingest.address) as ch:  # a new process would do the same
        stub = ingest_pb2_grpc.IngestStub(ch)
        status = await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="idx1"))
        assert status.state == common_pb2.STREAM_STATE_ENDED and status.media_time_s > 9 and status.frames_decoded >= 140, status
        clip = await stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id="idx1", start_s=6.0, end_s=9.0))
        assert 5.0 <= clip.start_s <= 6.0 and clip.end_s >= 8.9 and clip.size_bytes > 0, clip
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="junk1"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND, "an unreadable record is skipped, the service serves"

    async with _service(nats_server, tmp_path, finished_keep_s=0.0).serving() as ingest:
        assert "idx1" not in ingest.streams, "past finished_keep_s it is not restored"
