"""A killed ingest resumes its streams (real ingest processes, real NATS, real media).

SIGKILL mid-stream, then a new ingest process on the same NATS: it finds the stream's resume
point in its KV bucket and starts it again, a file from its next window (no window record twice,
exactly one `last`), a live HLS source from now with its media clock and windows continued past
the outage, the gap reported in a "resumed" status. A point it cannot resume is reported FAILED.
"""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.resume import ResumePoint, ResumeStore
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2
from streamsight.rpc import channel

from .procs import Ingest, Recorder, statuses as _statuses, until_terminal as _until_terminal

pytestmark = pytest.mark.slow
BUCKET = "ingest_streams"


@pytest.fixture
def ingest(nats_server, tmp_path):
    made = Ingest(nats_server.url, tmp_path)
    yield made
    made.stop()


async def test_a_killed_ingest_resumes_a_file_from_its_next_window(bus, ingest, tmp_path):
    video = make_media(tmp_path / "game.mp4", duration=20.0, width=320, height=180, fps=15, segments=[(0, 20, "pan")], keyframe_interval=1.0).path
    rec = Recorder(bus, "resumefile")
    ingest.start()
    async with channel(ingest.address) as ch:
        stub = await ingest.stub(ch)
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="resumefile", source=str(video), pacing=common_pb2.PACING_LIVE))
        await rec.wait_windows(2)  # 4 s windows: 0 and 1 are out, the file plays in real time
    ingest.kill()
    kv = await bus.kv(BUCKET)
    saved = ResumePoint.from_bytes((await kv.get("resumefile")).value)
    assert saved.windows >= 2 and not saved.live and saved.run == 0
    ingest.start()  # the new process resumes it before it serves
    final = await _until_terminal(bus, "resumefile")
    await asyncio.sleep(0.5)
    rec.task.cancel()
    assert final.state == common_pb2.STREAM_STATE_ENDED and final.windows == 5, final
    assert [w.index for w in rec.windows] == [0, 1, 2, 3, 4], "every window record once, in order"
    assert [w.last for w in rec.windows] == [False] * 4 + [True]
    assert len(rec.frames) == len(set(rec.frames)), "no frame twice"
    resumed = [s for s in await _statuses(bus, "resumefile") if s.reason == "resumed"]
    assert len(resumed) == 1 and f"window {saved.windows}" in resumed[0].detail, resumed
    assert not await (await ResumeStore.open(bus, BUCKET)).left(), "the ended stream's point is deleted"


async def test_a_killed_ingest_resumes_a_live_source_from_now(bus, ingest, live_hls):
    live_hls.run(preroll=2, period=1.0)  # 16 one-second segments, published in real time
    rec = Recorder(bus, "resumelive")
    ingest.start()
    async with channel(ingest.address) as ch:
        stub = await ingest.stub(ch)
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="resumelive", source=live_hls.url, pacing=common_pb2.PACING_LIVE))
        await rec.wait_windows(1)
    ingest.kill()
    kv = await bus.kv(BUCKET)
    saved = ResumePoint.from_bytes((await kv.get("resumelive")).value)
    assert saved.live and saved.windows >= 1
    await asyncio.sleep(2.0)  # the outage: media published meanwhile is lost
    ingest.start()
    final = await _until_terminal(bus, "resumelive")
    await asyncio.sleep(0.5)
    rec.task.cancel()
    assert final.state == common_pb2.STREAM_STATE_ENDED, final
    indexes = [w.index for w in rec.windows]
    assert indexes == sorted(set(indexes)) and indexes[0] == 0, indexes
    assert indexes[-1] > saved.windows, "windows after the outage came"
    assert len(rec.frames) == len(set(rec.frames)) and any(rec.frames), "frames after the restart were not taken for duplicates"
    resumed = [s for s in await _statuses(bus, "resumelive") if s.reason == "resumed"]
    assert len(resumed) == 1 and resumed[0].gap_s >= 2.0, resumed
    after = [w for w in rec.windows if w.index >= saved.windows + 1]
    assert after and after[0].start_s >= saved.media_time_s, "the media clock went on past the outage"


async def test_a_point_that_cannot_be_resumed_is_reported_failed(bus, ingest, tmp_path):
    gone = tmp_path / "gone.mp4"
    request = ingest_pb2.StartIngestRequest(stream_id="resumegone", source=str(gone), pacing=common_pb2.PACING_VOD)
    kv = await bus.kv(BUCKET)
    await kv.put("resumegone", ResumePoint.new(request, live=False).to_bytes())
    await kv.put("resumebad", b"{not json")
    ingest.start()
    final = await _until_terminal(bus, "resumegone", timeout=30)
    assert final.state == common_pb2.STREAM_STATE_FAILED and final.reason == "resume_failed" and "no such file" in final.detail, final
    assert not await (await ResumeStore.open(bus, BUCKET)).left(), "both points are gone"
    async with channel(ingest.address) as ch:
        await ingest.stub(ch)  # and the service serves


async def test_a_stream_the_gateway_stopped_while_ingest_was_down_is_not_resumed(bus, ingest, tmp_path):
    video = make_media(tmp_path / "short.mp4", duration=6.0, width=160, height=92, fps=10).path
    request = ingest_pb2.StartIngestRequest(stream_id="resumestopped", source=str(video), pacing=common_pb2.PACING_VOD)
    kv = await bus.kv(BUCKET)
    await kv.put("resumestopped", ResumePoint.new(request, live=False).to_bytes())
    stopped = events_pb2.StreamStatus(stream_id="resumestopped", state=common_pb2.STREAM_STATE_STOPPED, reason="stopped_by_request", reporter="gateway")
    await bus.publish_event("resumestopped", stopped, "resumestopped:status:gateway:stopped")
    ingest.start()
    async with channel(ingest.address) as ch:
        stub = await ingest.stub(ch)
        with pytest.raises(Exception, match="NOT_FOUND|no stream"):
            await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="resumestopped"))
    assert not await (await ResumeStore.open(bus, BUCKET)).left(), "its point is deleted"
    assert [s.reporter for s in await _statuses(bus, "resumestopped")] == ["gateway"], "ingest said nothing of it"
