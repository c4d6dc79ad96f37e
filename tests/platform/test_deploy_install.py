"""The package installs anywhere: the right onnxruntime per platform, and no service needs an extra.

- `onnxruntime-gpu` only where it has wheels (Linux x86_64, Windows x64), `onnxruntime` on every
  other platform (macOS arm64, Linux aarch64, ...): exactly one of them, chosen by environment
  markers, evaluated here for each platform with `packaging.markers`.
- Training and tooling packages (scikit-learn, grpcio-tools, torch, pytest, ...) are extras; no
  module of the services, the gateway or the runtime library (training/ and protogen excluded)
  imports one. Optional backends (`live`, `transformers`) are imported only where their absence is
  caught (`except ImportError`). Every other third-party import is a runtime dependency (or one
  of theirs).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}
OPTIONAL_FEATURES = {"live", "encoder"}  # backends a service uses when installed, and says how to get otherwise
FIRST_PARTY = {"streamsight", "services", "gateway", "training"}
SCANNED = ["services", "gateway", "streamsight"]
NOT_SCANNED = {REPO / "streamsight" / "protogen.py"}  # `make proto` (the dev extra)


def _platform(sys_platform: str, machine: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(sys_platform=sys_platform, platform_machine=machine, platform_system={"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[sys_platform])
    return env


PLATFORMS = {
    "linux-x86_64": (_platform("linux", "x86_64"), "onnxruntime-gpu"),
    "linux-aarch64": (_platform("linux", "aarch64"), "onnxruntime"),
    "macos-arm64": (_platform("darwin", "arm64"), "onnxruntime"),
    "macos-x86_64": (_platform("darwin", "x86_64"), "onnxruntime"),
    "windows-x64": (_platform("win32", "AMD64"), "onnxruntime-gpu"),
    "windows-arm64": (_platform("win32", "ARM64"), "onnxruntime"),
}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_exactly_one_onnxruntime_per_platform_and_the_gpu_one_only_where_it_has_wheels(platform):
    env, expected = PLATFORMS[platform]
    chosen = [str(r.name) for r in RUNTIME if r.name.startswith("onnxruntime") and (r.marker is None or r.marker.evaluate(env))]
    assert chosen == [expected], (platform, chosen)
    others = [r.name for r in RUNTIME if r.marker is not None and not r.name.startswith("onnxruntime")]
    assert others == [], "only onnxruntime depends on the platform"


def test_training_and_tooling_packages_are_extras_not_runtime():
    runtime = {canonicalize_name(r.name) for r in RUNTIME}
    for name in ("scikit-learn", "grpcio-tools", "torch", "onnx", "pytest", "opencv-python-headless"):
        assert canonicalize_name(name) not in runtime, name
    extra_of = {canonicalize_name(r.name): extra for extra, reqs in EXTRAS.items() for r in reqs}
    assert extra_of["scikit-learn"] == "train" and extra_of["grpcio-tools"] == "dev"
    make = (REPO / "Makefile").read_text()
    assert "'.[dev,train]'" in make, "make test installs what the tests need (dev and train)"


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a `try` that catches ImportError (or ModuleNotFoundError)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
    return False


def _imports() -> list[tuple[str, str, bool]]:
    """(file, top-level module, guarded) for every absolute import of the scanned code."""
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path in NOT_SCANNED or "gen" in path.relative_to(REPO).parts[:2]:
                continue
            tree = ast.parse(path.read_text(), str(path))
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.append((str(path.relative_to(REPO)), name.split(".")[0], _guarded(node, parents)))
    return found


def _closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions these requirements bring, theirs included (no extras)."""
    seen: set[str] = set()
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate()]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def test_no_service_module_imports_a_package_that_only_an_extra_installs():
    runtime = _closure(RUNTIME)
    extra_only = {canonicalize_name(r.name): extra for extra, reqs in EXTRAS.items() for r in reqs if canonicalize_name(r.name) not in runtime}
    dists_of = {module: {canonicalize_name(d) for d in dists} for module, dists in md.packages_distributions().items()}
    problems = []
    for path, module, guarded in _imports():
        if module in FIRST_PARTY or module in sys.stdlib_module_names:
            continue
        dists = dists_of.get(module) or {canonicalize_name(module)}  # not installed here: its own name
        extras = {extra_only[d] for d in dists if d in extra_only}
        if extras:
            if not (guarded and extras <= OPTIONAL_FEATURES):
                problems.append(f"{path}: imports {module} ({', '.join(sorted(dists))}), only in extra {sorted(extras)}")
        elif not dists & runtime:
            problems.append(f"{path}: imports {module} ({', '.join(sorted(dists))}), which no runtime dependency installs")
    assert problems == []


def test_the_scan_sees_what_it_must_refuse():
    """The scan is not blind: training imports scikit-learn, which is only in the train extra."""
    dists_of = md.packages_distributions()
    assert "sklearn" in dists_of, "scikit-learn is installed for the tests (make test installs the train extra)"
    assert canonicalize_name(dists_of["sklearn"][0]) in {canonicalize_name(r.name) for r in EXTRAS["train"]}
    modules = {m for _, m, _ in _imports()}
    assert {"nats", "grpc", "numpy", "av"} <= modules and "sklearn" not in modules and "grpc_tools" not in modules
