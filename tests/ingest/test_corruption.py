"""Damaged H.264 (garbled bytes, truncated or dropped packets) shows up in the decoder signals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from services.ingest.items import FrameSignals, WindowRecord
from services.ingest.pipeline import IngestPipeline
from streamsight.app.synth import SynthInfo, make_media
from streamsight.telemetry import DECODE_ERRORS

DAMAGED = (30, 45, 75, 100, 130)  # packet numbers (decode order); none is a keyframe (every 60th)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    path = tmp_path_factory.mktemp("corrupt") / "clean.mp4"
    return make_media(path, duration=6.0, width=320, height=180, fps=30, audio="none", bframes=0,
                      keyframe_interval=2.0, segments=[(0.0, 6.0, "pan")])


def damage(src: Path, dest: Path, mode: str, targets: tuple[int, ...] = DAMAGED) -> None:
    """Copy the H.264 packets into an MKV, damaging the ``targets``."""
    rng = np.random.default_rng(7)
    with av.open(str(src)) as inp, av.open(str(dest), "w", format="matroska") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for i, packet in enumerate(p for p in inp.demux(vin) if p.size):
            if i in targets:
                if mode == "drop":
                    continue
                data = bytearray(bytes(packet))
                if mode == "garble":  # overwrite 5% of the slice data (the headers stay)
                    for j in rng.integers(len(data) // 4, len(data), size=max(8, len(data) // 20)):
                        data[j] = int(rng.integers(0, 256))
                elif mode == "truncate":
                    data = data[: len(data) // 3]
                new = av.Packet(bytes(data))
                new.pts, new.dts, new.time_base, new.is_keyframe = packet.pts, packet.dts, packet.time_base, False
                packet = new
            packet.stream = vout
            out.mux(packet)


def ingest(path: Path) -> tuple[list, int, list[WindowRecord]]:
    async def run() -> tuple[list, int, list[WindowRecord]]:
        signals, errors, windows = [], 0, []
        async for item in IngestPipeline(str(path)).items():
            if isinstance(item, FrameSignals):
                signals += item.signals
                errors += item.decode_errors
            elif isinstance(item, WindowRecord):
                windows.append(item)
        return signals, errors, windows
    return asyncio.run(run())


def test_clean_copy_has_no_signals(clean, tmp_path) -> None:
    damage(clean.path, tmp_path / "copy.mkv", "none")
    signals, errors, _ = ingest(tmp_path / "copy.mkv")
    assert len(signals) == clean.frame_count and errors == 0
    assert not any(s.is_corrupt or s.missing_frames for s in signals)


def test_dropped_packets_raise_no_error_but_show_as_gaps(clean, tmp_path) -> None:
    damage(clean.path, tmp_path / "drop.mkv", "drop")
    signals, errors, windows = ingest(tmp_path / "drop.mkv")
    assert errors == 0
    assert len(signals) == clean.frame_count - len(DAMAGED)
    gaps = [s for s in signals if s.missing_frames]
    assert [s.missing_frames for s in gaps] == [1] * len(DAMAGED)
    # Each gap sits where a packet went missing (frame i+1 follows frame i-1).
    assert [round(s.media_time * clean.fps) - 1 for s in gaps] == list(DAMAGED)
    assert sum(w.gaps for w in windows) == len(DAMAGED) and sum(w.missing_frames for w in windows) == len(DAMAGED)


def test_garbled_packets_give_corrupt_frames_or_decode_errors(clean, tmp_path) -> None:
    damage(clean.path, tmp_path / "garble.mkv", "garble")
    signals, errors, windows = ingest(tmp_path / "garble.mkv")
    corrupt = [round(s.media_time * clean.fps) for s in signals if s.is_corrupt]
    # Every damaged packet is seen: as a corrupt frame, a decode error or a lost frame.
    lost = clean.frame_count - len(signals)
    assert len(set(corrupt) & set(DAMAGED)) + errors + lost >= len(DAMAGED)
    assert corrupt, "error concealment should flag at least one frame as corrupt"
    assert sum(w.corrupt_frames for w in windows) == len(corrupt)


def test_truncated_packets_give_decode_errors(clean, tmp_path) -> None:
    damage(clean.path, tmp_path / "trunc.mkv", "truncate")
    counted_before = DECODE_ERRORS._value.get()
    signals, errors, windows = ingest(tmp_path / "trunc.mkv")
    assert errors >= 1
    assert DECODE_ERRORS._value.get() - counted_before == errors, "streamsight_ingest_decode_errors_total counts each one"
    damaged_seen = sum(1 for s in signals if s.is_corrupt or s.missing_frames)
    assert errors + damaged_seen >= len(DAMAGED)
    assert sum(w.decode_errors for w in windows) == errors
