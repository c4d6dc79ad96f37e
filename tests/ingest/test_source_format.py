"""The source's format as ingest's decoder sees it: per window record, and per audio chunk.

On a real file (../shared/data/media/bigbuckbunny.mp4: H.264 1280x720 at 25 fps, AAC 5.1 at
48 kHz) the window records carry what PyAV itself reports of the file. The chunker's source
fields are checked on decoded tone frames: the source timestamp follows a slip that ingest's
own clock ignores (under its resync tolerance), and a chunk ends where the layout changes.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from services.ingest import messages
from services.ingest.audio import AudioChunker
from services.ingest.decode import DecodeConfig, StreamDecoder
from services.ingest.items import AudioChunk, WindowRecord
from services.ingest.sampling import SamplingConfig
from services.ingest.sourceformat import AudioFormat, FormatTracker, VideoFormat

from .decoding import decode_file

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BUNNY = SHARED / "media" / "bigbuckbunny.mp4"


def decode(path: Path) -> list:
    return decode_file(StreamDecoder(DecodeConfig(sampling=SamplingConfig(flow=None, cnn=None, glitch=None))), path)


@pytest.mark.skipif(not BUNNY.exists(), reason=f"needs the shared test media ({BUNNY} is absent)")
def test_window_records_carry_the_source_format_as_pyav_reports_it() -> None:
    with av.open(str(BUNNY)) as c:
        v, a = c.streams.video[0].codec_context, c.streams.audio[0].codec_context
        expected = (v.width, v.height, float(c.streams.video[0].average_rate), v.name, a.name, a.layout.name, a.sample_rate)
    assert expected == (1280, 720, 25.0, "h264", "aac", "5.1", 48000)  # what the shared file is
    items = decode(BUNNY)
    records = [i for i in items if isinstance(i, WindowRecord)]
    msgs = [messages.window_record("s", r, last=r is records[-1]) for r in records]
    formats = [f for m in msgs for f in m.source_formats]
    assert len(msgs) == 1 and len(formats) == 1, "one window, one format: nothing changed"
    f = formats[0]
    assert (f.width, f.height, f.frame_rate, f.video_codec, f.audio_codec, f.audio_layout, f.audio_sample_rate) == expected
    assert f.since_s == 0.0
    chunks = [messages.audio_chunk("s", c, n) for n, c in enumerate(i for i in items if isinstance(i, AudioChunk))]
    assert len(chunks) >= 5
    assert all(c.source_layout == "5.1" and c.source_sample_rate == 48000 for c in chunks)
    # a clean file: the source's timestamps and the sample count agree to well under a millisecond
    assert max(abs(c.source_start_s - c.start_s) for c in chunks) < 1e-3


def frames(start_s: float, seconds: float, layout: str = "stereo", rate: int = 48000, n: int = 1024):
    """AAC-sized float frames of a 440 Hz tone and their media times."""
    channels = len(av.AudioLayout(layout).channels)
    total = int(seconds * rate)
    pcm = (0.25 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
    for first in range(0, total - n + 1, n):
        frame = av.AudioFrame.from_ndarray(np.stack([pcm[first:first + n]] * channels), format="fltp", layout=layout)
        frame.sample_rate = rate
        yield frame, start_s + first / rate


def test_source_start_follows_a_slip_under_the_resync_tolerance() -> None:
    chunker = AudioChunker(rate=32000, chunk_seconds=1.0)
    out = []
    for frame, t in frames(0.0, 4.0):
        out += chunker.push(frame, t + (0.1 if t >= 1.5 else 0.0))  # stamped 0.1 s late from 1.5 s
    out += chunker.flush()
    assert [round(c.media_time, 4) for c in out[:4]] == [0.0, 1.0, 2.0, 3.0], "ingest's clock did not move (0.1 < 0.2 s)"
    assert abs(out[1].source_start - 1.0) < 1e-4
    assert abs(out[2].source_start - 2.1) < 1e-4 and abs(out[3].source_start - 3.1) < 1e-4


def test_a_layout_change_ends_the_chunk() -> None:
    chunker = AudioChunker(rate=32000, chunk_seconds=1.0)
    out = []
    fed = list(frames(0.0, 2.56)) + list(frames(2.56, 2.0, layout="mono"))
    for frame, t in fed:
        out += chunker.push(frame, t)
    out += chunker.flush()
    mono = next(i for i, c in enumerate(out) if c.source_layout == "mono")
    assert abs(out[mono].media_time - 2.56) < 1e-4 and abs(out[mono].source_start - 2.56) < 1e-4
    assert all(c.source_layout == "stereo" and c.source_rate == 48000 for c in out[:mono])
    assert abs(out[mono - 1].duration - 0.56) < 1e-3, "the stereo part ends in a short chunk"
    # no sample lost or doubled by the cut (whole frames: 2.56 + 1.984 s in)
    assert abs(sum(c.duration for c in out) - sum(f.samples for f, _ in fed) / 48000) < 1e-3


def test_format_tracker_windows() -> None:
    tr = FormatTracker()
    hd, sd = VideoFormat(1280, 720, 30.0, "h264"), VideoFormat(640, 360, 30.0, "h264")
    st, mono = AudioFormat("aac", "stereo", 48000), AudioFormat("aac", "mono", 48000)
    tr.audio(0.02, st)  # the tracks begin a little after 0, apart
    tr.video(0.03, hd)
    tr.audio(4.0, mono)
    tr.video(12.5, sd)
    first = tr.for_window(0.0, 10.0)
    assert [(f.since, f.video, f.audio) for f in first] == [(0.0, hd, st), (4.0, hd, mono)]
    tr.forget_before(10.0)
    second = tr.for_window(10.0, 20.0)
    assert [(f.since, f.video, f.audio) for f in second] == [(10.0, hd, mono), (12.5, sd, mono)]
