"""The ingest service on real NATS and gRPC: media out by media time, clips, failures, pacing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import re
import contextlib
import math

import av
import grpc
import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.rpc import channel
from streamsight.app.synth import make_media

TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """25 s of 640x360 30 fps H.264 + AAC with a pan and an action burst."""
    path = tmp_path_factory.mktemp("media") / "game.mp4"
    return make_media(path, duration=25.0, segments=[(5, 10, "pan"), (15, 20, "action")], keyframe_interval=2.0)


@contextlib.asynccontextmanager
async def stack(nats_url: str, data_dir, **ingest_overrides):
    ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, data_dir=data_dir, **ingest_overrides))
    async with ingest.serving():
        gateway = GatewayService(
            GatewaySettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, ingest_address=ingest.address, allow_local_files=True, http_port=0,
                            local_roots=[str(Path(data_dir).parent)])  # pytest's base folder: the sample and each test's files
        )
        async with gateway.serving(), channel(gateway.address) as ch:
            yield ingest, gateway_pb2_grpc.StreamSightStub(ch)


class MediaRecorder:
    """A consumer of every media subject (it is what gives MEDIA's interest retention a reader)."""

    def __init__(self, bus: Bus, durable: str, ack_delay: float = 0.0):
        self.messages: dict[str, list[bytes]] = {}
        self.order: list[tuple[str, str, bytes]] = []  # every message, in the order MEDIA stored them
        self.ack_delay = ack_delay
        self.bus, self.durable = bus, durable
        self.task = bus.consume(durable, "streamsight.media.v1.>", self.handle, subjects.MEDIA_STREAM, batch=64)

    async def close(self) -> None:
        """Stop and delete the consumer: a reader that is gone must not hold MEDIA back."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.bus.js.delete_consumer(subjects.MEDIA_STREAM, self.durable)

    async def handle(self, msg) -> None:
        kind, stream = msg.subject.split(".")[3], subjects.stream_of(msg.subject)
        self.messages.setdefault(f"{kind}:{stream}", []).append(msg.data)
        self.order.append((kind, stream, msg.data))
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)

    def of(self, kind: str, stream: str) -> list[bytes]:
        return self.messages.get(f"{kind}:{stream}", [])

    async def wait_for(self, kind: str, stream: str, count: int, timeout: float = 20.0) -> None:
        """Wait until `count` messages of `kind` came (the deadline only stops a hang)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.of(kind, stream)) < count and loop.time() < deadline:
            await asyncio.sleep(0.05)


async def wait_terminal(stub, stream_id: str, timeout: float = 120) -> gw.Stream:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        stream = await stub.GetStream(gw.GetStreamRequest(stream_id=stream_id))
        if stream.state in TERMINAL:
            return stream
        await asyncio.sleep(0.1)
    pytest.fail(f"stream {stream_id} did not finish; last state {common_pb2.StreamState.Name(stream.state)}")



@pytest.fixture
async def media_recorder(bus, request):
    made = []

    def make(ack_delay: float = 0.0) -> MediaRecorder:
        made.append(MediaRecorder(bus, f"rec-{request.node.name[5:40]}".replace("[", "-").replace("]", ""), ack_delay))
        return made[-1]

    yield make
    for r in made:
        await r.close()


