from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_STATE_UNSPECIFIED: _ClassVar[StreamState]
    STREAM_STATE_PENDING: _ClassVar[StreamState]
    STREAM_STATE_STARTING: _ClassVar[StreamState]
    STREAM_STATE_RUNNING: _ClassVar[StreamState]
    STREAM_STATE_RECONNECTING: _ClassVar[StreamState]
    STREAM_STATE_ENDED: _ClassVar[StreamState]
    STREAM_STATE_STOPPED: _ClassVar[StreamState]
    STREAM_STATE_FAILED: _ClassVar[StreamState]

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_VISION: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]
    MODALITY_CHAT: _ClassVar[Modality]

class Pacing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACING_UNSPECIFIED: _ClassVar[Pacing]
    PACING_VOD: _ClassVar[Pacing]
    PACING_LIVE: _ClassVar[Pacing]
STREAM_STATE_UNSPECIFIED: StreamState
STREAM_STATE_PENDING: StreamState
STREAM_STATE_STARTING: StreamState
STREAM_STATE_RUNNING: StreamState
STREAM_STATE_RECONNECTING: StreamState
STREAM_STATE_ENDED: StreamState
STREAM_STATE_STOPPED: StreamState
STREAM_STATE_FAILED: StreamState
MODALITY_UNSPECIFIED: Modality
MODALITY_VISION: Modality
MODALITY_AUDIO: Modality
MODALITY_CHAT: Modality
PACING_UNSPECIFIED: Pacing
PACING_VOD: Pacing
PACING_LIVE: Pacing

class ClipRef(_message.Message):
    __slots__ = ("clip_id", "uri", "start_s", "end_s", "size_bytes", "vertical")
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FIELD_NUMBER: _ClassVar[int]
    clip_id: str
    uri: str
    start_s: float
    end_s: float
    size_bytes: int
    vertical: ClipRef
    def __init__(self, clip_id: _Optional[str] = ..., uri: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., size_bytes: _Optional[int] = ..., vertical: _Optional[_Union[ClipRef, _Mapping]] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("feature", "weight", "value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    weight: float
    value: float
    def __init__(self, feature: _Optional[str] = ..., weight: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...
