from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_GRAY8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB24: _ClassVar[PixelFormat]
    PIXEL_FORMAT_YUV420P: _ClassVar[PixelFormat]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_GRAY8: PixelFormat
PIXEL_FORMAT_RGB24: PixelFormat
PIXEL_FORMAT_YUV420P: PixelFormat

class VideoFrame(_message.Message):
    __slots__ = ("stream_id", "consumer", "pts_s", "frame_number", "width", "height", "format", "data", "sample_index", "color_space", "color_range")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    PTS_S_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    COLOR_SPACE_FIELD_NUMBER: _ClassVar[int]
    COLOR_RANGE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    consumer: str
    pts_s: float
    frame_number: int
    width: int
    height: int
    format: PixelFormat
    data: bytes
    sample_index: int
    color_space: int
    color_range: int
    def __init__(self, stream_id: _Optional[str] = ..., consumer: _Optional[str] = ..., pts_s: _Optional[float] = ..., frame_number: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[PixelFormat, str]] = ..., data: _Optional[bytes] = ..., sample_index: _Optional[int] = ..., color_space: _Optional[int] = ..., color_range: _Optional[int] = ...) -> None: ...

class FrameSignal(_message.Message):
    __slots__ = ("pts_s", "frame_number", "is_corrupt", "gap_s", "frames_missing", "frozen", "keyframe", "diff")
    PTS_S_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IS_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    GAP_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_MISSING_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    pts_s: float
    frame_number: int
    is_corrupt: bool
    gap_s: float
    frames_missing: int
    frozen: bool
    keyframe: bool
    diff: float
    def __init__(self, pts_s: _Optional[float] = ..., frame_number: _Optional[int] = ..., is_corrupt: _Optional[bool] = ..., gap_s: _Optional[float] = ..., frames_missing: _Optional[int] = ..., frozen: _Optional[bool] = ..., keyframe: _Optional[bool] = ..., diff: _Optional[float] = ...) -> None: ...

class FrameSignals(_message.Message):
    __slots__ = ("stream_id", "signals", "decode_errors")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    DECODE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    signals: _containers.RepeatedCompositeFieldContainer[FrameSignal]
    decode_errors: int
    def __init__(self, stream_id: _Optional[str] = ..., signals: _Optional[_Iterable[_Union[FrameSignal, _Mapping]]] = ..., decode_errors: _Optional[int] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("stream_id", "start_s", "sample_rate", "pcm_f32le", "chunk_index", "source_start_s", "source_layout", "source_sample_rate", "demux_lead_max_s")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    PCM_F32LE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_START_S_FIELD_NUMBER: _ClassVar[int]
    SOURCE_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DEMUX_LEAD_MAX_S_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    start_s: float
    sample_rate: int
    pcm_f32le: bytes
    chunk_index: int
    source_start_s: float
    source_layout: str
    source_sample_rate: int
    demux_lead_max_s: float
    def __init__(self, stream_id: _Optional[str] = ..., start_s: _Optional[float] = ..., sample_rate: _Optional[int] = ..., pcm_f32le: _Optional[bytes] = ..., chunk_index: _Optional[int] = ..., source_start_s: _Optional[float] = ..., source_layout: _Optional[str] = ..., source_sample_rate: _Optional[int] = ..., demux_lead_max_s: _Optional[float] = ...) -> None: ...

class SourceFormat(_message.Message):
    __slots__ = ("since_s", "width", "height", "frame_rate", "video_codec", "audio_codec", "audio_layout", "audio_sample_rate")
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    since_s: float
    width: int
    height: int
    frame_rate: float
    video_codec: str
    audio_codec: str
    audio_layout: str
    audio_sample_rate: int
    def __init__(self, since_s: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., frame_rate: _Optional[float] = ..., video_codec: _Optional[str] = ..., audio_codec: _Optional[str] = ..., audio_layout: _Optional[str] = ..., audio_sample_rate: _Optional[int] = ...) -> None: ...

class WindowRecord(_message.Message):
    __slots__ = ("stream_id", "index", "start_s", "end_s", "frames_decoded", "audio_s", "decode_errors", "gaps", "last", "corrupt_frames", "frozen_frames", "gap_s", "missing_frames", "complete", "window_s", "frames_dropped", "source_formats")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DECODED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FRAMES_FIELD_NUMBER: _ClassVar[int]
    GAP_S_FIELD_NUMBER: _ClassVar[int]
    MISSING_FRAMES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMATS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    index: int
    start_s: float
    end_s: float
    frames_decoded: int
    audio_s: float
    decode_errors: int
    gaps: int
    last: bool
    corrupt_frames: int
    frozen_frames: int
    gap_s: float
    missing_frames: int
    complete: bool
    window_s: float
    frames_dropped: int
    source_formats: _containers.RepeatedCompositeFieldContainer[SourceFormat]
    def __init__(self, stream_id: _Optional[str] = ..., index: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., frames_decoded: _Optional[int] = ..., audio_s: _Optional[float] = ..., decode_errors: _Optional[int] = ..., gaps: _Optional[int] = ..., last: _Optional[bool] = ..., corrupt_frames: _Optional[int] = ..., frozen_frames: _Optional[int] = ..., gap_s: _Optional[float] = ..., missing_frames: _Optional[int] = ..., complete: _Optional[bool] = ..., window_s: _Optional[float] = ..., frames_dropped: _Optional[int] = ..., source_formats: _Optional[_Iterable[_Union[SourceFormat, _Mapping]]] = ...) -> None: ...
