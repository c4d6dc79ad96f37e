"""PANNs audio taggers (Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks
for Audio Pattern Recognition", 2020): Cnn14, Cnn14_16k and MobileNetV1, written from the
paper's description with module names that match the official checkpoints' state-dict keys.

All three take a mono waveform (batch, samples), compute the log-mel spectrogram
in-graph, normalise each mel bin with `bn0`, run the CNN, pool over frequency by
mean and over time by max + mean, and end in `fc1` (ReLU) and `fc_audioset`
(sigmoid, 527 AudioSet classes). Dropout and SpecAugment only act in training and
are left out here: these modules are for inference and export.

`width` scales the channels (64 for Cnn14, 32 for MobileNetV1 as published); tests
build narrow models to keep checkpoints small. `from_state_dict` reads the width,
mel bins and class count back from a checkpoint. `randomize` gives a model random
weights whose outputs still depend on the input (tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.audio.frontend import LogmelFilterBank, Spectrogram


@dataclass(frozen=True)
class FrontEnd:
    sample_rate: int
    n_fft: int
    hop: int
    mel_bins: int
    fmin: float
    fmax: float


# The configurations of the released checkpoints.
ARCHS: dict[str, FrontEnd] = {
    "Cnn14": FrontEnd(32000, 1024, 320, 64, 50.0, 14000.0),
    "Cnn14_16k": FrontEnd(16000, 512, 160, 64, 50.0, 8000.0),
    "MobileNetV1": FrontEnd(32000, 1024, 320, 64, 50.0, 14000.0),
}
DEFAULT_WIDTH = {"Cnn14": 64, "Cnn14_16k": 64, "MobileNetV1": 32}
AUDIOSET_CLASSES = 527


class _Tagger(nn.Module):
    """Shared front end and head; subclasses define `body`."""

    def __init__(self, fe: FrontEnd, embed: int, classes: int) -> None:
        super().__init__()
        self.front_end = fe
        self.spectrogram_extractor = Spectrogram(fe.n_fft, fe.hop)
        self.logmel_extractor = LogmelFilterBank(fe.sample_rate, fe.n_fft, fe.mel_bins, fe.fmin, fe.fmax)
        self.bn0 = nn.BatchNorm2d(fe.mel_bins)
        self.fc1 = nn.Linear(embed, embed)
        self.fc_audioset = nn.Linear(embed, classes)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clipwise scores (batch, classes), embedding (batch, embed)) of waveforms (batch, samples)."""
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # (batch, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise per mel bin
        x = self.body(x)  # (batch, channels, frames', mels')
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        embedding = torch.relu(self.fc1(x))
        return torch.sigmoid(self.fc_audioset(embedding)), embedding


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return nn.functional.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(_Tagger):
    """Six conv blocks (width x 1, 2, 4, 8, 16, 32 channels), 2x2 pooling after the first five."""

    def __init__(self, fe: FrontEnd = ARCHS["Cnn14"], width: int = 64, classes: int = AUDIOSET_CLASSES) -> None:
        super().__init__(fe, 32 * width, classes)
        chans = [1] + [width * m for m in (1, 2, 4, 8, 16, 32)]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, 2 if i < 6 else 1)
        return x


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.AvgPool2d(stride), nn.BatchNorm2d(cout), nn.ReLU())


def _conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
        nn.AvgPool2d(stride),
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class MobileNetV1(_Tagger):
    """Depthwise-separable MobileNetV1 body; strides are average pools, as in PANNs."""

    PLAN = [(1, 2, 1), (2, 4, 2), (4, 4, 1), (4, 8, 2), (8, 8, 1), (8, 16, 2)] + [(16, 16, 1)] * 5 + [(16, 32, 2), (32, 32, 1)]

    def __init__(self, fe: FrontEnd = ARCHS["MobileNetV1"], width: int = 32, classes: int = AUDIOSET_CLASSES) -> None:
        super().__init__(fe, 32 * width, classes)
        layers = [_conv_bn(1, width, 2)] + [_conv_dw(width * a, width * b, s) for a, b, s in self.PLAN]
        self.features = nn.Sequential(*layers)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build(arch: str, width: int | None = None, classes: int = AUDIOSET_CLASSES) -> _Tagger:
    """A PANNs model by its checkpoint name: 'Cnn14', 'Cnn14_16k' or 'MobileNetV1'."""
    if arch not in ARCHS:
        raise ValueError(f"unknown PANNs architecture {arch!r}; known: {sorted(ARCHS)}")
    width = width or DEFAULT_WIDTH[arch]
    cls = MobileNetV1 if arch == "MobileNetV1" else Cnn14
    return cls(ARCHS[arch], width, classes).eval()


def from_state_dict(arch: str, state: dict[str, torch.Tensor]) -> _Tagger:
    """Build `arch` with the width and class count found in `state` and load it strictly."""
    first = "features.0.0.weight" if arch == "MobileNetV1" else "conv_block1.conv1.weight"
    for key in (first, "fc_audioset.weight", "logmel_extractor.melW"):
        if key not in state:
            raise ValueError(f"checkpoint has no {key!r}: not a PANNs {arch} state dict")
    fe = ARCHS[arch]
    mel_bins = state["logmel_extractor.melW"].shape[1]
    n_fft = state["spectrogram_extractor.stft.conv_real.weight"].shape[-1]
    if mel_bins != fe.mel_bins or n_fft != fe.n_fft:
        raise ValueError(
            f"checkpoint front end (n_fft={n_fft}, mel_bins={mel_bins}) is not {arch}'s "
            f"(n_fft={fe.n_fft}, mel_bins={fe.mel_bins}); is --arch right?"
        )
    model = build(arch, width=state[first].shape[0], classes=state["fc_audioset.weight"].shape[0])
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit {arch}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model.eval()


def randomize(model: _Tagger, seed: int = 0) -> _Tagger:
    """Random weights and batch-norm statistics that keep the signal alive through the network.

    torch's default init shrinks activations layer by layer, so a deep random model
    answers almost the same for every input; variance-preserving (Kaiming) weights and
    a bn0 that centres log-mel dB values like trained statistics avoid that, which
    makes random models useful for checking conversions and quantization.
    The front end (DFT kernels, mel matrix) is kept.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(("spectrogram", "logmel")):
                continue
            if name == "bn0.running_mean":
                tensor.fill_(-30.0)
            elif name == "bn0.running_var":
                tensor.fill_(400.0)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("weight") and tensor.dim() > 1:
                nn.init.kaiming_normal_(tensor, generator=gen)
    return model.eval()
