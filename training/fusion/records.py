"""Feature records of a stored run: a JSONL dump of FeatureRecords, or read back from NATS.

JSONL: one FeatureRecord per line in protobuf's JSON mapping (field names as in the proto,
e.g. {"stream_id": "s1", "window": 3, "modality": "MODALITY_AUDIO", "values": {...}}); the
camelCase names protobuf also writes are accepted. `read_features_stream` reads every record
of the JetStream stream FEATURES (optionally one stream id) with an ordered consumer, which
leaves nothing behind on the server.

`to_rows` joins them into one row per (stream, window): fused names "<modality>.<feature>",
as the fusion service names them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import json_format

from streamsight import subjects
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2

MODALITY_NAMES = {common_pb2.MODALITY_VISION: "vision", common_pb2.MODALITY_AUDIO: "audio", common_pb2.MODALITY_CHAT: "chat"}


class RecordsError(ValueError):
    """A feature dump that cannot be read (names the file and line)."""


def write_jsonl(records: Iterable[features_pb2.FeatureRecord], path: str | Path, append: bool = False) -> None:
    with Path(path).open("a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(json_format.MessageToDict(r, preserving_proto_field_name=True), sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[features_pb2.FeatureRecord]:
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RecordsError(f"cannot read feature dump {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json_format.Parse(line, features_pb2.FeatureRecord()))
        except json_format.ParseError as exc:
            raise RecordsError(f"{path}:{n}: not a FeatureRecord in JSON: {exc}") from None
    return out


async def read_features_stream(nats_url: str, stream_id: str = "*", idle_s: float = 2.0) -> list[features_pb2.FeatureRecord]:
    """Every FeatureRecord stored in FEATURES for `stream_id` ("*" = all streams)."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        out: list[features_pb2.FeatureRecord] = []
        got = asyncio.Event()

        async def on_msg(msg) -> None:
            try:
                out.append(features_pb2.FeatureRecord.FromString(msg.data))
            except Exception:
                pass  # not a record: the services dead-letter such messages; a dataset skips them
            got.set()

        sub = await js.subscribe(subjects.features("*", stream_id), stream=subjects.FEATURES_STREAM, cb=on_msg, ordered_consumer=True)
        try:
            while True:
                got.clear()
                try:
                    await asyncio.wait_for(got.wait(), idle_s)
                except asyncio.TimeoutError:
                    break
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def to_rows(records: Iterable[features_pb2.FeatureRecord]) -> dict[tuple[str, int], dict]:
    """(stream, window) -> {"start_s", "end_s", "features": {"<modality>.<name>": value}, "modalities": set}."""
    rows: dict[tuple[str, int], dict] = {}
    for r in records:
        modality = MODALITY_NAMES.get(r.modality)
        if modality is None:
            continue
        row = rows.setdefault((r.stream_id, r.window), {"start_s": r.start_s, "end_s": r.end_s, "features": {}, "modalities": set()})
        row["start_s"] = min(row["start_s"], r.start_s)
        row["end_s"] = max(row["end_s"], r.end_s)
        row["modalities"].add(modality)
        row["features"].update({f"{modality}.{k}": float(v) for k, v in r.values.items()})
    return rows
