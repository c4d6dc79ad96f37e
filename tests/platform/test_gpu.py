"""The GPU path: every shipped model opened by the services' own `create_session` runs on
onnxruntime's CUDA provider when a GPU is visible, and answers as it does on the CPU.

Marked `gpu`: where onnxruntime has no CUDA provider or no NVIDIA device is visible, each test
is skipped saying which. (`bench/bench_gpu.py` measures frames per second per model and
streams per GPU on such a machine; the feeds here are its, the shapes the services use.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from streamsight.inference import CPU, CUDA, create_session, gpu_visible, preferred_providers, session_provider

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.gpu


def _why_no_gpu() -> str | None:
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA provider ({ort.get_available_providers()})"
    if not gpu_visible():
        return "no NVIDIA device is visible (/dev/nvidiactl, /dev/nvidia<N>)"
    return None


def _bench_models():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.models()


@pytest.fixture(scope="module")
def gpu():
    why = _why_no_gpu()
    if why:
        pytest.skip(f"no GPU here: {why}")


def test_the_services_sessions_take_the_cuda_provider(gpu, monkeypatch):
    monkeypatch.delenv("STREAMSIGHT_ONNX_PROVIDER", raising=False)
    assert preferred_providers() == [CUDA, CPU]
    for model in _bench_models():
        assert session_provider(create_session(model.path)) == "cuda", model.name


@pytest.mark.parametrize("batch", [1, 8])
def test_each_model_answers_on_the_gpu_as_on_the_cpu(gpu, batch):
    for model in _bench_models():
        feed = model.inputs(batch)
        on_gpu = ort.InferenceSession(str(model.path), providers=[CUDA]).run(None, feed)
        on_cpu = ort.InferenceSession(str(model.path), providers=[CPU]).run(None, feed)
        for g, c in zip(on_gpu, on_cpu):
            assert g.shape == c.shape, model.name
            # cuDNN picks other convolution algorithms (TF32 on Ampere and later): close, not equal
            assert np.allclose(g, c, rtol=1e-2, atol=1e-3), f"{model.name} b={batch}: max difference {np.abs(g - c).max()}"


def test_the_cpu_can_be_forced_on_a_gpu_host(gpu, monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_ONNX_PROVIDER", "cpu")
    model = _bench_models()[0]
    assert session_provider(create_session(model.path)) == "cpu"
