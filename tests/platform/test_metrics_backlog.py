"""Lag and backlog metrics on a real nats-server: a stage's media seconds behind ingest
(streamsight.lag) and every durable consumer's backlog (streamsight.bus.Bus.poll_consumers)."""

from __future__ import annotations

import asyncio

from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import REGISTRY

from streamsight import subjects
from streamsight.gen.media.v1 import media_pb2
from streamsight.lag import MediaLag


def lag_of(stage: str) -> float | None:
    return REGISTRY.get_sample_value("streamsight_stage_lag_seconds", {"stage": stage})


def test_lag_is_the_largest_over_the_streams_held_and_zero_without_any():
    lag = MediaLag("lagtest")
    assert lag_of("lagtest") == 0.0
    lag.seen("a", 30.0)  # ingest is at 30 s in stream a; the stage finished nothing yet
    assert lag_of("lagtest") == 30.0
    lag.handled("a", 20.0)
    lag.seen("b", 50.0)
    lag.handled("b", 45.0)
    assert lag.lag("a") == 10.0 and lag.lag("b") == 5.0 and lag_of("lagtest") == 10.0
    lag.handled("a", 40.0)  # past what it saw: caught up, never negative
    assert lag.lag("a") == 0.0 and lag_of("lagtest") == 5.0
    lag.forget("b")
    lag.forget("a")
    assert lag_of("lagtest") == 0.0 and lag.streams == []


async def test_ingests_position_is_read_from_the_window_records_media_still_holds(bus):
    # MEDIA keeps a message while some consumer has not taken it: one that takes nothing.
    await bus.js.add_consumer(subjects.MEDIA_STREAM, ConsumerConfig(
        durable_name="lag-reader", ack_policy=AckPolicy.EXPLICIT, filter_subject=subjects.media("windows", "lagging"), inactive_threshold=60))
    for window in range(4):
        record = media_pb2.WindowRecord(stream_id="lagging", index=window, start_s=10.0 * window, end_s=10.0 * window + 10)
        await bus.publish(subjects.media("windows", "lagging"), record)
    lag = MediaLag("polled")
    lag.handled("lagging", 10.0)  # the stage finished window 0
    lag.handled("caught-up", 25.0)  # MEDIA holds nothing of this one: its own view stands
    await lag.poll_heads(bus.js)
    assert lag.lag("lagging") == 30.0 and lag.lag("caught-up") == 0.0
    assert lag_of("polled") == 30.0
    await bus.js.delete_consumer(subjects.MEDIA_STREAM, "lag-reader")


async def test_consumer_backlog_is_polled_per_durable_consumer(bus):
    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"service": "test", "stream": subjects.FEATURES_STREAM, "consumer": "backlogged"})

    subject = subjects.features("vision", "backlog")
    for window in range(10):
        await bus.publish(subject, b"record", subjects.feature_msg_id("backlog", "vision", window))
    taken, release = asyncio.Event(), asyncio.Event()

    async def handler(msgs):
        taken.set()
        await release.wait()  # hold the fetch unacknowledged
        return {}

    bus.consume_batches("backlogged", subject, handler, subjects.FEATURES_STREAM, batch=4)
    await asyncio.wait_for(taken.wait(), 30)  # a hang guard
    await bus.poll_consumers()
    assert sample("streamsight_consumer_ack_pending_messages") == 4
    assert sample("streamsight_consumer_pending_messages") == 6
    assert sample("streamsight_consumer_redelivered_messages") == 0
    release.set()
    for _ in range(300):  # until the rest is handled (a hang guard, not a timing assertion)
        await bus.poll_consumers()
        if sample("streamsight_consumer_pending_messages") == 0 and sample("streamsight_consumer_ack_pending_messages") == 0:
            break
        await asyncio.sleep(0.1)
    assert sample("streamsight_consumer_pending_messages") == 0
    assert sample("streamsight_consumer_ack_pending_messages") == 0
