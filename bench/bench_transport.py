"""Frame transport benchmark: bytes per media second and CPU per frame for each way sampled frames could travel.

    .venv/bin/python bench/bench_transport.py [--seconds 10] [--repeat 3] [--json out.json] [--no-nats]

Frames come from real media: the first ``--seconds`` of /work/shared/data/media/openarena_dm2.mp4
(1280x720 H.264, 30 fps game footage), decoded with PyAV and sampled with ingest's own
:class:`services.ingest.sampling.Sampler` at the default rates (glitch RGB at 2 fps, flow gray
320 px at 5 fps, CNN RGB 224x224 at 1 fps). The "1080p" rows use the same frames scaled up to
1920x1080 in yuv420p with PyAV's reformat (bicubic), with the glitch frame cap raised to 1920x1080
(``glitch_max_width/height``; at the default cap a 1080p source sends 1280x720 glitch frames and
costs what the 720p rows say). Scaled-up frames are smoother than native 1080p, so compression
ratios at 1080p are on the optimistic side.

Options, each against ``raw`` (today's VideoFrame with the picture in ``data``) measured in the same run:

* ``raw``         today: the protobuf VideoFrame built by services.ingest.messages.video_frame;
* ``i420``        the glitch frame as the decoder's own yuv420p planes (1.5 bytes/pixel), turned
                  into RGB by the consumer with the same swscale call ingest makes; bit-identical
                  RGB (checked), the producer skips its RGB conversion and the consumer pays it;
* ``zlib1``, ``lz4``, ``zstd1``, ``png``   lossless compression of today's payload (lz4 and zstd
                  only when the ``lz4``/``zstandard`` modules import: they are not dependencies);
* ``jpeg444``, ``jpeg420``   lossy, PyAV's mjpeg encoder at qscale 2 (its best quality step);
* ``half``        the glitch frame downscaled to half width per consumer (flow and CNN frames are
                  already sized for their consumer today);
* ``shm``         one-host shared memory: the producer copies the picture into a ring of slots
                  (multiprocessing.shared_memory), the message carries only a slot reference;
* ``objstore``    the JetStream object store: put per frame, the message carries the object name.

For each option and size it prints bytes per media second (all three consumers), CPU ms per
glitch frame to encode (producer) and decode (consumer) -- CPU seconds of this process
(time.process_time), best of ``--repeat`` -- the CPU ms per media second of both together, and,
on a real nats-server (streamsight.natsd.NatsServer in a temp dir, memory stream), the median
wall-clock round trip of one glitch frame: publish (waiting for the PubAck) + fetch + ack.
Encoding and decoding are not in the round trip, except for objstore, whose put and get are
the transport.

Lossy and downscaled frames change what the glitch detector sees, so the glitch classifier
(services/glitch/classifier.py) scores real frames and the same frames corrupted with
training/glitch/corrupt.py (wrong-stride reads, green and grey fills) raw and after each lossy or
downscaled round trip; the largest score change and the number of detector-relevant verdicts that
flip are printed. Lossless options are checked to give back the very same pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import shared_memory
from pathlib import Path
from typing import Callable

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.glitch.classifier import GlitchClassifier  # noqa: E402
from services.glitch.detector import DetectorConfig  # noqa: E402
from services.ingest.items import SampledFrame  # noqa: E402
from services.ingest.messages import varint, video_frame  # noqa: E402
from services.ingest.sampling import ConsumerSpec, Sampler  # noqa: E402
from services.ingest.settings import IngestSettings  # noqa: E402
from streamsight.bus import DEFAULT_FETCH_BYTES as FETCH_BYTES, FETCH_BUDGET, MAX_PAYLOAD  # noqa: E402
from streamsight.gen.media.v1 import media_pb2  # noqa: E402
from training.glitch import corrupt  # noqa: E402

try:
    import lz4.frame as lz4f
except ImportError:
    lz4f = None
try:
    import zstandard
except ImportError:
    zstandard = None

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"
SOURCE = MEDIA / "openarena_dm2.mp4"
KINDS = ("glitch", "flow", "cnn")
LOSSY = ("jpeg444", "jpeg420", "half")
DRAIN = ("raw", "i420", "zstd1", "jpeg444")  # options whose sustained rate through one consumer is measured
DRAIN_FRAMES = 120


def rates() -> dict[str, float]:
    """Frames per media second per consumer, from ingest's defaults."""
    s = IngestSettings.model_fields
    return {"glitch": s["glitch_fps"].default, "flow": s["flow_fps"].default, "cnn": s["cnn_fps"].default}


