"""Synthetic test and demo media with known motion and known sounds, encoded with PyAV.

The picture is a smooth random "game map" texture seen through a camera. A list of
motion segments ``(start, end, kind)`` says what happens when:

* ``still``  -- the camera and the scene do not move (decoded frames repeat);
* ``pan``    -- the camera pans right at ``pan_speed`` pixels per second (global motion);
* ``action`` -- the camera is still while bright sprites move fast inside a central
  box (local motion), as in a fight or an explosion.

Time not covered by a segment is ``still``. The audio track is a quiet tone plus
noise; real sound files (decoded with PyAV) can be mixed in at given times. The
function returns a :class:`SynthInfo` describing what was planted, so tests can
assert against it.

Video is H.264 (``libx264``) except in WebM, which only allows VP8/VP9 (VP8 is used).
Audio is AAC, PCM (``pcm_s16le``, mkv/avi) or Opus (WebM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

import av
import numpy as np

MotionKind = Literal["still", "pan", "action"]
AudioKind = Literal["aac", "pcm", "opus", "none"]

# Container -> (video codec, default audio codec, audio codecs it accepts).
_CONTAINERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mp4": ("libx264", "aac", ("aac",)),
    "mkv": ("libx264", "aac", ("aac", "pcm", "opus")),
    "ts": ("libx264", "aac", ("aac",)),
    "flv": ("libx264", "aac", ("aac",)),
    "avi": ("libx264", "pcm", ("pcm",)),
    "webm": ("libvpx", "opus", ("opus",)),
}
_FORMAT_NAMES = {"mp4": "mp4", "mkv": "matroska", "ts": "mpegts", "flv": "flv", "avi": "avi", "webm": "webm"}
_AUDIO_ENCODERS = {"aac": "aac", "pcm": "pcm_s16le", "opus": "libopus"}


@dataclass(frozen=True)
class MotionSegment:
    """A span of media time ``[start, end)`` seconds with one kind of motion."""

    start: float
    end: float
    kind: MotionKind


@dataclass(frozen=True)
class SoundEvent:
    """A sound file mixed into the audio track starting at ``start`` seconds."""

    path: str | Path
    start: float
    gain: float = 1.0


@dataclass(frozen=True)
class PlantedSound:
    """A sound that was actually mixed in: file, start and end in media seconds."""

    path: str
    start: float
    end: float


@dataclass
class SynthInfo:
    """What :func:`make_media` wrote; every time is in media seconds from 0."""

    path: Path
    container: str
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    fps: int
    duration: float
    frame_count: int
    keyframe_interval: float
    sample_rate: int | None
    segments: list[MotionSegment] = field(default_factory=list)
    sounds: list[PlantedSound] = field(default_factory=list)
    tone_hz: float = 0.0
    pan_speed: float = 0.0

    def kind_at(self, t: float) -> MotionKind:
        """The motion kind planted at media time ``t``."""
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg.kind
        return "still"


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Random uint8 texture, smooth at scale ``cell`` px (bicubic upscale inside FFmpeg)."""
    small = rng.integers(0, 256, size=(max(2, height // cell), max(2, width // cell)), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(small, format="gray")
    return frame.reformat(width=width, height=height, interpolation="BICUBIC").to_ndarray()


def _normalise_segments(segments: Sequence[tuple[float, float, str] | MotionSegment], duration: float) -> list[MotionSegment]:
    out: list[MotionSegment] = []
    for seg in segments:
        s = seg if isinstance(seg, MotionSegment) else MotionSegment(float(seg[0]), float(seg[1]), seg[2])  # type: ignore[arg-type]
        if s.kind not in ("still", "pan", "action"):
            raise ValueError(f"unknown motion kind {s.kind!r}; use still, pan or action")
        if not 0 <= s.start < s.end:
            raise ValueError(f"segment {s} must have 0 <= start < end")
        out.append(MotionSegment(s.start, min(s.end, duration), s.kind))
    out.sort(key=lambda s: s.start)
    for a, b in zip(out, out[1:]):
        if b.start < a.end:
            raise ValueError(f"segments {a} and {b} overlap")
    return out


def _kinds_per_frame(segments: list[MotionSegment], n: int, fps: int) -> list[str]:
    kinds = ["still"] * n
    for seg in segments:
        for i in range(int(np.ceil(seg.start * fps)), min(n, int(np.ceil(seg.end * fps)))):
            kinds[i] = seg.kind
    return kinds


def _load_sound(path: Path, rate: int) -> np.ndarray:
    """Decode a sound file with PyAV into mono float32 at ``rate``."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts: list[np.ndarray] = []
    with av.open(str(path)) as src:
        for frame in src.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _audio_track(duration: float, rate: int, tone_hz: float, noise: float, sounds: Sequence[SoundEvent],
                 rng: np.random.Generator) -> tuple[np.ndarray, list[PlantedSound]]:
    n = int(round(duration * rate))
    t = np.arange(n, dtype=np.float64) / rate
    track = (0.1 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32) if tone_hz > 0 else np.zeros(n, np.float32)
    if noise > 0:
        track += rng.normal(0.0, noise, n).astype(np.float32)
    planted: list[PlantedSound] = []
    for ev in sounds:
        clip = _load_sound(Path(ev.path), rate) * ev.gain
        i0 = int(round(ev.start * rate))
        if i0 >= n:
            continue
        clip = clip[: n - i0]
        track[i0 : i0 + len(clip)] += clip
        planted.append(PlantedSound(str(ev.path), ev.start, ev.start + len(clip) / rate))
    np.clip(track, -1.0, 1.0, out=track)
    return track, planted


def make_media(
    path: str | Path,
    *,
    duration: float = 10.0,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    segments: Sequence[tuple[float, float, str] | MotionSegment] = (),
    audio: AudioKind | None = None,
    sample_rate: int = 48000,
    channels: int = 2,
    tone_hz: float = 440.0,
    noise: float = 0.02,
    sounds: Sequence[SoundEvent] = (),
    keyframe_interval: float = 2.0,
    pan_speed: float = 120.0,
    preset: str = "veryfast",
    bframes: int = 2,
    seed: int = 0,
    facecam: bool = False,
) -> SynthInfo:
    """Write a synthetic clip to ``path``; the container comes from the suffix.

    ``audio`` picks the audio codec (``None`` = the container's default, ``"none"`` =
    no audio). Keyframes are placed exactly every ``keyframe_interval`` seconds. ``facecam``
    adds a streamer's webcam box in the bottom-right corner whose picture changes all the time,
    as in a real broadcast (so "still" game segments are not a frozen picture).
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in _CONTAINERS:
        raise ValueError(f"unsupported container {ext!r}; use one of {sorted(_CONTAINERS)}")
    if width % 2 or height % 4:
        raise ValueError("width must be even and height a multiple of 4 (yuv420p layout)")
    vcodec, default_audio, allowed_audio = _CONTAINERS[ext]
    akind = default_audio if audio is None else audio
    if akind != "none" and akind not in allowed_audio:
        raise ValueError(f"{ext} cannot carry {akind} audio; use one of {allowed_audio}")
    if akind == "opus":
        sample_rate = 48000
    rng = np.random.default_rng(seed)
    segs = _normalise_segments(segments, duration)
    n_frames = int(round(duration * fps))
    kinds = _kinds_per_frame(segs, n_frames, fps)

    # The camera's x offset per frame; the texture is wide enough for the whole pan.
    step = pan_speed / fps
    offsets = np.cumsum([step if k == "pan" else 0.0 for k in kinds])
    offsets = np.round(np.concatenate([[0.0], offsets[:-1]])).astype(np.int64) & ~1  # even: chroma aligns
    tex_w = width + int(offsets[-1]) + 2 if n_frames else width
    luma = _smooth_noise(rng, tex_w, height, cell=24)
    luma = np.clip(luma.astype(np.int16) // 2 + _smooth_noise(rng, tex_w, height, cell=6) // 2, 0, 255).astype(np.uint8)
    cb = _smooth_noise(rng, tex_w // 2 + 1, height // 2, cell=32)
    cr = _smooth_noise(rng, tex_w // 2 + 1, height // 2, cell=32)

    # Sprites for action segments: squares bouncing inside the central box.
    box = (width // 4, height // 4, width * 3 // 4, height * 3 // 4)
    n_sprites, size = 6, max(8, height // 12)
    pos = rng.uniform([box[0], box[1]], [box[2] - size, box[3] - size], size=(n_sprites, 2))
    vel = rng.uniform(-1, 1, size=(n_sprites, 2)) * (height * 1.5 / fps)

    fmt = _FORMAT_NAMES[ext]
    with av.open(str(path), mode="w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        gop = max(1, int(round(keyframe_interval * fps)))
        vs.codec_context.gop_size = gop
        if vcodec == "libx264":
            vs.codec_context.options = {
                "preset": preset, "crf": "23", "bf": str(bframes),
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
        else:
            vs.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "b": "1500k", "keyint_min": str(gop)}
        feeder: _AudioFeeder | None = None
        planted: list[PlantedSound] = []
        if akind != "none":
            a_stream = out.add_stream(_AUDIO_ENCODERS[akind], rate=sample_rate)
            a_stream.codec_context.layout = "stereo" if channels == 2 else "mono"
            track, planted = _audio_track(duration, sample_rate, tone_hz, noise, sounds, rng)
            feeder = _AudioFeeder(out, a_stream, track, sample_rate, channels, akind)

        yuv = np.empty((height * 3 // 2, width), np.uint8)
        u_view = yuv[height : height + height // 4].reshape(height // 2, width // 2)
        v_view = yuv[height + height // 4 :].reshape(height // 2, width // 2)
        for i in range(n_frames):
            x = int(offsets[i])
            yuv[:height] = luma[:, x : x + width]
            u_view[:] = cb[:, x // 2 : x // 2 + width // 2]
            v_view[:] = cr[:, x // 2 : x // 2 + width // 2]
            if kinds[i] == "action":
                pos += vel
                for k in range(n_sprites):
                    for d, (lo, hi) in enumerate(((box[0], box[2] - size), (box[1], box[3] - size))):
                        if not lo <= pos[k, d] <= hi:
                            vel[k, d] = -vel[k, d]
                            pos[k, d] = min(max(pos[k, d], lo), hi)
                    px, py = int(pos[k, 0]), int(pos[k, 1])
                    yuv[py : py + size, px : px + size] = 235 if k % 2 else 20
            if facecam:
                _draw_facecam(yuv[:height], i, fps)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
            if feeder is not None:  # interleave audio with video, as a live encoder would
                feeder.feed_until((i + 1) / fps)
        for packet in vs.encode(None):
            out.mux(packet)
        if feeder is not None:
            feeder.finish()

    return SynthInfo(
        path=path, container=ext, video_codec="h264" if vcodec == "libx264" else "vp8",
        audio_codec=None if akind == "none" else _AUDIO_ENCODERS[akind].removeprefix("lib"),
        width=width, height=height, fps=fps, duration=n_frames / fps, frame_count=n_frames,
        keyframe_interval=gop / fps, sample_rate=None if akind == "none" else sample_rate,
        segments=segs, sounds=planted, tone_hz=tone_hz if akind != "none" else 0.0, pan_speed=pan_speed,
    )


def _draw_facecam(luma: np.ndarray, i: int, fps: int) -> None:
    """A webcam box: a face-sized blob swaying over a dim room, with a webcam's sensor noise."""
    h, w = luma.shape
    bh, bw = h // 4 & ~1, w // 5 & ~1
    y0, x0 = h - bh - 8, w - bw - 8
    t = i / fps
    yy, xx = np.mgrid[0:bh, 0:bw]
    cx = bw / 2 + bw * 0.15 * np.sin(2 * np.pi * 0.4 * t)
    cy = bh / 2 + bh * 0.08 * np.sin(2 * np.pi * 0.9 * t)
    blob = np.exp(-(((xx - cx) / (bw * 0.18)) ** 2 + ((yy - cy) / (bh * 0.25)) ** 2))
    background = 60 + 20 * np.sin(2 * np.pi * 0.25 * t + xx / 9.0)
    grain = np.random.default_rng(i).normal(0, 20, (bh, bw))
    luma[y0 : y0 + bh, x0 : x0 + bw] = np.clip(background + 160 * blob + grain, 0, 255).astype(np.uint8)


class _AudioFeeder:
    """Encodes a mono float track chunk by chunk so audio packets interleave with video."""

    def __init__(self, out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                 track: np.ndarray, rate: int, channels: int, kind: str) -> None:
        self.out, self.stream, self.rate, self.channels, self.kind = out, stream, rate, channels, kind
        self.data = (np.clip(track, -1, 1) * 32767).astype(np.int16) if kind == "pcm" else track.astype(np.float32)
        self.chunk = stream.codec_context.frame_size or 1024
        self.layout = "stereo" if channels == 2 else "mono"
        self.pos = 0

    def feed_until(self, t: float) -> None:
        end = min(len(self.data), int(t * self.rate))
        while self.pos < end:
            self._encode(self.data[self.pos : self.pos + self.chunk])

    def finish(self) -> None:
        self.feed_until(len(self.data) / self.rate)
        for packet in self.stream.encode(None):
            self.out.mux(packet)

    def _encode(self, piece: np.ndarray) -> None:
        n = len(piece)
        if n < self.chunk and self.kind != "pcm":
            piece = np.pad(piece, (0, self.chunk - n))
        if self.kind == "pcm":  # packed s16: samples interleaved across channels
            arr, fmt = np.repeat(piece, self.channels).reshape(1, -1), "s16"
        else:
            arr, fmt = np.ascontiguousarray(np.repeat(piece[None, :], self.channels, axis=0)), "fltp"
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.pos
        frame.time_base = Fraction(1, self.rate)
        self.pos += n
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
