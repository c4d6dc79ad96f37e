"""Logs are JSON lines with the service, bound context and trace id; metrics are served."""

from __future__ import annotations

import json
import urllib.request

import structlog

from streamsight.logs import configure_logging
from streamsight.natsd import free_port
from streamsight.telemetry import PUBLISHED, configure_tracing, start_metrics_server, tracer


def test_json_logs_carry_service_stream_window_and_trace_id(capsys):
    configure_tracing("test")
    configure_logging("vision", "info", "json")
    log = structlog.get_logger("x")
    with tracer().start_as_current_span("work") as span:
        structlog.contextvars.bind_contextvars(stream_id="s1", window=4)
        log.info("window scored", score=0.5)
        structlog.contextvars.unbind_contextvars("stream_id", "window")
    log.debug("hidden at info level")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    record = lines[0]
    assert record["event"] == "window scored" and record["service"] == "vision" and record["level"] == "info"
    assert record["stream_id"] == "s1" and record["window"] == 4 and record["score"] == 0.5
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_metrics_endpoint_serves_the_counters():
    port = free_port()
    start_metrics_server(port)
    PUBLISHED.labels("test", "highlight").inc(3)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'streamsight_published_total{kind="highlight",service="test"} 3.0' in text


async def test_nats_disconnects_and_reconnects_are_counted_per_service(tmp_path):
    import asyncio

    from prometheus_client import REGISTRY

    from streamsight.bus import Bus
    from streamsight.natsd import NatsServer

    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"service": "counted"}) or 0.0

    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    bus = await Bus.connect(server.url, "counted")
    try:
        before = count("streamsight_nats_disconnects_total"), count("streamsight_nats_reconnects_total")
        server.stop()
        for _ in range(300):  # a hang guard: the client notices within its ping / read loop
            if count("streamsight_nats_disconnects_total") > before[0]:
                break
            await asyncio.sleep(0.1)
        assert count("streamsight_nats_disconnects_total") == before[0] + 1
        server.start()
        for _ in range(300):
            if count("streamsight_nats_reconnects_total") > before[1]:
                break
            await asyncio.sleep(0.1)
        assert count("streamsight_nats_reconnects_total") == before[1] + 1
        assert count("streamsight_nats_disconnects_total") == before[0] + 1
    finally:
        await bus.close()
        server.stop()
