"""The audio service on a real nats-server with the real ingest service: media in, one record per window out.

Ingest decodes generated media with real sounds mixed in (minigun at 12 s, laughter at 25 s);
the audio service is started before each stream (MEDIA keeps messages only for consumers that
exist when they are published) and its FeatureRecords are read back from the FEATURES stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.audio.analyzer import FEATURES, SECOND_FEATURES, WindowFeatures, second_features
from services.audio.service import AudioService
from services.audio.streams import decode_chunk, window_result
from streamsight.windows import feature_record
from services.audio.settings import AudioSettings
from services.audio.tagger import DEFAULT_CLASSES, TaggerError
from services.audio.labels import slug
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import subjects
from streamsight.bus import BadMessage, Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.rpc import channel
from streamsight.app.synth import SoundEvent, make_media
from training.audio import convert_panns
from training.audio.panns import build

REPO = Path(__file__).resolve().parents[2]
DURATION = 36.0  # windows 0-3; the last one is 6 s long
QUIET, MINIGUN, LAUGH = 0, 1, 2  # windows: tone and noise only; minigun at 12 s; laughter at 25 s


@pytest.fixture(scope="module")
def sample(tmp_path_factory, shared_data):
    sounds = shared_data / "sounds"
    path = tmp_path_factory.mktemp("media") / "match.mp4"
    return make_media(
        path, duration=DURATION, width=320, height=180, fps=15, noise=0.01,
        sounds=[SoundEvent(sounds / "minigun.ogg", 12.0), SoundEvent(sounds / "voice_classic_laugh.ogg", 25.0)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_panns(tmp_path_factory) -> Path:
    """A Cnn14 of width 2 with random weights, saved like an official checkpoint and converted by the real converter."""
    folder = tmp_path_factory.mktemp("panns")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build("Cnn14", width=2)
    with torch.no_grad():
        # Trained-like input statistics (log-mel in dB) and variance-preserving weights, so the
        # random network's scores still depend on its input instead of saturating.
        model.bn0.running_mean.fill_(-30.0)
        model.bn0.running_var.fill_(400.0)
        for name, tensor in model.state_dict().items():
            if name.endswith("weight") and tensor.dim() > 1 and not name.startswith(("spectrogram", "logmel")):
                torch.nn.init.kaiming_normal_(tensor)
    torch.save({"model": model.state_dict()}, folder / "Cnn14_tiny.pth")
    code = convert_panns.main(["--checkpoint", str(folder / "Cnn14_tiny.pth"), "--arch", "Cnn14", "--out", str(folder / "cnn14_tiny.onnx")])
    assert code == 0
    return folder / "cnn14_tiny.onnx"



def audio_settings(nats_url: str, **overrides) -> AudioSettings:
    return AudioSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, **overrides)


@contextlib.asynccontextmanager
async def ingest_stub(nats_url: str, data_dir: Path):
    ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, data_dir=data_dir))
    async with ingest.serving(), channel(ingest.address) as ch:
        yield ingest_pb2_grpc.IngestStub(ch)


async def read_all(bus: Bus, subject: str, stream: str, until: int, timeout: float = 30.0) -> list:
    """Every message on `subject` in `stream`, waiting until there are at least `until` (then a little longer)."""
    sub = await bus.js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    got, loop = [], asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            try:
                msgs = await sub.fetch(64, timeout=0.5)
            except (asyncio.TimeoutError, Exception):
                msgs = []
            for m in msgs:
                await m.ack()
            got.extend(msgs)
            if len(got) >= until and not msgs:
                break
    finally:
        await sub.unsubscribe()
    return got


async def features_of(bus: Bus, sid: str, windows: int) -> list[features_pb2.FeatureRecord]:
    msgs = await read_all(bus, subjects.features("audio", sid), subjects.FEATURES_STREAM, windows)
    return [features_pb2.FeatureRecord.FromString(m.data) for m in msgs]


@pytest.mark.slow
async def test_one_record_per_window_and_the_minigun_stands_out(nats_server, bus, tmp_path, sample, ingest_vod):
    service = AudioService(audio_settings(nats_server.url))
    async with service.serving(), ingest_stub(nats_server.url, tmp_path) as stub:
        assert service.health_info()["tagger"] == "none"
        await ingest_vod(stub, {"match": sample.path})
        records = await features_of(bus, "match", 4)

    assert [r.window for r in records] == [0, 1, 2, 3], "exactly one record per window, in order"
    for r in records:
        assert r.modality == common_pb2.MODALITY_AUDIO and r.stream_id == "match"
        assert dict(r.info) == {"tagger": "none", "provider": "cpu"}
        assert list(r.flags) == [], f"window {r.window}: all its audio came, flags {list(r.flags)}, {r.start_s}-{r.end_s}, {r.values['audio_coverage']}"
        per_second = set(r.values) - set(FEATURES)
        assert per_second == second_features(len(per_second) // 2) and 1 <= len(per_second) // 2 <= 10, "no tag_* features without a tagger"
        assert all(np.isfinite(v) for v in r.values.values())
        assert "tagger-none" in r.producer_version
    assert records[3].start_s == 30.0 and records[3].end_s > 30.0  # the span of ingest's window record
    assert records[3].values["audio_coverage"] == pytest.approx(0.6, abs=0.01)

    quiet, gun = records[QUIET].values, records[MINIGUN].values
    assert gun["onset_rate_hz"] > quiet["onset_rate_hz"] + 1.0
    assert gun["peak_dbfs"] > quiet["peak_dbfs"] + 6.0
    assert gun["loudness_momentary_max_lufs"] > quiet["loudness_momentary_max_lufs"] + 6.0
    # The jump compares with the preceding windows: the minigun after calm jumps, the calm after the laugh does not.
    assert gun["loudness_jump_lu"] > 6.0
    assert gun["loudness_jump_lu"] > records[3].values["loudness_jump_lu"] + 6.0


@pytest.mark.slow
async def test_tagger_features_and_two_streams_at_once(nats_server, bus, tmp_path, sample, tiny_panns, ingest_vod):
    service = AudioService(audio_settings(nats_server.url, tagger_path=tiny_panns, tagger_kind="panns"))
    async with service.serving(), ingest_stub(nats_server.url, tmp_path) as stub:
        health = service.health_info()
        assert health["tagger"] == "Cnn14" and health["tagger_classes"] == str(len(DEFAULT_CLASSES))
        await ingest_vod(stub, {"tag-a": sample.path, "tag-b": sample.path})
        a = await features_of(bus, "tag-a", 4)
        b = await features_of(bus, "tag-b", 4)

    expected = {f"tag_{slug(c.replace('/', ','))}_{stat}" for c in DEFAULT_CLASSES for stat in ("mean", "max")}
    assert len(expected) == 40
    for r in a + b:
        assert r.info["tagger"] == "Cnn14" and "tagger_error" not in r.info
        assert r.info["provider"] in ("cpu", "cuda")
        tags = {k: v for k, v in r.values.items() if k.startswith("tag_")}
        assert set(tags) == expected
        assert all(0.0 <= v <= 1.0 for v in tags.values())
        assert all(tags[k.replace("_max", "_mean")] <= v + 1e-6 for k, v in tags.items() if k.endswith("_max"))
        assert "tagger-Cnn14@sha256:" in r.producer_version
    # The same media on two streams at once: the same windows, the same values (state is per stream).
    assert [r.window for r in a] == [r.window for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a, b):
        for key, value in ra.values.items():
            assert rb.values[key] == pytest.approx(value, abs=1e-4), (ra.window, key)
    # Random weights say nothing about classes, but the window with the minigun must read differently.
    assert a[MINIGUN].values["tag_machine_gun_max"] != pytest.approx(a[QUIET].values["tag_machine_gun_max"], abs=1e-6)


@pytest.mark.slow
async def test_garbage_is_dead_lettered_and_the_stream_goes_on(nats_server, bus, tmp_path, sample, ingest_vod):
    service = AudioService(audio_settings(nats_server.url))
    async with service.serving(), ingest_stub(nats_server.url, tmp_path) as stub:
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="junked", source=str(sample.path), pacing=common_pb2.PACING_VOD))
        await bus.publish(subjects.media("audio", "junked"), b"\xff\xfe this is not an audio chunk")
        nan_chunk = media_pb2.AudioChunk(stream_id="junked", start_s=3.0, sample_rate=32000, pcm_f32le=np.full(320, np.nan, "<f4").tobytes())
        await bus.publish(subjects.media("audio", "junked"), nan_chunk)
        await bus.publish(subjects.media("windows", "junked"), b"\x08\x96\x01 not a window record either \xff")
        await ingest_vod(stub, {"junked": sample.path}, start=False)
        records = await features_of(bus, "junked", 4)
        dead = await read_all(bus, subjects.deadletter("audio"), subjects.DEADLETTER_STREAM, 3, timeout=10)

    assert [r.window for r in records] == [0, 1, 2, 3]
    assert all("empty" not in r.flags for r in records)
    reasons = sorted(m.headers["streamsight-dlq-reason"] for m in dead if m.headers["streamsight-dlq-subject"].endswith(".junked"))
    assert len(reasons) == 3, reasons
    assert any("not a streamsight.media.v1.AudioChunk" in r for r in reasons)
    assert any("NaN" in r for r in reasons)
    assert any("not a streamsight.media.v1.WindowRecord" in r for r in reasons)


async def test_a_stream_without_audio_gets_empty_records(nats_server, bus, tmp_path, ingest_vod):
    silent = make_media(tmp_path / "silent.mp4", duration=12.0, width=160, height=96, fps=10, audio="none")
    service = AudioService(audio_settings(nats_server.url))
    async with service.serving(), ingest_stub(nats_server.url, tmp_path) as stub:
        await ingest_vod(stub, {"mute": silent.path})
        records = await features_of(bus, "mute", 2)
    assert [(r.window, list(r.flags)) for r in records] == [(0, ["empty"]), (1, ["empty"])]
    assert all(dict(r.values) == {"audio_coverage": 0.0} and r.info["tagger"] == "none" for r in records)


async def test_a_tagger_that_does_not_load_stops_the_start(nats_server, tmp_path):
    bad = tmp_path / "tagger.onnx"
    bad.write_bytes(b"not an onnx model")
    service = AudioService(audio_settings(nats_server.url, tagger_path=bad))
    with pytest.raises(TaggerError, match="cannot load ONNX tagger"):
        async with service.serving():
            pass


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STREAMSIGHT_AUDIO_TAGGER_PATH": "/nowhere/cnn14.onnx"}, "audio.tagger_path / STREAMSIGHT_AUDIO_TAGGER_PATH: Value error, no such file"),
        ({"STREAMSIGHT_AUDIO_TAGGER_PATH": "{bad}"}, "cannot load ONNX tagger"),
        ({"STREAMSIGHT_AUDIO_TAGGER_KIND": "vggish"}, "unknown tagger kind"),
        ({"STREAMSIGHT_AUDIO_TAGGER_CLASSES": '["Laugter"]'}, "not AudioSet class names: ['Laugter']"),
    ],
)
def test_bad_tagger_settings_exit_2_with_a_message(tmp_path, env, message):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00" * 100)
    env = {k: v.replace("{bad}", str(bad)) for k, v in env.items()}
    full_env = {**os.environ, "STREAMSIGHT_NATS_URL": "nats://127.0.0.1:1", **env}
    proc = subprocess.run([sys.executable, "-m", "services.audio"], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_feature_record_flags_partial_and_empty_windows():
    full = {k: -30.0 for k in FEATURES}
    info = {"tagger": "none", "provider": "cpu"}

    def flags(coverage: float | None, clock: media_pb2.WindowRecord | None) -> list[str]:
        features = None if coverage is None else WindowFeatures(2, 20.0, 30.0, {**full, "audio_coverage": coverage}, {"tagger": "none"})
        return list(window_result("s", 2, clock, features).flags)

    whole = media_pb2.WindowRecord(index=2, start_s=20.0, end_s=30.0, audio_s=10.0)
    last = media_pb2.WindowRecord(index=2, start_s=20.0, end_s=30.0, audio_s=7.0, complete=False, last=True)
    gap = media_pb2.WindowRecord(index=2, start_s=20.0, end_s=30.0, audio_s=7.0, gap_s=3.0, gaps=1)
    assert flags(1.0, whole) == [] and flags(0.999, whole) == []
    assert flags(0.7, whole) == ["partial"], "audio ingest decoded was lost on the way"
    assert flags(0.7, last) == [], "the stream ended 7 s into its last window"
    assert flags(0.7, gap) == ["partial"], "the source lost media in the window"
    assert flags(0.7, None) == ["partial"] and flags(None, whole) == ["empty"]
    empty = feature_record("audio", window_result("s", 4, None, None), info, "p")
    assert (empty.start_s, empty.end_s, dict(empty.values)) == (40.0, 50.0, {"audio_coverage": 0.0})
    assert empty.modality == common_pb2.MODALITY_AUDIO and empty.info["tagger"] == "none"


def test_decode_chunk_checks_and_trims_priming_before_zero():
    pcm = np.linspace(-0.5, 0.5, 3200, dtype="<f4")
    rate, start, samples = decode_chunk("s", media_pb2.AudioChunk(stream_id="s", start_s=-0.05, sample_rate=32000, pcm_f32le=pcm.tobytes()).SerializeToString())
    assert (rate, start, samples.size) == (32000, 0.0, 1600) and samples[0] == pcm[1600]
    for bad, why in (
        (media_pb2.AudioChunk(stream_id="other", sample_rate=32000), "stream 'other'"),
        (media_pb2.AudioChunk(stream_id="s", sample_rate=0), "sample rate 0"),
        (media_pb2.AudioChunk(stream_id="s", sample_rate=32000, pcm_f32le=b"abc"), "not a whole number"),
    ):
        with pytest.raises(BadMessage, match=why):
            decode_chunk("s", bad.SerializeToString())


def test_features_md_documents_every_feature():
    text = (REPO / "services" / "audio" / "FEATURES.md").read_text().split("## Info")[0]
    documented = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    assert set(FEATURES) <= documented, f"undocumented: {sorted(set(FEATURES) - documented)}"
    assert {"tag_<class>_mean", "tag_<class>_max"} <= documented
    per_second = {f"{prefix}<k>" for prefix in SECOND_FEATURES}
    assert per_second <= documented, "FEATURES.md documents the 1 s values"
    assert not {d for d in documented if not d.startswith("tag_")} - set(FEATURES) - per_second, "FEATURES.md names a feature the analyzer lacks"
