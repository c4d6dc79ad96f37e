"""Static int8 quantization of a converted PANNs ONNX tagger, and its agreement with fp32.

    from training.audio.quantize import quantize_tagger, agreement, split_sounds
    calib, held_out = split_sounds(Path("sounds"), holdout=["minigun.ogg"])
    quantize_tagger(Path("cnn14.onnx"), Path("cnn14.int8.onnx"), calib)
    print(agreement(Path("cnn14.onnx"), Path("cnn14.int8.onnx"), held_out))

The quantized model is QDQ (QuantizeLinear/DequantizeLinear around the body's Conv,
Relu and AveragePool nodes; per-channel int8 weights, uint8 activations, the
combination onnxruntime's x86 kernels run fastest with VNNI). It has the same inputs,
outputs and metadata as the fp32 file, so the service's OnnxTagger loads it unchanged.
Kept in fp32: the front end (STFT convolutions, power, mel projection, log: dB
values over a ~100 dB range lose too much at 8 bits, and it is ~2 % of the time),
bn0, the pooling head and the two fully connected layers (small, and they set the
logits directly).

Calibration runs the fp32 model on real audio: each file is decoded with PyAV to
mono at the model's rate, cut into 10 s windows (the last one, or a short file,
filled by looping the file), and each window is fed as the service feeds it: five
2 s segments as one batch. Activation ranges are the 99.999th percentiles of
histograms over those batches, not MinMax: on a full-size random-weight Cnn14 a few
outlier activations made MinMax scales so coarse that the held-out embedding was
off by 43 % (audio-dependent logit correlation 0.78); the percentile ranges gave
3.4 % (0.998). onnxruntime keeps every calibration batch's activations in memory
for the histograms, so at most `max_windows` windows (default 32, taken from the
files in turn) are used; a few dozen varied windows are enough for ranges.

Only onnx and onnxruntime are needed (no torch), so a user can quantize a model
converted elsewhere: `python -m training.audio.quantize --model cnn14.onnx --calibration DIR`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

WINDOW_S = 10.0
SEGMENT_S = 2.0
AUDIO_SUFFIXES = {".ogg", ".wav", ".flac", ".mp3", ".m4a", ".aac", ".opus", ".mp4", ".mkv", ".webm"}
FRONT_END_PREFIXES = ("/spectrogram_extractor/", "/logmel_extractor/", "/bn0/")
QUANTIZED_OPS = ["Conv", "Relu", "AveragePool"]
PERCENTILE = 99.999

# The split of ../shared/data/sounds used by the tests, the benchmark and the README:
# these files are never used for calibration. Both copies of the laugh are held out
# (voice_classic_laugh.ogg and voice_default_laugh.ogg are the same file), so held-out
# audio never leaks into calibration; split_sounds checks content, not only names.
SHARED_SOUNDS_HOLDOUT = (
    "minigun.ogg",
    "shotgunfire.ogg",
    "speech_rear_left.wav",
    "voice_classic_laugh.ogg",
    "voice_default_laugh.ogg",
    "voice_default_boring.ogg",
)


def decode(path: Path, rate: int) -> np.ndarray:
    """A file's first audio stream as mono float32 at `rate` Hz (PyAV, as the ingest service decodes)."""
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                chunks.extend(resampler.resample(frame))
            chunks.extend(resampler.resample(None))
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    if not chunks:
        raise ValueError(f"{path} decoded to no audio")
    return np.concatenate([c.to_ndarray().reshape(-1) for c in chunks]).astype(np.float32)


def windows(audio: np.ndarray, rate: int) -> np.ndarray:
    """(n, 10 s) windows covering `audio`; the last is completed by looping the audio from its start."""
    size = int(WINDOW_S * rate)
    count = max(1, int(np.ceil(audio.size / size)))
    return np.resize(audio, count * size).reshape(count, size)  # np.resize repeats cyclically