async def test_a_file_becomes_frames_audio_signals_and_windows(nats_server, bus, media_recorder, tmp_path, sample):
    recorder = media_recorder()
    async with stack(nats_server.url, tmp_path) as (_, stub):
        started = await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="basic"))
        assert started.state == common_pb2.STREAM_STATE_STARTING
        done = await wait_terminal(stub, "basic")
    assert done.state == common_pb2.STREAM_STATE_ENDED, done.last_error
    assert done.duration_s == pytest.approx(25.0, abs=0.2)
    await recorder.wait_for("windows", "basic", 3)
    final = [events_pb2.StreamStatus.FromString(m.data) for m in await bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", "basic"))][-1]
    assert final.state == common_pb2.STREAM_STATE_ENDED and final.windows == 3, "the final status counts the window records"

    windows = [media_pb2.WindowRecord.FromString(b) for b in recorder.of("windows", "basic")]
    assert [w.index for w in windows] == [0, 1, 2]
    assert [w.last for w in windows] == [False, False, True]
    assert windows[0].frames_decoded == 300 and windows[0].audio_s == pytest.approx(10.0, abs=0.05)
    assert sum(w.frames_decoded for w in windows) == sample.frame_count

    # the source is yuv420p: glitch gets its planes (1.5 bytes a pixel), the others gray or RGB
    formats = {"flow": media_pb2.PIXEL_FORMAT_GRAY8, "cnn": media_pb2.PIXEL_FORMAT_RGB24, "glitch": media_pb2.PIXEL_FORMAT_YUV420P}
    for consumer, fps, shape in (("flow", 5, (180, 320)), ("cnn", 1, (224, 224, 3)), ("glitch", 2, (360, 640, 3))):
        frames = [media_pb2.VideoFrame.FromString(b) for b in recorder.of(f"frames_{consumer}", "basic")]
        assert len(frames) == pytest.approx(25 * fps, abs=1), consumer
        assert [f.sample_index for f in frames] == list(range(len(frames)))
        gaps = [b.pts_s - a.pts_s for a, b in zip(frames, frames[1:])]
        assert all(abs(g - 1 / fps) < 0.04 for g in gaps), f"{consumer} sampled unevenly by PTS"
        f = frames[0]
        assert {g.format for g in frames} == {formats[consumer]}, consumer
        halves = {media_pb2.PIXEL_FORMAT_GRAY8: 2, media_pb2.PIXEL_FORMAT_RGB24: 6, media_pb2.PIXEL_FORMAT_YUV420P: 3}[f.format]
        assert len(f.data) * 2 == f.width * f.height * halves
        assert (f.height, f.width) == shape[:2]

    chunks = [media_pb2.AudioChunk.FromString(b) for b in recorder.of("audio", "basic")]
    assert {c.sample_rate for c in chunks} == {32000}
    assert sum(len(c.pcm_f32le) // 4 for c in chunks) / 32000 == pytest.approx(25.0, abs=0.1)
    # Window record i is stored after every frame and audio chunk of window i: analysers use it as their clock.
    closed = -1
    for kind, stream, data in recorder.order:
        if stream != "basic":
            continue
        if kind == "windows":
            closed = media_pb2.WindowRecord.FromString(data).index
        elif kind.startswith("frames_"):
            assert int(media_pb2.VideoFrame.FromString(data).pts_s // 10) > closed, "a frame came after its window's record"
        elif kind == "audio":
            assert int(media_pb2.AudioChunk.FromString(data).start_s // 10) > closed, "audio came after its window's record"
    signals = [s for b in recorder.of("signals", "basic") for s in media_pb2.FrameSignals.FromString(b).signals]
    assert len(signals) == sample.frame_count
    assert not any(s.is_corrupt for s in signals)


async def test_windows_are_cut_with_the_platforms_window_length(nats_server, bus, media_recorder, tmp_path, sample):
    recorder = media_recorder()
    async with stack(nats_server.url, tmp_path, window_s=5.0) as (_, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="fives"))
        done = await wait_terminal(stub, "fives")
    assert done.state == common_pb2.STREAM_STATE_ENDED, done.last_error
    await recorder.wait_for("windows", "fives", 5)
    windows = [media_pb2.WindowRecord.FromString(b) for b in recorder.of("windows", "fives")]
    assert [(w.index, w.start_s, w.window_s) for w in windows] == [(i, 5.0 * i, 5.0) for i in range(5)]


async def test_clip_is_cut_by_stream_copy_and_served(nats_server, bus, media_recorder, tmp_path, sample):
    media_recorder()
    async with stack(nats_server.url, tmp_path) as (ingest, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="clipped"))
        await wait_terminal(stub, "clipped")
        async with channel(ingest.address) as ch:
            control = ingest_pb2_grpc.IngestStub(ch)
            clip = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="clipped", start_s=12.5, end_s=19.0))
            again = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="clipped", start_s=12.5, end_s=19.0))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="clipped", start_s=9.0, end_s=3.0))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="nobody", start_s=0, end_s=3.0))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        chunks = [c async for c in stub.GetClip(gw.GetClipRequest(stream_id="clipped", clip_id=clip.clip_id))]
    assert again.clip_id == clip.clip_id and again.start_s == clip.start_s
    assert clip.start_s == pytest.approx(12.0, abs=0.01), "the clip starts at the keyframe at or before 12.5 s"
    assert clip.end_s == pytest.approx(19.0, abs=0.25)  # up to the packet that covers 19 s
    data = b"".join(c.data for c in chunks)
    assert len(data) == clip.size_bytes == chunks[0].total_size and chunks[0].content_type == "video/mp4"
    out = tmp_path / "fetched.mp4"
    out.write_bytes(data)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264", "stream copy keeps the codec"
        frames = list(container.decode(video=0))
    assert len(frames) == pytest.approx(7.0 * 30, abs=2)
    assert frames[0].key_frame