# -- frames ------------------------------------------------------------------------------------


@dataclass
class FrameSet:
    """One size's sampled frames, as ingest would publish them."""

    label: str
    source: tuple[int, int]
    frames: dict[str, list[np.ndarray]]  # consumer -> images
    glitch_yuv: list[np.ndarray]  # the glitch frames as yuv420p planes [H*3/2, W]
    glitch_next: list[np.ndarray]  # the source frame after each glitch frame, RGB (for wrong-stride reads)
    rgb_convert_ms: float = 0.0  # ingest's yuv -> RGB conversion per glitch frame (what i420 moves to the consumer)


def sample(seconds: float, size: tuple[int, int] | None) -> FrameSet:
    """Decode the source and sample it as ingest does; ``size`` scales the source up first."""
    fps = rates()
    wmax, hmax = size or (1280, 720)
    specs = {
        "glitch": ConsumerSpec(fps=fps["glitch"], format="rgb24", max_width=wmax, max_height=hmax),
        "flow": ConsumerSpec(fps=fps["flow"], format="gray", width=IngestSettings.model_fields["flow_width"].default),
        "cnn": ConsumerSpec(fps=fps["cnn"], format="rgb24", width=224, height=224),
    }
    samplers = {k: Sampler(k, spec) for k, spec in specs.items()}
    frames: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    yuv, after, glitch_src = [], [], []
    want_next = False
    with av.open(str(SOURCE)) as c:
        stream = c.streams.video[0]
        src = (stream.codec_context.width, stream.codec_context.height)
        for frame in c.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t >= seconds:
                break
            if size is not None:
                frame = frame.reformat(size[0], size[1], "yuv420p", interpolation="BICUBIC")
            if want_next:
                after.append(frame.to_ndarray(format="rgb24"))
                want_next = False
            for kind, sampler in samplers.items():
                if sampler.due(t):
                    frames[kind].append(sampler.convert(frame))
                    if kind == "glitch":
                        if frame.format.name != "yuv420p" or (frame.width, frame.height) != frames[kind][-1].shape[1::-1]:
                            raise SystemExit("the i420 option needs unscaled yuv420p glitch frames")
                        yuv.append(frame.to_ndarray())
                        glitch_src.append(frame)
                        want_next = True
    if want_next:
        after.append(frames["glitch"][-1])
    convert = Sampler("glitch", specs["glitch"])
    t = time.process_time()
    for f in glitch_src:
        convert.convert(f)
    ms = (time.process_time() - t) * 1000 / len(glitch_src)
    label = f"{size[1]}p" if size else f"{src[1]}p"
    return FrameSet(label, size or src, frames, yuv, after, ms)


# -- wire formats ------------------------------------------------------------------------------


def _head(kind: str, shape: tuple[int, ...], index: int, data: bytes | memoryview, fmt: int | None = None) -> bytes:
    """A VideoFrame with ``data`` as its payload and the fields ingest sets for a picture.

    As services.ingest.messages.video_frame does, the small fields are serialized and the
    ``data`` field (8, length-delimited) is appended, so the payload is copied once.
    """
    if fmt is None:
        fmt = media_pb2.PIXEL_FORMAT_GRAY8 if len(shape) == 2 else media_pb2.PIXEL_FORMAT_RGB24
    head = media_pb2.VideoFrame(stream_id="bench", consumer=kind, pts_s=index * 0.5, frame_number=index, width=shape[1],
                                height=shape[0], format=fmt, sample_index=index).SerializeToString()
    return b"".join((head, b"\x42", varint(len(data)), data))


def _pixels(msg: media_pb2.VideoFrame, data: bytes | memoryview) -> np.ndarray:
    shape = (msg.height, msg.width) if msg.format == media_pb2.PIXEL_FORMAT_GRAY8 else (msg.height, msg.width, 3)
    return np.frombuffer(data, np.uint8).reshape(shape)


