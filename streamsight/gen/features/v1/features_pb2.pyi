from streamsight.gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureRecord(_message.Message):
    __slots__ = ("stream_id", "window", "modality", "start_s", "end_s", "values", "info", "flags", "producer_version")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_VERSION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    window: int
    modality: _common_pb2.Modality
    start_s: float
    end_s: float
    values: _containers.ScalarMap[str, float]
    info: _containers.ScalarMap[str, str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    producer_version: str
    def __init__(self, stream_id: _Optional[str] = ..., window: _Optional[int] = ..., modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., values: _Optional[_Mapping[str, float]] = ..., info: _Optional[_Mapping[str, str]] = ..., flags: _Optional[_Iterable[str]] = ..., producer_version: _Optional[str] = ...) -> None: ...
