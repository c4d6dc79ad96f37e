"""The feature-stage runtime (streamsight.stage), once for every stage, on a real NATS server.

The stage under test is a small real one: it counts the bytes of each window's `audio`
messages, with the real lifecycle table and window bounds. Vision and audio run the same
runtime; their own logic is tested in tests/vision and tests/audio without NATS.
"""

from __future__ import annotations

import asyncio

from streamsight import subjects
from streamsight.bus import Bus
from streamsight.config import BaseServiceSettings
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.lifecycle import StreamTable
from streamsight.media import window_record
from streamsight.stage import FeatureStage, StepResult
from streamsight.windows import WindowBounds, WindowResult


class ByteCounter:
    """Window i's value is the bytes of the stream's audio messages before window record i."""

    def __init__(self, idle_s: float) -> None:
        self.streams: StreamTable[dict] = StreamTable("bytecount", idle_s=idle_s)

    def step(self, messages: list[tuple[str, bytes]]) -> StepResult:
        windows, rejected = [], {}
        for position, (subject, data) in enumerate(messages):
            kind, sid = subject.split(".")[3], subjects.stream_of(subject)
            if kind == "audio":
                state = self.streams.entry(sid, lambda: {"bytes": 0, "bounds": WindowBounds()}, from_start=data.startswith(b"0"))
                if state is not None:
                    state["bytes"] += len(data)
                continue
            try:
                record = window_record(data, sid)
                state = self.streams.entry(sid, lambda: {"bytes": 0, "bounds": WindowBounds()}, from_start=record.index == 0)
                if state is None:
                    continue
                state["bounds"].check(record)
            except Exception as exc:
                rejected[position] = str(exc)
                continue
            windows.append(WindowResult(sid, record.index, record.start_s, record.end_s, {"bytes": float(state["bytes"])}))
            if record.last:
                self.streams.finish(sid)
        return StepResult(windows, rejected)

    def evict_idle(self, now: float | None = None) -> list[WindowResult]:
        return [WindowResult(sid, 99, 990.0, 1000.0, {"bytes": float(s["bytes"])}, ("partial",)) for sid, s in self.streams.idle(now)]


class CounterSettings(BaseServiceSettings):
    fetch_batch: int = 8


class CounterStage(FeatureStage):
    name = "bytecount"
    modality = "audio"  # records go out on the audio subject of the test's streams
    media_kinds = ("audio", "windows")
    Settings = CounterSettings

    async def open_logic(self) -> ByteCounter:
        return ByteCounter(idle_s=self.settings.stream_idle_s)

    def producer(self) -> str:
        return "bytecount-1"


async def _records(bus: Bus, sid: str, count: int, timeout: float = 20.0) -> list[features_pb2.FeatureRecord]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msgs = await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", sid))
        if len(msgs) >= count or asyncio.get_running_loop().time() > deadline:
            return [features_pb2.FeatureRecord.FromString(m.data) for m in msgs]
        await asyncio.sleep(0.2)


def _window(sid: str, i: int, last: bool = False) -> media_pb2.WindowRecord:
    return media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10.0 * i, end_s=10.0 * i + 10, last=last)


async def test_windows_are_published_once_with_stable_ids_and_streams_end(nats_server, bus):
    stage = CounterStage(CounterSettings(nats_url=nats_server.url, grpc_port=0, stream_idle_s=60.0))
    async with stage.serving():
        await asyncio.sleep(0.5)  # the consumer exists: MEDIA keeps messages for it
        for sid in ("one", "two"):
            await bus.publish(subjects.media("audio", sid), b"0" * 100)
            await bus.publish(subjects.media("windows", sid), _window(sid, 0))
            await bus.publish(subjects.media("audio", sid), b"1" * 50)
            await bus.publish(subjects.media("windows", sid), _window(sid, 1, last=True))
        await bus.publish(subjects.media("windows", "one"), _window("one", 20000, last=True))  # forged, after the end
        await bus.publish(subjects.media("audio", "one"), b"2" * 10)  # redelivered after the end
        one, two = await _records(bus, "one", 2), await _records(bus, "two", 2)
        await asyncio.sleep(1.0)
        assert [(r.window, r.values["bytes"], r.producer_version) for r in one] == [(0, 100.0, "bytecount-1"), (1, 150.0, "bytecount-1")]
        assert [r.window for r in two] == [0, 1]
        assert len(stage.logic.streams) == 0, "every stream's state is gone after its last record"
        assert stage.logic.streams.counts["late"] == 2
        # the same window published again (a redelivery after a crash) is one record
        await bus.publish(subjects.features("audio", "one"), features_pb2.FeatureRecord(stream_id="one", window=0),
                          subjects.feature_msg_id("one", "audio", 0))
        assert len(await _records(bus, "one", 3, timeout=1.0)) == 2


async def test_a_window_whose_publish_failed_is_kept_and_sent_first(nats_server, bus):
    stage = CounterStage(CounterSettings(nats_url=nats_server.url, grpc_port=0))
    async with stage.serving():
        await asyncio.sleep(0.5)
        publish = stage.bus.publish
        failures = []

        async def flaky(subject, payload, msg_id=None, headers=None, kind="data"):
            if kind == "features" and not failures:
                failures.append(msg_id)
                raise ConnectionError("NATS away")
            return await publish(subject, payload, msg_id, headers, kind)

        stage.bus.publish = flaky
        await bus.publish(subjects.media("audio", "ob"), b"0" * 7)
        await bus.publish(subjects.media("windows", "ob"), _window("ob", 0))
        await bus.publish(subjects.media("windows", "ob"), _window("ob", 1, last=True))
        records = await _records(bus, "ob", 2)
        assert failures == ["ob:audio:0"]
        assert [(r.window, r.values["bytes"]) for r in records] == [(0, 7.0), (1, 7.0)], "the failed window first, once"


async def test_an_idle_stream_is_flushed_by_the_runtime(nats_server, bus):
    stage = CounterStage(CounterSettings(nats_url=nats_server.url, grpc_port=0, stream_idle_s=1.0))
    async with stage.serving():
        await asyncio.sleep(0.5)
        await bus.publish(subjects.media("audio", "gone"), b"0" * 9)  # ingest dies: no record ever comes
        records = await _records(bus, "gone", 1, timeout=10)
        assert [(r.window, list(r.flags)) for r in records] == [(99, ["partial"])]
        assert len(stage.logic.streams) == 0 and stage.logic.streams.counts["idle"] == 1
