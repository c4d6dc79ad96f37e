"""Fixtures shared by every test area: the real data folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real media, sounds, chat); the test skips, saying why, when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (shared/ is not beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory):
    """A real nats-server with JetStream on a free port and a temporary folder (one per module)."""
    from streamsight.natsd import NatsServer

    folder = tmp_path_factory.mktemp("nats")
    server = NatsServer(folder, log_file=folder / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture
async def bus(nats_server):
    """A Bus on the module's NATS server with the platform's streams provisioned."""
    from streamsight.bus import Bus

    bus = await Bus.connect(nats_server.url, "test")
    await bus.ensure_streams()
    yield bus
    await bus.close()
