"""The fusion service on a real NATS: one score per window under duplicates and a restart,
highlights with clips cut by the real ingest service, clip failures, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import av
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.fusion import analysed
from services.fusion.model import FusionModel
from services.fusion.service import FusionService
from services.fusion.settings import FusionSettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from nats.js.api import ConsumerConfig, DeliverPolicy

from streamsight import events, partitions, subjects
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.natsd import free_port
from streamsight.rpc import channel
from streamsight.app.synth import make_media
from training.fusion import records as stored
from training.fusion.train import train_fusion_main

FEATURES = {"vision": ["motion_prob_max", "flow_mag_mean"], "audio": ["loudness_jump_lu"]}
MODALITY = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO, "chat": common_pb2.MODALITY_CHAT}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A small model whose answer the test controls: motion and loudness jumps make highlights."""
    names = [f"{m}.{f}" for m, fs in FEATURES.items() for f in fs]
    model = FusionModel(names, [2.0, 1.0, 2.0], -1.0, [0.3, 2.0, 1.0], [0.3, 2.0, 3.0], version="test@1")
    path = tmp_path_factory.mktemp("model") / "model.json"
    model.save(path)
    return path


def settings(nats_url: str, model_path: Path, bucket: str, **overrides) -> FusionSettings:
    base = dict(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, model_path=model_path, model_av_path="",
                state_bucket=bucket, ingest_address=f"127.0.0.1:{free_port()}", clip_timeout_s=10.0)
    return FusionSettings(**{**base, **overrides})


def record(sid: str, modality: str, window: int, high: bool, end: float | None = None) -> features_pb2.FeatureRecord:
    values = {"motion_prob_max": 0.95, "flow_mag_mean": 8.0} if high else {"motion_prob_max": 0.05, "flow_mag_mean": 0.5}
    if modality == "audio":
        values = {"loudness_jump_lu": 9.0 if high else 0.0, "rms_dbfs": -20.0}
    return features_pb2.FeatureRecord(stream_id=sid, window=window, modality=MODALITY[modality], start_s=10.0 * window,
                                      end_s=end if end is not None else 10.0 * window + 10, values=values)


async def start(bus: Bus, sid: str, duration_s: float = 0.0, modalities: tuple[str, ...] = ()) -> None:
    """What starting a stream publishes: the gateway's declaration of its modalities, then ingest's "started"."""
    if modalities:
        declared = events_pb2.StreamStatus(stream_id=sid, state=common_pb2.STREAM_STATE_PENDING, reason="registered", reporter="gateway",
                                           modalities=[MODALITY[m] for m in modalities])
        await bus.publish_event(sid, declared, f"{sid}:status:gateway:registered")
    started = events_pb2.StreamStatus(stream_id=sid, state=common_pb2.STREAM_STATE_RUNNING, reason="started", reporter="ingest",
                                      duration_s=duration_s)
    await bus.publish_event(sid, started, f"{sid}:status:ingest:started")


def window(sid: str, i: int, end: float | None = None, last: bool = False) -> media_pb2.WindowRecord:
    return media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10.0 * i, end_s=10.0 * i + 10 if end is None else end, last=last)


async def publish(bus: Bus, rec: features_pb2.FeatureRecord, msg_id: str | None = None) -> None:
    modality = {v: k for k, v in MODALITY.items()}[rec.modality]
    await bus.publish(subjects.features(modality, rec.stream_id), rec, msg_id or subjects.feature_msg_id(rec.stream_id, modality, rec.window))


