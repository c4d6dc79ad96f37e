"""The hand-assembled VideoFrame bytes parse to the same message protobuf itself would build."""

from __future__ import annotations

import numpy as np
import pytest

from services.ingest.items import SampledFrame
from services.ingest.messages import video_frame
from streamsight.gen.media.v1 import media_pb2


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
