"""The RGB picture of a glitch frame, whichever layout ingest sent it in.

Ingest sends RGB24 or, when its source is yuv420p, the YUV420P planes at the sampled size
(half the bytes on the bus): the colour conversion is then done here, by the same swscale call
ingest would have made (the planes tagged with the source's colour space and range), so every
check downstream (classifier, shear, chroma, bands, thumbnail, health) sees the RGB array it
saw when ingest converted.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from streamsight.bus import BadMessage
from streamsight.gen.media.v1 import media_pb2
from streamsight.media import YUV_COLOR_RANGES, YUV_COLOR_SPACES

FORMATS = (media_pb2.PIXEL_FORMAT_RGB24, media_pb2.PIXEL_FORMAT_YUV420P)


def check(frame: media_pb2.VideoFrame) -> None:
    """BadMessage when `frame` is not an RGB24 or YUV420P picture whose data fits its size."""
    if frame.format not in FORMATS:
        raise BadMessage(f"glitch frame is {_name(frame.format)}, expected RGB24 or YUV420P")
    w, h = frame.width, frame.height
    if w < 1 or h < 1:
        raise BadMessage(f"glitch frame of {w}x{h} pixels")
    if frame.format == media_pb2.PIXEL_FORMAT_RGB24:
        need = w * h * 3
    else:
        if w % 2 or h % 2:
            raise BadMessage(f"YUV420P glitch frame of {w}x{h}: width and height must be even")
        need = w * h * 3 // 2
        if frame.color_space not in YUV_COLOR_SPACES or frame.color_range not in YUV_COLOR_RANGES:
            raise BadMessage(f"YUV420P glitch frame tagged colour space {frame.color_space}, range {frame.color_range}: "
                             f"expected a space in {sorted(YUV_COLOR_SPACES)} and a range in {sorted(YUV_COLOR_RANGES)}")
    if len(frame.data) != need:
        raise BadMessage(f"frame of {w}x{h} {_name(frame.format)[len('PIXEL_FORMAT_'):]} needs {need} bytes, got {len(frame.data)}")


def _name(fmt: int) -> str:
    try:
        return media_pb2.PixelFormat.Name(fmt)
    except ValueError:
        return f"pixel format {fmt}"


class Pictures:
    """Turns checked glitch frames into (H, W, 3) uint8 RGB arrays.

    Keeps one swscale context for all frames (a new one per frame would cost its set-up each
    time); not thread-safe: use it from one thread (the glitch worker's).
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def rgb(self, frame: media_pb2.VideoFrame) -> np.ndarray:
        """The frame's RGB array: a view on its data for RGB24, a conversion for YUV420P."""
        w, h = frame.width, frame.height
        if frame.format == media_pb2.PIXEL_FORMAT_RGB24:
            return np.frombuffer(frame.data, np.uint8).reshape(h, w, 3)
        planes = np.frombuffer(frame.data, np.uint8).reshape(h * 3 // 2, w)
        picture = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        # the matrix and range swscale converts with come from these tags, as at ingest
        picture.colorspace, picture.color_range = frame.color_space, frame.color_range
        return self._reformatter.reformat(picture, w, h, "rgb24", threads=1).to_ndarray()