class Codec:
    """One way of putting a picture into a message and getting it back."""

    name = ""
    lossless = True

    def encode(self, kind: str, image: np.ndarray, index: int, yuv: np.ndarray | None = None) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> np.ndarray:
        raise NotImplementedError


class Raw(Codec):
    name = "raw"

    def encode(self, kind, image, index, yuv=None):
        item = SampledFrame(kind, index, index * 0.5, 0, image, image.shape[1], image.shape[0])
        return video_frame("bench", item, index)

    def decode(self, payload):
        msg = media_pb2.VideoFrame.FromString(payload)
        return _pixels(msg, msg.data)


class I420(Raw):
    """Glitch frames as yuv420p planes; the consumer converts with ingest's swscale call."""

    name = "i420"

    def encode(self, kind, image, index, yuv=None):
        if kind != "glitch":
            return super().encode(kind, image, index)
        planes = yuv if yuv is not None else image  # yuv: the decoded frame's planes (frame.to_ndarray())
        return _head(kind, image.shape, index, memoryview(np.ascontiguousarray(planes)).cast("B"), media_pb2.PIXEL_FORMAT_UNSPECIFIED)

    def decode(self, payload):
        msg = media_pb2.VideoFrame.FromString(payload)
        if msg.consumer != "glitch":
            return _pixels(msg, msg.data)
        planes = np.frombuffer(msg.data, np.uint8).reshape(msg.height * 3 // 2, msg.width)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        return frame.reformat(msg.width, msg.height, "rgb24", interpolation="AREA", threads=1).to_ndarray()


class Compressed(Raw):
    """Today's payload through a general-purpose lossless compressor."""

    def __init__(self, name: str, pack: Callable[[bytes], bytes], unpack: Callable[[bytes], bytes]) -> None:
        self.name, self._pack, self._unpack = name, pack, unpack

    def encode(self, kind, image, index, yuv=None):
        return _head(kind, image.shape, index, self._pack(memoryview(np.ascontiguousarray(image)).cast("B")))

    def decode(self, payload):
        msg = media_pb2.VideoFrame.FromString(payload)
        return _pixels(msg, self._unpack(msg.data))


class Picture(Raw):
    """An image codec of PyAV (png, mjpeg), one encoder context per picture size and format."""

    def __init__(self, name: str, codec: str, pix_fmt: str | None, options: dict[str, str], lossless: bool) -> None:
        self.name, self._codec, self._pix_fmt, self._options, self.lossless = name, codec, pix_fmt, options, lossless
        self._encoders: dict[tuple, av.CodecContext] = {}
        self._decoder = av.CodecContext.create(codec, "r")
        self._decoder.thread_count = 1

    def _encoder(self, w: int, h: int, pix_fmt: str) -> av.CodecContext:
        key = (w, h, pix_fmt)
        if key not in self._encoders:
            ctx = av.CodecContext.create(self._codec, "w")
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, pix_fmt, Fraction(1, 30)
            ctx.thread_count = 1
            ctx.options = dict(self._options)
            self._encoders[key] = ctx
        return self._encoders[key]

    def encode(self, kind, image, index, yuv=None):
        src = "gray" if image.ndim == 2 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=src)
        pix_fmt = self._pix_fmt or src
        if pix_fmt != src:
            frame = frame.reformat(format=pix_fmt)
        packets = self._encoder(image.shape[1], image.shape[0], pix_fmt).encode(frame)
        return _head(kind, image.shape, index, bytes(packets[0]))

    def decode(self, payload):
        msg = media_pb2.VideoFrame.FromString(payload)
        # FFmpeg's png decoder keeps the last picture (for APNG) and a reused context gives
        # wrong pixels from the second frame on: one context per picture (about 0.01 ms).
        decoder = self._decoder if self._codec != "png" else av.CodecContext.create("png", "r")
        frame = decoder.decode(av.Packet(msg.data))[0]
        return frame.to_ndarray(format="gray" if msg.format == media_pb2.PIXEL_FORMAT_GRAY8 else "rgb24")


