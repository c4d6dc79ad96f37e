"""The service's bookkeeping without NATS: window records as the clock, flags, bad input, restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from services.vision.settings import VisionSettings
from services.vision.streams import BadInput, VisionStreams, parse_media
from streamsight import subjects
from streamsight.config import ConfigError, load_settings
from streamsight.gen.media.v1 import media_pb2

GRAY, RGB = media_pb2.PIXEL_FORMAT_GRAY8, media_pb2.PIXEL_FORMAT_RGB24


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (12, 40)).astype(np.float32)
    big = np.kron(small, np.ones((8, 8), np.float32))  # 96 x 320, blocky
    k = np.ones(5, np.float32) / 5  # soften the block edges a little
    big = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, big)
    return np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, big).astype(np.uint8)


def flow(sid: str, n: int, image: np.ndarray, pts: float | None = None) -> tuple[str, bytes]:
    h, w = image.shape[:2]
    msg = media_pb2.VideoFrame(stream_id=sid, consumer="flow", pts_s=n / 5 if pts is None else pts, width=w, height=h, format=GRAY,
                               data=image.tobytes(), sample_index=n)
    return subjects.media("frames_flow", sid), msg.SerializeToString()


def cnn(sid: str, n: int, image: np.ndarray) -> tuple[str, bytes]:
    msg = media_pb2.VideoFrame(stream_id=sid, consumer="cnn", pts_s=float(n), width=224, height=224, format=RGB,
                               data=image.tobytes(), sample_index=n)
    return subjects.media("frames_cnn", sid), msg.SerializeToString()


def window(sid: str, i: int, last: bool = False, **counts) -> tuple[str, bytes]:
    msg = media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10.0 * i, end_s=10.0 * i + 10, last=last, **counts)
    return subjects.media("windows", sid), msg.SerializeToString()


def panning(texture: np.ndarray, n: int, speed: int = 2) -> np.ndarray:
    """Frame n of a camera moving `speed` px per frame over the texture (64 x 128 view)."""
    return np.ascontiguousarray(texture[16:80, speed * n : speed * n + 128])


def test_window_records_finish_windows_and_last_drops_the_stream(models, texture):
    vs = VisionStreams(models)
    rgb = np.full((224, 224, 3), 90, np.uint8)
    first = [flow("a", n, panning(texture, n)) for n in range(60)] + [cnn("a", s, rgb) for s in range(12)]
    step = vs.step(first)
    assert step.windows == [] and step.rejected == {}  # frames alone finish nothing
    step = vs.step([window("a", 0)])
    (w0,) = step.windows
    assert (w0.stream_id, w0.window, w0.start_s, w0.end_s, w0.flags) == ("a", 0, 0.0, 10.0, ())
    assert (w0.values["flow_frames"], w0.values["flow_pairs"], w0.values["cnn_frames"]) == (50, 49, 10)
    assert w0.values["flow_mag_mean"] == pytest.approx(2 * 320 / 128, rel=0.15)  # 2 px of 128, at 320 px width
    step = vs.step([window("a", 1), window("a", 2, last=True)])
    assert [w.window for w in step.windows] == [1, 2]
    w1, w2 = step.windows
    assert w1.values["flow_pairs"] == 10 and w1.flags == ()
    assert w2.flags == ("empty",)  # ingest saw the window, vision got no frame of it
    assert len(vs.streams) == 0


def test_lost_and_bad_input_flags_windows_partial_and_is_rejected(models, texture):
    vs = VisionStreams(models)
    msgs = [flow("b", n, panning(texture, n)) for n in range(10)]
    msgs += [flow("b", n, panning(texture, n)) for n in range(12, 20)]  # samples 10, 11 lost on the way
    msgs.append((subjects.media("frames_flow", "b"), b"\x00junk"))
    msgs.append(flow("b", 21, np.zeros((8, 8), np.uint8)))  # too small for flow
    msgs.append(window("b", 0))
    msgs += [flow("b", n, panning(texture, n)) for n in range(50, 55)]
    msgs.append(window("b", 1, gaps=1, missing_frames=3))
    msgs += [flow("b", 55 + k, panning(texture, k), pts=20 + k / 5) for k in range(3)]  # a jump in time, no loss
    msgs.append(window("b", 2, last=True))
    step = vs.step(msgs)
    assert set(step.rejected) == {18, 19}
    assert "protobuf" in step.rejected[18] and "16..640" in step.rejected[19]
    w0, w1, w2 = step.windows
    assert w0.flags == ("partial",)  # samples 10, 11 lost; two bad frames
    assert w0.values["flow_frames"] == 18
    assert w1.flags == ("partial",)  # ingest reported missing frames
    assert w2.flags == () and w2.values["flow_frames"] == 3


def test_joining_mid_stream_and_stragglers_after_the_end(models, texture):
    vs = VisionStreams(models)
    # A restarted instance: the first message it sees is sample 60 (12 s), window 1.
    msgs = [flow("c", n, panning(texture, n % 40)) for n in range(60, 70)] + [window("c", 1, last=True)]
    (w1,) = vs.step(msgs).windows
    assert (w1.window, w1.flags) == (1, ("partial",))
    assert vs.step([flow("c", 70, panning(texture, 0))]).windows == [] and vs.late_messages == 1
    assert "c" not in vs.streams
    # The same stream id started again from its beginning is a new stream.
    (w0,) = vs.step([flow("c", n, panning(texture, n)) for n in range(5)] + [window("c", 0, last=True)]).windows
    assert (w0.window, w0.flags, w0.values["flow_frames"]) == (0, (), 5)


def test_idle_stream_is_flushed_partial(models, texture):
    vs = VisionStreams(models, idle_s=60)
    vs.step([flow("d", n, panning(texture, n)) for n in range(56)])  # into window 1, then silence
    assert vs.evict_idle(time.monotonic() + 30) == []
    windows = vs.evict_idle(time.monotonic() + 61)
    assert [(w.window, w.flags) for w in windows] == [(0, ("partial",)), (1, ("partial",))]
    assert windows[0].values["flow_frames"] == 50 and "d" not in vs.streams


def test_parse_media_names_the_problem():
    with pytest.raises(BadInput, match="RGB24"):
        parse_media(subjects.media("frames_cnn", "e"), flow("e", 0, np.zeros((224, 224), np.uint8))[1])
    bad = media_pb2.VideoFrame(stream_id="e", pts_s=1.0, width=320, height=180, format=GRAY, data=b"\x00" * 100)
    with pytest.raises(BadInput, match="57600 bytes") as err:
        parse_media(subjects.media("frames_flow", "e"), bad.SerializeToString())
    assert err.value.pts == 1.0
    with pytest.raises(BadInput, match="subject of 'f'"):
        parse_media(subjects.media("frames_flow", "f"), flow("e", 0, np.zeros((32, 32), np.uint8))[1])
    with pytest.raises(BadInput, match="does not take"):
        parse_media(subjects.media("audio", "e"), b"")
    with pytest.raises(BadInput, match="out of range"):
        parse_media(subjects.media("windows", "e"), media_pb2.WindowRecord(stream_id="e", index=-1).SerializeToString())


def test_settings_refuse_a_model_folder_without_the_models(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_VISION_MODEL_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="flow.onnx"):
        load_settings(VisionSettings)
    env = {**os.environ, "STREAMSIGHT_VISION_MODEL_DIR": str(tmp_path), "STREAMSIGHT_NATS_URL": "nats://127.0.0.1:1"}
    out = subprocess.run([sys.executable, "-m", "services.vision"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "STREAMSIGHT_VISION_MODEL_DIR" in out.stderr and "motion_cnn.onnx" in out.stderr


def test_frames_after_their_window_record_are_dropped_and_counted(models, texture):
    vs = VisionStreams(models)
    vs.step([flow("g", n, panning(texture, n)) for n in range(52)] + [window("g", 0)])
    assert vs.step([flow("g", 52, panning(texture, 0), pts=9.9)]).windows == []  # window 0 is out already
    assert vs.late_frames == 1
    (w1,) = vs.step([window("g", 1, last=True)]).windows
    assert w1.values["flow_frames"] == 2  # the late frame is not counted anywhere


def test_forged_window_records_are_rejected_not_acted_on(models, texture):
    """A record far past what the stream has shown would make vision publish thousands of windows."""
    vs = VisionStreams(models)
    step = vs.step([window("f", 20000, last=True)])
    assert step.windows == [] and "past what the stream has shown" in step.rejected[0]
    assert "f" not in vs.streams, "a rejected record makes no stream"
    frames = [flow("f", n, panning(texture, n)) for n in range(10)]  # window 0's media
    step = vs.step(frames + [window("f", 3_000_000, last=True), window("f", 7, last=True)])
    assert set(step.rejected) == {10, 11} and step.windows == []
    bad_span = media_pb2.WindowRecord(stream_id="f", index=1, start_s=500.0, end_s=510.0)
    step = vs.step([(subjects.media("windows", "f"), bad_span.SerializeToString()), window("f", 0, last=True)])
    assert "not window 1 of 10.0 s" in step.rejected[0]
    assert [w.window for w in step.windows] == [0] and "f" not in vs.streams


def test_an_oversized_flow_frame_is_refused_before_any_work(models):
    vs = VisionStreams(models, max_flow_side=640)
    step = vs.step([flow("o", 0, np.zeros((1920, 1920), np.uint8))])
    assert "outside 16..640" in step.rejected[0] and step.windows == []
