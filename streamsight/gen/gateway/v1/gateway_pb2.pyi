import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from streamsight.gen.common.v1 import common_pb2 as _common_pb2
from streamsight.gen.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamOptions(_message.Message):
    __slots__ = ("pacing", "play_file_as_live", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PACING_FIELD_NUMBER: _ClassVar[int]
    PLAY_FILE_AS_LIVE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    pacing: _common_pb2.Pacing
    play_file_as_live: bool
    extra: _containers.ScalarMap[str, str]
    def __init__(self, pacing: _Optional[_Union[_common_pb2.Pacing, str]] = ..., play_file_as_live: _Optional[bool] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Stream(_message.Message):
    __slots__ = ("id", "source", "chat_source", "options", "state", "created_at", "started_at", "ended_at", "last_error", "media_time_s", "duration_s", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CHAT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TIME_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    chat_source: str
    options: StreamOptions
    state: _common_pb2.StreamState
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    last_error: str
    media_time_s: float
    duration_s: float
    labels: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., chat_source: _Optional[str] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.StreamState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., media_time_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartStreamRequest(_message.Message):
    __slots__ = ("source", "chat_source", "stream_id", "options", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CHAT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    source: str
    chat_source: str
    stream_id: str
    options: StreamOptions
    labels: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[str] = ..., chat_source: _Optional[str] = ..., stream_id: _Optional[str] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StopStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ("states", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.StreamState]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, states: _Optional[_Iterable[_Union[_common_pb2.StreamState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[Stream]
    def __init__(self, streams: _Optional[_Iterable[_Union[Stream, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("stream_id", "types", "after_sequence", "since_time")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    types: _containers.RepeatedScalarFieldContainer[str]
    after_sequence: int
    since_time: _timestamp_pb2.Timestamp
    def __init__(self, stream_id: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ..., after_sequence: _Optional[int] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListHighlightsRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class ListHighlightsResponse(_message.Message):
    __slots__ = ("highlights",)
    HIGHLIGHTS_FIELD_NUMBER: _ClassVar[int]
    highlights: _containers.RepeatedCompositeFieldContainer[_events_pb2.Highlight]
    def __init__(self, highlights: _Optional[_Iterable[_Union[_events_pb2.Highlight, _Mapping]]] = ...) -> None: ...

class ListGlitchesRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class ListGlitchesResponse(_message.Message):
    __slots__ = ("glitches",)
    GLITCHES_FIELD_NUMBER: _ClassVar[int]
    glitches: _containers.RepeatedCompositeFieldContainer[_events_pb2.Glitch]
    def __init__(self, glitches: _Optional[_Iterable[_Union[_events_pb2.Glitch, _Mapping]]] = ...) -> None: ...

class GetSentimentRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class GetSentimentResponse(_message.Message):
    __slots__ = ("series", "forecast")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[_events_pb2.SentimentPoint]
    forecast: _events_pb2.SentimentForecast
    def __init__(self, series: _Optional[_Iterable[_Union[_events_pb2.SentimentPoint, _Mapping]]] = ..., forecast: _Optional[_Union[_events_pb2.SentimentForecast, _Mapping]] = ...) -> None: ...

class GetClipRequest(_message.Message):
    __slots__ = ("stream_id", "clip_id")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    clip_id: str
    def __init__(self, stream_id: _Optional[str] = ..., clip_id: _Optional[str] = ...) -> None: ...

class ClipChunk(_message.Message):
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
