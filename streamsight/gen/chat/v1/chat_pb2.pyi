import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from streamsight.gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartChatRequest(_message.Message):
    __slots__ = ("stream_id", "source", "media_start", "pacing")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_START_FIELD_NUMBER: _ClassVar[int]
    PACING_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    source: str
    media_start: _timestamp_pb2.Timestamp
    pacing: _common_pb2.Pacing
    def __init__(self, stream_id: _Optional[str] = ..., source: _Optional[str] = ..., media_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pacing: _Optional[_Union[_common_pb2.Pacing, str]] = ...) -> None: ...

class StopChatRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class GetChatRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class ChatStatus(_message.Message):
    __slots__ = ("stream_id", "state", "messages", "rejected", "format", "last_error")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    state: _common_pb2.StreamState
    messages: int
    rejected: int
    format: str
    last_error: str
    def __init__(self, stream_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.StreamState, str]] = ..., messages: _Optional[int] = ..., rejected: _Optional[int] = ..., format: _Optional[str] = ..., last_error: _Optional[str] = ...) -> None: ...