async def test_bad_source_fails_clearly_and_leaves_other_streams_alone(nats_server, bus, media_recorder, tmp_path, sample):
    recorder = media_recorder()
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video, just text pretending to be one\n" * 50)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(sample.path.read_bytes()[: sample.path.stat().st_size // 3])
    async with stack(nats_server.url, tmp_path) as (_, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="good"))
        await stub.StartStream(gw.StartStreamRequest(source=str(junk), stream_id="junk"))
        await stub.StartStream(gw.StartStreamRequest(source=str(truncated), stream_id="cut"))
        bad = await wait_terminal(stub, "junk")
        cut = await wait_terminal(stub, "cut")
        good = await wait_terminal(stub, "good")
    assert bad.state == common_pb2.STREAM_STATE_FAILED
    assert "is not a video or audio file" in bad.last_error, bad.last_error
    assert cut.state in (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED)
    assert good.state == common_pb2.STREAM_STATE_ENDED
    await recorder.wait_for("windows", "good", 3)
    assert len(recorder.of("windows", "good")) == 3


async def test_vod_pacing_keeps_the_backlog_bounded(nats_server, bus, media_recorder, tmp_path, sample):
    recorder = media_recorder(ack_delay=0.01)  # a slow analyser
    peak = 0
    async with stack(nats_server.url, tmp_path, max_backlog=40) as (_, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="paced"))
        while (await stub.GetStream(gw.GetStreamRequest(stream_id="paced"))).state not in TERMINAL:
            peak = max(peak, await bus.backlog(subjects.MEDIA_STREAM, subjects.media("*", "paced")))
            await asyncio.sleep(0.05)
    assert 0 < peak <= 40 + 3, f"backlog peaked at {peak}"  # window records are not paced
    await recorder.wait_for("windows", "paced", 3)
    assert len(recorder.of("windows", "paced")) == 3, "nothing is lost while pacing"


async def test_vod_pacing_keeps_media_bytes_bounded(nats_server, bus, media_recorder, tmp_path, sample):
    recorder = media_recorder(ack_delay=0.01)  # a slow analyser
    budget = 16 * 1024**2  # about 48 of the sample's 640x360 YUV420P glitch frames
    peak = 0
    async with stack(nats_server.url, tmp_path, media_max_bytes=budget) as (_, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="bytes"))
        while (await stub.GetStream(gw.GetStreamRequest(stream_id="bytes"))).state not in TERMINAL:
            peak = max(peak, (await bus.js.stream_info(subjects.MEDIA_STREAM)).state.bytes)
            await asyncio.sleep(0.02)
    assert budget / 2 < peak <= budget, f"MEDIA held {peak} bytes at most"
    await recorder.wait_for("windows", "bytes", 3)
    assert len(recorder.of("windows", "bytes")) == 3, "nothing is lost while pacing"
    assert len(recorder.of("frames_glitch", "bytes")) == 50, "every glitch frame (2 fps of 25 s) came"


