"""The drop policy on real NATS: a live source whose analysers are behind drops frames only,
counted, and every window record arrives; a file with MEDIA full drops nothing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from nats.js.api import ConsumerConfig
from prometheus_client import REGISTRY

from services.ingest.settings import IngestSettings
from services.ingest.streams import IngestedStream, pipeline_config
from streamsight import subjects
from streamsight.app.synth import make_media
from streamsight.bus import STREAMS
from streamsight.gen.media.v1 import media_pb2

CONSUMERS = ("flow", "cnn", "glitch")


def one_second_windows(settings: IngestSettings, tmp_path, live: bool = False):
    config = pipeline_config(settings, tmp_path / "clips", live, {})
    return dataclasses.replace(config, decode=dataclasses.replace(config.decode, window_seconds=1.0))


async def hold(bus, durable: str, stream_id: str):
    """A reader of the stream's MEDIA messages that takes nothing until asked: the analysers are behind."""
    config = ConsumerConfig(inactive_threshold=60, max_ack_pending=10_000)
    return await bus.js.pull_subscribe(subjects.media("*", stream_id), durable=durable, stream=subjects.MEDIA_STREAM, config=config)


async def take_all(sub) -> list:
    """Fetch and acknowledge messages until the stream's last window record has come."""
    got = []
    while True:
        for msg in await sub.fetch(32, timeout=5):
            await msg.ack()
            got.append(msg)
            if msg.subject.split(".")[3] == "windows" and media_pb2.WindowRecord.FromString(msg.data).last:
                return got


def dropped_metric(consumer: str, reason: str) -> float:
    return REGISTRY.get_sample_value("streamsight_ingest_frames_dropped_total", {"consumer": consumer, "reason": reason}) or 0.0


def frames_and_windows(msgs) -> tuple[dict[str, list[int]], list[media_pb2.WindowRecord]]:
    frames: dict[str, list[int]] = {c: [] for c in CONSUMERS}
    windows = []
    for msg in msgs:
        kind = msg.subject.split(".")[3]
        if kind.startswith("frames_"):
            frames[kind.removeprefix("frames_")].append(media_pb2.VideoFrame.FromString(msg.data).sample_index)
        elif kind == "windows":
            windows.append(media_pb2.WindowRecord.FromString(msg.data))
    return frames, windows


async def test_a_live_source_whose_analysers_are_behind_drops_frames_only_and_counts_them(bus, live_hls, tmp_path) -> None:
    sid = "drop-live"
    # The test server is on loopback, opened here as a lab would.
    settings = IngestSettings(max_backlog=10, read_timeout_s=1.5, live_give_up_s=2.0, allow_networks=["127.0.0.0/8"])
    sub = await hold(bus, "holder-live", sid)
    before = {c: dropped_metric(c, "backlog") for c in CONSUMERS}
    live_hls.run(preroll=2, limit=4)
    stream = IngestedStream(sid, live_hls.url, one_second_windows(settings, tmp_path), bus, settings, tmp_path)
    await asyncio.wait_for(stream.run(), 30)

    assert stream.media.realtime, "an HLS playlist without an end is a live source"
    frames, windows = frames_and_windows(await take_all(sub))
    dropped = stream.media.dropped
    assert sum(dropped.values()) > 0, "the backlog stayed at max_backlog: frames must have been dropped"
    for c in CONSUMERS:
        # Published frames and dropped ones together are every sampled frame: dropped ones left gaps.
        sampled = stream._outbound.samples.get(c, 0)
        assert len(frames[c]) + dropped.get(c, 0) == sampled
        assert frames[c] == sorted(frames[c]) and set(frames[c]) <= set(range(sampled))
        assert dropped_metric(c, "backlog") - before[c] == dropped.get(c, 0)
    # Every window record arrived, in order, the last one marked, and together they report every drop.
    assert [w.index for w in windows] == list(range(len(windows))) and len(windows) >= 3
    assert windows[-1].last and not any(w.last for w in windows[:-1])
    assert sum(w.frames_dropped for w in windows) == sum(dropped.values())
    assert stream.media.refused == 0
    await bus.js.delete_consumer(subjects.MEDIA_STREAM, "holder-live")


async def test_a_file_with_media_full_waits_and_drops_nothing(bus, tmp_path) -> None:
    sid = "drop-file"
    media = make_media(tmp_path / "short.mp4", duration=4.0, width=480, height=272, fps=30, segments=[(0.0, 4.0, "pan")])
    # A MEDIA of 2 MiB (a few RGB frames) and a pacing budget above it: MEDIA itself refuses.
    small = dataclasses.replace(STREAMS[0], max_bytes=2 * 1024**2)
    await bus.ensure_streams([small])
    try:
        settings = IngestSettings(max_backlog=10_000)
        sub = await hold(bus, "holder-file", sid)
        stream = IngestedStream(sid, str(media.path), one_second_windows(settings, tmp_path), bus, settings, tmp_path)
        task = asyncio.create_task(stream.run())
        while stream.media.refused == 0:  # MEDIA is full and ingest waits on it
            assert not task.done(), "the file ended without MEDIA ever being full"
            await asyncio.sleep(0.05)
        frames, windows = frames_and_windows(await take_all(sub))  # the analyser catches up
        await asyncio.wait_for(task, 30)
    finally:
        await bus.ensure_streams()
    assert stream.media.dropped == {} and not stream.media.realtime
    for c in CONSUMERS:
        assert frames[c] == list(range(stream._outbound.samples[c])) and frames[c], f"{c}: every frame, once, in order"
    assert [w.index for w in windows] == [0, 1, 2, 3] and windows[-1].last
    assert all(w.frames_dropped == 0 for w in windows)
    await bus.js.delete_consumer(subjects.MEDIA_STREAM, "holder-file")
