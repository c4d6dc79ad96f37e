"""nats-server's own metrics, read from its real monitoring endpoint and exported for Prometheus."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamsight import subjects
from streamsight.natsd import free_port
from streamsight.natsmetrics import NatsServerCollector, metric_names


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """What a Prometheus scrape of a registry holding only the collector returns: (sample name, labels) -> value."""
    registry = CollectorRegistry()
    registry.register(NatsServerCollector(url))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def test_server_metrics_follow_what_the_server_does(nats_server, bus):
    url = f"http://127.0.0.1:{nats_server.monitor_port}"
    before = scrape(url)
    for window in range(5):
        await bus.publish(subjects.features("audio", "natsmetrics"), b"x" * 1000, subjects.feature_msg_id("natsmetrics", "audio", window))
    after = scrape(url)

    p = "streamsight_nats_server_"
    assert after[(p + "up", ())] == 1
    assert after[(p + "connections", ())] >= 1  # this test's bus at least
    assert after[(p + "subscriptions", ())] > 0
    assert after[(p + "in_msgs_total", ())] >= before[(p + "in_msgs_total", ())] + 5
    assert after[(p + "in_bytes_total", ())] >= before[(p + "in_bytes_total", ())] + 5000
    assert after[(p + "slow_consumers_total", ())] == 0
    assert after[(p + "memory_bytes", ())] > 1e6  # the server process's RSS
    assert after[(p + "jetstream_streams", ())] >= 4  # the platform's MEDIA, FEATURES, EVENTS, DEADLETTER
    assert after[(p + "jetstream_max_memory_bytes", ())] == nats_server.memory_store
    features = (p + "stream_messages", (("account", "$G"), ("stream", subjects.FEATURES_STREAM)))
    assert after[features] >= before.get(features, 0) + 5
    assert after[(p + "jetstream_storage_bytes", ())] >= 5000
    exported = {name for name, _ in after}
    assert exported <= set(metric_names()), exported - set(metric_names())
    assert {n for n in metric_names() if not n.startswith(p + "stream_")} <= exported


def test_an_unreachable_server_reads_as_down_not_as_an_error():
    got = scrape(f"http://127.0.0.1:{free_port()}")
    assert got == {("streamsight_nats_server_up", ()): 0.0}
