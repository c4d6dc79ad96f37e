"""services.ingest.outbound: what ingest sends for a stream's items, without NATS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.ingest.items import AudioChunk, FrameSignal, FrameSignals, SampledFrame, StatusEvent, StatusKind, WindowRecord
from services.ingest.outbound import OutboundEncoder
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.decode import DecodeConfig
from services.ingest.sampling import SamplingConfig
from streamsight.gen.media.v1 import media_pb2

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "media"


def frame(consumer: str, t: float) -> SampledFrame:
    return SampledFrame(consumer, int(t * 25), t, int(t // 10), np.zeros((4, 6), np.uint8), 6, 4)


def chunk(t: float) -> AudioChunk:
    return AudioChunk(t, 32000, np.zeros(32000, np.float32))


def window(i: int, audio_s: float = 10.0) -> WindowRecord:
    return WindowRecord(i, 10.0 * i, 10.0 * (i + 1), audio_seconds=audio_s)


def records(out) -> list[media_pb2.WindowRecord]:
    return [media_pb2.WindowRecord.FromString(m.data) for m in out if m.kind == "window"]


def test_sample_indexes_count_per_consumer_and_ids_are_stable() -> None:
    enc = OutboundEncoder("s1", lambda: 0.0)
    out = []
    for t in (0.0, 0.2, 0.4):
        out += enc.encode(frame("flow", t))
    out += enc.encode(frame("cnn", 0.0)) + enc.encode(chunk(0.0)) + enc.encode(chunk(1.0))
    out += enc.encode(FrameSignals([FrameSignal(0, 0.0, False, True, 0.0, 0, False, 0.0)], 0))
    out += enc.encode(FrameSignals([FrameSignal(30, 1.0333, False, False, 0.0, 0, False, 0.0)], 0))
    out += enc.encode(FrameSignals([], 2))  # decode errors only: nothing to name it by
    flow = [media_pb2.VideoFrame.FromString(m.data) for m in out if m.subject == "streamsight.media.v1.frames_flow.0.s1"]
    assert [f.sample_index for f in flow] == [0, 1, 2]
    assert [m.msg_id for m in out] == ["s1:flow:0", "s1:flow:1", "s1:flow:2", "s1:cnn:0", "s1:audio:0", "s1:audio:1",
                                       "s1:signals:0", "s1:signals:1033", None]
    audio = [media_pb2.AudioChunk.FromString(m.data) for m in out if m.kind == "audio"]
    assert [a.chunk_index for a in audio] == [0, 1]
    assert out[-1].subject == "streamsight.media.v1.signals.0.s1" and out[-1].kind == "signals"
    assert (out[3].kind, out[3].consumer, out[3].window) == ("frame", "cnn", 0)


def test_frames_dropped_on_the_way_out_are_stamped_on_their_window_record() -> None:
    dropped = {0: 3}
    enc = OutboundEncoder("s1", lambda: 12.0, dropped_in=lambda i: dropped.get(i, 0))
    enc.encode(window(0))
    dropped[0] = 4  # read when the record goes out, not when it is held
    out = enc.encode(frame("flow", 10.2)) + enc.encode(window(1, audio_s=2.0)) + enc.finish()
    assert [(r.index, r.frames_dropped, r.last) for r in records(out)] == [(0, 4, False), (1, 0, True)]


def test_every_record_carries_the_window_length_it_was_cut_with() -> None:
    enc = OutboundEncoder("s1", lambda: 7.0, window_s=5.0)
    enc.encode(WindowRecord(0, 0.0, 5.0, audio_seconds=5.0))
    out = enc.encode(chunk(5.0)) + enc.encode(WindowRecord(1, 5.0, 10.0, audio_seconds=2.0)) + enc.finish()
    assert [(r.window_s, r.end_s) for r in records(out)] == [(5.0, 5.0), (5.0, 7.0)]


def test_a_window_record_waits_for_the_next_item_and_only_the_last_says_last() -> None:
    enc = OutboundEncoder("s1", lambda: 14.25)
    assert enc.encode(window(0)) == []  # held: is the stream going on?
    out = enc.encode(frame("flow", 10.2))
    assert [m.kind for m in out] == ["window", "frame"]  # the record goes out before the next media
    assert records(out)[0].last is False and out[0].msg_id == "s1:window:0"
    assert enc.encode(window(1, audio_s=4.0)) == []
    assert enc.encode(StatusEvent(StatusKind.GAP, 12.0)) == []  # a status is not MEDIA, and does not release it
    out = enc.encode(StatusEvent(StatusKind.ENDED, 14.25))
    (last,) = records(out)
    assert last.index == 1 and last.last is True
    assert last.end_s == pytest.approx(14.25)  # trimmed to where the media ended, not 20 s
    assert enc.finish() == [] and enc.windows == 2


def test_finish_sends_the_held_record_as_last_when_the_pipeline_stops_without_a_status() -> None:
    enc = OutboundEncoder("s1", lambda: 3.0)
    enc.encode(window(0))
    (last,) = records(enc.finish())
    assert last.last and last.end_s == pytest.approx(10.0)  # audio ran to 10 s: the later of media and audio


def test_an_unknown_item_is_refused() -> None:
    with pytest.raises(TypeError, match="not a pipeline item"):
        OutboundEncoder("s1", lambda: 0.0).encode("frame")


@pytest.mark.skipif(not (MEDIA / "bigbuckbunny.mp4").exists(), reason="needs ../shared/data/media/bigbuckbunny.mp4")
async def test_a_real_file_has_one_last_record_ending_at_the_media_end() -> None:
    pipeline = IngestPipeline(str(MEDIA / "bigbuckbunny.mp4"), IngestConfig(decode=DecodeConfig(sampling=SamplingConfig(glitch=None))), stream_id="bbb")
    enc = OutboundEncoder("bbb", lambda: pipeline.stats.media_time)
    out = []
    async for item in pipeline.items():
        out += enc.encode(item)
    out += enc.finish()
    recs = records(out)
    assert [r.last for r in recs] == [False] * (len(recs) - 1) + [True]
    assert recs[-1].end_s == pytest.approx(pipeline.stats.media_time, abs=0.1) and recs[-1].end_s < 10.0
    flow = [media_pb2.VideoFrame.FromString(m.data).sample_index for m in out if m.subject == "streamsight.media.v1.frames_flow.13.bbb"]
    assert flow == list(range(len(flow))) and len(flow) > 20