def segments(window: np.ndarray, rate: int) -> np.ndarray:
    """A 10 s window as the service's tagger feeds it: (5, 2 s) segments."""
    size = int(SEGMENT_S * rate)
    return window[: window.size // size * size].reshape(-1, size)


def audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def split_sounds(folder: Path, holdout: list[str] | tuple[str, ...] | None = None) -> tuple[list[Path], list[Path]]:
    """(calibration files, held-out files) of the audio files in `folder`.

    `holdout` names the held-out files; None holds out every fourth file by name.
    Files with the same content as a held-out file are held out too, and a file
    present twice (same content, two names) is used once.
    """
    files = audio_files(folder)
    if not files:
        raise ValueError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {folder}")
    if holdout is None:
        held = set(files[::4])
    else:
        names = {p.name: p for p in files}
        unknown = sorted(set(holdout) - set(names))
        if unknown:
            raise ValueError(f"held-out files not in {folder}: {unknown}")
        held = {names[n] for n in holdout}
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    held_digests = {digest[p] for p in held}
    calibration, seen = [], set()
    for p in files:
        if p in held or digest[p] in held_digests or digest[p] in seen:
            continue
        seen.add(digest[p])
        calibration.append(p)
    held_out, seen = [], set()
    for p in files:
        if (p in held or digest[p] in held_digests) and digest[p] not in seen:
            seen.add(digest[p])
            held_out.append(p)
    if not calibration:
        raise ValueError(f"no calibration files left in {folder} after holding out {sorted(p.name for p in held_out)}")
    return calibration, held_out


def model_rate(model_path: Path) -> int:
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    if "sample_rate" not in meta:
        raise ValueError(f"{model_path} has no sample_rate metadata: was it made by training.audio.convert_panns?")
    return int(meta["sample_rate"])


def batches(files: list[Path], rate: int, max_windows: int | None = None) -> Iterator[np.ndarray]:
    """(5, 2 s) segment batches of the files' 10 s windows: first windows of all files, then second ones...

    At most `max_windows` batches (None: all).
    """
    per_file = [windows(decode(path, rate), rate) for path in files]
    order = []
    for rank in range(max(len(ws) for ws in per_file)):
        order.extend(ws[rank] for ws in per_file if rank < len(ws))
    for window in order[:max_windows]:
        yield segments(window, rate)


class AudioCalibrationReader(CalibrationDataReader):
    """Feeds the waveform input with the segment batches of real audio files."""

    def __init__(self, files: list[Path], rate: int, input_name: str = "waveform", max_windows: int | None = 32) -> None:
        self._feeds = ({input_name: b} for b in batches(files, rate, max_windows))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_tagger(fp32_path: Path, int8_path: Path, calibration_files: list[Path], max_windows: int = 32) -> Path:
    """Write the statically quantized (QDQ int8) twin of a converted PANNs tagger."""
    if not calibration_files:
        raise ValueError("no calibration files")
    rate = model_rate(fp32_path)
    source = onnx.load(str(fp32_path), load_external_data=False)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantize_static.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        nodes = onnx.load(str(prepared), load_external_data=False).graph.node
        exclude = [n.name for n in nodes if n.name.startswith(FRONT_END_PREFIXES)]
        if not exclude:
            raise ValueError(f"{fp32_path}: no front-end nodes found; not a graph from training.audio.convert_panns")
        quantize_static(
            str(prepared),
            str(int8_path),
            AudioCalibrationReader(calibration_files, rate, source.graph.input[0].name, max_windows),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=exclude,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": PERCENTILE},
        )
    out = onnx.load(str(int8_path))
    del out.metadata_props[:]
    for prop in source.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    out.metadata_props.add(key="quantization", value=f"int8 QDQ static, per-channel weights, percentile {PERCENTILE} calibration")
    out.metadata_props.add(key="calibration_files", value=",".join(p.name for p in calibration_files))
    onnx.save(out, str(int8_path))
    return int8_path


def _logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def agreement(fp32_path: Path, int8_path: Path, files: list[Path], threads: int = 1) -> dict[str, float]:
    """How closely the int8 model follows the fp32 one on `files` (audio NOT used for calibration).

    Per 2 s segment (the unit the service scores):
    - prob_max_abs, prob_mean_abs: |p_int8 - p_fp32| over the 527 clipwise probabilities.
    - top10_overlap: mean share of fp32's 10 highest classes among int8's 10 highest.
    A random-weight model's probabilities sit in a narrow band, so these can look fine
    for a broken model; hence also:
    - logit_corr: correlation of the pre-sigmoid logits (recovered as log(p/(1-p)))
      across classes and segments; a model that lost its inputs' information would
      still share the fixed per-class bias, so
    - contrast_corr: the same after removing each class's mean over segments: only the
      part of the output that depends on the audio. A quantization that flattens or
      scrambles activations drives this towards 0 while the probabilities stay close.
    - logit_snr_db: variance of that audio-dependent part over the variance of the
      int8 error, in dB (0 dB: the error is as large as the signal).
    - embedding_rel_err: ||e_int8 - e_fp32|| / ||e_fp32|| of the 2048-d embedding.
    """
    if not files:
        raise ValueError("agreement needs at least one held-out audio file")
    rate = model_rate(fp32_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)]
    probs: list[list[np.ndarray]] = [[], []]
    embeds: list[list[np.ndarray]] = [[], []]
    for batch in batches(files, rate):
        for i, session in enumerate(sessions):
            p, e = session.run(["clipwise_output", "embedding"], {"waveform": batch})
            probs[i].append(p)
            embeds[i].append(e)
    p32, p8 = (np.concatenate(p) for p in probs)
    e32, e8 = (np.concatenate(e).astype(np.float64) for e in embeds)
    top32 = np.argsort(-p32, axis=1)[:, :10]
    top8 = np.argsort(-p8, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10.0 for a, b in zip(top32, top8)])
    l32, l8 = _logits(p32), _logits(p8)
    c32, c8 = l32 - l32.mean(axis=0), l8 - l8.mean(axis=0)
    error = np.var(l8 - l32)
    return {
        "segments": float(p32.shape[0]),
        "prob_max_abs": float(np.abs(p8 - p32).max()),
        "prob_mean_abs": float(np.abs(p8 - p32).mean()),
        "top10_overlap": float(overlap),
        "logit_corr": _corr(l32, l8),
        "contrast_corr": _corr(c32, c8),
        "logit_snr_db": float(10.0 * np.log10(np.var(c32) / error)) if error > 0 else float("inf"),
        "embedding_rel_err": float(np.linalg.norm(e8 - e32) / max(np.linalg.norm(e32), 1e-12)),
    }


