"""Held-out evaluation of the glitch detector, on footage never used in training.

Sources:
- real: ../shared/data/media/bigbuckbunny.mp4 (1280x720, 25 fps, 5.3 s) and vtest.avi
  (768x576, 10 fps, 79.5 s); never seen in training;
- generated: scenes with seeds EVAL_SEEDS (not in training.glitch.dataset's train or val seeds).

1. Frame level (the classifier alone, a frame is called corrupted when its score reaches the
   detector's open_score): clean frames (the original decode and an H.264 re-encode) against
   the same frames with stripes, green and grey corruption, and frames of packet-damaged
   re-encodes labelled by PSNR against the clean decode (< 30 dB corrupted, see damage.py).
2. Incident level, through the real ingest pipeline (PyAV decode, 2 fps glitch sampling,
   decoder signals) and the detector with its default settings: clips with planted 1 s
   incidents (stripes, green, grey in the source; garbled and dropped H.264 packets), and clean
   clips for false alarms. An incident is found when a detected incident overlaps it; the
   onset delay is the media time of the sample that opened it minus the true start.

`python -m training.glitch.evaluate` writes services/glitch/models/glitch_cnn.eval.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from services.glitch.classifier import GlitchClassifier
from services.glitch.detector import DetectorConfig, GlitchEvent, Signal, StreamDetector
from services.ingest.items import FrameSignals, SampledFrame
from services.ingest.pipeline import IngestPipeline
from training.glitch import corrupt, damage, scenes

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "media"
OUT = Path(__file__).resolve().parents[2] / "services" / "glitch" / "models" / "glitch_cnn.eval.json"
EVAL_SEEDS = range(7000, 7006)
SYNTHETIC = ("stripes", "green", "grey")


def real_frames(name: str) -> tuple[np.ndarray, int]:
    """Frames of a shared media file as ingest's glitch consumer sees them, and the fps."""
    frames, _, _ = scenes.decode(MEDIA / name)
    return frames, (25 if name.startswith("bigbuck") else 10)


