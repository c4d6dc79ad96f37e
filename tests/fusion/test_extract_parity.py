"""Training's feature extractor and the services agree: the same file through ingest, vision and
audio on a real NATS and through training.fusion.extract gives the same records."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.audio.service import AudioService
from services.audio.settings import AudioSettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.vision.runtime import VisionModels
from services.vision.service import VisionService
from services.vision.settings import VisionSettings
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.ingest.v1 import ingest_pb2_grpc
from streamsight.rpc import channel
from training.fusion import extract


@contextlib.asynccontextmanager
async def stack(nats_url: str, data_dir: Path):
    """Vision and audio first (MEDIA keeps messages only for consumers that exist), then ingest."""
    common = dict(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0)
    vision = VisionService(VisionSettings(**common, intra_threads=2))
    audio = AudioService(AudioSettings(**common))
    async with vision.serving(timeout_s=60), audio.serving():
        ingest = IngestService(IngestSettings(**common, data_dir=data_dir))
        async with ingest.serving(), channel(ingest.address) as ch:
            yield ingest_pb2_grpc.IngestStub(ch)


async def published(bus: Bus, stream_id: str, timeout: float = 120.0) -> list[features_pb2.FeatureRecord]:
    """The vision and audio records of `stream_id`, once both stages have taken all of MEDIA."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any([await bus.consumer_pending(subjects.MEDIA_STREAM, stage) for stage in ("vision", "audio")]):
        assert loop.time() < deadline, f"the stages did not finish {stream_id} in {timeout} s"
        await asyncio.sleep(0.2)
    out = []
    for modality in ("vision", "audio"):
        msgs = await bus.read_all(subjects.FEATURES_STREAM, subjects.features(modality, stream_id))
        out += [features_pb2.FeatureRecord.FromString(m.data) for m in msgs]
    return out


def by_window(records: list[features_pb2.FeatureRecord]) -> dict[tuple[int, int], features_pb2.FeatureRecord]:
    keyed = {(r.modality, r.window): r for r in records}
    assert len(keyed) == len(records), "one record per (modality, window)"
    return keyed


@pytest.mark.parametrize(
    "name", ["bigbuckbunny.mp4", pytest.param("openarena_dm2.mp4", marks=pytest.mark.slow)]
)
async def test_the_extractor_makes_the_records_the_services_publish(nats_server, bus, tmp_path, shared_data, ingest_vod, name):
    path = shared_data / "media" / name
    sid = f"parity-{Path(name).stem}"  # one id per file: the module's NATS keeps the other run's records
    async with stack(nats_server.url, tmp_path) as stub:
        await ingest_vod(stub, {sid: path}, timeout=300)
        served = by_window(await published(bus, sid))
    offline = by_window(await asyncio.to_thread(extract.extract, path, sid, VisionModels(intra_threads=2)))

    assert sorted(offline) == sorted(served), "the same windows of the same modalities"
    assert {m for m, _ in served} == {1, 2}  # vision and audio both
    for key, s in served.items():
        o = offline[key]
        assert (o.start_s, o.end_s) == (s.start_s, s.end_s), key
        assert list(o.flags) == list(s.flags), key
        assert (o.producer_version, dict(o.info)) == (s.producer_version, dict(s.info)), key
        assert set(o.values) == set(s.values), key
        for feature, value in s.values.items():
            assert o.values[feature] == pytest.approx(value, abs=1e-6), (key, feature)
