"""Pipeline items -> the protobuf messages ingest publishes on NATS (pure functions)."""

from __future__ import annotations

import numpy as np

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.windows import DEFAULT_WINDOW_S

from .items import AudioChunk, FrameSignals, SampledFrame, StatusEvent, StatusKind, WindowRecord
from .sourceformat import SourceFormat

_STATES = {
    StatusKind.STARTED: common_pb2.STREAM_STATE_RUNNING,
    StatusKind.RECONNECTING: common_pb2.STREAM_STATE_RECONNECTING,
    StatusKind.RECONNECTED: common_pb2.STREAM_STATE_RUNNING,
    StatusKind.GAP: common_pb2.STREAM_STATE_UNSPECIFIED,  # a notable moment, not a change of state
    StatusKind.ENDED: common_pb2.STREAM_STATE_ENDED,
    StatusKind.FAILED: common_pb2.STREAM_STATE_FAILED,
}


def video_frame(stream_id: str, item: SampledFrame, sample_index: int) -> bytes:
    """The serialized VideoFrame, built with one copy of the picture.

    Setting ``data`` on the message and serializing it copies a picture three times (to
    bytes, into the message, out of it): several milliseconds for an RGB 720p frame. The
    protobuf wire format lets a message be written as the concatenation of its fields, so
    the small fields are serialized as usual and the ``data`` field (8, length-delimited)
    is appended by hand; parsing gives exactly the message with ``data`` set.
    """
    image = item.image
    if item.yuv420p is not None:  # the planes, Y then U then V, 1.5 rows of bytes per picture row
        fmt, height, (color_space, color_range) = media_pb2.PIXEL_FORMAT_YUV420P, image.shape[0] * 2 // 3, item.yuv420p
    else:
        fmt = media_pb2.PIXEL_FORMAT_GRAY8 if image.ndim == 2 else media_pb2.PIXEL_FORMAT_RGB24
        height, color_space, color_range = image.shape[0], 0, 0
    head = media_pb2.VideoFrame(
        stream_id=stream_id,
        consumer=item.consumer,
        pts_s=item.media_time,
        frame_number=item.index,
        width=image.shape[1],
        height=height,
        format=fmt,
        sample_index=sample_index,
        color_space=color_space,
        color_range=color_range,
    ).SerializeToString()
    picture = memoryview(np.ascontiguousarray(image)).cast("B")
    return b"".join((head, _DATA_TAG, varint(picture.nbytes), picture))


_DATA_TAG = bytes([(media_pb2.VideoFrame.DESCRIPTOR.fields_by_name["data"].number << 3) | 2])


def varint(n: int) -> bytes:
    """Protobuf's base-128 length prefix of `n`."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def frame_signals(stream_id: str, item: FrameSignals) -> media_pb2.FrameSignals:
    return media_pb2.FrameSignals(
        stream_id=stream_id,
        decode_errors=item.decode_errors,
        signals=[
            media_pb2.FrameSignal(
                pts_s=s.media_time,
                frame_number=s.index,
                is_corrupt=s.is_corrupt,
                gap_s=s.gap_before,
                frames_missing=s.missing_frames,
                frozen=s.frozen,
                keyframe=s.key_frame,
                diff=s.diff,
            )
            for s in item.signals
        ],
    )


def audio_chunk(stream_id: str, item: AudioChunk, chunk_index: int) -> media_pb2.AudioChunk:
    return media_pb2.AudioChunk(
        stream_id=stream_id,
        start_s=item.media_time,
        sample_rate=item.sample_rate,
        pcm_f32le=item.samples.astype("<f4", copy=False).tobytes(),
        chunk_index=chunk_index,
        source_start_s=item.source_start,
        source_layout=item.source_layout,
        source_sample_rate=item.source_rate,
        demux_lead_max_s=item.demux_lead_max,
    )


def window_record(stream_id: str, item: WindowRecord, last: bool, window_s: float = DEFAULT_WINDOW_S) -> media_pb2.WindowRecord:
    return media_pb2.WindowRecord(
        stream_id=stream_id,
        window_s=window_s,
        index=item.index,
        start_s=item.start,
        end_s=item.end,
        frames_decoded=item.frames_decoded,
        audio_s=item.audio_seconds,
        decode_errors=item.decode_errors,
        gaps=item.gaps,
        last=last,
        corrupt_frames=item.corrupt_frames,
        frozen_frames=item.frozen_frames,
        gap_s=item.gap_seconds,
        missing_frames=item.missing_frames,
        complete=item.complete,
        source_formats=[source_format(f) for f in item.source_formats],
    )


def source_format(fmt: SourceFormat) -> media_pb2.SourceFormat:
    v, a = fmt.video, fmt.audio
    return media_pb2.SourceFormat(
        since_s=fmt.since,
        width=v.width if v else 0,
        height=v.height if v else 0,
        frame_rate=v.frame_rate if v else 0.0,
        video_codec=v.codec if v else "",
        audio_codec=a.codec if a else "",
        audio_layout=a.layout if a else "",
        audio_sample_rate=a.sample_rate if a else 0,
    )


def stream_status(stream_id: str, item: StatusEvent) -> events_pb2.StreamStatus:
    details = item.details or {}
    reason = item.code.value.lower() if item.code else item.kind.value
    return events_pb2.StreamStatus(
        stream_id=stream_id,
        state=_STATES[item.kind],
        reason=reason,
        detail=item.message,
        media_time_s=item.media_time,
        gap_s=float(details.get("missing_seconds", 0.0) or 0.0),
        duration_s=float(details.get("duration", 0.0) or 0.0),
        reporter="ingest",
    )
