"""OpenTelemetry tracing and Prometheus metrics shared by every service.

Traces: W3C trace context travels in gRPC metadata and NATS headers (`traceparent`), so one
highlight's trace reaches back to its ingest. `inject_headers` / `extracted_context` are the
two ends of that. Spans are exported over OTLP when `otlp_endpoint` is set; otherwise they stay
in process (an in-memory exporter can be attached by tests).

Metrics: the counters and histograms below are labelled by service; `start_metrics_server`
exposes them on `/metrics` when a port is configured.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SimpleSpanProcessor
from prometheus_client import Counter, Gauge, Histogram, start_http_server

_provider: TracerProvider | None = None


def configure_tracing(service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the process's tracer provider (once); later calls may only add an exporter."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": f"streamsight-{service}"}))
        trace.set_tracer_provider(_provider)
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def tracer(name: str = "streamsight") -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Return `headers` with the current trace context added (`traceparent`, `tracestate`)."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extracted_context(carrier: Mapping[str, str] | None) -> context.Context:
    """The trace context a message or call carried (empty context when none)."""
    return propagate.extract(dict(carrier or {}))


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


# Metrics, one family per concern; every service labels its own samples.
MESSAGES_IN = Counter("streamsight_messages_in_total", "Bus messages handled", ["service", "subject"])
MESSAGES_FAILED = Counter("streamsight_messages_failed_total", "Bus messages whose handling failed", ["service", "reason"])
DEAD_LETTERS = Counter("streamsight_dead_letters_total", "Messages sent to the dead-letter subject", ["service"])
PUBLISHED = Counter("streamsight_published_total", "Messages published", ["service", "kind"])
RPC_REQUESTS = Counter("streamsight_rpc_requests_total", "gRPC requests by outcome", ["service", "method", "code"])
RPC_LATENCY = Histogram("streamsight_rpc_seconds", "gRPC handling time", ["service", "method"])
HANDLE_LATENCY = Histogram("streamsight_handle_seconds", "Bus message handling time", ["service", "subject"])
ACTIVE_STREAMS = Gauge("streamsight_active_streams", "Streams being processed", ["service"])

# The bus's health. Disconnects, reconnects and client-side slow consumers are counted by the
# Bus's connection callbacks; server-side slow consumers (nats-server dropped messages for a client
# or cut it: MaxPending or the write deadline exceeded) only show in the server's log, which the
# supervisor of `up` reads (it labels them side=server in its own process and counts them in up.json).
NATS_DISCONNECTS = Counter("streamsight_nats_disconnects_total", "Connections to NATS lost", ["service"])
NATS_RECONNECTS = Counter("streamsight_nats_reconnects_total", "Connections to NATS re-established", ["service"])
NATS_SLOW_CONSUMERS = Counter(
    "streamsight_nats_slow_consumers_total",
    "Slow-consumer errors: side=client when nats-py dropped messages, side=server when nats-server reported the client as one (it drops messages for it or cuts it)",
    ["service", "side"],
)
BUS_USABLE = Gauge("streamsight_bus_usable", "1 while the service's bus is connected and JetStream answers (readiness)", ["service"])
CONSUMERS_RECREATED = Counter("streamsight_consumers_recreated_total", "Durable consumers re-created after NATS lost them", ["service"])
NATS_SERVER_RESTARTS = Counter("streamsight_nats_server_restarts_total", "Embedded nats-server restarts by the supervisor of `up`")


def start_metrics_server(port: int) -> None:
    """Serve /metrics on `port` (no-op for 0)."""
    if port:
        start_http_server(port)
