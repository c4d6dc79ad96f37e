"""ONNX Runtime sessions for every service: one place that picks the execution provider.

The CUDA provider is used when onnxruntime-gpu sees a GPU, the CPU provider otherwise;
the calling code is the same either way. Services report `session_provider()` in their
health and logs so a person can see which one is running.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnxruntime as ort

from streamsight import heap

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def model_digest(path: Path) -> str:
    """The first 12 hex digits of a model file's sha256: which exact model made a record."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def gpu_visible() -> bool:
    """An NVIDIA device node exists (the onnxruntime-gpu build lists CUDA even without one)."""
    return Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime build can use it and a GPU is visible, then CPU.

    `STREAMSIGHT_ONNX_PROVIDER=cpu` forces the CPU provider (useful on a shared GPU host).
    """
    forced = os.environ.get("STREAMSIGHT_ONNX_PROVIDER", "").strip().lower()
    if forced == "cpu" or CUDA not in ort.get_available_providers() or not gpu_visible():
        return [CPU]
    return [CUDA, CPU]


def create_session(model_path: str | Path, intra_threads: int | None = None, *,
                   layout_optimizations: bool = True) -> ort.InferenceSession:
    """Open an ONNX model with the preferred provider.

    `intra_threads` bounds the threads one inference may use (None: onnxruntime's default).
    `layout_optimizations=False` stops below onnxruntime's layout transforms (level EXTENDED
    instead of ALL): for a graph of depthwise blurs and elementwise algebra, such as vision's
    optical flow, the NCHWc reorders cost more than they save (flow at 320x180, one thread:
    about 14 ms a pair instead of 21, same output bit for bit). Convolutional networks are
    faster with them (frame_cnn about twice), so they are on by default.
    Raises FileNotFoundError with the path when the model is missing.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    if intra_threads:
        options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    if not layout_optimizations:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3  # warnings about CUDA absence are expected on CPU hosts
    # No CPU memory arena: onnxruntime's arena keeps every block it ever grew to, and batches
    # of varying size (a fetch's frames) made it grow for jobs on end: glitch's classifier
    # 221 -> 349 MB over 20 jobs with it, flat near 110 MB without. Buffers then come from
    # malloc, kept for reuse between inferences (as fast as the arena) and handed back when a
    # stream ends: streamsight.heap.
    options.enable_cpu_mem_arena = False
    # Stages call a model between other work on a machine they share: onnxruntime's threads
    # spinning after each call burned CPU the other stages needed (a 60 s 720p job: glitch
    # 13.1 -> 10.5 CPU s, vision 14.8 -> 11.4 CPU s without it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    heap.keep_large_blocks()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=preferred_providers())
    except Exception:
        if preferred_providers() == [CPU]:
            raise
        # A GPU build on a host whose CUDA libraries are incomplete: fall back, same code.
        return ort.InferenceSession(str(path), sess_options=options, providers=[CPU])


def session_provider(session: ort.InferenceSession) -> str:
    """The provider that actually runs the session's first node: 'cuda' or 'cpu'."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
