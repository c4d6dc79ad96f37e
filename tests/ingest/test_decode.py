"""Ingest of generated media with known motion and audio: sampling by PTS, signals, audio, windows, pacing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from services.ingest.decode import DecodeConfig
from services.ingest.items import AudioChunk, FrameSignals, SampledFrame, StatusEvent, StatusKind, WindowRecord
from services.ingest.pipeline import IngestConfig, IngestPipeline, Pacing
from services.ingest.sampling import ConsumerSpec, SamplingConfig
from streamsight.app.synth import SoundEvent, make_media


async def collect(source: str, config: IngestConfig = IngestConfig()) -> dict[str, list]:
    out: dict[str, list] = {"frames": [], "signals": [], "audio": [], "windows": [], "status": [], "errors": []}
    async for item in IngestPipeline(source, config).items():
        if isinstance(item, SampledFrame):
            out["frames"].append(item)
        elif isinstance(item, FrameSignals):
            out["signals"].extend(item.signals)
            out["errors"].append(item.decode_errors)
        elif isinstance(item, AudioChunk):
            out["audio"].append(item)
        elif isinstance(item, WindowRecord):
            out["windows"].append(item)
        elif isinstance(item, StatusEvent):
            out["status"].append(item)
    return out


@pytest.fixture(scope="module")
def ingested(sample) -> dict[str, list]:
    return asyncio.run(collect(str(sample.path)))


def test_every_frame_is_decoded_once_in_pts_order(sample, ingested) -> None:
    sig = ingested["signals"]
    assert len(sig) == sample.frame_count
    assert [s.index for s in sig] == list(range(sample.frame_count))
    times = np.array([s.media_time for s in sig])
    np.testing.assert_allclose(times, np.arange(sample.frame_count) / sample.fps, atol=1e-3)
    assert not any(s.is_corrupt or s.missing_frames for s in sig)
    assert sum(ingested["errors"]) == 0


@pytest.mark.parametrize("consumer,fps,shape", [("flow", 5, (182, 320)), ("cnn", 1, (224, 224, 3)),
                                                ("glitch", 2, (272, 480, 3))])
def test_each_consumer_gets_its_rate_size_and_pts(sample, ingested, consumer, fps, shape) -> None:
    frames = [f for f in ingested["frames"] if f.consumer == consumer]
    assert len(frames) == int(sample.duration * fps)
    np.testing.assert_allclose([f.media_time for f in frames], np.arange(len(frames)) / fps, atol=1e-3)
    assert all(f.image.shape == shape and f.image.dtype == np.uint8 for f in frames)
    assert [f.window for f in frames] == [int(f.media_time // 10) for f in frames]


def test_gray_flow_frames_show_the_planted_motion(sample, ingested) -> None:
    flow = [f for f in ingested["frames"] if f.consumer == "flow"]
    diffs = {kind: [] for kind in ("still", "pan", "action")}
    for a, b in zip(flow, flow[1:]):
        kind = sample.kind_at(b.media_time)
        if sample.kind_at(a.media_time) == kind:
            diffs[kind].append(np.abs(a.image.astype(int) - b.image.astype(int)).mean())
    still = float(np.percentile(diffs["still"], 90))  # encoder refinements after a cut may move a little
    assert still < 1.0
    assert min(diffs["pan"]) > 5 * max(still, 0.5)
    assert min(diffs["action"]) > 5 * max(still, 0.5)
    # The pan moves the whole picture; action only the central box.
    a, b = [f.image.astype(int) for f in flow if 12.0 <= f.media_time <= 12.2][:2]
    border = np.abs(a - b)[:, :40].mean()
    centre = np.abs(a - b)[40:110, 100:220].mean()
    assert centre > 5 * max(border, 0.5)


def test_frozen_signal_follows_still_segments(sample, ingested) -> None:
    sig = ingested["signals"][1:]
    still = [s.frozen for s in sig if sample.kind_at(s.media_time) == "still"
             and sample.kind_at(s.media_time - 1 / sample.fps) == "still"]
    moving = [s.frozen for s in sig if sample.kind_at(s.media_time) != "still"]
    assert np.mean(still) > 0.95
    assert np.mean(moving) < 0.05


def test_audio_is_mono_32k_float_with_continuous_media_time(sample, ingested) -> None:
    chunks = ingested["audio"]
    assert all(c.sample_rate == 32000 and c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
    total = sum(c.duration for c in chunks)
    assert abs(total - sample.duration) < 0.1
    for a, b in zip(chunks, chunks[1:]):
        assert abs(a.media_time + a.duration - b.media_time) < 1e-6
    assert abs(chunks[0].media_time) < 0.05
    # The planted 440 Hz tone dominates the spectrum.
    x = np.concatenate([c.samples for c in chunks[2:5]])
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = np.fft.rfftfreq(len(x), 1 / 32000)[spectrum.argmax()]
    assert abs(peak - sample.tone_hz) < 2


def test_windows_cover_the_stream_with_counts(sample, ingested) -> None:
    windows = [w for w in ingested["windows"] if w.frames_decoded]
    assert [w.index for w in windows] == [0, 1]
    assert [(w.start, w.end) for w in windows] == [(0.0, 10.0), (10.0, 20.0)]
    assert [w.frames_decoded for w in windows] == [300, 300]
    assert all(abs(w.audio_seconds - 10.0) < 0.05 for w in windows)
    assert all(w.decode_errors == 0 and w.gaps == 0 for w in windows)
    # Window 0 is 5 s still + 5 s pan: about half its frames are frozen; window 1 has 4 s still.
    assert 130 <= windows[0].frozen_frames <= 160
    assert 100 <= windows[1].frozen_frames <= 130
    kinds = [s.kind for s in ingested["status"]]
    assert kinds == [StatusKind.STARTED, StatusKind.ENDED]
    assert ingested["status"][0].details["width"] == sample.width


async def test_planted_sound_appears_at_its_time(tmp_path: Path, shared_data: Path) -> None:
    sound = shared_data / "sounds" / "explosion.ogg"
    info = make_media(tmp_path / "boom.mkv", duration=6.0, width=320, height=180, fps=15, tone_hz=0.0,
                      noise=0.002, sounds=[SoundEvent(sound, start=3.0)], audio="pcm")
    assert info.sounds and info.sounds[0].start == 3.0
    got = await collect(str(info.path), IngestConfig(decode=DecodeConfig(audio_chunk_seconds=0.5)))
    rms = {round(c.media_time, 2): float(np.sqrt(np.mean(c.samples ** 2))) for c in got["audio"]}
    loud = [t for t, v in rms.items() if v > 10 * np.median(list(rms.values()))]
    assert loud and min(loud) == 3.0


async def test_live_pacing_plays_a_file_in_real_time(tmp_path: Path) -> None:
    info = make_media(tmp_path / "short.ts", duration=3.0, width=320, height=180, fps=15)
    t0 = time.monotonic()
    got = await collect(str(info.path), IngestConfig(pacing=Pacing.LIVE))
    assert time.monotonic() - t0 >= 2.7  # the last frame (2.93 s) is not released before its time
    assert len(got["signals"]) == info.frame_count


async def test_a_file_decodes_with_ffmpegs_threads_and_one_read_in_real_time_with_one(tmp_path: Path) -> None:
    """Several live streams share the cores: each decodes in one thread; a file job uses them all."""
    info = make_media(tmp_path / "short.ts", duration=1.0, width=320, height=180, fps=15)
    for pacing, threads in ((Pacing.VOD, 0), (Pacing.LIVE, 1)):
        items = [item async for item in IngestPipeline(str(info.path), IngestConfig(pacing=pacing)).items()]
        started = next(i for i in items if isinstance(i, StatusEvent) and i.kind is StatusKind.STARTED)
        frames = sum(len(i.signals) for i in items if isinstance(i, FrameSignals))
        assert frames == info.frame_count and started.details["decoder_threads"] == threads, pacing


async def test_slow_consumer_gets_backpressure_not_unbounded_buffering(sample) -> None:
    config = IngestConfig(queue_size=2)
    pipeline = IngestPipeline(str(sample.path), config)
    consumed = 0
    async for item in pipeline.items():
        if isinstance(item, FrameSignals):
            consumed += len(item.signals)
            if consumed >= 60:
                await asyncio.sleep(0.5)  # the consumer stalls
                # Decoding is at most the queue (2 batches of ~1 s) plus one batch ahead of us.
                assert pipeline.stats.frames_decoded - consumed <= 4 * sample.fps
                break


def test_sampling_config_validates_and_sizes() -> None:
    with pytest.raises(ValueError):
        ConsumerSpec(fps=0)
    assert ConsumerSpec(fps=1, max_width=1280, max_height=720).output_size(1920, 1080) == (1280, 720)
    assert ConsumerSpec(fps=1, max_width=1280, max_height=720).output_size(640, 360) == (640, 360)
    assert ConsumerSpec(fps=1, width=320).output_size(1280, 720) == (320, 180)
    assert set(SamplingConfig(cnn=None).consumers()) == {"flow", "glitch"}
