"""nats-server's own metrics, read from its monitoring endpoint, as Prometheus metrics.

nats-server serves JSON on its monitoring port (`http: 8222` in deploy/nats/nats.conf; the
embedded server of `up` on a free port): `/varz` (connections, subscriptions, messages and
bytes in and out, slow consumers, memory) and `/jsz` (JetStream's memory and file use, its
streams, consumers and messages). `NatsServerCollector` reads both on every scrape of the
/metrics endpoint it is registered on, so what Prometheus sees is as fresh as the scrape,
and there is no background poller. `streamsight_nats_server_up` is 0 when the endpoint did
not answer (the other families are then empty).

One process of a stack runs it: the service whose `nats_monitor_url` setting is set
(streamsight.service.run_service registers it); `up`, docker-compose and k8s set it on the
gateway. The names below are listed in README ("Metrics") and used by the Grafana dashboard.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

P = "streamsight_nats_server_"

# (family, kind, help, key in /varz)
VARZ = [
    ("connections", "gauge", "Client connections open now", "connections"),
    ("connections_opened", "counter", "Client connections opened since the server started", "total_connections"),
    ("subscriptions", "gauge", "Subscriptions held by the server", "subscriptions"),
    ("slow_consumers", "counter", "Clients the server found too slow (it dropped messages for them or cut them)", "slow_consumers"),
    ("in_msgs", "counter", "Messages the server received", "in_msgs"),
    ("out_msgs", "counter", "Messages the server sent", "out_msgs"),
    ("in_bytes", "counter", "Payload bytes the server received", "in_bytes"),
    ("out_bytes", "counter", "Payload bytes the server sent", "out_bytes"),
    ("memory_bytes", "gauge", "Resident memory of the nats-server process", "mem"),
    ("cpu_percent", "gauge", "CPU use of the nats-server process (100 = one core)", "cpu"),
]
# (family, help, key in /jsz)
JSZ = [
    ("jetstream_memory_bytes", "Bytes JetStream holds in memory (the MEDIA stream)", "memory"),
    ("jetstream_storage_bytes", "Bytes JetStream holds on disk", "storage"),
    ("jetstream_streams", "JetStream streams", "streams"),
    ("jetstream_consumers", "JetStream consumers", "consumers"),
    ("jetstream_messages", "Messages held in all JetStream streams", "messages"),
]
JSZ_LIMITS = [
    ("jetstream_max_memory_bytes", "JetStream's memory limit (max_memory_store)", "max_memory"),
    ("jetstream_max_storage_bytes", "JetStream's disk limit (max_file_store)", "max_storage"),
]
STREAM_FAMILIES = [
    ("stream_messages", "Messages a JetStream stream holds", "messages"),
    ("stream_bytes", "Bytes a JetStream stream holds", "bytes"),
    ("stream_consumers", "Consumers of a JetStream stream", "consumer_count"),
]


def metric_names() -> list[str]:
    """Every sample name the collector exports (counters with their `_total`)."""
    names = [P + "up", P + "jetstream_api_requests_total", P + "jetstream_api_errors_total"]
    names += [P + n + ("_total" if kind == "counter" else "") for n, kind, _, _ in VARZ]
    names += [P + n for n, _, _ in JSZ + JSZ_LIMITS + STREAM_FAMILIES]
    return names


class NatsServerCollector(Collector):
    """Reads `/varz` and `/jsz?streams=true` from `url` on each collect()."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as r:
            return json.load(r)

    def describe(self) -> Iterator[Metric]:
        return self._families(None, None, scraped=False)

    def collect(self) -> Iterator[Metric]:
        try:
            varz, jsz = self._get("/varz"), self._get("/jsz?streams=true")
        except (OSError, ValueError):  # unreachable, or not nats-server's JSON
            varz = jsz = None
        return self._families(varz, jsz)

    def _families(self, varz: dict | None, jsz: dict | None, scraped: bool = True) -> Iterator[Metric]:
        up = GaugeMetricFamily(P + "up", "1 when nats-server's monitoring endpoint answered this scrape")
        if scraped:
            up.add_metric([], 0.0 if varz is None else 1.0)
        yield up
        for name, kind, doc, key in VARZ:
            family = CounterMetricFamily(P + name, doc) if kind == "counter" else GaugeMetricFamily(P + name, doc)
            if varz is not None:
                family.add_metric([], float(varz.get(key) or 0))
            yield family
        for name, doc, key in JSZ:
            family = GaugeMetricFamily(P + name, doc)
            if jsz is not None:
                family.add_metric([], float(jsz.get(key) or 0))
            yield family
        for name, doc, key in JSZ_LIMITS:
            family = GaugeMetricFamily(P + name, doc)
            if jsz is not None:
                family.add_metric([], float((jsz.get("config") or {}).get(key) or 0))
            yield family
        api = (jsz or {}).get("api") or {}
        for name, doc, key in (("jetstream_api_requests", "JetStream API requests served", "total"),
                               ("jetstream_api_errors", "JetStream API requests that failed", "errors")):
            family = CounterMetricFamily(P + name, doc)
            if jsz is not None:
                family.add_metric([], float(api.get(key) or 0))
            yield family
        streams = [(a.get("name", ""), s) for a in (jsz or {}).get("account_details") or [] for s in a.get("stream_detail") or []]
        for name, doc, key in STREAM_FAMILIES:
            family = GaugeMetricFamily(P + name, doc, labels=["account", "stream"])
            for account, stream in streams:
                family.add_metric([account, stream.get("name", "")], float((stream.get("state") or {}).get(key) or 0))
            yield family


_registered: dict[str, NatsServerCollector] = {}


def register(url: str) -> NatsServerCollector:
    """Export nats-server's metrics at `url` on this process's /metrics (once per URL)."""
    if url not in _registered:
        _registered[url] = NatsServerCollector(url)
        REGISTRY.register(_registered[url])
    return _registered[url]