class EventLog:
    """Every event of one stream, read from EVENTS with an ordered consumer."""

    def __init__(self) -> None:
        self.events: list[events_pb2.Event] = []

    @classmethod
    async def follow(cls, bus: Bus, sid: str) -> tuple["EventLog", object]:
        log = cls()

        async def on_msg(msg) -> None:
            log.events.append(events.decode(msg.headers, msg.data))

        sub = await bus.js.subscribe(subjects.event("*", sid), stream=subjects.EVENTS_STREAM, cb=on_msg, ordered_consumer=True)
        return log, sub

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for e in self.events if e.WhichOneof("payload") == kind]

    def analysed(self) -> list[events_pb2.Event]:
        """Fusion's "analysed" statuses (its last word on the stream)."""
        return [e for e in self.events if e.WhichOneof("payload") == "status" and analysed.is_analysed(e.status)]

    def assert_analysed_last(self) -> events_pb2.StreamStatus:
        """Exactly one "analysed" status, after every score and highlight, counting them."""
        done = self.analysed()
        assert len(done) == 1, f"{len(done)} analysed statuses"
        at = self.events.index(done[0])
        kinds = [e.WhichOneof("payload") for e in self.events]
        assert "score" not in kinds[at:] and "highlight" not in kinds[at:], f"events after the analysed status: {kinds[at:]}"
        status = done[0].status
        assert (status.windows_scored, status.highlights) == (len(self.of("score")), len(self.of("highlight")))
        return status

    async def wait(self, kind: str, n: int, timeout: float = 60.0) -> list:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.of(kind)) < n and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything extra (a second score) would show up now
        return self.of(kind)

    async def wait_for(self, check, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            assert loop.time() < deadline, "not seen in time"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def connected(url: str):
    bus = await Bus.connect(url, "fusion-test")
    await bus.ensure_streams()
    try:
        yield bus
    finally:
        await bus.close()


async def test_restart_duplicates_clip_failure_and_dead_letters(nats_server, model_path):
    sid = "restart-1"
    config = settings(nats_server.url, model_path, "fusion-restart")
    async with connected(nats_server.url) as bus:
        log, sub = await EventLog.follow(bus, sid)
        dead = await bus.js.subscribe(subjects.deadletter("fusion"), stream=subjects.DEADLETTER_STREAM, ordered_consumer=True)
        async with FusionService(config).serving():
            await start(bus, sid, duration_s=24.0)
            await publish(bus, record(sid, "vision", 0, high=True))
            await publish(bus, record(sid, "audio", 0, high=True))
            await publish(bus, record(sid, "vision", 1, high=True))
            await bus.publish(subjects.media("windows", sid), media_pb2.WindowRecord(stream_id=sid, index=0, start_s=0, end_s=10), f"{sid}:window:0")
            await bus.publish(subjects.features("audio", sid), b"\xff garbage", "garbage-1")
            assert [s.window for s in await log.wait("score", 1)] == [0]
        # restarted: window 1's vision record was acknowledged before the stop and lives in the KV state
        async with FusionService(config).serving():
            await publish(bus, record(sid, "vision", 0, high=False), msg_id="redelivered-with-another-id")
            await publish(bus, record(sid, "audio", 1, high=True))
            await publish(bus, record(sid, "vision", 2, high=False, end=24.0))
            await publish(bus, record(sid, "audio", 2, high=False, end=24.0))
            for i, end in ((1, 20.0), (2, 24.0)):
                msg = media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10.0 * i, end_s=end, last=i == 2)
                await bus.publish(subjects.media("windows", sid), msg, f"{sid}:window:{i}")
            scores = await log.wait("score", 3)
            highlights = await log.wait("highlight", 1)
            await log.wait_for(lambda: log.analysed())
        dead_msg = await dead.next_msg(timeout=10)
        await sub.unsubscribe()
        state_keys = await (await bus.js.key_value("fusion-restart")).keys()
    assert state_keys == [f"d.{sid}"]  # a finished stream leaves only its "done" mark
    assert sorted(s.window for s in scores) == [0, 1, 2]
    by_window = {s.window: s for s in scores}
    assert by_window[0].score > 0.9 and by_window[1].score > 0.9 and by_window[2].score < 0.1
    assert by_window[2].end_s == 24.0 and list(by_window[1].missing) == []
    assert by_window[0].why[0].feature in {"vision.motion_prob_max", "audio.loudness_jump_lu"}
    assert by_window[0].features["audio.rms_dbfs"] == -20.0  # every value arrives, used by the model or not
    assert len(highlights) == 1
    hl = highlights[0]
    assert list(hl.windows) == [0, 1] and (hl.start_s, hl.end_s) == (0.0, 20.0) and hl.score > 0.9
    assert hl.clip.clip_id == "" and hl.why  # ingest was not there: published without a clip
    assert dead_msg.headers["streamsight-dlq-subject"] == subjects.features("audio", sid)
    log.assert_analysed_last()


