"""Fixtures shared by every test area: the real data folder beside the checkout."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from streamsight.natsd import PORT_SLICE_VARIABLE, free_port, free_port_range

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    """Each pytest-xdist worker picks free ports from a slice of the range of its own (and so do the
    stacks and servers it starts): the other worker cannot take a port it picked before it binds."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count.isdigit():
        os.environ[PORT_SLICE_VARIABLE] = f"{int(worker[2:])}/{count}"


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (--dist loadgroup): the slow tests (whole
    stacks, many processes each) go one after another to one worker, the rest share the other,
    so two stacks never compete for this 2-core machine's cores at once."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("slow"))


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


@pytest.fixture
def ingest_vod():
    """An async function (stub, {stream_id: file}, timeout, start=True): start VOD ingests on an
    IngestStub (start=False: they were started already) and wait until every one has ENDED."""
    import asyncio

    from streamsight.gen.common.v1 import common_pb2
    from streamsight.gen.ingest.v1 import ingest_pb2
    from streamsight.app.results import TERMINAL

    async def run(stub, sources: dict[str, Path], timeout: float = 90.0, start: bool = True) -> None:
        for sid, path in sources.items() if start else ():
            await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id=sid, source=str(path), pacing=common_pb2.PACING_VOD))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for sid in sources:
            while (status := await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id=sid))).state not in TERMINAL:
                assert loop.time() < deadline, f"ingest of {sid} did not finish in {timeout} s"
                await asyncio.sleep(0.1)
            assert status.state == common_pb2.STREAM_STATE_ENDED, status.last_error

    return run


def free_port_block(size: int) -> int:
    """A base port with `size` free ports from it (the stack's metrics ports: base + each offset),
    below the kernel's ephemeral range when there is room (streamsight.natsd.free_port says why)."""
    for _ in range(200):
        base = free_port()
        high = free_port_range()[1]
        if base + size > (high if base < high else 65000):  # the block stays in this worker's slice
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
    pytest.fail("no block of free ports")


class FakeClock:
    """A monotonic clock a test moves by hand (`clock.now = ...`)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class JobWithAKill:
    """`streamsight analyze` in a thread of its own while the test SIGKILLs one of the stack's
    services under its Supervisor: start it, wait for what the job must have done first, kill,
    and wait for the job to finish (the supervisor restarts the service once)."""

    def __init__(self, options) -> None:
        import io
        import threading

        self.options, self.printed, self.outcome = options, io.StringIO(), {}
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        import asyncio

        from streamsight.app.analyze import Progress, analyze

        try:
            self.outcome["results"] = asyncio.run(analyze(self.options, Progress(self.printed)))
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.outcome["error"] = exc

    def wait_until(self, done, timeout_s: float, what: str) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while not done() and self._thread.is_alive():
            assert time.monotonic() < deadline, f"{what}\n{self.printed.getvalue()}"
            time.sleep(0.1)
        assert self._thread.is_alive(), f"the job ended before the kill\n{self.printed.getvalue()}"

    def kill_and_finish(self, sup, service: str, timeout_s: float) -> None:
        import os
        import signal

        child = next(c for c in sup.children if c.spec.name == service)
        restarts = child.restarts
        os.kill(child.process.pid, signal.SIGKILL)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the job did not finish after {service} was killed\n{self.printed.getvalue()}"
        assert "error" not in self.outcome, f"{self.outcome.get('error')!r}\n{self.printed.getvalue()}"
        assert child.restarts == restarts + 1, f"the supervisor restarted {service} once"


async def until_true(check, timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Await `check()` until it is true; the seconds it took (fails with `what` after `timeout_s`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, what
        await asyncio.sleep(poll_s)
    return time.monotonic() - started