class Half(Raw):
    """Glitch frames at half width (area filter, as ingest scales), others as today."""

    name = "half"
    lossless = False

    def __init__(self) -> None:
        self._scalers: dict[tuple, av.video.reformatter.VideoReformatter] = {}

    def encode(self, kind, image, index, yuv=None):
        if kind == "glitch":
            h, w = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p") if yuv is not None else av.VideoFrame.from_ndarray(image, format="rgb24")
            scaler = self._scalers.setdefault((w, h), av.video.reformatter.VideoReformatter())
            image = scaler.reformat(frame, w // 2, h // 2, "rgb24", interpolation="AREA", threads=1).to_ndarray()
        return super().encode(kind, image, index)


class SharedRing(Raw):
    """Pictures in rings of shared-memory slots, one ring per consumer; the message is a
    VideoFrame whose ``data`` is only a slot reference (segment name, sequence number, size).

    Each slot starts with an 8-byte sequence number; the consumer checks it after copying the
    picture out, so a slot reused while it was being read (the consumer ``slots`` frames or
    more behind) is detected rather than returned as a torn picture.
    """

    name = "shm"

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.rings: dict[str, tuple[shared_memory.SharedMemory, int]] = {}  # consumer -> (segment, slot bytes)
        self.by_name: dict[str, tuple[shared_memory.SharedMemory, int]] = {}
        self._seq: dict[str, int] = {}

    @property
    def segment_bytes(self) -> int:
        return sum(shm.size for shm, _ in self.rings.values())

    def close(self) -> None:
        for shm, _ in self.rings.values():
            shm.close()
            shm.unlink()
        self.rings.clear()

    def encode(self, kind, image, index, yuv=None):
        flat = np.ascontiguousarray(image).reshape(-1)
        if kind not in self.rings:
            shm = shared_memory.SharedMemory(create=True, size=self.slots * (flat.nbytes + 8))
            touch = np.frombuffer(shm.buf, np.uint8)
            touch[:] = 0  # fault the pages in now: a long-running ring has been written through already
            del touch
            self.rings[kind] = self.by_name[shm.name] = (shm, flat.nbytes + 8)
            self._seq[kind] = 0
        shm, slot = self.rings[kind]
        if flat.nbytes + 8 > slot:
            raise ValueError(f"{kind} frame of {flat.nbytes} bytes does not fit a {slot - 8}-byte slot")
        seq = self._seq[kind]
        self._seq[kind] = seq + 1
        base = (seq % self.slots) * slot
        shm.buf[base + 8 : base + 8 + flat.nbytes] = flat
        shm.buf[base : base + 8] = seq.to_bytes(8, "little")
        return _head(kind, image.shape, index, f"{shm.name}:{seq}:{flat.nbytes}".encode())

    def decode(self, payload):
        msg = media_pb2.VideoFrame.FromString(payload)
        name, seq_s, n_s = msg.data.decode().rsplit(":", 2)
        seq, n = int(seq_s), int(n_s)
        # A consumer process attaches once per segment with SharedMemory(name=...); the copy is the same.
        shm, slot = self.by_name[name]
        base = (seq % self.slots) * slot
        image = _pixels(msg, bytes(shm.buf[base + 8 : base + 8 + n]))
        if int.from_bytes(shm.buf[base : base + 8], "little") != seq:
            raise LookupError(f"slot of frame {seq} was reused before it was read")
        return image


def codecs() -> list[Codec]:
    out: list[Codec] = [Raw(), I420(), Compressed("zlib1", lambda b: zlib.compress(b, 1), zlib.decompress)]
    if lz4f is not None:
        out.append(Compressed("lz4", lambda b: lz4f.compress(b, compression_level=0), lz4f.decompress))
    if zstandard is not None:
        zc, zd = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
        out.append(Compressed("zstd1", zc.compress, zd.decompress))
    out += [
        Picture("png", "png", None, {"compression_level": "1"}, lossless=True),
        Picture("jpeg444", "mjpeg", "yuvj444p", {"flags": "+qscale", "global_quality": str(2 * 118)}, lossless=False),
        Picture("jpeg420", "mjpeg", "yuvj420p", {"flags": "+qscale", "global_quality": str(2 * 118)}, lossless=False),
        Half(),
        SharedRing(slots=64),
    ]
    return out


# -- measurements --------------------------------------------------------------------------------


@dataclass
class Row:
    size: str
    option: str
    bytes_per_frame: dict[str, float] = field(default_factory=dict)  # consumer -> mean message bytes
    encode_ms: dict[str, float] = field(default_factory=dict)  # consumer -> CPU ms per frame
    decode_ms: dict[str, float] = field(default_factory=dict)
    bytes_per_media_s: float = 0.0
    cpu_ms_per_media_s: float = 0.0  # encode + decode, all consumers
    round_trip_ms: float | None = None  # median, one glitch frame through JetStream
    drain: dict[str, float] | None = None  # DRAIN options: sustained publish and byte-bounded fetch rates
    identical: bool | None = None  # lossless options: decoded pixels equal the input
    note: str = ""


def cpu_ms(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best * 1000 / n


def measure_codec(fs: FrameSet, codec: Codec, repeat: int) -> tuple[Row, dict[str, list[bytes]]]:
    row, payloads = Row(fs.label, codec.name), {}
    fps = rates()
    for kind in KINDS:
        images = fs.frames[kind]
        yuv = fs.glitch_yuv if kind == "glitch" else [None] * len(images)
        codec.encode(kind, images[0], 0, yuv[0])  # warm-up: encoder contexts, shared-memory rings
        row.encode_ms[kind] = cpu_ms(lambda: [codec.encode(kind, im, i, y) for i, (im, y) in enumerate(zip(images, yuv))], len(images), repeat)
        # Re-encode so that ring slots hold these frames again before they are read back.
        encoded = [codec.encode(kind, im, i, y) for i, (im, y) in enumerate(zip(images, yuv))]
        row.decode_ms[kind] = cpu_ms(lambda: [codec.decode(p) for p in encoded], len(images), repeat)
        row.bytes_per_frame[kind] = float(np.mean([len(p) for p in encoded]))
        if codec.lossless:
            same = all(np.array_equal(codec.decode(p), im) for p, im in zip(encoded, images))
            row.identical = same if row.identical is None else row.identical and same
        payloads[kind] = encoded
    row.bytes_per_media_s = sum(row.bytes_per_frame[k] * fps[k] for k in KINDS)
    row.cpu_ms_per_media_s = sum((row.encode_ms[k] + row.decode_ms[k]) * fps[k] for k in KINDS)
    return row, payloads


# -- through a real nats-server -------------------------------------------------------------------


async def round_trips(rows: list[Row], payloads: dict[tuple[str, str], dict[str, list[bytes]]], fsets: list[FrameSet],
                      repeat: int) -> list[Row]:
    """Median publish+fetch+ack of a glitch frame per option; adds the object store's rows."""
    import nats
    from nats.js.api import ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig

    from streamsight.natsd import NatsServer

    extra: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        nc = await nats.connect(server.url, max_outstanding_pings=10)
        js = nc.jetstream()
        # As MEDIA: in memory, a message kept only until its consumers have acknowledged it.
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.MEMORY, max_msg_size=MAX_PAYLOAD,
                                         retention=RetentionPolicy.INTEREST))

        async def trip(subject: str, psub, payload: bytes, before=None, after=None) -> float:
            t = time.perf_counter()
            if before is not None:
                await before()
            await js.publish(subject, payload)
            msg = (await psub.fetch(1, timeout=10))[0]
            if after is not None:
                await after(msg)
            await msg.ack()
            return time.perf_counter() - t

        subs = {}
        for row in rows:
            subject = f"bench.{row.size}.{row.option}"
            subs[subject] = await js.pull_subscribe(subject, durable=f"c-{row.size}-{row.option}")
        times: dict[str, list[float]] = {s: [] for s in subs}
        # Options interleaved frame by frame, so that load from elsewhere on the machine falls on all alike.
        for r in range(repeat + 1):
            n = min(len(payloads[(row.size, row.option)]["glitch"]) for row in rows)
            for i in range(n):
                for row in rows:
                    subject = f"bench.{row.size}.{row.option}"
                    dt = await trip(subject, subs[subject], payloads[(row.size, row.option)]["glitch"][i])
                    if r:  # the first pass warms up the server and the client
                        times[subject].append(dt)
        for row in rows:
            row.round_trip_ms = statistics.median(times[f"bench.{row.size}.{row.option}"]) * 1000

        for row in rows:
            if row.option in DRAIN:
                frames = payloads[(row.size, row.option)]["glitch"]
                row.drain = await drain(nc, js, f"bench.drain.{row.size}.{row.option}", frames, DRAIN_FRAMES)

        fps = rates()
        for fs in fsets:
            obj = await js.create_object_store(f"frames{fs.label}", config=ObjectStoreConfig(storage=StorageType.MEMORY))
            stream = f"OBJ_frames{fs.label}"
            row = Row(fs.label, "objstore", note="put+ref, fetch+get; delete per frame not counted")
            # Bytes: what the object store stream holds per frame, plus the reference message.
            for kind in KINDS:
                images = fs.frames[kind]
                data = [Raw().encode(kind, im, i) for i, im in enumerate(images)]
                before = (await js.stream_info(stream)).state.bytes
                enc, dec = [], []
                for _ in range(repeat):
                    t = time.process_time()
                    for i, d in enumerate(data):
                        await obj.put(f"{kind}-{i}", d)
                    enc.append(time.process_time() - t)
                    stored = (await js.stream_info(stream)).state.bytes - before
                    t = time.process_time()
                    for i in range(len(data)):
                        got = (await obj.get(f"{kind}-{i}")).data
                        Raw().decode(got)
                    dec.append(time.process_time() - t)
                    for i in range(len(data)):
                        await obj.delete(f"{kind}-{i}")
                ref = len(_head(kind, images[0].shape, 0, f"{kind}-{len(images)}".encode()))
                row.bytes_per_frame[kind] = stored / len(data) + ref
                row.encode_ms[kind] = min(enc) * 1000 / len(data)
                row.decode_ms[kind] = min(dec) * 1000 / len(data)
            row.bytes_per_media_s = sum(row.bytes_per_frame[k] * fps[k] for k in KINDS)
            row.cpu_ms_per_media_s = sum((row.encode_ms[k] + row.decode_ms[k]) * fps[k] for k in KINDS)
            subject = f"bench.{fs.label}.objref"
            psub = await js.pull_subscribe(subject, durable=f"c-{fs.label}-objref")
            data = [Raw().encode("glitch", im, i) for i, im in enumerate(fs.frames["glitch"])]
            times = []
            for _ in range(repeat):
                for i, d in enumerate(data):
                    name = f"g-{i}"

                    async def put(d=d, name=name) -> None:
                        await obj.put(name, d)

                    async def get(msg, name=name) -> None:
                        await obj.get(name)

                    times.append(await trip(subject, psub, name.encode(), put, get))
                    await obj.delete(name)
            row.round_trip_ms = statistics.median(times[2:]) * 1000
            extra.append(row)
        await nc.close()
    return extra