async def test_deadline_flags_the_missing_modality(nats_server, model_path):
    sid = "live-1"
    config = settings(nats_server.url, model_path, "fusion-live", deadline_s=15.0)
    counted = {"modality": "audio", "completion": "deadline"}
    before = REGISTRY.get_sample_value("streamsight_fusion_windows_missing_total", counted) or 0.0
    async with connected(nats_server.url) as bus, FusionService(config).serving():
        log, sub = await EventLog.follow(bus, sid)
        await start(bus, sid)  # no duration: a live source
        await asyncio.sleep(0.5)
        for i in range(3):  # audio never comes; vision's records move the media clock to 30 s (one consumer: in order)
            await publish(bus, record(sid, "vision", i, high=True))
        scores = await log.wait("score", 1)
        await sub.unsubscribe()
    assert [(s.window, list(s.missing), s.completion) for s in scores] == [(0, [common_pb2.MODALITY_AUDIO], "deadline")]
    assert REGISTRY.get_sample_value("streamsight_fusion_windows_missing_total", counted) == before + 1


async def test_a_stream_gone_silent_is_scored_with_what_came_and_forgotten(nats_server, model_path):
    """Its ingest died without an end: after the stall timeout its windows are scored without the
    silent stage, and after the idle time (lifecycle policy) the stream's state is gone."""
    sid = "idle-1"
    config = settings(nats_server.url, model_path, "fusion-idle", stall_timeout_s=1.0, stream_idle_s=2.0)
    async with connected(nats_server.url) as bus:
        fusion = FusionService(config)
        async with fusion.serving():
            log, sub = await EventLog.follow(bus, sid)
            await start(bus, sid, duration_s=60.0)
            await publish(bus, record(sid, "vision", 0, high=False))
            await publish(bus, record(sid, "vision", 1, high=False))
            await bus.publish(subjects.media("windows", sid), window(sid, 0))
            scores = await log.wait("score", 2, timeout=20)
            for _ in range(50):
                if len(fusion.streams) == 0:
                    break
                await asyncio.sleep(0.2)
            await sub.unsubscribe()
            assert [(s.window, s.completion) for s in scores] == [(0, "stage_stalled"), (1, "stage_stalled")]
            assert len(fusion.streams) == 0 and fusion.streams.counts.get("idle") == 1
            await publish(bus, record(sid, "audio", 0, high=False))  # a straggler after that: ignored, counted
            await asyncio.sleep(1.0)
            assert len(fusion.streams) == 0 and fusion.streams.counts.get("late") == 1


async def test_forged_window_indexes_are_dead_lettered_and_a_restart_after_them_is_quick(nats_server, model_path):
    """A 90 s file has windows 0..8 (and a short tail): records at 20000 or 3,000,000, and an end
    status at 3e7 s, are refused before anything is acted on or stored; the stream then finishes
    with one score per window."""
    sid = "forged-1"
    config = settings(nats_server.url, model_path, "fusion-forged")
    forged = [
        (subjects.media("windows", "nobody"), window("nobody", 20000, last=True), "forged-w0"),  # a stream never started
        (subjects.media("windows", sid), window(sid, 20000, last=True), "forged-w1"),
        (subjects.media("windows", sid), window(sid, 3_000_000), "forged-w2"),
        (subjects.features("vision", sid), record(sid, "vision", 20000, high=True), "forged-f1"),
    ]
    async with connected(nats_server.url) as bus:
        log, sub = await EventLog.follow(bus, sid)
        dead = await bus.js.subscribe(subjects.deadletter("fusion"), stream=subjects.DEADLETTER_STREAM, ordered_consumer=True)
        async with FusionService(config).serving() as service:
            await start(bus, sid, duration_s=90.0, modalities=("vision", "audio"))
            for i in range(3):
                await bus.publish(subjects.media("windows", sid), window(sid, i), f"{sid}:window:{i}")
                await publish(bus, record(sid, "vision", i, high=False))
                await publish(bus, record(sid, "audio", i, high=False))
            for subject, msg, msg_id in forged:
                await bus.publish(subject, msg, msg_id)
            ended = events_pb2.StreamStatus(stream_id=sid, state=common_pb2.STREAM_STATE_ENDED, media_time_s=3e7, reporter="gateway")
            await bus.publish_event(sid, ended, "forged-end")
            forged.append((subjects.event("status", sid), ended, "forged-end"))
            letters = []
            while len(letters) < len(forged):  # the dead letters of this stream (earlier tests left theirs)
                msg = await dead.next_msg(timeout=10)
                if subjects.stream_of(msg.headers["streamsight-dlq-subject"]) in (sid, "nobody"):
                    letters.append(msg)
            assert [s.window for s in await log.wait("score", 3)] == [0, 1, 2]  # the forged end scored nothing
            kv = await bus.js.key_value("fusion-forged")
            meta = json.loads((await kv.get(f"m.{sid}")).value)
            assert meta["highest"] == 2 and meta["last_window"] is None and not meta["ended"]  # nothing forged was kept
            assert "nobody" not in service.streams
            async with channel(service.address) as ch:
                health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with FusionService(config).serving():  # the restart reads a small state
            for i in range(3, 9):
                await bus.publish(subjects.media("windows", sid), window(sid, i, last=i == 8), f"{sid}:window:{i}")
                await publish(bus, record(sid, "vision", i, high=False))
                await publish(bus, record(sid, "audio", i, high=False))
            scores = await log.wait("score", 9)
        await sub.unsubscribe()
    assert sorted(s.window for s in scores) == list(range(9)) and all(s.completion == "complete" for s in scores)
    assert sorted(m.headers["streamsight-dlq-subject"] for m in letters) == sorted(subject for subject, _, _ in forged)
    assert all("outside the known range" in m.headers["streamsight-dlq-reason"] for m in letters)