def generated_frames(seed: int, seconds: float = 12.0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    spec = scenes.random_spec(rng, seed, frames=int(seconds * scenes.FPS))
    spec.width, spec.height = ((640, 360), (960, 540))[seed % 2]
    spec.crf = min(spec.crf, 38)
    return scenes.render(spec, rng), scenes.FPS


# -- frame level -------------------------------------------------------------------------------
@dataclass
class FrameSet:
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # 1 corrupted
    kinds: list[str] = field(default_factory=list)


def frame_level(clf: GlitchClassifier, frames: np.ndarray, fps: int, rng: np.random.Generator, work: Path, out: FrameSet, n: int = 12) -> None:
    src = work / "clean.mkv"
    scenes.encode(frames, src, crf=23, gop=2 * fps, fps=fps)
    clean, _, _ = scenes.decode(src)
    pick = np.linspace(0, len(clean) - 2, n).astype(int)
    batch: list[tuple[np.ndarray, int, str]] = []
    for i in pick:
        batch.append((frames[i], 0, "clean"))
        batch.append((clean[i], 0, "clean"))
        kind = SYNTHETIC[int(rng.integers(0, 3))]
        batch.append((corrupt.corrupt(clean[i], clean[i + 1], kind, rng)[0], 1, kind))
    packets = sum(1 for _ in scenes_packets(src))
    dst = work / "damaged.mkv"
    for _ in range(3):
        damage.damage_file(src, dst, damage.pick_targets(packets, 2 * fps, rng), rng)
        labelled = damage.label_frames(clean, dst)
        for f in labelled[:: max(1, len(labelled) // n)]:
            batch.append((f.image, int(f.corrupted), "macroblocking" if f.corrupted else "clean"))
    for k in range(0, len(batch), 16):
        part = batch[k : k + 16]
        for (img, label, kind), score in zip(part, clf.classify([b[0] for b in part])):
            out.scores.append(score.corrupt)
            out.labels.append(label)
            out.kinds.append(kind)


def scenes_packets(path: Path):
    import av

    with av.open(str(path)) as c:
        yield from (p for p in c.demux(c.streams.video[0]) if p.size)


def pr(fs: FrameSet, threshold: float) -> dict:
    s, y = np.asarray(fs.scores), np.asarray(fs.labels)
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    per_kind = {k: round(float(pred[[i for i, kk in enumerate(fs.kinds) if kk == k]].mean()), 4) for k in sorted(set(fs.kinds))}
    return {"frames": int(len(y)), "corrupted": int(y.sum()), "precision": round(tp / max(1, int(pred.sum())), 4),
            "recall": round(tp / max(1, int(y.sum())), 4), "called_corrupted_share_by_kind": per_kind}


# -- incident level ----------------------------------------------------------------------------
@dataclass
class Truth:
    kind: str
    start_s: float
    end_s: float


def run_detector(path: Path, clf: GlitchClassifier, config: DetectorConfig) -> tuple[list[GlitchEvent], float, int]:
    """Ingest a file (real pipeline), classify its glitch frames, run the detector."""
    det = StreamDetector(config)
    events: list[GlitchEvent] = []
    frames = 0
    duration = 0.0

    async def go() -> None:
        nonlocal frames, duration
        async for item in IngestPipeline(str(path)).items():
            if isinstance(item, SampledFrame) and item.consumer == "glitch":
                det.add_frame(item.media_time, clf.classify([item.image])[0], item.image)
                frames += 1
                duration = max(duration, item.media_time)
            elif isinstance(item, FrameSignals):
                det.add_signals([Signal(s.media_time, s.is_corrupt, s.missing_frames, s.frozen, s.key_frame) for s in item.signals], item.decode_errors)
                events.extend(det.advance())
        events.extend(det.finish())

    asyncio.run(go())
    return events, duration, frames


def plant_synthetic(frames: np.ndarray, fps: int, rng: np.random.Generator, every_s: float = 6.0) -> tuple[np.ndarray, list[Truth]]:
    """1 s incidents of stripes, green and grey in turn, every `every_s` seconds from 2 s."""
    out = frames.copy()
    truths = []
    t, k = 2.0, 0
    while t + 1.0 < len(frames) / fps - 1.0:
        kind = SYNTHETIC[k % 3]
        a, b = int(round(t * fps)), int(round((t + 1.0) * fps))
        setting = int(rng.integers(0, 1 << 30))
        for i in range(a, b):  # one corruption setting for the whole incident, as a broken source would
            out[i] = corrupt.corrupt(frames[i], frames[min(i + 1, len(frames) - 1)], kind, np.random.default_rng(setting))[0]
        truths.append(Truth(kind, a / fps, (b - 1) / fps))
        t += every_s
        k += 1
    return out, truths


def plant_damage(src: Path, dst: Path, clean: np.ndarray, fps: int, rng: np.random.Generator, mode: str) -> tuple[list[Truth], list[Truth]]:
    """Garble or drop P-frame packets at a few places.

    Truth: from the damaged packet's frame to the last frame labelled corrupted (PSNR < 30 dB)
    after it; damage that left no frame under 30 dB is no incident (and not counted), but a
    detection there is no false alarm either (the decoder did see damage): the second list
    holds every damaged packet's span up to the next keyframe.
    """
    packets = sum(1 for _ in scenes_packets(src))
    gop = 2 * fps
    targets: dict[int, str] = {}
    for t in np.arange(1.5, packets / fps - 2.0, 5.0):
        i = int(t * fps)
        if i % gop == 0:
            i += 1
        targets[i] = mode
        if mode == "drop":
            targets[i + 1] = mode
    damage.damage_file(src, dst, targets, rng)
    labelled = damage.label_frames(clean, dst)
    truths: list[Truth] = []
    for f in labelled:
        if not f.corrupted:
            continue
        t = f.number / fps
        if truths and t - truths[-1].end_s <= 0.5:
            truths[-1].end_s = t
        else:
            truths.append(Truth("macroblocking", t, t))
    for tr in truths:  # the incident starts with the damaged packet's frame, even if that frame still looked fine
        causes = [i / fps for i in targets if i / fps <= tr.start_s + 1e-6 and tr.start_s - i / fps < gop / fps]
        if causes:
            tr.start_s = max(causes)
    damaged = [Truth("damage", i / fps, (i // gop + 1) * gop / fps) for i in targets]
    return truths, damaged


def match(truths: list[Truth], events: list[GlitchEvent], close_s: float, ignore: list[Truth] = ()) -> dict:
    starts = [e for e in events if e.phase == "start"]
    ends = {e.incident: e for e in events if e.phase == "end"}
    incidents = [(s, ends.get(s.incident, s)) for s in starts]
    found, delays, kinds_ok, used = 0, [], 0, set()
    for tr in truths:
        hit = [(s, e) for s, e in incidents if s.start_s <= tr.end_s + 0.01 and e.end_s >= tr.start_s - 0.01]
        if hit:
            found += 1
            s, e = hit[0]
            used.add(s.incident)
            delays.append(round(s.end_s - tr.start_s, 3))  # the sample that opened it, media time
            kinds_ok += e.kind == tr.kind or (tr.kind == "macroblocking" and e.kind in ("decode_error", "grey", "green"))
    excused = {s.incident for s, e in incidents for g in ignore if s.start_s <= g.end_s and e.end_s >= g.start_s}
    false = [s.incident for s, _ in incidents if s.incident not in used | excused]
    missed = [tr.kind for tr in truths if not any(s.start_s <= tr.end_s + 0.01 and e.end_s >= tr.start_s - 0.01 for s, e in incidents)]
    return {"truths": len(truths), "found": found, "kind_right": kinds_ok, "delays_s": delays, "false_alarms": len(false),
            "missed_kinds": missed, "false_alarm_kinds": [s.kind for s, _ in incidents if s.incident in false]}


def main() -> None:
    started = time.time()
    clf = GlitchClassifier(intra_threads=2)
    config = DetectorConfig()
    rng = np.random.default_rng(11)
    report: dict = {"detector": asdict(config), "frame_level": {}, "incident_level": {}, "clean_runs": {}}
    sources = {"bigbuckbunny": lambda: real_frames("bigbuckbunny.mp4"), "vtest": lambda: real_frames("vtest.avi")}
    sources.update({f"generated-{s}": (lambda s=s: generated_frames(s)) for s in EVAL_SEEDS})
    clean_seconds, clean_false = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fs_all = {"real": FrameSet(), "generated": FrameSet()}
        for name, load in sources.items():
            frames, fps = load()
            group = "generated" if name.startswith("generated") else "real"
            frame_level(clf, frames, fps, rng, work, fs_all[group], n=16 if group == "real" else 8)
            # clean runs: the original file for real sources, the clean encode for generated ones
            clean_file = MEDIA / ("bigbuckbunny.mp4" if name == "bigbuckbunny" else "vtest.avi") if group == "real" else work / "clean.mkv"
            if group == "generated":
                scenes.encode(frames, clean_file, crf=23, gop=2 * fps, fps=fps)
            events, dur, _ = run_detector(clean_file, clf, config)
            n_false = sum(e.phase == "start" for e in events)
            report["clean_runs"][name] = {"seconds": round(dur, 2), "incidents": n_false,
                                          "kinds": [e.kind for e in events if e.phase == "start"]}
            clean_seconds += dur
            clean_false += n_false
            # planted synthetic incidents
            planted, truths = plant_synthetic(frames, fps, rng)
            path = work / "planted.mkv"
            scenes.encode(planted, path, crf=23, gop=2 * fps, fps=fps)
            events, dur, _ = run_detector(path, clf, config)
            inc = {"synthetic": match(truths, events, config.close_after_s)}
            # packet damage: garbled and dropped
            src = work / "src.mkv"
            scenes.encode(frames, src, crf=23, gop=2 * fps, fps=fps)
            clean, _, _ = scenes.decode(src)
            for mode in ("garble", "drop"):
                dst = work / f"{mode}.mkv"
                truths, damaged = plant_damage(src, dst, clean, fps, rng, mode)
                events, dur, _ = run_detector(dst, clf, config)
                inc[mode] = match(truths, events, config.close_after_s, damaged)
            report["incident_level"][name] = inc
            print(name, json.dumps(inc), report["clean_runs"][name], f"{time.time() - started:.0f}s", file=sys.stderr)  # noqa: T201
        for group, fs in fs_all.items():
            report["frame_level"][group] = {"at_open_score": pr(fs, config.open_score), "at_0.5": pr(fs, 0.5)}
        both = FrameSet(fs_all["real"].scores + fs_all["generated"].scores, fs_all["real"].labels + fs_all["generated"].labels,
                        fs_all["real"].kinds + fs_all["generated"].kinds)
        report["frame_level"]["all"] = {"at_open_score": pr(both, config.open_score), "at_0.5": pr(both, 0.5)}
    totals = {"truths": 0, "found": 0, "kind_right": 0, "false_alarms": 0, "delays_s": [], "missed_kinds": [], "false_alarm_kinds": []}
    for inc in report["incident_level"].values():
        for r in inc.values():
            for k in totals:
                totals[k] += r[k]
    d = np.asarray(totals.pop("delays_s") or [0.0])
    totals.update(recall=round(totals["found"] / max(1, totals["truths"]), 4), delay_mean_s=round(float(d.mean()), 3),
                  delay_max_s=round(float(d.max()), 3), within_1s=round(float((d <= 1.0).mean()), 4))
    report["incident_totals"] = totals
    report["clean_totals"] = {"seconds": round(clean_seconds, 1), "false_alarms": clean_false,
                              "per_hour": round(clean_false / max(clean_seconds, 1e-9) * 3600, 2)}
    report["eval_seconds"] = round(time.time() - started, 1)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("frame_level", "incident_totals", "clean_totals")}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