async def drain(nc, js, subject: str, frames: list[bytes], count: int) -> dict[str, float]:
    """Publish ``count`` glitch frames, then take them as the services' bus does; wall-clock rates.

    The fetches are streamsight.pull's pull requests bounded in messages (the glitch service's
    64) and in bytes (FETCH_BYTES), under one connection budget below nats-server's pending limit.
    """
    from nats.js.api import AckPolicy, ConsumerConfig

    from streamsight.pull import ByteBudget, PullFetcher

    durable = subject.replace(".", "-")
    await js.add_consumer("BENCH", ConsumerConfig(durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT))
    fetcher = PullFetcher(nc, "BENCH", durable, ByteBudget(FETCH_BUDGET))
    t = time.perf_counter()
    for i in range(count):
        await js.publish(subject, frames[i % len(frames)])
    published = time.perf_counter() - t
    t, got, nbytes, fetches = time.perf_counter(), 0, 0, 0
    while got < count:
        # The service asks for 64; asking for no more than is left keeps the last pull from waiting out its expiry.
        msgs = await fetcher.fetch(min(64, count - got), FETCH_BYTES, 1.0)
        fetches += 1
        for m in msgs:
            nbytes += len(m.data)
            await m.ack()
        got += len(msgs)
    drained = time.perf_counter() - t
    await fetcher.close()
    return {"frames_per_fetch": got / fetches, "publish_fps": count / published, "drain_fps": count / drained,
            "drain_mb_s": nbytes / drained / 1e6}