@pytest.mark.slow
@pytest.mark.parametrize("vertical", [False, True], ids=["plain", "vertical"])
async def test_one_score_per_window_and_a_playable_clip_from_the_real_ingest(nats_server, model_path, tmp_path, vertical):
    """With vertical_clips on, the highlight also carries the clip's 9:16 copy (cut by the real ingest)."""
    sid = f"game-{int(vertical)}"
    media = make_media(tmp_path / "game.mp4", duration=30.0, segments=[(10, 20, "action")], keyframe_interval=2.0)
    ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "var"))
    async with connected(nats_server.url) as bus, ingest.serving():
        config = settings(nats_server.url, model_path, f"fusion-e2e-{int(vertical)}", ingest_address=ingest.address, stall_timeout_s=3.0,
                          tail_s=0.0,  # ingest cannot yet cut a clip that reaches into a stream's last buffer segment
                          vertical_clips=vertical, vertical_timeout_s=60.0)
        async with FusionService(config).serving():
            log, sub = await EventLog.follow(bus, sid)
            async with channel(ingest.address) as ch:
                await ingest_pb2_grpc.IngestStub(ch).StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(media.path)))
            for i in range(3):
                for modality in ("vision", "audio"):
                    rec = record(sid, modality, i, high=i == 1)
                    await publish(bus, rec)
                    await publish(bus, rec)  # a republish: JetStream drops it by its id
            async with channel(ingest.address) as ch:
                stub = ingest_pb2_grpc.IngestStub(ch)
                for _ in range(300):
                    status = await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=sid))
                    if status.state == common_pb2.STREAM_STATE_ENDED:
                        break
                    await asyncio.sleep(0.2)
            highlights = await log.wait("highlight", 1, timeout=60)
            scores = log.of("score")
            await sub.unsubscribe()
    # ingest's windows: 0..2 and, for this file, a short tail window 3 (the audio encoder's last
    # samples), which the test's stand-in stages never deliver: scored once they stalled
    windows = sorted(s.window for s in scores)
    assert windows == list(range(len(windows))) and len(windows) >= 3
    assert all(set(s.missing) == {common_pb2.MODALITY_VISION, common_pb2.MODALITY_AUDIO} and s.completion == "stage_stalled"
               for s in scores if s.window >= 3)
    assert [s.window for s in scores if s.score >= 0.5] == [1]
    assert len(highlights) == 1
    hl = highlights[0]
    assert list(hl.windows) == [1] and (hl.start_s, hl.end_s) == (10.0, 20.0)
    clip = hl.clip
    assert clip.uri.startswith("file://") and clip.size_bytes > 0
    assert clip.start_s <= 7.0 + 1e-6 and clip.end_s >= 20.0 - 0.1  # lead-in of 3 s, from the keyframe at or before it
    path = Path(clip.uri.removeprefix("file://"))
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 0.9 * (20.0 - 7.0) * media.fps
    assert not clip.HasField("vertical"), "the event carries the copy as vertical_clip, not inside clip"
    if not vertical:
        assert not hl.HasField("vertical_clip"), "off by default: no copy asked for"
        return
    tall = hl.vertical_clip
    assert tall.uri.startswith("file://") and tall.size_bytes > 0 and tall.clip_id not in ("", clip.clip_id)
    assert (tall.start_s, tall.end_s) == (clip.start_s, clip.end_s)
    with av.open(tall.uri.removeprefix("file://")) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        assert stream.codec_context.name == "h264"
        tall_frames = sum(1 for _ in container.decode(video=0))
    assert size == (202, 360)  # 9:16 of the 640x360 source, full height
    assert abs(tall_frames - frames) <= 2


