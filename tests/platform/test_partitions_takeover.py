"""Two audio replicas (real processes) on real NATS analyse six streams of real game audio:
one is SIGKILLed mid-stream, or a second joins mid-run. Every window is stored once in FEATURES
and equals what one uninterrupted AudioStreams makes of the same messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from services.audio.streams import AudioStreams
from streamsight import subjects
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.partitions import lease_holders

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GAME = REPO.parent / "shared" / "data" / "media" / "openarena_dm2.mp4"
WINDOW_S, RATE, STREAMS, SECONDS = 2.0, 16000, 6, 40
TICK_S = 0.15  # one second of media of every stream per tick


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    if not GAME.exists():
        pytest.skip(f"needs {GAME} (../shared/data)")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = []
    with av.open(str(GAME)) as container:
        for frame in container.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out).astype(np.float32)


def stream_messages(sid: str, pcm: np.ndarray) -> list[list[tuple[str, bytes, str]]]:
    """Per second of media: (subject, data, msg id) as ingest sends them, window records after their audio."""
    ticks = []
    per_window = int(WINDOW_S)
    for j in range(SECONDS):
        chunk = media_pb2.AudioChunk(stream_id=sid, start_s=float(j), sample_rate=RATE, chunk_index=j,
                                     pcm_f32le=pcm[j * RATE:(j + 1) * RATE].astype("<f4").tobytes())
        tick = [(subjects.media("audio", sid), chunk.SerializeToString(), f"{sid}:audio:{j}")]
        if (j + 1) % per_window == 0:
            i = j // per_window
            rec = media_pb2.WindowRecord(stream_id=sid, index=i, start_s=i * WINDOW_S, end_s=(i + 1) * WINDOW_S, audio_s=WINDOW_S,
                                         window_s=WINDOW_S, last=j == SECONDS - 1)
            tick.append((subjects.media("windows", sid), rec.SerializeToString(), f"{sid}:window:{i}"))
        ticks.append(tick)
    return ticks


def expected(ticks: list[list[tuple[str, bytes, str]]]) -> dict[int, tuple]:
    logic = AudioStreams(window_s=WINDOW_S)
    out = {}
    for tick in ticks:
        for w in logic.step([(s, d) for s, d, _ in tick]).windows:
            out[w.window] = ({k: float(v) for k, v in w.values.items()}, list(w.flags))
    return out


class Replica:
    def __init__(self, url: str, name: str, folder: Path):
        env = {**os.environ, "STREAMSIGHT_NATS_URL": url, "STREAMSIGHT_REPLICA_ID": name, "STREAMSIGHT_WINDOW_S": str(WINDOW_S),
               "STREAMSIGHT_AUDIO_GRPC_PORT": "0", "STREAMSIGHT_METRICS_BASE_PORT": "0", "STREAMSIGHT_LOG_FORMAT": "console"}
        env.pop("STREAMSIGHT_CONFIG", None)
        self.log = folder / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "services.audio"], cwd=REPO, env=env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "service ready" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "replica not ready"
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def holders(bus) -> dict[int, str]:
    return await lease_holders(bus, "audio")


async def run_scenario(bus, url, folder, audio, scenario: str, tag: str = "") -> dict:
    """`scenario` "kill" or "join"; `tag` makes stream and replica names unique (repeated runs)."""
    sids = [f"{scenario}{tag}-{n}" for n in range(STREAMS)]
    ticks = {sid: stream_messages(sid, np.roll(audio, -n * 7 * RATE)) for n, sid in enumerate(sids)}
    want = {sid: expected(t) for sid, t in ticks.items()}
    published: dict[tuple[str, int], int] = {}

    async def on_feature(msg):
        rec = features_pb2.FeatureRecord.FromString(msg.data)
        published[(rec.stream_id, rec.window)] = published.get((rec.stream_id, rec.window), 0) + 1

    sub = await bus.nc.subscribe(subjects.features("audio", ">"), cb=on_feature)
    a = Replica(url, f"audio-a-{scenario}{tag}", folder)
    b = Replica(url, f"audio-b-{scenario}{tag}", folder) if scenario == "kill" else None
    replicas = [a] + ([b] if b else [])
    facts: dict = {}
    try:
        for r in replicas:
            await r.ready()
        if b is not None:  # both hold their share before media flows
            deadline = time.monotonic() + 30
            while len(set((await holders(bus)).values())) < 2 or len(await holders(bus)) < subjects.PARTITIONS:
                assert time.monotonic() < deadline, await holders(bus)
                await asyncio.sleep(0.2)
        for j in range(SECONDS):
            for sid in sids:
                for subject, data, msg_id in ticks[sid][j]:
                    await bus.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
            if j == SECONDS // 3:
                if scenario == "kill":
                    victim = a.proc.pid
                    os.kill(victim, signal.SIGKILL)
                    facts["killed_at"] = time.monotonic()
                    facts["victim_partitions"] = [k for k, h in (await holders(bus)).items() if h == f"audio-a-{scenario}{tag}"]
                else:  # the rest of the media flows while partitions move to the new replica
                    b = Replica(url, f"audio-b-{scenario}{tag}", folder)
                    replicas.append(b)
                    await b.ready()
                    deadline = time.monotonic() + 60
                    while f"audio-b-{scenario}{tag}" not in set((await holders(bus)).values()):
                        assert time.monotonic() < deadline, "the added replica took no partition"
                        await asyncio.sleep(0.1)
            await asyncio.sleep(TICK_S)
        if scenario == "kill":
            survivor = f"audio-b-{scenario}{tag}"
            deadline = time.monotonic() + 60
            while set((await holders(bus)).values()) != {survivor} or len(await holders(bus)) < subjects.PARTITIONS:
                assert time.monotonic() < deadline, "the survivor did not take every partition"
                await asyncio.sleep(0.1)
            facts["takeover_s"] = time.monotonic() - facts["killed_at"]
        deadline = time.monotonic() + 90
        stored: dict[str, list[features_pb2.FeatureRecord]] = {}
        while True:
            stored = {sid: [features_pb2.FeatureRecord.FromString(m.data) for m in await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", sid))]
                      for sid in sids}
            if all(len(stored[sid]) >= len(want[sid]) for sid in sids):
                break
            assert time.monotonic() < deadline, {sid: len(v) for sid, v in stored.items()}
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a straggling duplicate would be stored by now
        stored = {sid: [features_pb2.FeatureRecord.FromString(m.data) for m in await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", sid))]
                  for sid in sids}
        for sid in sids:
            windows = [r.window for r in stored[sid]]
            assert sorted(windows) == sorted(set(windows)) == sorted(want[sid]), (sid, windows)
            for r in stored[sid]:
                assert (dict(r.values), list(r.flags)) == want[sid][r.window], (sid, r.window)
        facts["republished"] = sum(n - 1 for n in published.values())
        facts["windows"] = sum(len(v) for v in stored.values())
        if scenario == "join":
            facts["b_partitions"] = sorted(k for k, h in (await holders(bus)).items() if h == f"audio-b-{scenario}{tag}")
        return facts
    finally:
        await sub.unsubscribe()
        for r in replicas:
            r.stop()


async def test_a_sigkilled_replica_loses_and_duplicates_no_window(nats_server, bus, audio, tmp_path):
    facts = await run_scenario(bus, nats_server.url, tmp_path, audio, "kill")
    assert facts["victim_partitions"]  # the victim held some of the streams' partitions
    print(f"kill: takeover {facts['takeover_s']:.1f} s, {facts['windows']} windows, republished {facts['republished']}")


async def test_a_replica_added_mid_run_takes_partitions_and_nothing_is_scored_twice(nats_server, bus, audio, tmp_path):
    facts = await run_scenario(bus, nats_server.url, tmp_path, audio, "join")
    assert facts["b_partitions"]  # the new replica took a share
    assert facts["republished"] == 0  # a graceful handover publishes nothing again
    print(f"join: b took {facts['b_partitions']}, {facts['windows']} windows")
