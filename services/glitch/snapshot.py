"""A stream's glitch state as JSON, so that another replica takes the stream over where it was.

`dumps(stream_state)` / `loads(data, configs)` write and read the object graph of one stream's
`StreamDetector`, `StreamHealth` and `WindowBounds` (their incidents, timers, loudness history,
pending samples) as JSON with type tags. Only the classes in `CLASSES` can be made on the
way back (never pickle: a snapshot cannot run code); numpy arrays travel as `np.save` bytes,
loaded with allow_pickle=False. Configuration objects are not stored: the reading replica's own
settings are put in their place (`configs`, by class name).

What is not stored: the pixels of a glitch frame. A detector keeps a frame's RGB only to make
the JPEG thumbnail of the incident it may become the worst frame of; `Thumbnail` carries that
JPEG instead (made once, with the same encoder, so the event's bytes are the same), and
`ResumableDetector` publishes it as is.
"""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from services.glitch.bands import Band
from services.glitch.classifier import FrameScore
from services.glitch.detector import UPDATE, DetectorConfig, GlitchEvent, StreamDetector, _Incident, _Sample
from services.glitch.health.incidents import Incidents, _Open
from services.glitch.health.loudness import BLOCK_S, Block, LoudnessMeter, k_weighting_power
from services.glitch.health.monitor import HealthConfig, StreamHealth
from services.glitch.thumbnail import jpeg
from streamsight.windows import WindowBounds

FORMAT = 1
FLOAT_RUN = 16  # lists or deques of this many plain floats or more travel as float64 bytes


class SnapshotError(ValueError):
    """A snapshot that cannot be read back (another format, a class not allowed, bad bytes)."""


@dataclass(frozen=True)
class Thumbnail:
    """The JPEG thumbnail of a frame, standing in for its pixels (see the module docstring)."""

    jpeg: bytes


class ResumableDetector(StreamDetector):
    """A StreamDetector whose frames may be `Thumbnail`s: their JPEG is the event's thumbnail."""

    def _event(self, inc: _Incident, phase: str) -> GlitchEvent:
        worst = inc.worst
        if not isinstance(worst, Thumbnail):
            return super()._event(inc, phase)
        inc.worst = None
        try:
            event = super()._event(inc, phase)
        finally:
            inc.worst = worst
        if phase != UPDATE:
            event.thumbnail_jpeg = worst.jpeg
        return event

    def thumbnails(self) -> None:
        """Replace the pixels it holds by their thumbnails (once per frame; the JPEG is what a
        snapshot carries, and it is much smaller to keep)."""
        for sample in self._pending:
            if isinstance(sample.rgb, np.ndarray):
                sample.rgb = Thumbnail(jpeg(sample.rgb))
        inc = self._incident
        if inc is not None and isinstance(inc.worst, np.ndarray):
            inc.worst = Thumbnail(jpeg(inc.worst))


# The classes a snapshot may hold. Their configuration is the reader's (see `loads`).
CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    ResumableDetector, StreamDetector, _Sample, _Incident, FrameScore, Band, Thumbnail,
    StreamHealth, Incidents, _Open, LoudnessMeter, Block, WindowBounds,
)}
# Attributes not stored: filled from the reader's side (its configuration) or derived again.
CONFIGURED = {"ResumableDetector": ("config", "_on_verdict"), "StreamDetector": ("config", "_on_verdict"), "StreamHealth": ("config",)}
DERIVED = {"LoudnessMeter": ("_weights",)}


def _array(value: np.ndarray) -> dict:
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return {"a": base64.b64encode(buf.getvalue()).decode()}


def _floats(values) -> bool:
    return len(values) >= FLOAT_RUN and all(type(v) is float for v in values)


def encode(value):
    """`value` as JSON-able data with type tags."""
    if value is None or isinstance(value, (bool, int, str)) and not isinstance(value, np.generic):
        return value
    if type(value) is float:
        return value
    if isinstance(value, np.generic):
        return {"n": value.dtype.str, "v": value.item()}
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if isinstance(value, deque):
        if _floats(value):
            return {"qa": _array(np.fromiter(value, np.float64, len(value)))["a"], "max": value.maxlen}
        return {"q": [encode(v) for v in value], "max": value.maxlen}
    if isinstance(value, defaultdict):
        if value.default_factory is not float:
            raise SnapshotError(f"a defaultdict of {value.default_factory} cannot be stored")
        return {"df": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"t": [encode(v) for v in value]}
    if isinstance(value, list):
        if _floats(value):
            return {"la": _array(np.asarray(value, np.float64))["a"]}
        return [encode(v) for v in value]
    name = type(value).__name__
    if CLASSES.get(name) is not type(value):
        raise SnapshotError(f"{type(value).__qualname__} is not a class a snapshot may hold")
    skip = CONFIGURED.get(name, ()) + DERIVED.get(name, ())
    return {"o": name, "s": {k: encode(v) for k, v in vars(value).items() if k not in skip}}


def _load_array(text: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise SnapshotError(f"bad array: {exc}") from None


def decode(data, configs: dict[str, object]):
    """The value `encode` wrote; `configs`: the `config` to give each class by name."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, configs) for v in data]
    if not isinstance(data, dict):
        raise SnapshotError(f"unexpected {type(data).__name__} in a snapshot")
    if "n" in data:
        return np.dtype(data["n"]).type(data["v"])
    if "a" in data:
        return _load_array(data["a"])
    if "b" in data:
        return base64.b64decode(data["b"])
    if "qa" in data:
        return deque(_load_array(data["qa"]).tolist(), maxlen=data["max"])
    if "q" in data:
        return deque((decode(v, configs) for v in data["q"]), maxlen=data["max"])
    if "la" in data:
        return _load_array(data["la"]).tolist()
    if "df" in data:
        return defaultdict(float, ((decode(k, configs), decode(v, configs)) for k, v in data["df"]))
    if "d" in data:
        return {decode(k, configs): decode(v, configs) for k, v in data["d"]}
    if "t" in data:
        return tuple(decode(v, configs) for v in data["t"])
    if "o" in data:
        cls = CLASSES.get(data["o"])
        if cls is None:
            raise SnapshotError(f"class {data['o']!r} is not one a snapshot may hold")
        obj = cls.__new__(cls)  # its fields are set as stored: frozen dataclasses too
        obj.__dict__.update({k: decode(v, configs) for k, v in data["s"].items()})
        for attr in CONFIGURED.get(data["o"], ()):
            obj.__dict__[attr] = configs[data["o"]] if attr == "config" else None  # no verdict callback in a service
        if isinstance(obj, LoudnessMeter):
            obj._weights = k_weighting_power(int(round(obj._rate * BLOCK_S)), obj._rate) if obj._rate else None
        return obj
    raise SnapshotError(f"unknown tag in a snapshot: {sorted(data)}")


def dumps(state: dict) -> bytes:
    """A stream's state (a dict of the objects above and plain values) as snapshot bytes."""
    return json.dumps({"format": FORMAT, "state": encode(state)}, separators=(",", ":")).encode()


def loads(data: bytes, detector: DetectorConfig, health: HealthConfig) -> dict:
    """The state `dumps` wrote, with this replica's configuration; SnapshotError when unreadable."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"snapshot format {doc.get('format') if isinstance(doc, dict) else '?'}, expected {FORMAT}")
    configs = {"ResumableDetector": detector, "StreamDetector": detector, "StreamHealth": health}
    try:
        return decode(doc["state"], configs)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed snapshot: {exc!r}") from None
