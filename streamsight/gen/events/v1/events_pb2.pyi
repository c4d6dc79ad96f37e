import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from streamsight.gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_START: _ClassVar[Phase]
    PHASE_UPDATE: _ClassVar[Phase]
    PHASE_END: _ClassVar[Phase]

class GlitchKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GLITCH_KIND_UNSPECIFIED: _ClassVar[GlitchKind]
    GLITCH_KIND_STRIPES: _ClassVar[GlitchKind]
    GLITCH_KIND_MACROBLOCKING: _ClassVar[GlitchKind]
    GLITCH_KIND_GREEN: _ClassVar[GlitchKind]
    GLITCH_KIND_GREY: _ClassVar[GlitchKind]
    GLITCH_KIND_FREEZE: _ClassVar[GlitchKind]
    GLITCH_KIND_DECODE_ERROR: _ClassVar[GlitchKind]

class HealthKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_KIND_UNSPECIFIED: _ClassVar[HealthKind]
    HEALTH_KIND_BLACK: _ClassVar[HealthKind]
    HEALTH_KIND_FREEZE: _ClassVar[HealthKind]
    HEALTH_KIND_SILENCE: _ClassVar[HealthKind]
    HEALTH_KIND_LOUDNESS: _ClassVar[HealthKind]
    HEALTH_KIND_AUDIO_GAP: _ClassVar[HealthKind]
    HEALTH_KIND_AV_DRIFT: _ClassVar[HealthKind]
    HEALTH_KIND_FORMAT_CHANGE: _ClassVar[HealthKind]
    HEALTH_KIND_NO_AUDIO: _ClassVar[HealthKind]
PHASE_UNSPECIFIED: Phase
PHASE_START: Phase
PHASE_UPDATE: Phase
PHASE_END: Phase
GLITCH_KIND_UNSPECIFIED: GlitchKind
GLITCH_KIND_STRIPES: GlitchKind
GLITCH_KIND_MACROBLOCKING: GlitchKind
GLITCH_KIND_GREEN: GlitchKind
GLITCH_KIND_GREY: GlitchKind
GLITCH_KIND_FREEZE: GlitchKind
GLITCH_KIND_DECODE_ERROR: GlitchKind
HEALTH_KIND_UNSPECIFIED: HealthKind
HEALTH_KIND_BLACK: HealthKind
HEALTH_KIND_FREEZE: HealthKind
HEALTH_KIND_SILENCE: HealthKind
HEALTH_KIND_LOUDNESS: HealthKind
HEALTH_KIND_AUDIO_GAP: HealthKind
HEALTH_KIND_AV_DRIFT: HealthKind
HEALTH_KIND_FORMAT_CHANGE: HealthKind
HEALTH_KIND_NO_AUDIO: HealthKind

class Highlight(_message.Message):
    __slots__ = ("stream_id", "highlight_id", "start_s", "end_s", "score", "why", "clip", "windows", "missing", "rank", "reason", "peak_s", "chat_lag_s", "latency_s", "wait_s", "glitch", "resolution", "vertical_clip")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHT_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PEAK_S_FIELD_NUMBER: _ClassVar[int]
    CHAT_LAG_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    GLITCH_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_CLIP_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    highlight_id: str
    start_s: float
    end_s: float
    score: float
    why: _containers.RepeatedCompositeFieldContainer[_common_pb2.Contribution]
    clip: _common_pb2.ClipRef
    windows: _containers.RepeatedScalarFieldContainer[int]
    missing: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    rank: int
    reason: str
    peak_s: float
    chat_lag_s: float
    latency_s: float
    wait_s: float
    glitch: bool
    resolution: str
    vertical_clip: _common_pb2.ClipRef
    def __init__(self, stream_id: _Optional[str] = ..., highlight_id: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., score: _Optional[float] = ..., why: _Optional[_Iterable[_Union[_common_pb2.Contribution, _Mapping]]] = ..., clip: _Optional[_Union[_common_pb2.ClipRef, _Mapping]] = ..., windows: _Optional[_Iterable[int]] = ..., missing: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., rank: _Optional[int] = ..., reason: _Optional[str] = ..., peak_s: _Optional[float] = ..., chat_lag_s: _Optional[float] = ..., latency_s: _Optional[float] = ..., wait_s: _Optional[float] = ..., glitch: _Optional[bool] = ..., resolution: _Optional[str] = ..., vertical_clip: _Optional[_Union[_common_pb2.ClipRef, _Mapping]] = ...) -> None: ...

class Glitch(_message.Message):
    __slots__ = ("stream_id", "glitch_id", "phase", "kind", "severity", "start_s", "end_s", "confidence", "thumbnail_jpeg")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    GLITCH_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_JPEG_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    glitch_id: str
    phase: Phase
    kind: GlitchKind
    severity: float
    start_s: float
    end_s: float
    confidence: float
    thumbnail_jpeg: bytes
    def __init__(self, stream_id: _Optional[str] = ..., glitch_id: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., kind: _Optional[_Union[GlitchKind, str]] = ..., severity: _Optional[float] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., confidence: _Optional[float] = ..., thumbnail_jpeg: _Optional[bytes] = ...) -> None: ...

class HealthIncident(_message.Message):
    __slots__ = ("stream_id", "incident_id", "phase", "kind", "severity", "start_s", "end_s", "detail", "value", "detected_at_s")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_S_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    incident_id: str
    phase: Phase
    kind: HealthKind
    severity: float
    start_s: float
    end_s: float
    detail: str
    value: float
    detected_at_s: float
    def __init__(self, stream_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., kind: _Optional[_Union[HealthKind, str]] = ..., severity: _Optional[float] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., detail: _Optional[str] = ..., value: _Optional[float] = ..., detected_at_s: _Optional[float] = ...) -> None: ...

