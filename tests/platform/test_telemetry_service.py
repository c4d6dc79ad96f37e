"""A service as it runs in a stack (its own process, `python -m services.audio`), with the
standard OTEL_* variables, on a real stream: real NATS, the real ingest service, a real file.

It prints its spans with OTEL_TRACES_EXPORTER=console, and those of the stream carry
`stream.id`, `window.index` and `service`; its /metrics listens on 127.0.0.1 only and carries
the runtime's lag and backlog gauges and, since its nats_monitor_url is set, nats-server's own
metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import subjects
from streamsight.natsd import free_port
from streamsight.rpc import channel, wait_serving
from streamsight.gen.ingest.v1 import ingest_pb2_grpc

from .test_telemetry import listen_address

REPO = Path(__file__).resolve().parents[2]
STREAM = "bunny-traced"


def service_env(nats_server, grpc_port: int, metrics_port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMSIGHT_", "OTEL_"))}
    env.update({
        "STREAMSIGHT_NATS_URL": nats_server.url,
        "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
        "STREAMSIGHT_DATA_DIR": str(data_dir),
        "STREAMSIGHT_AUDIO_GRPC_PORT": str(grpc_port),
        "STREAMSIGHT_AUDIO_METRICS_PORT": str(metrics_port),
        "STREAMSIGHT_AUDIO_NATS_MONITOR_URL": f"http://127.0.0.1:{nats_server.monitor_port}",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    })  # fmt: skip
    return env


async def test_a_service_prints_its_streams_spans_and_serves_its_metrics_on_loopback(nats_server, bus, tmp_path, shared_data, ingest_vod):
    grpc_port, metrics_port = free_port(), free_port()
    out, err = tmp_path / "audio.out", tmp_path / "audio.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "services.audio"], cwd=REPO, stdout=stdout, stderr=stderr,
                                   env=service_env(nats_server, grpc_port, metrics_port, tmp_path / "audio"))  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{grpc_port}", 60)
        ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "ingest"))
        async with ingest.serving(), channel(ingest.address) as ch:
            await ingest_vod(ingest_pb2_grpc.IngestStub(ch), {STREAM: shared_data / "media" / "bigbuckbunny.mp4"})
        for _ in range(600):  # until the audio service published the stream's one window (a hang guard)
            if await bus.read_all(subjects.FEATURES_STREAM, subjects.features("audio", STREAM)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no audio record for {STREAM}; service log: {err.read_text()[-2000:]}")
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode())
        address = listen_address(metrics_port)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, err.read_text()[-2000:]

    spans = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    ours = [s for s in spans if s["attributes"].get("stream.id") == STREAM]
    assert ours, f"no span names stream {STREAM}; printed: {[s['name'] for s in spans][:20]}"
    published = [s for s in ours if s["name"] == "publish audio window"]
    assert [s["attributes"] for s in published] == [{"service": "audio", "stream.id": STREAM, "window.index": 0}]
    assert all(s["attributes"]["service"] == "audio" for s in spans)
    resource = published[0]["resource"]["attributes"]
    assert resource["service.name"] == "streamsight-audio" and resource["deployment.environment"] == "test"
    batches = {s["context"]["span_id"]: s for s in ours if s["name"].startswith("handle batch")}
    assert published[0]["parent_id"] in batches, "a window's span sits in the span of the fetch that finished it"

    assert address == "127.0.0.1"
    lines = metrics.splitlines()
    assert 'streamsight_stage_lag_seconds{stage="audio"} 0.0' in lines  # the stream ended: nothing to lag behind
    assert any(line.startswith('streamsight_consumer_pending_messages{consumer="audio-p') and 'stream="MEDIA"' in line for line in lines)
    assert "streamsight_nats_server_up 1.0" in lines
    connections = next(float(line.split()[1]) for line in lines if line.startswith("streamsight_nats_server_connections "))
    assert connections >= 2  # this service and the test's bus


def test_an_unknown_trace_exporter_stops_the_service_with_a_clear_message(nats_server, tmp_path):
    env = service_env(nats_server, free_port(), 0, tmp_path) | {"OTEL_TRACES_EXPORTER": "zipkin"}
    done = subprocess.run([sys.executable, "-m", "services.audio"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "streamsight-audio: OTEL_TRACES_EXPORTER: unknown exporter zipkin (one or more of console, otlp, none)" in done.stderr
