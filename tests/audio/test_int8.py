"""int8 (QDQ) quantization of a converted PANNs tagger: the converter's --int8 option, the
calibration/held-out split of the shared sounds, the service's tagger on the int8 file,
and its agreement with the fp32 twin on held-out audio.

A narrow (width 8) Cnn14 with variance-preserving random weights stands in for the
official checkpoint, which cannot be downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from services.audio.tagger import OnnxTagger, TaggerConfig
from training.audio import convert_panns, quantize
from training.audio.panns import build, randomize

WIDTH = 8


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save({"model": randomize(build("Cnn14", width=WIDTH), seed).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def twins(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """(fp32, int8) ONNX files of one random Cnn14 checkpoint, made by the converter's CLI."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("int8")
    code = convert_panns.main([
        "--checkpoint", str(_checkpoint(folder / "cnn14.pth", seed=0)), "--arch", "Cnn14",
        "--out", str(folder / "cnn14.onnx"), "--int8", "--calibration", str(shared_data / "sounds"),
        "--holdout", ",".join(quantize.SHARED_SOUNDS_HOLDOUT),
    ])  # fmt: skip
    assert code == 0
    return folder / "cnn14.onnx", folder / "cnn14.int8.onnx"


@pytest.fixture(scope="module")
def split(shared_data) -> tuple[list[Path], list[Path]]:
    return quantize.split_sounds(shared_data / "sounds", quantize.SHARED_SOUNDS_HOLDOUT)


def test_split_keeps_held_out_content_out_of_calibration(split, shared_data):
    calibration, held_out = split
    names = {p.name for p in calibration}
    assert not names & set(quantize.SHARED_SOUNDS_HOLDOUT)
    # voice_classic_laugh.ogg and voice_default_laugh.ogg are one file under two names: one check copy, no leak.
    held_bytes = {p.read_bytes() for p in held_out}
    assert not any(p.read_bytes() in held_bytes for p in calibration)
    assert len(held_bytes) == len(held_out) == 5
    # voice_classic_oops.ogg == voice_default_oops.ogg: calibrated on once.
    assert len({p.read_bytes() for p in calibration}) == len(calibration)
    with pytest.raises(ValueError, match="not in"):
        quantize.split_sounds(shared_data / "sounds", ["nope.ogg"])
    with pytest.raises(FileNotFoundError, match="calibration folder not found"):
        quantize.split_sounds(shared_data / "no_such_folder")


def test_windows_loop_short_audio_and_cut_long_audio():
    rate = 1000
    short = np.arange(3000, dtype=np.float32)
    (w,) = quantize.windows(short, rate)
    assert w.size == 10_000 and np.array_equal(w[3000:6000], short)  # looped, not zero-padded
    long = np.arange(25_000, dtype=np.float32)
    ws = quantize.windows(long, rate)
    assert ws.shape == (3, 10_000) and np.array_equal(ws[2, :5000], long[20_000:]) and np.array_equal(ws[2, 5000:], long[:5000])
    assert quantize.segments(ws[0], rate).shape == (5, 2000)


def test_int8_model_is_quantized_and_keeps_the_front_end_in_fp32(twins):
    _, int8 = twins
    proto = onnx.load(str(int8))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 12 and ops.count("DequantizeLinear") >= 12
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 12  # the twelve 3x3 convolutions of the six conv blocks
    stft = [n for n in proto.graph.node if n.name.startswith("/spectrogram_extractor/stft/conv_")]
    assert len(stft) == 2
    dq_outputs = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not any(i in dq_outputs for n in stft for i in n.input)  # STFT runs on fp32 audio
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == "Cnn14" and meta["sample_rate"] == "32000" and "int8" in meta["quantization"]
    assert not set(meta["calibration_files"].split(",")) & set(quantize.SHARED_SOUNDS_HOLDOUT)


def test_service_tagger_loads_int8_and_follows_fp32_on_held_out_audio(twins, split, sounds):
    fp32, int8 = twins
    tagger8 = OnnxTagger(TaggerConfig(path=int8, kind="panns", intra_threads=1))
    tagger32 = OnnxTagger(TaggerConfig(path=fp32, kind="panns", intra_threads=1))
    assert tagger8.name == "Cnn14" and tagger8.sample_rate == 32000
    audio = np.resize(sounds("minigun.ogg"), 10 * 32000)  # held out from calibration
    s8, s32 = tagger8.scores(audio, 32000), tagger32.scores(audio, 32000)
    assert s8.shape == s32.shape == (5, 527)
    assert np.all((s8 >= 0.0) & (s8 <= 1.0))
    assert np.abs(s8 - s32).max() < 0.2
    features8, features32 = tagger8.tag(audio, 32000), tagger32.tag(audio, 32000)
    assert features8.keys() == features32.keys()

    # Thresholds: this model measured top-10 overlap 0.95, audio-dependent logit correlation
    # 0.99, embedding error 3 %. The margins allow other CPUs' rounding; a broken quantization
    # (wrong scales, scrambled channels, activations clipped flat) fails the correlation and
    # embedding bounds by far, as the miscalibrated control below shows.
    figures = quantize.agreement(fp32, int8, split[1])
    assert figures["segments"] == 25
    assert figures["top10_overlap"] >= 0.8
    assert figures["logit_corr"] >= 0.99
    assert figures["contrast_corr"] >= 0.95
    assert figures["embedding_rel_err"] <= 0.1


def test_agreement_measures_catch_a_miscalibrated_model(twins, split, audio_io, tmp_path):
    """Control: the same model calibrated on near-silence clips real audio's activations.

    Measured on this model: top-10 overlap still 0.83 (it would pass that bound) and
    logit correlation 0.96, but the audio-dependent logit correlation is negative and
    the embedding is off by 60 %: the bounds above must reject it.
    """
    fp32, _ = twins
    rng = np.random.default_rng(0)
    quiet = audio_io.encode_wav(tmp_path / "quiet.wav", rng.standard_normal(10 * 32000) * 1e-3, 32000, "mono")
    bad = quantize.quantize_tagger(fp32, tmp_path / "bad.int8.onnx", [quiet])
    figures = quantize.agreement(fp32, bad, split[1])
    assert figures["contrast_corr"] < 0.95 and figures["embedding_rel_err"] > 0.1 and figures["logit_corr"] < 0.99


def test_converter_int8_needs_a_calibration_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        convert_panns.main(["--checkpoint", "x.pth", "--arch", "Cnn14", "--out", str(tmp_path / "x.onnx"), "--int8"])
    assert exc.value.code == 2 and "--calibration" in capsys.readouterr().err
    code = convert_panns.main([
        "--checkpoint", "x.pth", "--arch", "Cnn14", "--out", str(tmp_path / "x.onnx"), "--int8", "--calibration", str(tmp_path),
    ])  # fmt: skip
    assert code == 2 and "no audio files" in capsys.readouterr().err


def test_quantize_cli_works_on_a_converted_file(twins, shared_data, tmp_path, capsys):
    fp32, _ = twins
    out = tmp_path / "cli.int8.onnx"
    assert quantize.main(["--model", str(fp32), "--calibration", str(shared_data / "sounds"), "--out", str(out)]) == 0
    assert "held-out 2 s segments" in capsys.readouterr().out
    assert OnnxTagger(TaggerConfig(path=out, kind="panns")).scores(np.zeros(32000, np.float32), 32000).shape == (1, 527)
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(fp32))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    assert quantize.main(["--model", str(bare), "--calibration", str(shared_data / "sounds")]) == 2
    assert "no sample_rate metadata" in capsys.readouterr().err
