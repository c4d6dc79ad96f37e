"""Real footage through ingest's real decoder (no NATS): the MEDIA messages a stream gives.

`media(path)` decodes a file with services.ingest's StreamDecoder (glitch frames only, audio
on) and turns its items into the protobuf messages ingest publishes, in publishing order.
`remux`, `recode_audio` and `recode_video` make faulty copies of real footage with PyAV: a black
or frozen stretch of picture, silent or deafening audio, missing or shifted audio packets, a
change of picture size or frame rate. `with_soundtrack` gives a silent film a sound track made
of the shared real sounds (music, speech, voice lines, a quiet scene, explosions and gunfire).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from services.glitch.health.incidents import HealthEvent
from services.glitch.health.monitor import HealthConfig, StreamHealth, feed
from services.ingest import messages
from services.ingest.decode import DecodeConfig, StreamDecoder
from services.ingest.deferred import complete
from services.ingest.items import AudioChunk, FrameSignals, SampledFrame, WindowRecord
from services.ingest.sampling import ConsumerSpec, SamplingConfig
from services.ingest.settings import IngestSettings
from streamsight.gen.media.v1 import media_pb2

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RATE = 48000  # the soundtrack's sample rate


def media(path: Path, glitch_size: tuple[int, int] | None = None, audio_chunk_s: float | None = None) -> list[tuple[str, object]]:
    """(kind, message) pairs as ingest would publish them for the file at `path`.

    Glitch frames are shrunk to fit `glitch_size` (default: ingest's glitch_max_width x
    glitch_max_height defaults), as the stack samples them; audio comes in chunks of
    `audio_chunk_s` (default: ingest's audio_chunk_s default).
    """
    fields = IngestSettings.model_fields
    if glitch_size is None:
        glitch_size = (fields["glitch_max_width"].default, fields["glitch_max_height"].default)
    if audio_chunk_s is None:
        audio_chunk_s = fields["audio_chunk_s"].default
    glitch = ConsumerSpec(fps=2.0, format="rgb24", max_width=glitch_size[0], max_height=glitch_size[1])
    sampling = SamplingConfig(flow=None, cnn=None, glitch=glitch)
    dec = StreamDecoder(DecodeConfig(sampling=sampling, audio_chunk_seconds=audio_chunk_s))
    out: list[tuple[str, object]] = []
    chunks = frames = 0
    with av.open(str(path)) as container:
        dec.attach(container)
        items = []
        for packet in container.demux(*dec.streams):
            dec.process(packet)
            items += complete(dec.take())
        dec.finish()
        items += complete(dec.take())
    records = [i for i in items if isinstance(i, WindowRecord)]
    for item in items:
        if isinstance(item, SampledFrame):
            out.append(("frames_glitch", media_pb2.VideoFrame.FromString(messages.video_frame("s", item, frames))))
            frames += 1
        elif isinstance(item, FrameSignals):
            out.append(("signals", messages.frame_signals("s", item)))
        elif isinstance(item, AudioChunk):
            out.append(("audio", messages.audio_chunk("s", item, chunks)))
            chunks += 1
        elif isinstance(item, WindowRecord):
            out.append(("windows", messages.window_record("s", item, last=item is records[-1])))
    return out


def run(msgs: list[tuple[str, object]], config: HealthConfig = HealthConfig()) -> list[HealthEvent]:
    health = StreamHealth(config)
    events: list[HealthEvent] = []
    for kind, m in msgs:
        events += feed(health, kind, m)
    return events


def _copy_streams(src, dst):
    v = dst.add_stream_from_template(src.streams.video[0])
    a = dst.add_stream_from_template(src.streams.audio[0]) if src.streams.audio else None
    return v, a


def remux(path: Path, out: Path, audio_packet=None, no_audio: bool = False, until_s: float = 1e9, audio_last: bool = False) -> Path:
    """Copy `path`'s packets before `until_s` to `out`; `audio_packet(pkt, t)` may return None (drop) or the packet.
    `audio_last`: the audio is muxed after all the video, as a muxer that writes it behind does
    (FFmpeg's MP4 demuxer then hands the audio out up to 1 s behind the video)."""
    with av.open(str(path)) as src, av.open(str(out), "w") as dst:
        v, a = _copy_streams(src, dst)
        if no_audio:
            a = None
        held = []
        for pkt in src.demux():
            if pkt.dts is None or pkt.pts is None or float(pkt.pts * pkt.time_base) >= until_s:
                continue
            if pkt.stream.type == "video":
                pkt.stream = v
            elif a is not None:
                t = float(pkt.pts * pkt.time_base)
                if audio_packet is not None and (pkt := audio_packet(pkt, t)) is None:
                    continue
                pkt.stream = a
                if audio_last:
                    held.append(pkt)
                    continue
            else:
                continue
            dst.mux(pkt)
        for pkt in held:
            dst.mux(pkt)
    return out


def recode_audio(path: Path, out: Path, change, until_s: float = 1e9) -> Path:
    """Video copied; audio decoded, `change(samples (ch, n) float32, t0, rate)` applied, AAC again."""
    with av.open(str(path)) as src, av.open(str(out), "w") as dst:
        v = dst.add_stream_from_template(src.streams.video[0])
        ain = src.streams.audio[0]
        a = dst.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.codec_context.layout.name)
        for pkt in src.demux():
            if pkt.dts is None or pkt.pts is None or float(pkt.pts * pkt.time_base) >= until_s:
                continue
            if pkt.stream.type == "video":
                pkt.stream = v
                dst.mux(pkt)
                continue
            for frame in pkt.decode():
                arr = frame.to_ndarray()
                if frame.format.name != "fltp":
                    raise ValueError(f"expected fltp audio, got {frame.format.name}")
                arr = change(arr.copy(), float(frame.pts * frame.time_base), frame.sample_rate)
                new = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr, np.float32), format="fltp", layout=frame.layout.name)
                new.sample_rate, new.pts, new.time_base = frame.sample_rate, frame.pts, frame.time_base
                for p in a.encode(new):
                    dst.mux(p)
        for p in a.encode(None):
            dst.mux(p)
    return out


