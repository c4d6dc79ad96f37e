"""A 3-node JetStream cluster loses nothing when a node is SIGKILLed mid-stream.

Real nats-server processes on loopback, R3 streams (nats_replicas=3), and the platform's own
Bus on both sides: a publisher with message ids (retried with the same id until acknowledged)
and a durable `consume` consumer. Nodes are killed in turn, first the one the consumer is
connected to, then the FEATURES stream's leader (stream info's cluster.leader), twice each,
and started again after the stack made progress without them. Then: every acknowledged message
was handled, the stream holds each id once, redeliveries stay within the batches in flight at
the kills, and every node (the restarted ones too) holds every message. The recovery time (kill
to the first handled message published after it: publisher and consumer both going again) is
printed, not asserted.

MEDIA keeps one copy: a service that starts while that copy's node is down goes on without it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request

import pytest

from streamsight import subjects
from streamsight.bus import Bus
from streamsight.natsd import NatsCluster, NatsServer

pytestmark = pytest.mark.slow

BATCH = 16  # the consumer's fetch size: at most this many can be handled but not yet acknowledged at a kill
PUBLISH_TIMEOUT_S = 2.0


def _node_messages(node: NatsServer, stream: str) -> int:
    """Messages `stream` holds on this node (its own replica), from its monitoring port."""
    url = f"http://127.0.0.1:{node.monitor_port}/jsz?streams=true"
    with urllib.request.urlopen(url, timeout=2) as r:
        data = json.load(r)
    for account in data.get("account_details") or []:
        for info in account.get("stream_detail") or []:
            if info["name"] == stream:
                return int(info["state"]["messages"])
    return 0


async def _wait(condition, timeout_s: float, what: str, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(step_s)
    raise AssertionError(f"{what} not within {timeout_s} s")


async def test_a_node_killed_mid_stream_loses_nothing(tmp_path):
    cluster = await asyncio.to_thread(NatsCluster(tmp_path / "nats", size=3).start)
    publisher = consumer = None
    try:
        publisher = await Bus.connect(cluster.url, "test-pub", replicas=3)
        await publisher.ensure_streams()
        info = await publisher.js.stream_info(subjects.FEATURES_STREAM)
        assert info.config.num_replicas == 3 and info.cluster is not None and len(info.cluster.replicas) == 2
        consumer = await Bus.connect(cluster.url, "test-sub", replicas=3)

        acked: list[int] = []
        handled: list[int] = []
        handled_at: list[float] = []
        stop_publishing = asyncio.Event()
        subject = subjects.features("clustertest", "s1")

        async def handler(msg) -> None:
            handled.append(int(msg.data))
            handled_at.append(time.monotonic())

        async def publish_all() -> None:
            i = 0
            while not stop_publishing.is_set():
                try:  # bounded: a request sent just before its node died is answered by no one
                    await asyncio.wait_for(publisher.publish(subject, str(i).encode(), msg_id=f"m{i}"), PUBLISH_TIMEOUT_S)
                except Exception:
                    await asyncio.sleep(0.1)
                    continue  # the same id again: the stream keeps it once
                acked.append(i)
                i += 1
                await asyncio.sleep(0.005)

        consumer.consume("cluster-test", subject, handler, subjects.FEATURES_STREAM, batch=BATCH, ack_wait_s=5.0)
        pub_task = asyncio.create_task(publish_all())
        await _wait(lambda: _true(len(handled) > 50), 20, "first messages handled")

        recovery_s: list[float] = []
        victims: list[str] = []
        for round_ in range(4):
            if round_ % 2 == 0:
                victim = cluster.node_at(consumer.nc.connected_url.port)
                why = "consumer's node"
            else:
                leader = (await publisher.js.stream_info(subjects.FEATURES_STREAM)).cluster.leader
                victim = cluster.node_named(leader)
                why = "stream leader"
            victims.append(f"{victim.cluster.name} ({why})")
            before, first_new = len(handled), len(acked)  # ids from first_new on are published after the kill
            killed_at = time.monotonic()
            victim.kill()
            print(f"\nkill {victims[-1]} at {time.strftime('%H:%M:%S')}", flush=True)
            await _wait(lambda: _true(max(handled[before:], default=-1) >= first_new + 20), 30, f"progress after killing {victims[-1]}")
            recovery_s.append(next(t for i, t in zip(handled[before:], handled_at[before:]) if i >= first_new) - killed_at)
            await asyncio.to_thread(victim.start)
            await asyncio.to_thread(cluster.wait_healthy, 30)
            await _wait(lambda: _true(len(handled) >= before + 60), 30, f"progress after {victims[-1]} came back")

        stop_publishing.set()
        await pub_task
        published = len(acked)
        await _wait(lambda: _true(set(range(published)) <= set(handled)), 30, "every acknowledged message handled")

        state = (await publisher.js.stream_info(subjects.FEATURES_STREAM)).state
        assert state.messages == published, f"the stream holds {state.messages} messages for {published} ids"
        assert acked == list(range(published))
        duplicates = len(handled) - len(set(handled))
        assert duplicates <= BATCH * len(victims), f"{duplicates} messages handled twice over {len(victims)} kills"

        async def all_nodes_caught_up() -> bool:
            return all(_node_messages(n, subjects.FEATURES_STREAM) == published for n in cluster.nodes)

        await _wait(all_nodes_caught_up, 30, "every node holding every message", step_s=0.2)
        print(
            f"\ncluster node loss: {published} messages, kills {victims}; recovery (kill -> first message published after it handled)"
            f" median {statistics.median(recovery_s):.2f} s, max {max(recovery_s):.2f} s, each {[round(r, 2) for r in recovery_s]};"
            f" handled twice: {duplicates}"
        )
    finally:
        for bus in (publisher, consumer):
            if bus is not None:
                await bus.close()
        await asyncio.to_thread(cluster.stop)


async def _true(value: bool) -> bool:
    return value


async def test_a_service_starting_while_medias_only_node_is_down_goes_on_without_it(tmp_path):
    """MEDIA keeps one copy (memory, transient): while its node is down, a service that starts
    provisions the replicated streams and goes on; MEDIA is back, empty, with its node."""
    cluster = await asyncio.to_thread(NatsCluster(tmp_path / "nats", size=3).start)
    first = late = None
    try:
        first = await Bus.connect(cluster.url, "test-first", replicas=3)
        await first.ensure_streams()
        media = (await first.js.stream_info(subjects.MEDIA_STREAM)).cluster
        assert media.replicas == [] or media.replicas is None, "MEDIA has one copy"
        node = cluster.node_named(media.leader)
        node.kill()
        late = await Bus.connect(",".join(n.url for n in cluster.nodes if n is not node), "test-late", replicas=3)
        await late.ensure_streams()  # MEDIA does not answer: skipped, not fatal
        ack = await late.publish(subjects.features("clustertest", "s2"), b"f", msg_id="f1")
        assert ack.stream == subjects.FEATURES_STREAM
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(cluster.wait_healthy, 30)
        ack = await late.publish(subjects.media("windows", "s2"), b"w", msg_id="w1")
        assert ack.stream == subjects.MEDIA_STREAM
    finally:
        for bus in (first, late):
            if bus is not None:
                await bus.close()
        await asyncio.to_thread(cluster.stop)