async def test_training_reads_a_stored_run_back_from_the_features_stream(nats_server, tmp_path):
    sid = "stored-1"
    async with connected(nats_server.url) as bus:
        sent = [record(sid, m, w, high=w == 1) for w in range(3) for m in ("vision", "audio")]
        for rec in sent:
            await publish(bus, rec)
        await bus.publish(subjects.features("chat", sid), b"\x00not a record", "junk-1")
    got = await stored.read_features_stream(nats_server.url, sid, idle_s=1.0)
    dump = tmp_path / "cli.jsonl"
    assert await asyncio.to_thread(train_fusion_main, ["--nats", nats_server.url, "--stream", sid, "--dump", str(dump)]) == 0
    assert len(stored.read_jsonl(dump)) == len(sent)
    assert sorted((r.window, r.modality) for r in got) == sorted((r.window, r.modality) for r in sent)
    stored.write_jsonl(got, tmp_path / "run.jsonl")
    rows = stored.to_rows(stored.read_jsonl(tmp_path / "run.jsonl"))
    assert rows[(sid, 1)]["features"]["audio.loudness_jump_lu"] == 9.0 and rows[(sid, 1)]["modalities"] == {"vision", "audio"}


async def test_two_streams_at_once_one_with_chat_one_without(nats_server, model_path, tmp_path):
    """A stream declared with chat waits for its chat records, one without does not; windows with
    chat use the full model, windows without it the vision+audio model. A chat that failed is
    not waited for."""
    names = [f"{m}.{f}" for m, fs in FEATURES.items() for f in fs] + ["chat.chat_rate_z"]
    full = FusionModel(names, [2.0, 1.0, 2.0, 3.0], -1.0, [0.3, 2.0, 1.0, 0.0], [0.3, 2.0, 3.0, 1.0], version="full@1")
    full.save(tmp_path / "full.json")
    config = settings(nats_server.url, tmp_path / "full.json", "fusion-two", model_av_path=model_path)
    async with connected(nats_server.url) as bus, FusionService(config).serving():
        logs = {sid: await EventLog.follow(bus, sid) for sid in ("with-chat", "no-chat")}
        await start(bus, "with-chat", 60.0, ("vision", "audio", "chat"))
        await start(bus, "no-chat", 60.0, ("vision", "audio"))
        await publish(bus, features_pb2.FeatureRecord(stream_id="with-chat", window=0, modality=MODALITY["chat"], start_s=0, end_s=10,
                                                      values={"chat_rate_z": -2.0}))
        for sid in ("with-chat", "no-chat"):
            await publish(bus, record(sid, "vision", 0, high=True))
            await publish(bus, record(sid, "audio", 0, high=True))
        await publish(bus, record("with-chat", "vision", 1, high=False))
        await publish(bus, record("with-chat", "audio", 1, high=False))  # window 1 waits for its chat
        scores = {sid: await log.wait("score", 1) for sid, (log, _) in logs.items()}
        assert [s.window for s in scores["with-chat"]] == [0] and [s.window for s in scores["no-chat"]] == [0]
        failed = events_pb2.StreamStatus(stream_id="with-chat", reason="chat_failed", reporter="chat", detail="irc closed")
        await bus.publish_event("with-chat", failed, "with-chat:status:chat:chat_failed")
        after = await logs["with-chat"][0].wait("score", 2)
        for _, sub in logs.values():
            await sub.unsubscribe()
    assert [(s.window, list(s.missing), s.completion) for s in after] == [(0, [], "complete"), (1, [common_pb2.MODALITY_CHAT], "stage_done")]
    with_chat, no_chat = scores["with-chat"][0], scores["no-chat"][0]
    assert "chat.chat_rate_z" in {c.feature for c in with_chat.why}  # the full model weighed the calm chat
    assert with_chat.score < no_chat.score and "chat.chat_rate_z" not in no_chat.features