# -- the glitch classifier on lossy frames -----------------------------------------------------------


def classifier_check(fs: FrameSet, codecs_: list[Codec], clf: GlitchClassifier, n_clean: int) -> dict[str, dict]:
    """Scores of real and corrupted frames, raw and after each lossy option; the largest changes."""
    pick = np.linspace(0, len(fs.frames["glitch"]) - 1, n_clean).round().astype(int)
    rng = np.random.default_rng(22)
    clean = [fs.frames["glitch"][i] for i in pick]
    yuv = [fs.glitch_yuv[i] for i in pick]
    bad, what = [], []
    for j, i in enumerate(pick):
        kind = ("stripes", "stripes", "stripes", "green", "grey")[j % 5]
        img, _, desc = corrupt.corrupt(fs.frames["glitch"][i], fs.glitch_next[i], kind, rng)
        bad.append(img)
        what.append(desc)
    images = clean + bad
    # Corrupted frames have no decoder planes of their own: their yuv420p is made from the RGB.
    planes = yuv + [av.VideoFrame.from_ndarray(b, format="rgb24").reformat(format="yuv420p").to_ndarray() for b in bad]
    labels = ["clean"] * len(clean) + what
    cfg = DetectorConfig()
    t = time.process_time()
    base = clf.classify(images)
    out: dict[str, dict] = {"_classify_ms": {"per_frame": (time.process_time() - t) * 1000 / len(images)}}
    for codec in codecs_:
        if codec.name not in LOSSY:
            continue
        if codec.name == "half":
            seen = [codec.decode(codec.encode("glitch", im, i, p)) for i, (im, p) in enumerate(zip(images, planes))]
        else:
            seen = [codec.decode(codec.encode("glitch", im, i)) for i, im in enumerate(images)]
        scores = clf.classify(seen)

        def flips(test) -> list[str]:
            return [lab for lab, a, b in zip(labels, base, scores) if test(a) != test(b)]

        out[codec.name] = {
            "max_score_change": max(abs(a.corrupt - b.corrupt) for a, b in zip(base, scores)),
            "max_kind_change": max(abs(a.kinds[k] - b.kinds[k]) for a, b in zip(base, scores) for k in a.kinds),
            "open_flips": flips(lambda s: s.corrupt >= cfg.open_score),
            "suspect_flips": flips(lambda s: s.corrupt >= cfg.suspect_score),
            "misread_flips": flips(lambda s: s.misread),
            "band_flips": flips(lambda s: bool(s.bands)),
            "scores": [(lab, round(a.corrupt, 3), round(b.corrupt, 3)) for lab, a, b in zip(labels, base, scores)],
        }
    return out


