"""The small base every service stands on, so a service's own files hold only its own logic.

A service subclasses `Service`, names itself, picks its settings class, and overrides
`start()` (subscribe, open models), `servicers()` (gRPC services it serves, if any) and
`stop()`. `run_service(MyService)` is its whole `__main__`: it loads and validates settings
(a clear message and exit code 2 when they are wrong), configures logs, traces and metrics,
connects to NATS, provisions the JetStream streams, serves gRPC with health and reflection, and
shuts down gracefully on SIGTERM or Ctrl-C (health NOT_SERVING, drain, close the bus).

Telemetry: traces as the OTEL_* variables say (streamsight.telemetry), /metrics on
`metrics_host`:`metrics_port`, and, in the service whose `nats_monitor_url` is set, nats-server's
own metrics beside its own (streamsight.natsmetrics).

Readiness: health is NOT_SERVING while `ready()` says no, which by default is while the bus is
unusable (disconnected from NATS, or its JetStream calls failing, as after a NATS restart until
the streams are re-created), and SERVING again once it recovers. Each change is logged and the
`streamsight_bus_usable` gauge follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import ClassVar

import structlog

from streamsight.bus import Bus
from streamsight import natsmetrics
from streamsight.config import BaseServiceSettings, ConfigError, load_settings
from streamsight.logs import configure_logging
from streamsight.rpc import RpcServer, Servicer
from streamsight.tasks import cancel_and_wait
from streamsight.telemetry import BUS_USABLE, configure_tracing, start_metrics_server

log = structlog.get_logger(__name__)

READINESS_POLL_S = 0.25  # a nats-server restart by `up` keeps it away at least 1 s: seen, and cheap to poll


def bus_usable(bus: Bus | None) -> bool:
    """True while `bus` can do its work: connected, and (where the Bus tracks it) JetStream answering."""
    if bus is None or bus.nc.is_closed or not bus.nc.is_connected:
        return False
    usable = getattr(bus, "usable", None)  # Bus.usable: connected and the last JetStream call worked
    return True if usable is None else bool(usable)


class Service:
    """Base class: lifecycle, bus, gRPC server; subclasses add their logic in the hooks."""

    name: ClassVar[str] = "service"
    Settings: ClassVar[type[BaseServiceSettings]] = BaseServiceSettings

    def __init__(self, settings: BaseServiceSettings):
        self.settings = settings
        self.bus: Bus | None = None
        self.rpc: RpcServer | None = None
        self.log = structlog.get_logger(self.name)

    # Hooks -----------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe, open models, start background tasks. `self.bus` is connected."""

    def servicers(self) -> list[Servicer]:
        """gRPC services to serve besides health and reflection; none by default."""
        return []

    def ready(self) -> bool:
        """Whether to answer health SERVING now; by default, while the bus is usable."""
        return bus_usable(self.bus)

    def health_info(self) -> dict[str, str]:
        """Facts to log at start and report in health (provider, model, tagger, ...)."""
        return {}

    async def stop(self) -> None:
        """Release what start() took. Called once, after the gRPC server drained."""

    # Lifecycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run until `stop` is set. Sets `ready` once serving."""
        self.bus = await Bus.connect(self.settings.nats_url, self.name, replicas=self.settings.nats_replicas)
        watch: asyncio.Task | None = None
        try:
            await self.bus.ensure_streams()
            await self.start()
            # Every service serves gRPC health and reflection, with or without an API of its own.
            s = self.settings
            self.rpc = RpcServer(self.name, self.servicers(), s.grpc_host, s.grpc_port, s.auth_token, facts=self.health_info)
            await self.rpc.start()
            BUS_USABLE.labels(self.name).set(1)
            watch = asyncio.create_task(
                self.rpc.follow_readiness(self.ready, READINESS_POLL_S, self._readiness_changed), name=f"readiness:{self.name}"
            )
            self.log.info("service ready", grpc_port=self.rpc.port, **self.health_info())
            if ready is not None:
                ready.set()
            await stop.wait()
            self.log.info("service stopping")
            await cancel_and_wait([watch])
            await self.rpc.stop(self.settings.shutdown_grace_s)
            await self.stop()
        finally:
            if watch is not None:
                watch.cancel()
            await self.bus.close()
        self.log.info("service stopped")

    async def _readiness_changed(self, now_ready: bool) -> None:
        BUS_USABLE.labels(self.name).set(1 if now_ready else 0)
        if now_ready:
            self.log.info("bus usable again; health SERVING")
        else:
            self.log.warning("bus unusable; health NOT_SERVING")

    @property
    def address(self) -> str:
        """host:port of the running gRPC server, for local clients."""
        assert self.rpc is not None, "the service is not running"
        host = self.settings.grpc_host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.rpc.port}"

    @contextlib.asynccontextmanager
    async def serving(self, timeout_s: float = 30.0) -> AsyncIterator["Service"]:
        """Run in this event loop (tests, embedding); yields once ready, stops on exit."""
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(self.run(stop, ready), name=f"service:{self.name}")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()  # raises the start-up error
        if not ready.is_set():
            waiter.cancel()
            stop.set()
            raise TimeoutError(f"{self.name} did not become ready within {timeout_s} s")
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout_s)


def run_service(cls: type[Service]) -> None:
    """Entry point of `python -m services.<name>`: settings, logging, signals, run."""
    try:
        settings = load_settings(cls.Settings)
        configure_tracing(cls.name, settings.otlp_endpoint)
        configure_logging(cls.name, settings.log_level, settings.log_format)
        if settings.cpu_nice:
            log.info("running nicer", service=cls.name, niceness=os.nice(settings.cpu_nice))
        if settings.nats_monitor_url:
            natsmetrics.register(settings.nats_monitor_url)
        start_metrics_server(settings.metrics_port, settings.metrics_host, cls.Settings.section)
    except ConfigError as exc:
        print(f"streamsight-{cls.name}: {exc}", file=sys.stderr)
        sys.exit(2)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await cls(settings).run(stop)

    try:
        asyncio.run(main())
    except ConfigError as exc:  # found while starting (a model path that does not load, say)
        print(f"streamsight-{cls.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        log.error("service crashed", service=cls.name, exc_info=exc)
        sys.exit(1)