def moment_record(sid: str, modality: str, i: int, peaks: list[tuple[int, int]], end: float | None = None) -> features_pb2.FeatureRecord:
    """A record with 1 s values: each moment (start, end) is a loud onset at its start and fast motion throughout."""
    high = any(10 * i <= a < 10 * i + 10 for a, _ in peaks)
    rec = record(sid, modality, i, high=high, end=end)
    for k in range(10):
        t = 10 * i + k
        inside = any(a <= t < b for a, b in peaks)
        if modality == "vision":
            rec.values[f"motion_s{k}"] = 6.0 if inside else 0.4 + 0.05 * (t % 3)
        else:
            rec.values[f"loudness_s{k}"] = -12.0 if any(t == a for a, _ in peaks) else -40.0 + 0.5 * (t % 4)
            rec.values[f"onset_s{k}"] = 25.0 if any(t == a for a, _ in peaks) else 0.3 + 0.2 * (t % 3)
    return rec


async def test_two_moments_20_s_apart_get_two_highlights_with_their_own_clips_and_a_glitch_suppresses_one(nats_server, model_path, tmp_path):
    """Through real NATS and the real ingest: per-second values make one highlight per moment, each
    cut to its own clip (the window rule made one 10-40 s highlight of them); a glitch event over
    a moment of another stream suppresses that moment's highlight."""
    sid, other = "moments-1", "moments-glitch"
    peaks = [(12, 17), (32, 37)]
    media = make_media(tmp_path / "moments.mp4", duration=60.0, width=320, height=180, fps=15,
                       segments=[(12, 17, "action"), (32, 37, "action")], keyframe_interval=1.0)
    ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "var"))
    async with connected(nats_server.url) as bus, ingest.serving():
        config = settings(nats_server.url, model_path, "fusion-moments", ingest_address=ingest.address, stall_timeout_s=3.0, tail_s=0.0)
        fusion = FusionService(config)
        async with fusion.serving():
            log, sub = await EventLog.follow(bus, sid)
            other_log, other_sub = await EventLog.follow(bus, other)
            async with channel(ingest.address) as ch:
                await ingest_pb2_grpc.IngestStub(ch).StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(media.path)))
            await start(bus, other, duration_s=50.0)
            glitch = events_pb2.Glitch(stream_id=other, glitch_id="g1", phase=events_pb2.PHASE_START, kind=events_pb2.GLITCH_KIND_STRIPES,
                                       severity=0.8, start_s=31.0, end_s=35.0, confidence=0.9)
            dead = await bus.js.subscribe(subjects.deadletter("fusion"), stream=subjects.DEADLETTER_STREAM, ordered_consumer=True)
            backwards = events_pb2.Glitch(stream_id=other, glitch_id="g0", phase=events_pb2.PHASE_START, start_s=20.0, end_s=5.0)
            await bus.publish_event(other, backwards, f"{other}:glitch:g0:start")  # a span that ends before it starts
            await bus.publish_event(other, glitch, f"{other}:glitch:g1:start")
            for _ in range(100):  # the glitch is known before the moments are decided
                state = fusion.streams.get(other) if other in fusion.streams else None
                if state is not None and state.glitches:
                    break
                await asyncio.sleep(0.1)
            async with channel(ingest.address) as ch:  # the stages come after ingest: its clip buffer holds what they saw
                stub = ingest_pb2_grpc.IngestStub(ch)
                for _ in range(300):
                    if (await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=sid))).state == common_pb2.STREAM_STATE_ENDED:
                        break
                    await asyncio.sleep(0.2)
            for i in range(6):
                for modality in ("vision", "audio"):
                    await publish(bus, moment_record(sid, modality, i, peaks))
            for i in range(5):
                for modality in ("vision", "audio"):
                    await publish(bus, moment_record(other, modality, i, peaks))
                await bus.publish(subjects.media("windows", other), window(other, i, last=i == 4), f"{other}:window:{i}")
            highlights = await log.wait("highlight", 2, timeout=60)
            other_highlights = await other_log.wait("highlight", 1, timeout=30)
            # the module's earlier tests dead-lettered records too: read on until this one (none: next_msg times out)
            dead_subjects = []
            while subjects.event("glitch", other) not in dead_subjects:
                dead_subjects.append((await dead.next_msg(timeout=10)).headers["streamsight-dlq-subject"])
            await sub.unsubscribe()
            await other_sub.unsubscribe()
    assert all(s.startswith("streamsight.") for s in dead_subjects)
    assert [(h.start_s, h.end_s) for h in highlights] == [(12.0, 17.0), (32.0, 37.0)]
    assert all(h.resolution == "moment" and h.peak_s == h.start_s and h.rank >= 1 and "loud sound" in h.reason and "fast motion" in h.reason
               for h in highlights)
    assert all(h.wait_s == 15.0 and h.latency_s >= 0 for h in highlights)  # a file: chat_lag_max_s + 3 s
    clips = [h.clip for h in highlights]
    assert all(c.uri.startswith("file://") and c.size_bytes > 0 for c in clips)
    assert clips[0].clip_id != clips[1].clip_id and clips[0].end_s <= clips[1].start_s
    assert clips[0].start_s <= 9.0 + 1e-6 and clips[0].end_s >= 17.0 - 0.1  # lead-in 3 s from the keyframe at or before it
    assert [(h.start_s, h.end_s, h.glitch) for h in other_highlights] == [(12.0, 17.0, False)]


