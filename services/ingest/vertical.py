"""A 9:16 vertical copy of a clip, cropped around the region with the most motion.

Short-video tools cut a broadcast's 16:9 clip to 9:16 for phones. `motion_center` decodes the
clip (every `step`-th frame, scaled down to `ANALYSIS_WIDTH` gray) and sums the absolute
frame-to-frame change per column; the crop is the 9:16 column band (full height) whose summed
change is largest, so the action stays in the frame. `export_vertical` writes that band as a new
H.264 + AAC MP4 (re-encoded: a crop cannot be done by stream copy; the band is cut by libavfilter's
crop in the decoder's pixel format, and frames keep the source's timestamps). A clip narrower than 9:16
already, or without video, is refused with `VerticalError`.

Used by ingest's ExportClip when the request asks for a vertical clip (services/ingest/api.py cuts it
from the stored clip and keeps it in the clip store); this module knows only files.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ANALYSIS_WIDTH = 160
STILL_LEVEL = 0.5  # mean absolute gray change per pixel and frame pair below which a clip counts as still
RATIO = 9 / 16


class VerticalError(ValueError):
    """A clip that cannot be made vertical (no video, already narrow, unreadable)."""


@dataclass(frozen=True)
class VerticalClip:
    path: Path
    width: int
    height: int
    x: int  # left edge of the crop in the source, pixels
    center: float  # the crop's centre as a fraction of the source width
    frames: int


def crop_width(width: int, height: int) -> int:
    """Width of the full-height 9:16 band (even, for 4:2:0 video)."""
    w = int(round(height * RATIO)) // 2 * 2
    if w <= 0 or w >= width:
        raise VerticalError(f"a {width}x{height} clip is not wider than 9:16")
    return w


def motion_center(src: str | Path, step: int = 2) -> float:
    """Centre (0..1 of the width) of the 9:16 band with the most frame-to-frame change; 0.5 for a still clip."""
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise VerticalError(f"cannot read {src}: {exc}") from None
    with container:
        if not container.streams.video:
            raise VerticalError(f"{src} has no video")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        band = crop_width(width, height)
        columns: np.ndarray | None = None
        prev = None
        pairs = 0
        for k, frame in enumerate(container.decode(stream)):
            if k % step:
                continue
            small_h = max(2, int(round(height * ANALYSIS_WIDTH / width)))
            gray = frame.to_ndarray(format="gray", width=ANALYSIS_WIDTH, height=small_h).astype(np.float32)
            if prev is not None:
                change = np.abs(gray - prev).sum(axis=0)
                columns = change if columns is None else columns + change
                pairs += 1
            prev = gray
    if columns is None or float(columns.sum()) / (pairs * small_h * ANALYSIS_WIDTH) < STILL_LEVEL:
        return 0.5  # nothing moves: the middle
    span = max(1, int(round(band / width * ANALYSIS_WIDTH)))
    sums = np.convolve(columns, np.ones(span), mode="valid")  # sums[i] = columns[i : i + span]
    best = int(np.argmax(sums))
    return (best + span / 2) / ANALYSIS_WIDTH


def _crop_graph(stream, width: int, height: int, x: int) -> av.filter.Graph:
    """libavfilter's crop: the band is cut in the decoder's own pixel format, without a round trip to RGB."""
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    crop = graph.add("crop", f"{width}:{height}:{x}:0")
    source.link_to(crop)
    crop.link_to(graph.add("buffersink"))
    graph.configure()
    return graph


def export_vertical(src: str | Path, dest: str | Path, center: float | None = None, crf: int = 23) -> VerticalClip:
    """Write the 9:16 band of `src` around `center` (default: `motion_center`) to `dest` (MP4)."""
    src, dest = Path(src), Path(dest)
    center = motion_center(src) if center is None else min(max(center, 0.0), 1.0)
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise VerticalError(f"{src} has no video")
        vin = inp.streams.video[0]
        width, height = vin.codec_context.width, vin.codec_context.height
        band = crop_width(width, height)
        x = min(max(int(round(center * width - band / 2)), 0), width - band) // 2 * 2
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or Fraction(30, 1)
        frames = 0
        with av.open(str(dest), "w") as out:
            vout = out.add_stream("libx264", rate=rate)
            vout.width, vout.height, vout.pix_fmt = band, height, "yuv420p"
            vout.options = {"crf": str(crf), "preset": "veryfast"}
            # Frames keep the source's own timestamps: in a time base of 1/average_rate, an uneven
            # rate (a cut clip's is, e.g. 4510/151) rounds two frames onto one tick and the muxer refuses.
            vout.codec_context.time_base = vin.time_base
            aout = None
            if ain is not None:
                aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            streams = [vin] + ([ain] if ain is not None else [])
            crop = _crop_graph(vin, band, height, x)
            last_pts = None
            for frame in inp.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    crop.push(frame)
                    cropped = crop.pull()
                    if cropped.format.name != "yuv420p":
                        cropped = cropped.reformat(format="yuv420p")
                    pts = frame.pts if frame.pts is not None else (last_pts or 0) + 1
                    if last_pts is not None and pts <= last_pts:  # a repeated or backwards stamp: keep the order
                        pts = last_pts + 1
                    cropped.pts, cropped.time_base, last_pts = pts, vin.time_base, pts
                    out.mux(vout.encode(cropped))
                    frames += 1
                elif aout is not None:
                    frame.pts = None  # the encoder numbers its own samples
                    out.mux(aout.encode(frame))
            out.mux(vout.encode(None))
            if aout is not None:
                out.mux(aout.encode(None))
    return VerticalClip(dest, band, height, x, center, frames)
