"""Checked decoding of the messages ingest publishes, shared by every service that reads them.

`decode(message_type, data, stream_id)` parses one protobuf message and checks that it belongs
to the stream whose subject it came on; `window_record(data, stream_id)` also checks the
window's index and span. Anything unusable raises `BadMessage` with the reason, which the bus
puts on the dead-letter stream.
"""

from __future__ import annotations

import math
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from streamsight.bus import BadMessage
from streamsight.gen.media.v1 import media_pb2

M = TypeVar("M", bound=Message)

# The FFmpeg colour spaces (AVColorSpace) and ranges (AVColorRange) swscale converts YUV from,
# as VideoFrame.color_space and color_range carry them: ingest sends a yuv420p glitch frame's
# planes only with these tags, and glitch refuses planes tagged otherwise.
YUV_COLOR_SPACES = frozenset({0, 1, 2, 4, 5, 6, 7, 9})
YUV_COLOR_RANGES = frozenset({0, 1, 2})


def decode(message_type: type[M], data: bytes, stream_id: str) -> M:
    """`data` as a `message_type`; its stream_id, when set, must be `stream_id`."""
    name = message_type.DESCRIPTOR.full_name
    try:
        msg = message_type.FromString(data)
    except DecodeError:
        raise BadMessage(f"not a {name} protobuf message") from None
    claimed = getattr(msg, "stream_id", "")
    if claimed and claimed != stream_id:
        raise BadMessage(f"{name} says stream {claimed!r} but came on the subject of {stream_id!r}")
    return msg


def window_record(data: bytes, stream_id: str) -> media_pb2.WindowRecord:
    """A WindowRecord with a non-negative index and a finite span that does not run backwards."""
    record = decode(media_pb2.WindowRecord, data, stream_id)
    if record.index < 0 or not (math.isfinite(record.start_s) and math.isfinite(record.end_s)) or record.end_s < record.start_s:
        raise BadMessage(f"window record {record.index} [{record.start_s}, {record.end_s}] s is out of range")
    return record
