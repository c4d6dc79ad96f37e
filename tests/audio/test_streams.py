"""The audio stage's logic without NATS: window records as the clock, lifecycle, forged records."""

from __future__ import annotations

import time

import numpy as np

from services.audio.streams import AudioStreams
from streamsight import subjects
from streamsight.gen.media.v1 import media_pb2

RATE = 16000


def chunk(sid: str, start: float, seconds: float = 1.0, level: float = 0.1) -> tuple[str, bytes]:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (level * np.sin(2 * np.pi * 440 * t)).astype("<f4")
    msg = media_pb2.AudioChunk(stream_id=sid, start_s=start, sample_rate=RATE, pcm_f32le=pcm.tobytes())
    return subjects.media("audio", sid), msg.SerializeToString()


def window(sid: str, i: int, last: bool = False, end: float | None = None) -> tuple[str, bytes]:
    msg = media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10.0 * i, end_s=10.0 * i + 10 if end is None else end,
                                 audio_s=10.0, last=last, window_s=10.0)
    return subjects.media("windows", sid), msg.SerializeToString()


def test_records_close_windows_once_and_late_chunks_make_no_stream():
    audio = AudioStreams()
    step = audio.step([chunk("a", float(s)) for s in range(20)] + [window("a", 0), window("a", 1, last=True)])
    assert step.rejected == {}
    assert [(w.window, w.flags) for w in step.windows] == [(0, ()), (1, ())]
    assert step.windows[0].values["audio_coverage"] == 1.0
    assert len(audio.streams) == 0
    assert audio.step([chunk("a", 12.0)]).windows == [] and len(audio.streams) == 0, "a redelivered chunk after the end"
    assert audio.streams.counts["late"] == 1


def test_forged_window_records_are_rejected():
    audio = AudioStreams()
    step = audio.step([window("f", 20000, last=True)])
    assert step.windows == [] and "past what the stream has shown" in step.rejected[0] and len(audio.streams) == 0
    step = audio.step([chunk("f", 0.0), window("f", 3_000_000, last=True)])
    assert list(step.rejected) == [1] and step.windows == []
    cut_otherwise = media_pb2.WindowRecord(stream_id="f", index=0, start_s=0.0, end_s=5.0, window_s=5.0)
    step = audio.step([(subjects.media("windows", "f"), cut_otherwise.SerializeToString())])
    assert "cut with 5.0 s windows" in step.rejected[0]


def test_an_idle_stream_is_flushed_partial():
    audio = AudioStreams(idle_s=60.0)
    audio.step([chunk("i", float(s)) for s in range(4)])
    assert audio.evict_idle(now=0.0) == []
    (w,) = audio.evict_idle(now=time.monotonic() + 61)
    assert (w.window, "partial" in w.flags) == (0, True) and len(audio.streams) == 0
