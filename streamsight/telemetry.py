"""OpenTelemetry tracing and Prometheus metrics shared by every service.

Traces: W3C trace context travels in gRPC metadata and NATS headers (`traceparent`), so one
highlight's trace reaches back to its ingest. `inject_headers` / `extracted_context` are the
two ends of that. Every span carries `service` (the streamsight service that made it), and the
spans about one stream carry `stream.id`, and about one window `window.index`
(`stream_attributes`), so a stream's trace can be found by its id.

The standard OpenTelemetry variables are honoured (`configure_tracing`):

- `OTEL_TRACES_EXPORTER`: a comma-separated list of `console` (one JSON line per span on
  stdout), `otlp` and `none`. Unset: `otlp` when an OTLP endpoint is given, else none (spans
  stay in process; tests attach an in-memory exporter);
- `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`
  (`grpc`, the default, or `http/protobuf`), `OTEL_EXPORTER_OTLP_HEADERS`, ... are read by the
  exporter itself; the `otlp_endpoint` setting is used when neither endpoint variable is set;
- `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (default service.name:
  `streamsight-<service>`); `OTEL_TRACES_SAMPLER` (read by the SDK); `OTEL_SDK_DISABLED=true`
  turns tracing off.

Metrics: the counters and histograms below are labelled by service; `start_metrics_server`
exposes them on `/metrics` when a port is configured, on 127.0.0.1 unless told otherwise
(the `metrics_host` setting).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streamsight.config import ConfigError, env_name

SERVICE = "service"
STREAM_ID = "stream.id"
WINDOW_INDEX = "window.index"
EXPORTERS = ("console", "otlp", "none")

_provider: TracerProvider | None = None


class _ServiceAttribute(SpanProcessor):
    """Stamps `service` on every span as it starts (so spans of one stream can be told apart by service)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        span.set_attribute(SERVICE, self.service)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def trace_exporters(env: Mapping[str, str], otlp_endpoint: str = "") -> list[str]:
    """The exporters `OTEL_TRACES_EXPORTER` asks for (see the module docstring); ConfigError for an unknown one."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        has_endpoint = otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if has_endpoint else []
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)} (one or more of {', '.join(EXPORTERS)})")
    return [n for n in dict.fromkeys(names) if n != "none"]


def _resource(service: str, env: Mapping[str, str]) -> Resource:
    named = env.get("OTEL_SERVICE_NAME") or any(
        part.split("=", 1)[0].strip() == "service.name" for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    )
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; an explicit name would win over them.
    return Resource.create({} if named else {"service.name": f"streamsight-{service}"})


def _otlp_exporter(env: Mapping[str, str], otlp_endpoint: str) -> SpanExporter:
    endpoint = None if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else otlp_endpoint or None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The setting's endpoint is plain host:port (a collector beside the stack); the variables say for themselves.
        return OTLPSpanExporter(endpoint=endpoint, insecure=True) if endpoint else OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=endpoint)
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported for traces (grpc or http/protobuf)")


def _console_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + os.linesep


def configure_tracing(
    service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None, env: Mapping[str, str] | None = None
) -> TracerProvider:
    """Install the process's tracer provider (once), with the exporters the OTEL_* variables ask
    for (module docstring); later calls may only add an exporter. ConfigError for a bad variable."""
    global _provider
    env = os.environ if env is None else env
    if _provider is None:
        names = trace_exporters(env, otlp_endpoint)
        _provider = TracerProvider(resource=_resource(service, env))
        _provider.add_span_processor(_ServiceAttribute(service))
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
            if "console" in names:  # a debugging aid: each span printed as it ends
                _provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=_console_line)))
            if "otlp" in names:
                _provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env, otlp_endpoint)))
        trace.set_tracer_provider(_provider)
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def stream_attributes(stream_id: str | None = None, window: int | None = None) -> dict[str, str | int]:
    """Span attributes naming a stream and a window (those given)."""
    attrs: dict[str, str | int] = {}
    if stream_id:
        attrs[STREAM_ID] = stream_id
    if window is not None:
        attrs[WINDOW_INDEX] = int(window)
    return attrs


def annotate(stream_id: str | None = None, window: int | None = None) -> None:
    """Put `stream.id` / `window.index` on the current span (no-op outside a recording span)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(stream_attributes(stream_id, window))


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
MESSAGES_RETURNED = Counter("streamsight_messages_returned_total", "Bus messages handed back unacknowledged: the lease on their partition ran out", ["service"])
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
# Backlog of every durable consumer a service pulls from, polled every few seconds by the Bus
# (streamsight.bus.Bus.watch_consumers) from JetStream's consumer info.
CONSUMER_PENDING = Gauge(
    "streamsight_consumer_pending_messages", "Messages of the stream not yet delivered to the durable consumer (JetStream num_pending)",
    ["service", "stream", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "streamsight_consumer_ack_pending_messages", "Messages delivered to the durable consumer and not yet acknowledged (num_ack_pending)",
    ["service", "stream", "consumer"],
)
CONSUMER_REDELIVERED = Gauge(
    "streamsight_consumer_redelivered_messages", "Unacknowledged messages of the durable consumer delivered more than once (num_redelivered)",
    ["service", "stream", "consumer"],
)
# Counted where the decoder reports them (services/ingest/decode.py): one per packet or frame
# that failed to decode; the window records and glitch's decoder flags carry them per stream.
DECODE_ERRORS = Counter("streamsight_ingest_decode_errors_total", "Packets or frames ingest's decoder could not decode")
NATS_SERVER_RESTARTS = Counter("streamsight_nats_server_restarts_total", "Embedded nats-server restarts by the supervisor of `up`")


def start_metrics_server(port: int, host: str = "127.0.0.1", section: str = "") -> None:
    """Serve /metrics on `host`:`port` (no-op for port 0); ConfigError if it cannot bind there."""
    if port:
        try:
            start_http_server(port, addr=host)
        except OSError as exc:  # in use, or not an address of this host: the settings must change
            setting = env_name(section, "metrics_port")
            raise ConfigError(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; set {setting} to a free port (0: no metrics)") from exc
