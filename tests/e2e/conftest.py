"""The end-to-end tests' stack: every service in its own process on a real NATS server, as
`up` runs them, one stack per module, its output in `stack.log` beside it."""

from __future__ import annotations

import json
import urllib.request

import pytest

from streamsight.app.stack import running_stack
from streamsight.app.supervisor import built_services
from streamsight.config import env_name

from ..conftest import SHARED_DATA, free_port_block

EVERY_SERVICE = {"ingest", "chat", "vision", "audio", "glitch", "fusion", "gateway"}


@pytest.fixture(scope="module")
def stack_log(tmp_path_factory):
    """Where the module's stack writes its output (every service's and nats-server's lines)."""
    return tmp_path_factory.mktemp("stack") / "stack.log"


def readable_folders(tmp_path_factory) -> dict[str, str]:
    """The gateway reads local files only under its local_roots: the tests' temporary folders
    (generated media) and the shared real media."""
    roots = [str(tmp_path_factory.getbasetemp()), str(SHARED_DATA)]
    return {env_name("gateway", "local_roots"): json.dumps(roots)}


@pytest.fixture(scope="module")
def stack(stack_log, tmp_path_factory):
    built = {s.name for s in built_services()}
    assert built == EVERY_SERVICE, f"the end-to-end tests need every service; built: {sorted(built)}"
    base = free_port_block(len(EVERY_SERVICE))
    env = {"STREAMSIGHT_METRICS_BASE_PORT": str(base), **readable_folders(tmp_path_factory)}
    with stack_log.open("w") as log, running_stack(stack_log.parent / "var", log, extra_env=env) as sup:
        sup.metrics_base_port = base
        yield sup


def metric(sup, service: str, name: str, labels: dict[str, str]) -> float | None:
    """One sample of a service's Prometheus metrics (None when absent)."""
    from streamsight.config import SECTIONS

    port = sup.metrics_base_port + SECTIONS[service].metrics_offset
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None
