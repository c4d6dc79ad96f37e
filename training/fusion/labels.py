"""Highlight labels: interval CSV or per-clip JSON in, one 0/1 label per (stream, window) out.

Interval CSV (header required): `stream,start,end,label`; times in seconds or H:MM:SS;
`label` is "highlight" (or 1/true/yes) for positives, anything else ("none", 0) marks a
labelled non-highlight span (windows are negative unless a highlight covers them anyway).

Per-clip JSON, the shape annotation tools export (e.g. Label Studio's video timeline or a
plain list): a list of objects, or {"clips": [...]}, each with a stream ("stream",
"stream_id", "video" or "file": the file's stem is used), "start"/"end" (or "start_s"/"end_s")
and an optional "label"; Label Studio's nested {"data": {"video": ...}, "annotations":
[{"result": [{"value": {"start", "end", "labels": [...]}}]}]} is read too.

A window is positive when a highlight covers at least `min_overlap_s` of it, or at least half
of the highlight (so a short highlight still labels its window).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

POSITIVE = {"highlight", "1", "true", "yes", "positive"}


class LabelsError(ValueError):
    """A label file that cannot be read (names the file and the row)."""


@dataclass(frozen=True)
class Interval:
    stream: str
    start: float
    end: float
    positive: bool = True


def _seconds(text: object, where: str) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        if ":" in s:
            value = 0.0
            for part in s.split(":"):
                value = value * 60 + float(part)
            return value
        return float(s)
    except ValueError:
        raise LabelsError(f"{where}: {text!r} is not a time in seconds or H:MM:SS") from None


def _interval(stream: str, start: float, end: float, label: object, where: str) -> Interval:
    if not stream:
        raise LabelsError(f"{where}: no stream named")
    if not 0 <= start < end:
        raise LabelsError(f"{where}: start {start} and end {end} must satisfy 0 <= start < end")
    positive = True if label is None else str(label).strip().lower() in POSITIVE
    return Interval(stream, start, end, positive)


def read_csv(path: str | Path) -> list[Interval]:
    path = Path(path)
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"stream", "start", "end"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise LabelsError(f"{path}: CSV header needs stream,start,end[,label], got {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            where = f"{path}:{n}"
            out.append(_interval(row["stream"].strip(), _seconds(row["start"], where), _seconds(row["end"], where), row.get("label"), where))
    return out


def _stream_name(item: dict) -> str:
    for key in ("stream", "stream_id"):
        if item.get(key):
            return str(item[key])
    for key in ("video", "file", "path"):
        if item.get(key):
            return Path(str(item[key]).split("?")[0]).stem
    return ""


def read_json(path: str | Path) -> list[Interval]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabelsError(f"cannot read label JSON {path}: {exc}") from None
    items = data.get("clips", data.get("annotations_list")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise LabelsError(f"{path}: expected a list of clips or {{'clips': [...]}}")
    out = []
    for n, item in enumerate(items):
        where = f"{path}[{n}]"
        if not isinstance(item, dict):
            raise LabelsError(f"{where}: a clip must be an object")
        if "annotations" in item:  # Label Studio task export
            stream = _stream_name(item.get("data", {}))
            for ann in item["annotations"]:
                for res in ann.get("result", []):
                    v = res.get("value", {})
                    labels = v.get("labels") or v.get("timelinelabels") or ["highlight"]
                    if "start" in v and "end" in v:
                        out.append(_interval(stream, _seconds(v["start"], where), _seconds(v["end"], where), labels[0], where))
                    elif v.get("ranges"):  # frame ranges would need the video's frame rate
                        raise LabelsError(f"{where}: frame ranges need a frame rate; export times in seconds")
            continue
        start = item.get("start_s", item.get("start"))
        end = item.get("end_s", item.get("end"))
        if start is None or end is None:
            raise LabelsError(f"{where}: a clip needs start and end")
        out.append(_interval(_stream_name(item), _seconds(start, where), _seconds(end, where), item.get("label"), where))
    return out


def read_labels(path: str | Path) -> list[Interval]:
    """Intervals from a .csv or .json file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        return read_json(path)
    raise LabelsError(f"{path}: labels must be a .csv (stream,start,end,label) or a .json clip list")


def window_label(intervals: Iterable[Interval], stream: str, start: float, end: float, min_overlap_s: float = 3.0) -> int:
    """1 if a positive interval of `stream` covers the window enough (see module doc)."""
    for iv in intervals:
        if iv.stream != stream or not iv.positive:
            continue
        overlap = min(end, iv.end) - max(start, iv.start)
        if overlap <= 0:
            continue
        if overlap >= min(min_overlap_s, end - start) or overlap >= 0.5 * (iv.end - iv.start):
            return 1
    return 0
