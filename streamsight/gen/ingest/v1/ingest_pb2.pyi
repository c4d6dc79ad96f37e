from streamsight.gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartIngestRequest(_message.Message):
    __slots__ = ("stream_id", "source", "pacing", "play_file_as_live", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PACING_FIELD_NUMBER: _ClassVar[int]
    PLAY_FILE_AS_LIVE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    source: str
    pacing: _common_pb2.Pacing
    play_file_as_live: bool
    extra: _containers.ScalarMap[str, str]
    def __init__(self, stream_id: _Optional[str] = ..., source: _Optional[str] = ..., pacing: _Optional[_Union[_common_pb2.Pacing, str]] = ..., play_file_as_live: _Optional[bool] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StopIngestRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class GetIngestRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class IngestStatus(_message.Message):
    __slots__ = ("stream_id", "state", "media_time_s", "duration_s", "frames_decoded", "last_error", "replica", "taken_over_from")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TIME_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DECODED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TAKEN_OVER_FROM_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    state: _common_pb2.StreamState
    media_time_s: float
    duration_s: float
    frames_decoded: int
    last_error: str
    replica: str
    taken_over_from: str
    def __init__(self, stream_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.StreamState, str]] = ..., media_time_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., frames_decoded: _Optional[int] = ..., last_error: _Optional[str] = ..., replica: _Optional[str] = ..., taken_over_from: _Optional[str] = ...) -> None: ...

class ExportClipRequest(_message.Message):
    __slots__ = ("stream_id", "start_s", "end_s", "clip_id", "vertical")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    start_s: float
    end_s: float
    clip_id: str
    vertical: bool
    def __init__(self, stream_id: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., clip_id: _Optional[str] = ..., vertical: _Optional[bool] = ...) -> None: ...

class ReadClipRequest(_message.Message):
    __slots__ = ("stream_id", "clip_id")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    clip_id: str
    def __init__(self, stream_id: _Optional[str] = ..., clip_id: _Optional[str] = ...) -> None: ...

class ClipData(_message.Message):
    __slots__ = ("data", "offset", "total_size", "content_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    content_type: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...