# -- report -----------------------------------------------------------------------------------------


def print_table(rows: list[Row], checks: dict[str, dict[str, dict]]) -> None:
    fps = rates()
    print(f"\nper stream at ingest's default sampling: glitch RGB {fps['glitch']:g} fps, flow gray {fps['flow']:g} fps, "
          f"CNN RGB {fps['cnn']:g} fps; ratios against raw in the same run")
    head = (f"{'size':6} {'option':9} {'KB/glitch':>10} {'MB/media s':>10} {'x raw':>6} {'enc ms':>7} {'dec ms':>7} "
            f"{'CPU ms/media s':>14} {'x raw':>6} {'trip ms':>8} {'x raw':>6}  glitch score")
    print(head)
    print("-" * len(head))
    base = {r.size: r for r in rows if r.option == "raw"}
    for r in rows:
        b = base[r.size]
        trip = f"{r.round_trip_ms:8.2f} {r.round_trip_ms / b.round_trip_ms:6.2f}" if r.round_trip_ms and b.round_trip_ms else f"{'-':>8} {'-':>6}"
        check = checks.get(r.size, {}).get(r.option)
        if check:
            flips = sum(len(check[k]) for k in ("open_flips", "suspect_flips", "misread_flips", "band_flips"))
            score = f"max d={check['max_score_change']:.3f}, {flips} verdict flips"
        elif r.identical is not None:
            score = "identical pixels" if r.identical else "PIXELS DIFFER"
        else:
            score = "same pixels (raw copy)" if r.option in ("shm", "objstore") else ""
        print(f"{r.size:6} {r.option:9} {r.bytes_per_frame['glitch'] / 1000:10.1f} {r.bytes_per_media_s / 1e6:10.3f} "
              f"{r.bytes_per_media_s / b.bytes_per_media_s:6.3f} {r.encode_ms['glitch']:7.2f} {r.decode_ms['glitch']:7.2f} "
              f"{r.cpu_ms_per_media_s:14.2f} {r.cpu_ms_per_media_s / b.cpu_ms_per_media_s:6.2f} {trip}  {score}")
    print("enc/dec ms: CPU per glitch frame (producer/consumer); CPU ms/media s: encode+decode of all three consumers' "
          "frames; trip ms: median publish+fetch+ack of one glitch frame")
    for r in rows:
        if r.drain:
            d = r.drain
            print(f"sustained {r.size} {r.option}: publish {d['publish_fps']:.0f} glitch frames/s, byte-bounded fetch "
                  f"(64 messages / {FETCH_BYTES >> 20} MiB: {d['frames_per_fetch']:.1f} frames per fetch) {d['drain_fps']:.0f} frames/s = {d['drain_mb_s']:.0f} MB/s, "
                  f"{d['drain_fps'] / fps['glitch']:.0f} streams' glitch frames")
    for size, per in checks.items():
        print(f"classifier {size}: {per['_classify_ms']['per_frame']:.1f} CPU ms per glitch frame (1 thread), "
              f"{per['_classify_ms']['per_frame'] * fps['glitch']:.0f} ms per media s: the consumer's own work, for scale")
        for name, c in per.items():
            if name.startswith("_"):
                continue
            print(f"classifier {size} {name}: largest score change {c['max_score_change']:.3f} (any kind {c['max_kind_change']:.3f}); "
                  f"flips open {c['open_flips']}, suspect {c['suspect_flips']}, misread {c['misread_flips']}, bands {c['band_flips']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="media seconds sampled from the source")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check-frames", type=int, default=6, help="real frames (and as many corrupted) for the classifier check")
    parser.add_argument("--no-nats", action="store_true", help="skip the JetStream round trips and the object store")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()

    print(f"source: {SOURCE.name}; lz4 {'yes' if lz4f else 'not installed'}, zstandard {'yes' if zstandard else 'not installed'}")
    fsets = [sample(args.seconds, None), sample(args.seconds, (1920, 1080))]
    clf = GlitchClassifier(intra_threads=1)
    clf.warm_up()
    rows: list[Row] = []
    payloads: dict[tuple[str, str], dict[str, list[bytes]]] = {}
    checks: dict[str, dict[str, dict]] = {}
    rings: dict[str, SharedRing] = {}
    try:
        for fs in fsets:
            n = {k: len(v) for k, v in fs.frames.items()}
            g = fs.frames["glitch"][0]
            print(f"{fs.label}: {n} frames over {args.seconds:g} s; glitch {g.shape[1]}x{g.shape[0]} RGB; "
                  f"ingest's RGB conversion of a glitch frame {fs.rgb_convert_ms:.2f} CPU ms")
            cs = codecs()
            for codec in cs:
                row, payloads[(fs.label, codec.name)] = measure_codec(fs, codec, args.repeat)
                rows.append(row)
                if isinstance(codec, SharedRing):
                    rings[fs.label] = codec
            checks[fs.label] = classifier_check(fs, cs, clf, args.check_frames)
        if not args.no_nats:
            rows += asyncio.run(round_trips(rows, payloads, fsets, args.repeat))
        order = {fs.label: i for i, fs in enumerate(fsets)}
        rows.sort(key=lambda r: order[r.size])
        print_table(rows, checks)
        if args.json:
            args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "classifier": checks,
                                             "rgb_convert_ms": {fs.label: fs.rgb_convert_ms for fs in fsets}}, indent=1))
    finally:
        for ring in rings.values():
            ring.close()


if __name__ == "__main__":
    main()
