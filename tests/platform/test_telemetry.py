"""Logs are JSON lines with the service, bound context and trace id; metrics are served."""

from __future__ import annotations

import json
import urllib.request

import pytest
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


def listen_address(port: int) -> str | None:
    """The local address a TCP socket listens on at `port`, from /proc/net/tcp (None if none)."""
    import socket
    import struct
    from pathlib import Path

    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("needs Linux's /proc/net/tcp to see which address a socket listens on")
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            return socket.inet_ntoa(struct.pack("<I", int(host, 16)))
    return None


def test_metrics_bind_loopback_unless_told_otherwise():
    from streamsight.config import BaseServiceSettings

    assert BaseServiceSettings().metrics_host == "127.0.0.1"
    default, everywhere = free_port(), free_port()
    start_metrics_server(default)
    start_metrics_server(everywhere, "0.0.0.0")
    assert listen_address(default) == "127.0.0.1"
    assert listen_address(everywhere) == "0.0.0.0"


def test_otel_traces_exporter_is_read_and_checked():
    from streamsight.config import ConfigError
    from streamsight.telemetry import trace_exporters

    assert trace_exporters({}) == []
    assert trace_exporters({}, otlp_endpoint="collector:4317") == ["otlp"]
    assert trace_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == ["otlp"]
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "Console, otlp"}) == ["console", "otlp"]
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "none"}, otlp_endpoint="collector:4317") == []
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: unknown exporter zipkin"):
        trace_exporters({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otel_service_name_and_resource_attributes_are_honoured(monkeypatch):
    from streamsight.telemetry import _resource

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=lab,team=video")
    import os

    plain = _resource("vision", os.environ).attributes
    assert plain["service.name"] == "streamsight-vision" and plain["deployment.environment"] == "lab" and plain["team"] == "video"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "vision-eu1")
    assert _resource("vision", os.environ).attributes["service.name"] == "vision-eu1"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=vision-b")
    assert _resource("vision", os.environ).attributes["service.name"] == "vision-b"


def test_every_span_names_its_service_and_stream_spans_their_stream_and_window():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamsight.telemetry import _ServiceAttribute, annotate, stream_attributes

    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(_ServiceAttribute("fusion"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = provider.get_tracer("t")
    with spans.start_as_current_span("score", attributes=stream_attributes("match-1", 7)):
        pass
    from opentelemetry import trace

    with trace.use_span(spans.start_span("later")):
        annotate(stream_id="match-2")
    with spans.start_as_current_span("plain"):
        pass
    got = {s.name: dict(s.attributes) for s in exporter.get_finished_spans()}
    assert got["score"] == {"service": "fusion", "stream.id": "match-1", "window.index": 7}
    assert got["plain"] == {"service": "fusion"}
    assert stream_attributes() == {} and stream_attributes(window=0) == {"window.index": 0}


def test_message_attributes_name_the_stream_and_a_feature_records_window():
    from nats.aio.msg import Msg

    from streamsight import subjects
    from streamsight.bus import message_attributes

    def msg(subject: str, msg_id: str | None = None) -> Msg:
        return Msg(None, subject=subject, data=b"", headers={"Nats-Msg-Id": msg_id} if msg_id else None)

    assert message_attributes(msg(subjects.features("vision", "m1"), subjects.feature_msg_id("m1", "vision", 12))) == {
        "stream.id": "m1", "window.index": 12}
    assert message_attributes(msg(subjects.media("frames_cnn", "m1"))) == {"stream.id": "m1"}
    assert message_attributes(msg(subjects.event("highlight", "m1"), "m1:highlight:3")) == {"stream.id": "m1"}
    assert message_attributes(msg(subjects.deadletter("vision"))) == {}
