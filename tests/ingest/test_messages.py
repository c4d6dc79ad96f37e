"""The hand-assembled VideoFrame bytes parse to the same message protobuf itself would build;
glitch frames of a yuv420p source go as YUV420P, of other sources as RGB24."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from services.ingest.decode import StreamDecoder
from services.ingest.items import SampledFrame
from services.ingest.messages import video_frame
from services.ingest.settings import IngestSettings
from services.ingest.streams import pipeline_config
from streamsight.gen.media.v1 import media_pb2

from .decoding import decode_file


@pytest.mark.parametrize("shape", [(720, 1280, 3), (180, 320), (1, 1), (224, 224, 3), (1, 64)])
def test_video_frame_bytes_parse_to_the_full_message(shape) -> None:
    image = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    item = SampledFrame("glitch", 41, 12.5, 1, image, 1920, 1080)
    parsed = media_pb2.VideoFrame.FromString(video_frame("s-1", item, 9))
    expected = media_pb2.VideoFrame(
        stream_id="s-1", consumer="glitch", pts_s=12.5, frame_number=41, width=shape[1], height=shape[0],
        format=media_pb2.PIXEL_FORMAT_GRAY8 if len(shape) == 2 else media_pb2.PIXEL_FORMAT_RGB24,
        data=image.tobytes(), sample_index=9,
    )
    assert parsed == expected


def test_a_non_contiguous_picture_is_sent_row_by_row() -> None:
    image = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)[:, ::2]  # a strided view
    parsed = media_pb2.VideoFrame.FromString(video_frame("s", SampledFrame("flow", 0, 0.0, 0, image, 8, 6), 0))
    assert parsed.data == image.tobytes() and (parsed.width, parsed.height) == (4, 6)


def test_yuv420p_planes_go_as_yuv420p_with_their_colour_tags() -> None:
    planes = np.random.default_rng(3).integers(0, 256, (270, 320), dtype=np.uint8)  # a 320x180 picture
    item = SampledFrame("glitch", 7, 3.5, 0, planes, 1280, 720, yuv420p=(1, 2))
    parsed = media_pb2.VideoFrame.FromString(video_frame("s", item, 2))
    assert parsed.format == media_pb2.PIXEL_FORMAT_YUV420P and (parsed.width, parsed.height) == (320, 180)
    assert (parsed.color_space, parsed.color_range) == (1, 2)
    assert len(parsed.data) == 320 * 180 * 3 // 2 and parsed.data == planes.tobytes()


GAME = Path(__file__).resolve().parents[3] / "shared" / "data" / "media" / "openarena_dm2.mp4"


def glitch_messages(path: Path, tmp_path: Path) -> list[media_pb2.VideoFrame]:
    """The glitch frames ingest's service settings make of a file, as published."""
    config = pipeline_config(IngestSettings(data_dir=tmp_path), tmp_path, live=False, extra={}).decode
    items = decode_file(StreamDecoder(replace(config, audio=False, clip_buffer=None)), path)
    frames = [i for i in items if isinstance(i, SampledFrame) and i.consumer == "glitch"]
    return [media_pb2.VideoFrame.FromString(video_frame("s", f, n)) for n, f in enumerate(frames)]


def recode(src: Path, dst: Path, pix_fmt: str, seconds: float = 2.0) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 1280, 720, pix_fmt
        for frame in inp.decode(video=0):
            if frame.time >= seconds:
                break
            for packet in vs.encode(frame.reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return dst


@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
def test_the_service_sends_a_yuv420p_source_as_yuv420p_and_a_444_one_as_rgb24(tmp_path) -> None:
    yuv = glitch_messages(recode(GAME, tmp_path / "420.mp4", "yuv420p"), tmp_path)
    assert len(yuv) == 4 and {f.format for f in yuv} == {media_pb2.PIXEL_FORMAT_YUV420P}
    assert {(f.width, f.height, len(f.data)) for f in yuv} == {(1280, 720, 1280 * 720 * 3 // 2)}
    rgb = glitch_messages(recode(GAME, tmp_path / "444.mp4", "yuv444p"), tmp_path)
    assert len(rgb) == 4 and {f.format for f in rgb} == {media_pb2.PIXEL_FORMAT_RGB24}
    assert {(f.width, f.height, len(f.data)) for f in rgb} == {(1280, 720, 1280 * 720 * 3)}
