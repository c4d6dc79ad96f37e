"""Health events through the real glitch service, real ingest and a real nats-server.

Two streams at once from real gameplay (openarena_dm2.mp4, 16 s excerpts at 640x360): one
with a planted 3 s black picture, one remuxed without its audio track. The first gives one
black incident (START and END, CloudEvents of type streamsight.health.v1) and no glitch; the
second one no_audio incident and nothing else.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamsight import events as ce
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.media.v1 import media_pb2

from training.glitch.health_media import SHARED, recode_video, remux
from .test_service import glitches, read_all, running

GAME = SHARED / "media" / "openarena_dm2.mp4"

pytestmark = pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")


async def health_events(bus: Bus, sid: str) -> list[events_pb2.HealthIncident]:
    msgs = await read_all(bus, subjects.event("health", sid), subjects.EVENTS_STREAM)
    for m in msgs:
        assert m.headers["ce-type"] == "streamsight.health.v1" and m.headers["Nats-Msg-Id"] == m.headers["ce-id"]
        assert ce.decode(m.headers, m.data).WhichOneof("payload") == "health"
    return [events_pb2.HealthIncident.FromString(m.data) for m in msgs]


@pytest.mark.slow
async def test_black_and_no_audio_through_the_stack(nats_server, bus, tmp_path: Path, ingest_vod) -> None:
    black = recode_video(GAME, tmp_path / "black.mkv", lambda rgb, t, prev: np.zeros_like(rgb) if 6 <= t < 9 else rgb, end_s=16)
    plain = recode_video(GAME, tmp_path / "plain.mkv", lambda rgb, t, prev: rgb, end_s=16)
    silent_film = remux(plain, tmp_path / "silent.mkv", no_audio=True)
    async with running(nats_server.url, tmp_path) as (glitch, stub):
        await ingest_vod(stub, {"black": black, "silent": silent_film})
        await asyncio.sleep(1.0)
        got = await health_events(bus, "black")
        assert [(e.phase, e.kind) for e in got] == [(events_pb2.PHASE_START, events_pb2.HEALTH_KIND_BLACK),
                                                    (events_pb2.PHASE_END, events_pb2.HEALTH_KIND_BLACK)], got
        start, end = got
        assert start.incident_id == end.incident_id == "black:health:0"
        assert 6.0 <= start.start_s <= 6.5 and start.detected_at_s <= 7.0 and 8.4 <= end.end_s <= 9.0
        assert await glitches(bus, "black") == [], "a black picture is a health incident, not corruption"
        got = await health_events(bus, "silent")
        assert [(e.phase, e.kind) for e in got] == [(events_pb2.PHASE_START, events_pb2.HEALTH_KIND_NO_AUDIO),
                                                    (events_pb2.PHASE_END, events_pb2.HEALTH_KIND_NO_AUDIO)], got
        assert got[1].end_s >= 15.5 and "no audio track" in got[0].detail
        assert len(glitch.streams) == 0


async def test_a_bad_audio_chunk_is_dead_lettered(nats_server, bus, tmp_path: Path) -> None:
    async with running(nats_server.url, tmp_path) as (glitch, _):
        await bus.publish(subjects.media("audio", "junk"), media_pb2.AudioChunk(stream_id="junk", sample_rate=0, pcm_f32le=b"\x00" * 8))
        await bus.publish(subjects.media("audio", "junk"), media_pb2.AudioChunk(stream_id="junk", sample_rate=32000, pcm_f32le=b"\x00" * 7))
        dead = await read_all(bus, subjects.deadletter("glitch"), subjects.DEADLETTER_STREAM, settle_s=2.0)
        reasons = sorted(m.headers["streamsight-dlq-reason"] for m in dead)
        assert len(dead) == 2 and "at 0 Hz" in reasons[0] and "7 bytes" in reasons[1], reasons
        ok = media_pb2.AudioChunk(stream_id="junk", sample_rate=32000, pcm_f32le=np.zeros(32000, "<f4").tobytes())
        await bus.publish(subjects.media("audio", "junk"), ok)
        await bus.publish(subjects.media("windows", "junk"), media_pb2.WindowRecord(stream_id="junk", index=0, end_s=1.0, last=True))
        await asyncio.sleep(2.0)
        assert len(glitch.streams) == 0, "a good chunk and the last window after the bad ones were handled"