async def test_stop_a_stream_played_as_live(nats_server, bus, media_recorder, tmp_path, sample):
    media_recorder()
    async with stack(nats_server.url, tmp_path) as (_, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="live", options=gw.StreamOptions(play_file_as_live=True)))
        await asyncio.sleep(2.0)
        mid = await stub.GetStream(gw.GetStreamRequest(stream_id="live"))
        assert mid.state == common_pb2.STREAM_STATE_RUNNING
        assert 0.5 < mid.media_time_s < 4.0 or mid.media_time_s == 0, "live pacing follows the wall clock"
        stopped = await stub.StopStream(gw.StopStreamRequest(stream_id="live"))
    assert stopped.state == common_pb2.STREAM_STATE_STOPPED
    assert not math.isnan(stopped.media_time_s)


async def test_clip_in_the_nats_object_store(nats_server, bus, media_recorder, tmp_path, sample):
    media_recorder()
    async with stack(nats_server.url, tmp_path, clip_store="nats") as (ingest, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.path), stream_id="stored"))
        await wait_terminal(stub, "stored")
        async with channel(ingest.address) as ch:
            control = ingest_pb2_grpc.IngestStub(ch)
            clip = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="stored", start_s=4.5, end_s=9.0, clip_id="kill"))
            again = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="stored", start_s=4.5, end_s=9.0, clip_id="kill"))
            served = b"".join([c.data async for c in control.ReadClip(ingest_pb2.ReadClipRequest(stream_id="stored", clip_id=clip.clip_id))])
            for guess in ("nothing", "kill"):  # the caller's key names no clip: only the id given back does
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [c async for c in control.ReadClip(ingest_pb2.ReadClipRequest(stream_id="stored", clip_id=guess))]
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert re.fullmatch(r"[0-9a-f]{32}", clip.clip_id), "a random clip id, nothing derived from the stream or the window"
    assert clip.uri == f"nats-object://clips/stored/{clip.clip_id}.mp4"
    assert again.clip_id == clip.clip_id and again.uri == clip.uri and again.size_bytes == clip.size_bytes and again.start_s == clip.start_s
    assert not (tmp_path / "clips" / "stored" / f"{clip.clip_id}.mp4").exists(), "the bucket holds the clip, not the local folder"
    stored = await (await bus.js.object_store("clips")).get(f"stored/{clip.clip_id}.mp4")
    assert stored.data == served and len(served) == clip.size_bytes > 0
    out = tmp_path / "from_bucket.mp4"
    out.write_bytes(stored.data)
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert clip.start_s == pytest.approx(4.0, abs=0.01), "the clip starts at the keyframe at or before 4.5 s"
    assert len(frames) == pytest.approx((clip.end_s - clip.start_s) * 30, abs=2) and frames[0].key_frame


