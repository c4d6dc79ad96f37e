"""structlog set-up: JSON lines on stderr with service, stream_id, window and trace_id bound.

Call `configure_logging(service, level, fmt)` once at start. Use `structlog.get_logger()` and
`bind_contextvars(stream_id=..., window=...)` where the work happens; the current span's trace id
is added to every line by a processor, so logs and traces join up.
"""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace


def _add_trace_id(_, __, event: dict) -> dict:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
    return event


class _StderrLogger:
    """Writes each rendered line to whatever sys.stderr is at that moment (never a stale handle)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Route structlog and stdlib logging to stderr in one format."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_id,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: _StderrLogger(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
