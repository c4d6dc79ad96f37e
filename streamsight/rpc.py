"""gRPC plumbing shared by every server and client of the platform.

Server (`RpcServer`): grpc.aio with the standard health service and server reflection, an
interceptor that checks an optional bearer token, opens a span from the caller's `traceparent`,
logs and counts each call, and turns errors into clear statuses: a handler raises `StatusError`
(INVALID_ARGUMENT, NOT_FOUND, ...) with a message meant for a person; any other exception becomes
INTERNAL with only the trace id, never a traceback. `stop()` marks health NOT_SERVING, then drains.
`follow_readiness(ready)` keeps health in step with a readiness check (a service's bus): NOT_SERVING
while it says no, SERVING again once it says yes.

The token check covers every method of every server but health and reflection, streaming ones
included, and compares in constant time.

Client (`channel`): an aio channel whose calls (unary and server-streaming alike) carry the
current trace context and, when given, the bearer token in metadata.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from streamsight.config import ConfigError
from streamsight.telemetry import RPC_LATENCY, RPC_REQUESTS, current_trace_id, extracted_context, inject_headers, tracer

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class StatusError(Exception):
    """A request that fails with a definite status and a message for a person."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.NOT_FOUND, message)


def precondition(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.UNAVAILABLE, message)


def exhausted(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


@dataclass(frozen=True)
class Servicer:
    """One gRPC service to serve: the generated `add_..._to_server`, the implementation, its full name."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    implementation: Any
    full_name: str


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str, auth_token: str):
        self.service = service
        self.auth_token = auth_token

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        method = details.method
        denied = self._check_auth(metadata)
        if denied and (handler.stream_unary or handler.stream_stream):
            return self._refusing(method, handler, denied)  # no streaming-request method may skip the token
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _refusing(self, method: str, handler, denied: StatusError):
        async def refuse(request_or_iterator, context):
            RPC_REQUESTS.labels(self.service, method, denied.code.name).inc()
            await context.abort(denied.code, denied.message)

        make = grpc.stream_unary_rpc_method_handler if handler.stream_unary else grpc.stream_stream_rpc_method_handler
        return make(refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)

    def _check_auth(self, metadata: dict[str, str]) -> StatusError | None:
        if not self.auth_token:
            return None
        given = metadata.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {self.auth_token}".encode()):
            return StatusError(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token in 'authorization' metadata")
        return None

    async def _fail(self, context, method: str, exc: BaseException) -> None:
        if isinstance(exc, StatusError):
            code, message = exc.code, exc.message
            log.info("rpc refused", method=method, code=code.name, reason=message)
        else:
            code = grpc.StatusCode.INTERNAL
            message = f"internal error in {self.service}; trace id {current_trace_id() or 'none'}"
            log.error("rpc failed", method=method, exc_info=exc)
        RPC_REQUESTS.labels(self.service, method, code.name).inc()
        await context.abort(code, message)

    def _unary(self, method, metadata, behavior):
        async def wrapped(request, context):
            with tracer().start_as_current_span(method, context=extracted_context(metadata), kind=trace.SpanKind.SERVER):
                started = time.perf_counter()
                try:
                    denied = self._check_auth(metadata)
                    if denied:
                        raise denied
                    response = await behavior(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await self._fail(context, method, exc)
                    return None
                RPC_REQUESTS.labels(self.service, method, "OK").inc()
                RPC_LATENCY.labels(self.service, method).observe(time.perf_counter() - started)
                return response

        return wrapped

    def _streaming(self, method, metadata, behavior):
        async def wrapped(request, context):
            with tracer().start_as_current_span(method, context=extracted_context(metadata), kind=trace.SpanKind.SERVER):
                try:
                    denied = self._check_auth(metadata)
                    if denied:
                        raise denied
                    async for item in behavior(request, context):
                        yield item
                except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    await self._fail(context, method, exc)
                    return
                RPC_REQUESTS.labels(self.service, method, "OK").inc()

        return wrapped


class _HealthWithFacts(HealthServicer):
    """The standard health service; each Check reply also carries the service's facts
    (`Service.health_info`: the partitions a replica holds, its model and provider) as initial
    metadata `streamsight-<fact>` (what `grpcurl -v ... grpc.health.v1.Health/Check` prints),
    since the standard reply has no field for them."""

    def __init__(self, facts: Callable[[], dict[str, str]]):
        super().__init__()
        self._facts = facts

    async def Check(self, request, context):
        try:
            facts = self._facts()
        except Exception:  # facts are a courtesy: health answers regardless
            facts = {}
        await context.send_initial_metadata(tuple((f"streamsight-{k.lower().replace('_', '-')}", str(v)) for k, v in facts.items()))
        return await super().Check(request, context)


class RpcServer:
    """A grpc.aio server with health, reflection and the platform's interceptor."""

    def __init__(self, service: str, servicers: Iterable[Servicer], host: str = "0.0.0.0", port: int = 0, auth_token: str = "",
                 facts: Callable[[], dict[str, str]] = dict):
        self.service = service
        self.servicers = list(servicers)
        self.address = f"{host}:{port}"
        self.health = _HealthWithFacts(facts)
        self.server = grpc.aio.server(
            interceptors=[_Interceptor(service, auth_token)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # gRPC sets SO_REUSEPORT by default: a second server on a taken port would start
                # and silently share its connections (a client got "Method not found" from the
                # wrong service). A taken port must fail the start instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = 0
        self.serving = False

    async def start(self) -> int:
        """Bind and serve; returns the bound port. Health says SERVING for each service."""
        for s in self.servicers:
            s.add_to_server(s.implementation, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in self.servicers] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        try:
            self.port = self.server.add_insecure_port(self.address)  # grpcio raises, older ones return 0
        except RuntimeError:
            self.port = 0
        if self.port == 0:  # in use, or not an address of this host: the settings must change
            raise ConfigError(f"cannot serve gRPC on {self.address}: the port is in use or the host is not this machine's (the grpc_port and grpc_host settings)")
        await self.server.start()
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        for s in self.servicers:
            await self.health.set(s.full_name, status)

    async def follow_readiness(
        self,
        ready: Callable[[], bool],
        interval_s: float = 0.25,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        """Poll `ready()` every `interval_s` and set health to match, until cancelled.

        `on_change(now_ready)` is awaited after each change (to log it, count it). A check that
        raises counts as not ready. Runs until cancelled; `stop()` ends it for good because
        health ignores changes once graceful shutdown began.
        """
        while True:
            try:
                now = bool(ready())
            except Exception as exc:
                log.warning("readiness check failed", error=repr(exc))
                now = False
            if now != self.serving:
                await self.set_serving(now)
                if on_change is not None:
                    await on_change(now)
            await asyncio.sleep(interval_s)

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING first (load balancers move away), then drain in-flight calls."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


class _CallMetadata:
    """Adds the trace context and the bearer token to a call's metadata."""

    def __init__(self, token: str):
        self.token = token

    def _details(self, details):
        metadata = list(details.metadata or [])
        metadata.extend(inject_headers().items())
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


# One class per call kind: grpc.aio files an interceptor under the first kind it implements only,
# so one class for both left server-streaming calls (WatchEvents, ReadClip) without the token.
class _UnaryUnaryMetadata(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _UnaryStreamMetadata(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


def channel(target: str, token: str = "") -> grpc.aio.Channel:
    """An insecure aio channel that carries trace context (and a bearer token if given) on every call."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=[_UnaryUnaryMetadata(token), _UnaryStreamMetadata(token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Each channel connects on its own: with gRPC's process-wide subchannel pool a new
            # channel to an address whose former server went away (a restarted service on the
            # same port) inherited that connection's backoff and failed at once with UNAVAILABLE.
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


async def wait_serving(target: str, timeout_s: float = 30.0, service: str = "") -> None:
    """Wait until `target`'s health service answers SERVING; TimeoutError otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with grpc.aio.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        last = "no answer"
        while loop.time() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last = exc.code().name
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{target} not SERVING after {timeout_s} s (last: {last})")