class SentimentPoint(_message.Message):
    __slots__ = ("stream_id", "start_s", "end_s", "compound", "messages")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    COMPOUND_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    start_s: float
    end_s: float
    compound: float
    messages: int
    def __init__(self, stream_id: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., compound: _Optional[float] = ..., messages: _Optional[int] = ...) -> None: ...

class ForecastPoint(_message.Message):
    __slots__ = ("start_s", "compound", "baseline")
    START_S_FIELD_NUMBER: _ClassVar[int]
    COMPOUND_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    compound: float
    baseline: float
    def __init__(self, start_s: _Optional[float] = ..., compound: _Optional[float] = ..., baseline: _Optional[float] = ...) -> None: ...

class SentimentForecast(_message.Message):
    __slots__ = ("stream_id", "issued_at_s", "points", "trustworthy", "model", "lower", "upper", "interval_level", "activity", "activity_lower", "activity_upper", "activity_baseline", "activity_trustworthy")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_S_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TRUSTWORTHY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_LOWER_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_UPPER_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_BASELINE_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_TRUSTWORTHY_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    issued_at_s: float
    points: _containers.RepeatedCompositeFieldContainer[ForecastPoint]
    trustworthy: bool
    model: str
    lower: _containers.RepeatedScalarFieldContainer[float]
    upper: _containers.RepeatedScalarFieldContainer[float]
    interval_level: float
    activity: _containers.RepeatedScalarFieldContainer[float]
    activity_lower: _containers.RepeatedScalarFieldContainer[float]
    activity_upper: _containers.RepeatedScalarFieldContainer[float]
    activity_baseline: _containers.RepeatedScalarFieldContainer[float]
    activity_trustworthy: bool
    def __init__(self, stream_id: _Optional[str] = ..., issued_at_s: _Optional[float] = ..., points: _Optional[_Iterable[_Union[ForecastPoint, _Mapping]]] = ..., trustworthy: _Optional[bool] = ..., model: _Optional[str] = ..., lower: _Optional[_Iterable[float]] = ..., upper: _Optional[_Iterable[float]] = ..., interval_level: _Optional[float] = ..., activity: _Optional[_Iterable[float]] = ..., activity_lower: _Optional[_Iterable[float]] = ..., activity_upper: _Optional[_Iterable[float]] = ..., activity_baseline: _Optional[_Iterable[float]] = ..., activity_trustworthy: _Optional[bool] = ...) -> None: ...

class StreamStatus(_message.Message):
    __slots__ = ("stream_id", "state", "reason", "detail", "media_time_s", "gap_s", "reporter", "duration_s", "windows", "modalities", "highlights", "windows_scored")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TIME_S_FIELD_NUMBER: _ClassVar[int]
    GAP_S_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHTS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_SCORED_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    state: _common_pb2.StreamState
    reason: str
    detail: str
    media_time_s: float
    gap_s: float
    reporter: str
    duration_s: float
    windows: int
    modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    highlights: int
    windows_scored: int
    def __init__(self, stream_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.StreamState, str]] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., media_time_s: _Optional[float] = ..., gap_s: _Optional[float] = ..., reporter: _Optional[str] = ..., duration_s: _Optional[float] = ..., windows: _Optional[int] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., highlights: _Optional[int] = ..., windows_scored: _Optional[int] = ...) -> None: ...

class WindowScore(_message.Message):
    __slots__ = ("stream_id", "window", "start_s", "end_s", "score", "missing", "why", "features", "completion")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    window: int
    start_s: float
    end_s: float
    score: float
    missing: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    why: _containers.RepeatedCompositeFieldContainer[_common_pb2.Contribution]
    features: _containers.ScalarMap[str, float]
    completion: str
    def __init__(self, stream_id: _Optional[str] = ..., window: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., score: _Optional[float] = ..., missing: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., why: _Optional[_Iterable[_Union[_common_pb2.Contribution, _Mapping]]] = ..., features: _Optional[_Mapping[str, float]] = ..., completion: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "id", "type", "source", "time", "stream_id", "highlight", "glitch", "sentiment", "forecast", "status", "score", "health")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHT_FIELD_NUMBER: _ClassVar[int]
    GLITCH_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    id: str
    type: str
    source: str
    time: _timestamp_pb2.Timestamp
    stream_id: str
    highlight: Highlight
    glitch: Glitch
    sentiment: SentimentPoint
    forecast: SentimentForecast
    status: StreamStatus
    score: WindowScore
    health: HealthIncident
    def __init__(self, sequence: _Optional[int] = ..., id: _Optional[str] = ..., type: _Optional[str] = ..., source: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream_id: _Optional[str] = ..., highlight: _Optional[_Union[Highlight, _Mapping]] = ..., glitch: _Optional[_Union[Glitch, _Mapping]] = ..., sentiment: _Optional[_Union[SentimentPoint, _Mapping]] = ..., forecast: _Optional[_Union[SentimentForecast, _Mapping]] = ..., status: _Optional[_Union[StreamStatus, _Mapping]] = ..., score: _Optional[_Union[WindowScore, _Mapping]] = ..., health: _Optional[_Union[HealthIncident, _Mapping]] = ...) -> None: ...
