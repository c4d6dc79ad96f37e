"""The same input gives the same answer on a quiet and on a busy machine.

The real OpenArena recording (its first 30 s), with three corruption incidents planted into
it (green frames, a wrong-width read, grey frames), and a real Twitch chat replay, is
analysed twice through one stack of real processes: once on a quiet machine, once while two
busy-loop processes hold both cores. The two reports must agree: the same glitches, the same
highlights, every window scored once with the same modalities, and window features within
1e-3. No service may lose its NATS connection on the way.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from .conftest import metric
from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight.app.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SECONDS = 30.0
# (first frame time, last frame time, what): 1 s incidents, far enough apart to stay separate
PLANTED = [(6.0, 7.0, "green"), (14.0, 15.0, "stripes"), (22.0, 23.0, "grey")]


def _planted(rgb: np.ndarray, nxt: np.ndarray, kind: str) -> np.ndarray:
    from training.glitch.corrupt import fill, read_as, resize

    h, w, _ = rgb.shape
    if kind == "stripes":
        return resize(read_as(rgb, nxt, w - 6, h), w, h)
    bad, _, _ = fill(rgb, np.random.default_rng(0), kind, whole=True)
    return bad


def make_corrupted_clip(source: Path, out: Path) -> Path:
    """The first SECONDS of `source` with PLANTED incidents, re-encoded (H.264 + AAC)."""
    with av.open(str(source)) as inp, av.open(str(out), "w") as dst:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        fps = int(round(float(vin.average_rate)))
        vout = dst.add_stream("libx264", rate=fps)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast", "g": str(2 * fps), "bf": "0"}
        aout = dst.add_stream("aac", rate=ain.codec_context.sample_rate)
        frames = []
        for frame in inp.decode(vin):
            if frame.time >= SECONDS:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
        for i, rgb in enumerate(frames):
            t = i / fps
            for t0, t1, kind in PLANTED:
                if t0 <= t < t1:
                    rgb = _planted(rgb, frames[min(i + 1, len(frames) - 1)], kind)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in vout.encode(vf):
                dst.mux(packet)
        for packet in vout.encode():
            dst.mux(packet)
        inp.seek(0)
        for frame in inp.decode(ain):
            if frame.time >= SECONDS:
                break
            frame.pts = None
            for packet in aout.encode(frame):
                dst.mux(packet)
        for packet in aout.encode():
            dst.mux(packet)
    return out


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def _run(sup: Supervisor, source: Path, chat: Path, out: Path, stream_id: str) -> dict:
    options = JobOptions(source=str(source), chat=str(chat), out=out, gateway=sup.addresses()["gateway"], wait_s=400, stream_id=stream_id)
    asyncio.run(analyze(options, Progress(io.StringIO())))
    return json.loads((out / "report.json").read_text())


def _summary(doc: dict) -> dict:
    return {
        "state": doc["state"],
        "windows": [(w["index"], tuple(w["missing"])) for w in doc["windows"]],
        "glitches": [(g["kind"], g["start_s"], g["end_s"]) for g in sorted(doc["glitches"], key=lambda g: g["start_s"])],
        "highlights": [(h["start_s"], h["end_s"]) for h in doc["highlights"]],
    }


def test_quiet_and_loaded_runs_give_the_same_report(stack, stack_log, shared_data, tmp_path):
    sup, log_path = stack, stack_log
    clip = make_corrupted_clip(shared_data / "media" / "openarena_dm2.mp4", tmp_path / "openarena_corrupted.mp4")
    chat = shared_data / "chat" / "nlss" / "rechat-158202424.json"
    quiet = _run(sup, clip, chat, tmp_path / "quiet", "determinism-quiet")

    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        loaded = _run(sup, clip, chat, tmp_path / "loaded", "determinism-loaded")
    finally:
        stop.set()
        for hog in hogs:
            hog.join(10)
    shutil.copy(log_path, tmp_path / "stack.log")

    q, l = _summary(quiet), _summary(loaded)
    print("quiet ", json.dumps(q))
    print("loaded", json.dumps(l))
    assert q["state"] == "ended" and l["state"] == "ended"
    assert [w for w, _ in q["windows"]] == list(range(3)), "every window scored exactly once"
    assert all(not missing for _, missing in q["windows"]), "quiet: every modality arrived"
    assert q == l
    assert {kind for kind, _, _ in q["glitches"]} >= {"green", "grey", "stripes"}, "the planted incidents are found"
    for wq, wl in zip(quiet["windows"], loaded["windows"]):
        assert wq["features"].keys() == wl["features"].keys()
        for name, value in wq["features"].items():
            assert wl["features"][name] == pytest.approx(value, abs=1e-3), f"window {wq['index']} {name}"
    for service in ("vision", "audio", "glitch", "fusion"):  # every stage let go of both streams
        assert metric(sup, service, "streamsight_stage_active_streams", {"stage": service}) == 0.0, service
    log_text = log_path.read_text()
    assert "nats disconnected" not in log_text, "a service lost its NATS connection"
    assert "Slow Consumer" not in log_text
