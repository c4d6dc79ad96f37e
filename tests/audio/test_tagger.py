"""PANNs architectures, checkpoint conversion to ONNX, and the service's ONNX tagger (PANNs and YAMNet kinds).

Pretrained weights cannot be downloaded here, so the tests make narrow PANNs checkpoints
with random weights in the official {'model': state_dict} format and convert them with
the real converter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.audio.analyzer import AudioAnalyzer
from services.audio.labels import find_label, labels_for
from services.audio.tagger import DEFAULT_CLASSES, OnnxTagger, TaggerConfig, TaggerError
from training.audio import convert_panns
from training.audio.panns import build, randomize

ARCHS = ("Cnn14", "Cnn14_16k", "MobileNetV1")


def random_checkpoint(path: Path, arch: str, width: int = 4, seed: int = 0) -> torch.nn.Module:
    """A narrow `arch` with random weights and batch-norm statistics, saved like the official files."""
    torch.manual_seed(seed)
    model = randomize(build(arch, width=width), seed)
    torch.save({"model": model.state_dict()}, path)
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    out = {}
    torch.set_num_threads(1)
    for arch in ARCHS:
        folder = tmp_path_factory.mktemp(arch)
        model = random_checkpoint(folder / f"{arch}.pth", arch)
        code = convert_panns.main(["--checkpoint", str(folder / f"{arch}.pth"), "--arch", arch, "--out", str(folder / f"{arch}.onnx")])
        assert code == 0
        out[arch] = (folder / f"{arch}.onnx", model)
    return out


def test_label_lists_have_527_and_521_classes_in_order():
    audioset, yamnet = labels_for("panns"), labels_for("yamnet")
    assert len(audioset) == 527 and len(yamnet) == 521
    assert (audioset[0].name, audioset[137].name, audioset[526].name) == ("Speech", "Music", "Field recording")
    assert find_label(audioset, "Gunshot/gunfire").index == 427
    assert find_label(yamnet, "Gunshot/gunfire").index == 421
    assert find_label(yamnet, "Music").index == 132
    assert find_label(yamnet, "Male speech") is None
    # YAMNet's list is AudioSet's without six classes, same mids otherwise, same order.
    yamnet_mids = [l.mid for l in yamnet]
    assert yamnet_mids == [l.mid for l in audioset if l.mid in set(yamnet_mids)]
    for name in DEFAULT_CLASSES:
        assert find_label(audioset, name) is not None, name


def test_full_size_parameter_counts_match_the_paper():
    # PANNs paper, Table: Cnn14 80.8 M and MobileNetV1 4.8 M parameters (front end excluded).
    for arch, expected in (("Cnn14", 80_753_615), ("MobileNetV1", 4_796_303)):
        model = build(arch)
        n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("spectrogram", "logmel")))
        assert n == expected, arch


def test_state_dict_keys_are_the_official_names():
    cnn = build("Cnn14", width=2).state_dict()
    mob = build("MobileNetV1", width=2).state_dict()
    for key in (
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
        "bn0.running_var",
        "conv_block1.conv1.weight",
        "conv_block6.bn2.num_batches_tracked",
        "fc1.weight",
        "fc_audioset.bias",
    ):
        assert key in cnn, key
    for key in ("features.0.0.weight", "features.0.2.running_mean", "features.1.4.weight", "features.13.5.bias", "fc_audioset.weight"):
        assert key in mob, key
    assert cnn["logmel_extractor.melW"].shape == (513, 64)


def test_mel_filterbank_triangles_are_area_normalised():
    from training.audio.frontend import hz_to_mel, mel_filterbank, mel_to_hz

    w = mel_filterbank(32000, 1024, 64, 50.0, 14000.0)
    assert w.shape == (513, 64) and (w >= 0).all()
    assert np.allclose(mel_to_hz(hz_to_mel(np.array([50.0, 999.0, 1000.0, 14000.0]))), [50.0, 999.0, 1000.0, 14000.0])
    peaks = np.argmax(w, axis=0)
    assert np.all(np.diff(peaks) >= 0)  # filters climb in frequency
    # Slaney normalisation: each filter's area (in Hz) is about 1.
    area = w.sum(axis=0) * (32000 / 1024)
    assert np.allclose(area[8:], 1.0, atol=0.1)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_matches_torch_with_dynamic_batch(converted, arch):
    path, model = converted[arch]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    rate = model.front_end.sample_rate
    assert meta["arch"] == arch and int(meta["sample_rate"]) == rate
    rng = np.random.default_rng(3)
    for batch, seconds in ((1, 1.0), (3, 2.5)):
        x = rng.uniform(-0.3, 0.3, (batch, int(seconds * rate))).astype(np.float32)
        scores, embedding = session.run(None, {"waveform": x})
        with torch.no_grad():
            ref_scores, ref_embedding = model(torch.from_numpy(x))
        assert scores.shape == (batch, 527)
        np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(embedding, ref_embedding.numpy(), rtol=1e-3, atol=1e-3)
    # The scores really depend on the input (the test would be empty otherwise).
    a = session.run(None, {"waveform": rng.uniform(-0.3, 0.3, (1, rate)).astype(np.float32)})[0]
    b = session.run(None, {"waveform": np.zeros((1, rate), np.float32)})[0]
    assert np.abs(a - b).max() > 1e-4


def test_converter_rejects_a_checkpoint_of_another_architecture(tmp_path, converted, capsys):
    random_checkpoint(tmp_path / "m.pth", "MobileNetV1", width=2)
    code = convert_panns.main(["--checkpoint", str(tmp_path / "m.pth"), "--arch", "Cnn14", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "not a PANNs Cnn14" in capsys.readouterr().err
    code = convert_panns.main(["--checkpoint", str(tmp_path / "none.pth"), "--arch", "Cnn14", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "not found" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ARCHS)
def test_panns_tagger_frames_maps_labels_and_resamples(converted, arch):
    path, model = converted[arch]
    tagger = OnnxTagger(TaggerConfig(path=path, kind="panns"))
    assert tagger.name == arch and tagger.sample_rate == model.front_end.sample_rate
    assert tagger.missing_classes == []
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal(10 * 32000) * 0.1).astype(np.float32)
    audio[: 2 * 32000] *= 0.01  # a quiet first segment, so mean and max differ
    features = tagger.tag(audio, 32000)
    assert len(features) == 2 * len(DEFAULT_CLASSES)
    # Independent check: 2 s segments at the model's rate through torch, columns by AudioSet index.
    if tagger.sample_rate != 32000:
        from services.audio.resample import resample

        x = resample(audio, 32000, tagger.sample_rate)
    else:
        x = audio
    seg = 2 * tagger.sample_rate
    frames = x.reshape(5, seg)
    with torch.no_grad():
        ref = model(torch.from_numpy(frames))[0].numpy()
    for name, index in (("speech", 0), ("music", 137), ("gunshot_gunfire", 427), ("walk_footsteps", 53), ("thunder", 287)):
        assert features[f"tag_{name}_mean"] == pytest.approx(ref[:, index].mean(), abs=1e-4)
        assert features[f"tag_{name}_max"] == pytest.approx(ref[:, index].max(), abs=1e-4)
    assert any(features[f"tag_{k}_max"] - features[f"tag_{k}_mean"] > 1e-5 for k in ("speech", "music", "crowd"))


def test_resampling_keeps_a_tone_in_place():
    from services.audio.resample import resample

    t = np.arange(48000 * 2) / 48000
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = resample(x, 48000, 16000)
    assert y.size == 32000
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) * 16000 / y.size == pytest.approx(1000.0, abs=1.0)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.01)


class _FakeYamnet(torch.nn.Module):
    """Same signature as a YAMNet export: (n, 15360) waveform frames at 16 kHz -> (n, 521) scores.

    Score of class c = (c + 1) / 521 * tanh(10 * rms(frame)), so label mapping and framing are checkable.
    """

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(torch.mean(waveform**2, dim=1, keepdim=True))
        return torch.tanh(10.0 * rms) * (torch.arange(521, dtype=torch.float32) + 1.0) / 521.0


def _export_yamnet(path: Path) -> Path:
    torch.onnx.export(
        _FakeYamnet(),
        (torch.zeros(2, 15360),),
        str(path),
        dynamo=False,
        input_names=["waveform"],
        output_names=["scores"],
        dynamic_axes={"waveform": {0: "frames"}, "scores": {0: "frames"}},
        opset_version=17,
    )
    return path


def test_yamnet_backend_frames_0_96_s_every_0_48_s_and_maps_521_labels(tmp_path):
    tagger = OnnxTagger(TaggerConfig(path=_export_yamnet(tmp_path / "yamnet.onnx"), kind="yamnet"))
    assert tagger.sample_rate == 16000
    assert sorted(tagger.missing_classes) == ["Female speech", "Male speech"]
    t = np.arange(10 * 32000) / 32000
    audio = (0.05 * np.sin(2 * np.pi * 440 * t) * (t < 3.0)).astype(np.float32)  # loud only for 3 s
    features = tagger.tag(audio, 32000)
    # Framing, computed independently: 16 kHz, 15360-sample frames every 7680, last one end-aligned.
    from services.audio.resample import resample

    x = resample(audio, 32000, 16000)
    starts = list(range(0, x.size - 15360 + 1, 7680))
    starts.append(x.size - 15360)
    rms = np.array([np.sqrt(np.mean(x[s : s + 15360] ** 2)) for s in starts])
    assert len(starts) == 20 and tagger.frames(x).shape == (20, 15360)
    level = np.tanh(10 * rms)
    labels = labels_for("yamnet")
    for key, name in (("speech", "Speech"), ("music", "Music"), ("explosion", "Explosion"), ("cheering", "Cheering")):
        index = find_label(labels, name).index
        assert features[f"tag_{key}_mean"] == pytest.approx((index + 1) / 521 * level.mean(), rel=1e-3)
        assert features[f"tag_{key}_max"] == pytest.approx((index + 1) / 521 * level.max(), rel=1e-3)
    assert "tag_male_speech_mean" not in features


def test_tagger_errors_are_clear(tmp_path, converted):
    with pytest.raises(TaggerError, match="not found"):
        OnnxTagger(TaggerConfig(path=tmp_path / "missing.onnx"))
    with pytest.raises(TaggerError, match="unknown tagger kind"):
        OnnxTagger(TaggerConfig(path=converted["Cnn14"][0], kind="vggish"))
    # A 527-class PANNs model loaded as YAMNet has no 521-class output.
    with pytest.raises(TaggerError, match="521 classes"):
        OnnxTagger(TaggerConfig(path=converted["Cnn14"][0], kind="yamnet"))


def test_analyzer_reports_the_tagger_name_and_tags(converted, sounds):
    tagger = OnnxTagger(TaggerConfig(path=converted["MobileNetV1"][0], kind="panns"))
    analyzer = AudioAnalyzer(32000, tagger=tagger)
    audio = sounds("minigun.ogg")
    records = analyzer.push(audio, 0.0) + analyzer.flush()
    (record,) = records
    assert record.metadata["tagger"] == "MobileNetV1"
    assert 0.0 <= record.features["tag_machine_gun_max"] <= 1.0
    assert "onset_rate_hz" in record.features