async def test_health_incidents_suppress_or_mark_moments_and_survive_a_restart(nats_server, model_path):
    """Health events with the glitch service's real ids ("<stream>:health:<n>"): a black incident
    over a moment suppresses its highlight, a loudness one only marks it, no_audio and
    format_change touch nothing; the spans are kept in KV across a restart; a span that ends
    before it starts is dead-lettered."""
    from services.fusion.service import kv_token

    sid = "health-moments"
    peaks = [(12, 17), (32, 37), (52, 57)]
    config = settings(nats_server.url, model_path, "fusion-health", stall_timeout_s=3.0, tail_s=0.0, clip_timeout_s=2.0)

    def incident(n: int, phase, kind, start_s: float, end_s: float) -> events_pb2.HealthIncident:
        return events_pb2.HealthIncident(stream_id=sid, incident_id=f"{sid}:health:{n}", phase=phase, kind=kind, start_s=start_s,
                                         end_s=end_s, severity=0.8, detail="planted")

    async with connected(nats_server.url) as bus:
        dead = await bus.js.subscribe(subjects.deadletter("fusion"), stream=subjects.DEADLETTER_STREAM, ordered_consumer=True)
        fusion = FusionService(config)
        async with fusion.serving():
            await start(bus, sid, duration_s=60.0)
            sent = [
                incident(0, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_NO_AUDIO, 0.0, 5.0),
                incident(1, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_FORMAT_CHANGE, 53.0, 53.0),
                incident(1, events_pb2.PHASE_END, events_pb2.HEALTH_KIND_FORMAT_CHANGE, 53.0, 53.0),
                incident(9, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_SILENCE, 40.0, 20.0),  # ends before it starts
                incident(2, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_BLACK, 31.0, 31.5),
                incident(2, events_pb2.PHASE_UPDATE, events_pb2.HEALTH_KIND_BLACK, 31.0, 34.0),
                incident(3, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_LOUDNESS, 13.0, 13.4),
            ]
            for k, h in enumerate(sent):
                await bus.publish_event(sid, h, f"{h.incident_id}:{k}")
            for _ in range(100):
                state = fusion.streams.get(sid) if sid in fusion.streams else None
                if state is not None and len(state.glitches) == 2 and f"{sid}.{kv_token(f'{sid}:health:3')}" in state.glitches:
                    break
                await asyncio.sleep(0.1)
            kept = sorted(state.glitches)
        end = incident(0, events_pb2.PHASE_END, events_pb2.HEALTH_KIND_NO_AUDIO, 0.0, 60.0)
        await bus.publish_event(sid, end, f"{end.incident_id}:end")  # while fusion is down: read after the restart
        log, sub = await EventLog.follow(bus, sid)
        fusion = FusionService(config)
        async with fusion.serving():
            restored = sorted(fusion.streams.get(sid).glitches)
            for i in range(6):
                for modality in ("vision", "audio"):
                    await publish(bus, moment_record(sid, modality, i, peaks))
                await bus.publish(subjects.media("windows", sid), window(sid, i, last=i == 5), f"{sid}:window:{i}")
            highlights = await log.wait("highlight", 2, timeout=60)
            dead_subjects = []
            while subjects.event("health", sid) not in dead_subjects:
                dead_subjects.append((await dead.next_msg(timeout=10)).headers["streamsight-dlq-subject"])
            await sub.unsubscribe()
    assert kept == restored == [f"{sid}.health-moments=3Ahealth=3A2", f"{sid}.health-moments=3Ahealth=3A3"]
    assert [(h.start_s, h.end_s, h.glitch) for h in highlights] == [(12.0, 17.0, True), (52.0, 57.0, False)]


