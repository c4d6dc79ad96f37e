"""The audio chunker's clock: chunks at media time, nothing before 0 (AAC priming on live HLS);
ingest's audio_chunk_s setting on real media, and the audio stage's features not depending on it."""

from pathlib import Path

import av
import numpy as np
import pydantic
import pytest

from services.audio.streams import AudioStreams
from services.ingest import messages
from services.ingest.audio import AudioChunker
from services.ingest.items import AudioChunk, WindowRecord
from services.ingest.pipeline import IngestPipeline
from services.ingest.settings import IngestSettings
from services.ingest.streams import pipeline_config

BUNNY = Path(__file__).resolve().parents[3] / "shared" / "data" / "media" / "bigbuckbunny.mp4"
needs_bunny = pytest.mark.skipif(not BUNNY.exists(), reason=f"needs the shared test media ({BUNNY} is absent)")


def tone_frames(start_s: float, seconds: float, rate: int = 48000, frame_samples: int = 1024):
    """Stereo float AAC-sized frames of a 440 Hz tone, with their media times."""
    total = int(seconds * rate)
    t = np.arange(total) / rate
    pcm = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for first in range(0, total - frame_samples + 1, frame_samples):
        data = np.stack([pcm[first:first + frame_samples]] * 2)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
        frame.sample_rate = rate
        yield frame, start_s + first / rate


def chunks_of(start_s: float, seconds: float = 3.0):
    chunker = AudioChunker(rate=32000, chunk_seconds=1.0)
    out = []
    for frame, media_time in tone_frames(start_s, seconds):
        out += chunker.push(frame, media_time)
    return out + chunker.flush()


def test_a_source_starting_before_zero_gives_chunks_from_zero():
    chunks = chunks_of(-0.0213)
    one_sample = 1 / 32000
    assert 0.0 <= chunks[0].media_time < one_sample  # the first kept sample, not the source's -21 ms
    assert all(c.media_time >= 0 for c in chunks)
    # the clock is not shifted: the next chunk starts a second later
    assert abs(chunks[1].media_time - 1.0) < one_sample
    # the samples before 0 are gone, not moved: ~21 ms fewer than the source's (whole frames only)
    fed = (int(3.0 * 48000) // 1024) * 1024 / 48000
    total = sum(len(c.samples) for c in chunks) / 32000
    assert abs(total - (fed - 0.0213)) < 0.005


def test_a_source_starting_at_zero_is_unchanged():
    chunks = chunks_of(0.0)
    assert [round(c.media_time, 6) for c in chunks[:3]] == [0.0, 1.0, 2.0]
    assert len(chunks[0].samples) == 32000


async def ingested_audio(tmp_path: Path, **settings) -> tuple[list[AudioChunk], list[WindowRecord]]:
    """bigbuckbunny.mp4 (5.3 s of real AAC audio) through ingest's pipeline as its settings configure it."""
    config = pipeline_config(IngestSettings(**settings), tmp_path, live=False, extra={})
    chunks, records = [], []
    async for item in IngestPipeline(str(BUNNY), config).items():
        if isinstance(item, AudioChunk):
            chunks.append(item)
        elif isinstance(item, WindowRecord):
            records.append(item)
    return chunks, records


@needs_bunny
@pytest.mark.parametrize("chunk_s", [None, 0.25])
async def test_ingest_cuts_audio_in_chunks_of_its_setting(tmp_path: Path, chunk_s: float | None) -> None:
    chunks, _ = await ingested_audio(tmp_path, **({} if chunk_s is None else {"audio_chunk_s": chunk_s}))
    want = IngestSettings().audio_chunk_s if chunk_s is None else chunk_s
    assert want == (1.0 if chunk_s is None else 0.25)
    n = round(want * 32000)
    assert [len(c.samples) for c in chunks[:-1]] == [n] * (len(chunks) - 1) and 0 < len(chunks[-1].samples) <= n
    assert all(abs(b.media_time - a.media_time - want) < 1e-6 for a, b in zip(chunks, chunks[1:]))
    with av.open(str(BUNNY)) as c:
        track = c.streams.audio[0]
        seconds = float(track.duration * track.time_base)  # 5.312 s of AAC
    assert abs(sum(len(c.samples) for c in chunks) / 32000 - seconds) < 0.03


@pytest.mark.parametrize("bad", [0, -0.25, 0.01, 6.0])
def test_a_chunk_length_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(pydantic.ValidationError, match="audio_chunk_s"):
        IngestSettings(audio_chunk_s=bad)


@needs_bunny
async def test_the_audio_stages_features_do_not_depend_on_the_chunk_length(tmp_path: Path) -> None:
    # the audio stage buffers samples into its windows: 1 s and 0.25 s chunks of the same
    # audio give the same records to the bit (so do 0.5 s, and openarena_dm2: HEALTH.md)
    results = []
    for chunk_s in (1.0, 0.25):
        chunks, records = await ingested_audio(tmp_path / str(chunk_s), audio_chunk_s=chunk_s)
        msgs = [("streamsight.media.v1.audio.0.s", messages.audio_chunk("s", c, i).SerializeToString()) for i, c in enumerate(chunks)]
        msgs += [("streamsight.media.v1.windows.0.s", messages.window_record("s", r, last=r is records[-1]).SerializeToString())
                 for r in records]
        step = AudioStreams().step(msgs)
        assert not step.rejected and len(step.windows) == 1
        results.append((len(chunks), [(w.window, w.flags, dict(w.values)) for w in step.windows]))
    (n_long, long), (n_short, short) = results
    assert n_short >= 4 * n_long - 3
    assert long == short and long[0][2]["audio_coverage"] > 0.5