@pytest.mark.parametrize("store", ["local", "nats"])
async def test_a_vertical_clip_is_cut_beside_the_clip(nats_server, bus, media_recorder, tmp_path, sample, shared_data, store):
    """Real footage (Big Buck Bunny, 1280x720): ExportClip with vertical gives a 9:16 H.264 copy of the same span."""
    media_recorder()
    source = tmp_path / "bunny.mp4"  # inside the gateway's local roots
    source.write_bytes((shared_data / "media" / "bigbuckbunny.mp4").read_bytes())
    sid = f"tall-{store}"
    async with stack(nats_server.url, tmp_path, clip_store=store) as (ingest, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(source), stream_id=sid))
        await wait_terminal(stub, sid)
        async with channel(ingest.address) as ch:
            control = ingest_pb2_grpc.IngestStub(ch)
            plain = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id=sid, start_s=0.5, end_s=4.5, clip_id="plain"))
            clip = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id=sid, start_s=0.5, end_s=4.5, clip_id="h-1", vertical=True))
            again = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id=sid, start_s=0.5, end_s=4.5, clip_id="h-1", vertical=True))
            gave_up = ingest_pb2.ExportClipRequest(stream_id=sid, start_s=1.0, end_s=4.0, clip_id="h-2", vertical=True)
            with contextlib.suppress(grpc.aio.AioRpcError):  # a caller that gives up (most likely mid-cut)...
                await control.ExportClip(gave_up, timeout=0.2)
            retried = await control.ExportClip(gave_up)  # ...and retries: one copy, finished or joined
            files = {}
            for name, ref in (("clip", clip), ("vertical", clip.vertical)):
                chunks = [c async for c in control.ReadClip(ingest_pb2.ReadClipRequest(stream_id=sid, clip_id=ref.clip_id))]
                assert chunks[0].content_type == "video/mp4"
                files[name] = tmp_path / f"{name}.mp4"
                files[name].write_bytes(b"".join(c.data for c in chunks))
    assert not plain.HasField("vertical"), "without the flag the answer is what it always was"
    tall = clip.vertical
    assert re.fullmatch(r"[0-9a-f]{32}", tall.clip_id) and tall.clip_id != clip.clip_id
    assert not tall.HasField("vertical")
    assert (again.clip_id, again.vertical.clip_id, again.vertical.uri) == (clip.clip_id, tall.clip_id, tall.uri), "a retry gives the same copy"
    assert (tall.start_s, tall.end_s) == (clip.start_s, clip.end_s)
    assert retried.vertical.clip_id not in ("", tall.clip_id)
    if store == "local":
        folder = tmp_path / "clips" / sid
        assert not list(folder.glob("*.part.mp4")), "no half-written copy is left behind"
        assert {p.name for p in folder.glob("*.mp4")} >= {
            f"{c}.mp4" for c in (plain.clip_id, clip.clip_id, tall.clip_id, retried.clip_id, retried.vertical.clip_id)}
        copies = {json.loads(p.read_text())["clip_id"] for p in folder.glob("*.vertical.json")}
        assert copies == {tall.clip_id, retried.vertical.clip_id}, "one copy per key"
    assert tall.size_bytes == files["vertical"].stat().st_size > 0
    assert tall.uri.startswith("file://" if store == "local" else f"nats-object://clips/{sid}/")
    with av.open(str(files["clip"])) as c:
        wide = c.streams.video[0]
        wide_frames = sum(1 for _ in c.decode(video=0))
        rate = float(wide.average_rate)
        assert (wide.codec_context.width, wide.codec_context.height) == (1280, 720)
    with av.open(str(files["vertical"])) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and c.streams.audio
        width, height = v.codec_context.width, v.codec_context.height
        frames = list(c.decode(video=0))
    assert height == 720 and width == 404 and width / height == pytest.approx(9 / 16, abs=0.01)
    assert abs(len(frames) - wide_frames) <= 2
    duration = (frames[-1].time - frames[0].time) + 1 / rate
    assert duration == pytest.approx(clip.end_s - clip.start_s, abs=2.0 / rate)


async def test_a_clip_that_cannot_be_made_vertical_comes_back_without_a_copy(nats_server, bus, media_recorder, tmp_path):
    """A portrait source is already narrower than 9:16: the clip is returned, no copy, the failure counted."""
    from prometheus_client import REGISTRY

    media_recorder()
    portrait = make_media(tmp_path / "portrait.mp4", duration=6.0, width=180, height=320, keyframe_interval=2.0)
    before = REGISTRY.get_sample_value("streamsight_ingest_vertical_failed_total") or 0.0
    async with stack(nats_server.url, tmp_path) as (ingest, stub):
        await stub.StartStream(gw.StartStreamRequest(source=str(portrait.path), stream_id="portrait"))
        await wait_terminal(stub, "portrait")
        async with channel(ingest.address) as ch:
            control = ingest_pb2_grpc.IngestStub(ch)
            clip = await control.ExportClip(ingest_pb2.ExportClipRequest(stream_id="portrait", start_s=0.0, end_s=4.0, vertical=True))
            served = b"".join([c.data async for c in control.ReadClip(ingest_pb2.ReadClipRequest(stream_id="portrait", clip_id=clip.clip_id))])
    assert clip.clip_id and len(served) == clip.size_bytes > 0
    assert not clip.HasField("vertical")
    assert REGISTRY.get_sample_value("streamsight_ingest_vertical_failed_total") == before + 1
    folder = tmp_path / "clips" / "portrait"
    assert folder.is_dir() and not list(folder.glob("*.part.mp4")), "no half-written copy is left behind"
