"""Real decoder damage: H.264 packets garbled, truncated or dropped, decoded by PyAV (FFmpeg).

`damage_file` copies the packets of a clean encode into a new Matroska file and damages the
chosen ones (what a lossy network or a broken muxer does to a live stream). `label_frames`
decodes the damaged file and compares every frame with the clean decode (same frame number,
each pixel also against the 3 clean frames before it, keeping the best match) and calls it
corrupted when the damage is visible: PSNR under 30 dB over the whole frame (smeared macroblocks
or grey/green concealment across the picture), or at least VISIBLE_BLOCKS blocks of 16x16 pixels
each at least VISIBLE_BLOCK_RMSE off (a smeared figure or a broken sprite, which a viewer sees
while the frame's PSNR stays over 30 dB). The per-pixel error map marks where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from training.glitch import scenes

CORRUPT_PSNR_DB = 30.0
# Local damage: in the first evaluation, 35 frames in 32-38 dB that the detector called bad had
# visibly smeared people or split sprites in a few blocks; undamaged-looking frames after damage
# had no 16x16 block over 26 RMSE.
BLOCK = 16  # pixels
VISIBLE_BLOCK_RMSE = 30.0  # on 0-255 RGB
VISIBLE_BLOCKS = 2
REFERENCE_LAG = 3  # frames
ERROR_STEP = 2  # the error map samples every 2nd pixel of every 2nd row: 4x cheaper, same PSNR to a few 0.1 dB
MODES = ("garble", "truncate", "drop")


def damage_file(src: Path, dest: Path, targets: dict[int, str], rng: np.random.Generator) -> None:
    """Copy `src`'s video packets into `dest` (Matroska), damaging packet i with targets[i]."""
    with av.open(str(src)) as inp, av.open(str(dest), "w", format="matroska") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for i, packet in enumerate(p for p in inp.demux(vin) if p.size):
            mode = targets.get(i)
            if mode == "drop":
                continue
            if mode in ("garble", "truncate"):
                data = bytearray(bytes(packet))
                if mode == "garble":  # overwrite a share of the slice data, headers kept
                    share = float(rng.uniform(0.005, 0.05))
                    for j in rng.integers(min(len(data) - 1, 16), len(data), size=max(4, int(len(data) * share))):
                        data[j] = int(rng.integers(0, 256))
                else:
                    data = data[: max(8, int(len(data) * rng.uniform(0.1, 0.8)))]
                new = av.Packet(bytes(data))
                new.pts, new.dts, new.time_base, new.is_keyframe = packet.pts, packet.dts, packet.time_base, packet.is_keyframe
                packet = new
            packet.stream = vout
            out.mux(packet)


def mse_to_db(mse: float) -> float:
    """PSNR in dB of a mean squared error on 0-255 values (99 for none)."""
    return 99.0 if mse <= 1e-10 else 10.0 * float(np.log10(255.0**2 / mse))


def looks_corrupted(psnr_db: float, blocks: int) -> bool:
    """The label: visible damage over the whole frame (PSNR) or in a few blocks."""
    return psnr_db < CORRUPT_PSNR_DB or blocks >= VISIBLE_BLOCKS


@dataclass
class DamagedFrame:
    """One decoded frame of a damaged file, its clean reference and its label."""

    number: int
    image: np.ndarray
    clean: np.ndarray
    psnr_db: float
    error: np.ndarray  # per-pixel mean squared error over RGB on every ERROR_STEP-th pixel, float32
    is_corrupt_flag: bool
    visible_blocks: int  # blocks of BLOCK x BLOCK pixels at least VISIBLE_BLOCK_RMSE off (visible_blocks(error))

    @property
    def corrupted(self) -> bool:
        return looks_corrupted(self.psnr_db, self.visible_blocks)


def visible_blocks(error: np.ndarray) -> int:
    """Count the visibly wrong blocks in an error map (every ERROR_STEP-th pixel, see DamagedFrame)."""
    b = BLOCK // ERROR_STEP
    h, w = error.shape[0] // b * b, error.shape[1] // b * b
    blocks = error[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    return int((blocks >= VISIBLE_BLOCK_RMSE**2).sum())


def label_frames(clean_frames: np.ndarray, damaged: Path) -> list[DamagedFrame]:
    """Decode `damaged` and pair each frame with the clean frame of the same number."""
    images, numbers, flags = scenes.decode(damaged)
    out: list[DamagedFrame] = []
    for img, num, flag in zip(images, numbers, flags):
        if not 0 <= num < len(clean_frames) or img.shape != clean_frames[num].shape:
            continue
        ref = clean_frames[num]
        # Each pixel is compared with the clean frame of the same number and the REFERENCE_LAG
        # before it, keeping the smallest error: a decoder that lost data shows older picture
        # content, which looks correct to a viewer (a shifted but intact pan is not corruption).
        sub = img[::ERROR_STEP, ::ERROR_STEP].astype(np.float32)
        err = ((sub - ref[::ERROR_STEP, ::ERROR_STEP].astype(np.float32)) ** 2).mean(axis=2)
        if looks_corrupted(mse_to_db(float(err.mean())), visible_blocks(err)):  # only then can older frames matter
            for k in range(max(0, num - REFERENCE_LAG), num):
                np.minimum(err, ((sub - clean_frames[k][::ERROR_STEP, ::ERROR_STEP].astype(np.float32)) ** 2).mean(axis=2), out=err)
        out.append(DamagedFrame(int(num), img, ref, mse_to_db(float(err.mean())), err, flag, visible_blocks(err)))
    return out


def pick_targets(n_packets: int, gop: int, rng: np.random.Generator, events: int = 2) -> dict[int, str]:
    """A few damaged packets, mostly P-frames (keyframes too, sometimes), spread over the clip."""
    targets: dict[int, str] = {}
    for _ in range(events):
        i = int(rng.integers(1, n_packets - 1))
        if i % gop == 0 and rng.random() < 0.7:
            i += 1
        mode = str(rng.choice(MODES, p=[0.5, 0.25, 0.25]))
        for k in range(int(rng.integers(1, 3)) if mode == "drop" else 1):
            targets[min(n_packets - 1, i + k)] = mode
    return targets
