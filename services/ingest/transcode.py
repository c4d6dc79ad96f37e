"""Make a clip browsers play: H.264 video and AAC audio in MP4, re-encoding only what is not.

Clips are cut by stream copy (services/ingest/clips.py). Browsers play H.264 in MP4 everywhere,
HEVC in Safari only (Chromium shows such a clip as audio only), so a clip whose video is not
H.264 is re-encoded here, the clip alone (seconds of media), never the stream. Audio that MP4
players take (AAC, MP3) is kept as it is when the video is copied; when the video is re-encoded
the audio is too (AAC), so both share one fresh timeline.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from .errors import ErrorCode, IngestError

BROWSER_VIDEO = frozenset({"h264"})
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
MAX_HEIGHT = 720  # taller sources (1080p, 4K HEVC) are scaled down: the clip is cut in seconds, not minutes


def to_h264(src: Path, dest: Path) -> None:
    """Re-encode `src` into an MP4 at `dest`: H.264 (yuv420p, at most MAX_HEIGHT lines) video, AAC audio."""
    try:
        _encode(src, dest)
    except (av.error.FFmpegError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise IngestError(ErrorCode.UNSUPPORTED_CODEC, f"the clip could not be re-encoded as H.264: {exc}") from exc


def _encode(src: Path, dest: Path) -> None:
    with av.open(str(src)) as inp, av.open(str(dest), mode="w", format="mp4") as out:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        vout = out.add_stream("libx264", rate=rate, options=dict(X264_OPTIONS))
        width, height = vin.codec_context.width, vin.codec_context.height
        if height > MAX_HEIGHT:
            width, height = round(width * MAX_HEIGHT / height), MAX_HEIGHT
        vout.width, vout.height = width - width % 2, height - height % 2  # 4:2:0 needs even sides
        vout.pix_fmt = "yuv420p"
        vout.time_base = Fraction(1, 90000)
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            aout.layout = "stereo" if (ain.codec_context.channels or 2) > 1 else "mono"
        streams = [s for s in (vin, ain) if s is not None]
        for packet in inp.demux(streams):
            for frame in packet.decode():
                if frame.pts is None:
                    continue
                if packet.stream.type == "video":
                    frame = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                    frame.pts = int(round(float(frame.time) / vout.time_base))
                    frame.time_base = vout.time_base
                    out.mux(vout.encode(frame))
                elif aout is not None:
                    frame.pts = None  # the encoder counts samples from zero
                    out.mux(aout.encode(frame))
        out.mux(vout.encode(None))
        if aout is not None:
            out.mux(aout.encode(None))
