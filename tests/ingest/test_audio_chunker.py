"""The audio chunker's clock: chunks at media time, nothing before 0 (AAC priming on live HLS)."""

import av
import numpy as np

from services.ingest.audio import AudioChunker


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
