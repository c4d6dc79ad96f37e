"""deploy/grafana's dashboard asks only for metrics the services really export, by labels they have.

What is exported is read from the source of truth: the Prometheus collectors registered once
every service of the stack (streamsight.config.SECTIONS) is imported, and a scrape of a real
nats-server through the collector that exports its own metrics.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

from streamsight.config import SECTIONS
from streamsight.natsmetrics import NatsServerCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamsight.json"
METRIC = re.compile(r"\bstreamsight_[a-z0-9_]+")
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, for every streamsight metric a service of the stack exports."""
    for section in SECTIONS.values():
        importlib.import_module(f"{section.module}.service")
    names: dict[str, set[str]] = {}

    def add(family, labels: set[str]) -> None:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())

    collectors = getattr(REGISTRY, "_collector_to_names", {})
    for collector in list(collectors):
        if isinstance(collector, NatsServerCollector):
            continue
        for family in collector.describe() if hasattr(collector, "describe") else collector.collect():
            if family.name.startswith("streamsight_"):
                add(family, set(getattr(collector, "_labelnames", ())))
    return names


def nats_exported(nats_server) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for family in NatsServerCollector(f"http://127.0.0.1:{nats_server.monitor_port}").collect():
        labels = {label for sample in family.samples for label in sample.labels}
        for sample in family.samples:
            names[sample.name] = labels
        if not family.samples:  # a labelled family with nothing to say right now
            names[family.name] = {"account", "stream"}
    return names


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


async def test_every_query_names_an_exported_metric_and_its_labels(nats_server, bus):
    names = exported() | nats_exported(nats_server)
    assert "streamsight_stage_lag_seconds" in names and "streamsight_nats_server_connections" in names  # the sources were read
    checked = 0
    for title, expr in queries():
        metrics = METRIC.findall(expr)
        assert metrics, f"{title}: {expr} names no streamsight metric"
        for metric in metrics:
            assert metric in names, f"{title}: {metric} is not exported by any service"
            checked += 1
        labels = set().union(*(names[m] for m in metrics))
        for group in BY.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                assert label in labels, f"{title}: groups by {label!r}, which {metrics} do not have"
    assert checked >= 30


def test_the_dashboard_covers_lag_backlog_and_nats_and_is_importable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    used = {m for _, expr in queries() for m in METRIC.findall(expr)}
    for needed in ("streamsight_stage_lag_seconds", "streamsight_consumer_pending_messages", "streamsight_consumer_ack_pending_messages",
                   "streamsight_fusion_windows_missing_total", "streamsight_ingest_decode_errors_total", "streamsight_nats_reconnects_total",
                   "streamsight_nats_server_connections", "streamsight_nats_server_slow_consumers_total", "streamsight_nats_server_jetstream_memory_bytes"):
        assert needed in used, needed