def recode_video(path: Path, out: Path, change, start_s: float = 0.0, end_s: float = 1e9, size: tuple[int, int] = (640, 360)) -> Path:
    """[start_s, end_s) of `path` at `size` with the source's timestamps, audio copied;
    `change(rgb, t, prev_rgb)` gives each picture. Two such MPEG-TS parts concatenated byte
    for byte are one stream whose picture size changes where the second begins."""
    with av.open(str(path)) as src, av.open(str(out), "w", format="mpegts" if out.suffix == ".ts" else None) as dst:
        vin = src.streams.video[0]
        fps = vin.average_rate
        v = dst.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = *size, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "23", "g": "60"}
        v.codec_context.time_base = 1 / fps
        a = dst.add_stream_from_template(src.streams.audio[0]) if src.streams.audio else None
        prev = None
        for pkt in src.demux():
            if pkt.dts is None:
                continue
            if pkt.stream.type == "audio":
                if a is not None and start_s <= float(pkt.pts * pkt.time_base) < end_s:
                    pkt.stream = a
                    dst.mux(pkt)
                continue
            for frame in pkt.decode():
                t = float(frame.pts * frame.time_base)
                if not start_s <= t < end_s:
                    continue
                pic = change(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]), t, prev)
                if pic is None:  # dropped: a lower frame rate from here
                    continue
                prev = pic
                f = av.VideoFrame.from_ndarray(pic, format="rgb24").reformat(format="yuv420p")
                f.pts, f.time_base = int(round(t * fps)), 1 / fps
                for p in v.encode(f):
                    dst.mux(p)
        for p in v.encode(None):
            dst.mux(p)
    return out


def sound(name: str) -> np.ndarray:
    """A shared sound as 48 kHz stereo float32, shape (2, n)."""
    out = []
    with av.open(str(SHARED / "sounds" / name)) as c:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        for frame in c.decode(audio=0):
            out += [f.to_ndarray() for f in resampler.resample(frame)]
        out += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1)


def soundtrack(seconds: float) -> np.ndarray:
    music = sound("music_olympics.ogg")
    pause = lambda s: np.zeros((2, int(s * RATE)), np.float32)  # noqa: E731
    parts = [music[:, : 30 * RATE], pause(0.8)]
    for name in ["speech_front_center.wav", "speech_rear_left.wav"] + [f"voice_{v}_{w}.ogg" for v in ("classic", "default")
                                                                        for w in ("amazing", "boring", "excellent", "laugh", "oops")]:
        parts += [sound(name), pause(0.4)]
    parts.append(music[:, 30 * RATE: 38 * RATE] * 10 ** (-26 / 20))  # a quiet scene
    parts += [sound("explosion.ogg"), sound("minigun.ogg"), sound("shotgunfire.ogg")]
    track = np.concatenate(parts, axis=1)
    rest = int(seconds * RATE) - track.shape[1]
    return np.concatenate([track, music[:, 40 * RATE: 40 * RATE + rest]], axis=1).astype(np.float32)


def with_soundtrack(video: Path, out: Path) -> Path:
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        v = dst.add_stream_from_template(vin)
        a = dst.add_stream("aac", rate=RATE, layout="stereo")
        seconds = float(vin.duration * vin.time_base) if vin.duration else float(src.duration) / 1e6
        track = soundtrack(seconds)
        packets = []
        for i in range(0, track.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, i: i + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, i
            packets += [(float(p.pts * p.time_base), p) for p in a.encode(frame)]
        packets += [(float(p.pts * p.time_base), p) for p in a.encode(None)]
        for pkt in src.demux(vin):
            if pkt.dts is not None:
                pkt.stream = v
                packets.append((float(pkt.dts * pkt.time_base), pkt))
        for _, pkt in sorted(packets, key=lambda tp: tp[0]):  # interleaved, as a muxer would write a live recording
            dst.mux(pkt)
    return out