def format_agreement(figures: dict[str, float]) -> str:
    return (
        f"{int(figures['segments'])} held-out 2 s segments: |p| max {figures['prob_max_abs']:.4f} "
        f"mean {figures['prob_mean_abs']:.4f}, top-10 overlap {figures['top10_overlap']:.2f}, "
        f"logit corr {figures['logit_corr']:.4f}, audio-dependent logit corr {figures['contrast_corr']:.4f} "
        f"(SNR {figures['logit_snr_db']:.1f} dB), embedding rel. error {figures['embedding_rel_err']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="quantize a converted PANNs ONNX tagger to int8 (QDQ)")
    parser.add_argument("--model", type=Path, required=True, help="fp32 ONNX from training.audio.convert_panns")
    parser.add_argument("--calibration", type=Path, required=True, help="folder of real audio files")
    parser.add_argument("--holdout", help="comma-separated file names kept out of calibration for the check (default: every 4th file)")
    parser.add_argument("--out", type=Path, help="int8 ONNX to write (default: <model>.int8.onnx)")
    args = parser.parse_args(argv)
    out = args.out or args.model.with_suffix(".int8.onnx")
    try:
        holdout = [n for n in args.holdout.split(",") if n] if args.holdout else None
        calibration, held_out = split_sounds(args.calibration, holdout)
        quantize_tagger(args.model, out, calibration)
        figures = agreement(args.model, out, held_out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}; calibrated on {len(calibration)} files, checked on {len(held_out)}")
    print(format_agreement(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