def test_kv_tokens_are_valid_keys_and_do_not_collide():
    from nats.js.kv import _is_key_valid

    from services.fusion.service import kv_token

    ids = ["g1", "s:glitch:0", "s_glitch_0", "s=3Aglitch=3A0", "a.b", "é"]
    tokens = [kv_token(i) for i in ids]
    assert tokens[:2] == ["g1", "s=3Aglitch=3A0"]
    assert all(_is_key_valid(f"g.stream.{t}") and "." not in t for t in tokens) and len(set(tokens)) == len(ids)


async def test_analysed_status_waits_for_glitch_and_chat_and_a_restart_publishes_it_once(nats_server, model_path):
    """The "analysed" status of a finished stream waits until glitch acknowledged the stream's last
    window record (played here by the test: a lease of the glitch group and its durable MEDIA
    consumer) and chat's last forecast is in; fusion restarted in between still publishes it, once."""
    sid = "analysed-1"
    k = subjects.partition_of(sid)
    config = settings(nats_server.url, model_path, "fusion-analysed")
    async with connected(nats_server.url) as bus:
        log, sub = await EventLog.follow(bus, sid)
        glitch = await bus.js.pull_subscribe(f"{subjects.PREFIX}.media.v1.*.{k}.*", durable=f"glitch-p{k}", stream=subjects.MEDIA_STREAM,
                                             config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_wait=60))
        async with FusionService(config).serving():
            await (await bus.js.key_value(partitions.BUCKET)).put(f"glitch.p.{k}", b"glitch-test")  # a glitch replica holds it
            await start(bus, sid, duration_s=20.0, modalities=("vision", "audio", "chat"))
            for i in range(2):
                for modality in ("vision", "audio", "chat"):
                    await publish(bus, record(sid, modality, i, high=False))
                await bus.publish(subjects.media("windows", sid), window(sid, i, last=i == 1), f"{sid}:window:{i}")
            assert [s.window for s in await log.wait("score", 2)] == [0, 1]
            assert log.analysed() == [], "published before glitch and chat were done"
        forecast = events_pb2.SentimentForecast(stream_id=sid, issued_at_s=20.0)
        await bus.publish_event(sid, forecast, f"{sid}:forecast:0")
        async with FusionService(config).serving():  # restarted: the pending status is read back from the bucket
            await asyncio.sleep(1.0)
            assert log.analysed() == [], "published before glitch acknowledged the last window record"
            for msg in await glitch.fetch(10, timeout=5):
                await msg.ack_sync()
            await log.wait_for(lambda: log.analysed())
            await asyncio.sleep(1.0)  # a second copy would show up now
        async with FusionService(config).serving():
            await asyncio.sleep(1.0)
        await sub.unsubscribe()
        keys = await (await bus.js.key_value("fusion-analysed")).keys()
        await (await bus.js.key_value(partitions.BUCKET)).delete(f"glitch.p.{k}")
    status = log.assert_analysed_last()
    assert (status.windows_scored, status.highlights, status.state) == (2, 0, common_pb2.STREAM_STATE_UNSPECIFIED)
    assert keys == [f"d.{sid}"], "the pending status is gone from the bucket once published"
