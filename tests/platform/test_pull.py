"""The consume path under pressure: byte-bounded fetches, lost consumers, messages that kill.

Each test uses a real nats-server. The first one reproduces what cut the glitch service:
big frames fetched by a consumer whose handler is slow; with fetches bounded in bytes, the
server never owes the client more than the budget, so nothing is cut and every message comes
once, in order.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig

from streamsight import subjects
from streamsight.bus import FETCH_BUDGET, MAX_PAYLOAD, Bus
from streamsight.natsd import NatsServer
from streamsight.pull import PROBE_BYTES, ByteBudget, PullFetcher


def _slow_consumers(server: NatsServer) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/varz", timeout=2) as r:
        return int(json.load(r).get("slow_consumers", 0))


async def test_big_messages_and_a_slow_handler_are_paced_not_cut(nats_server, bus):
    frame = 3 * 1024 * 1024  # a 1024x1024 RGB frame; 40 of them are 120 MiB
    count = 40
    seen: list[int] = []
    done = asyncio.Event()
    peak = 0

    async def handler(msgs):
        nonlocal peak
        peak = max(peak, sum(len(m.data) for m in msgs))
        await asyncio.sleep(0.3)  # a slow classifier: the server must wait, not push more
        seen.extend(int.from_bytes(m.data[:4], "big") for m in msgs)
        if len(seen) >= count:
            done.set()
        return {}

    disconnects_before = bus.nc.stats["reconnects"]
    bus.consume_batches("pulltest-big", subjects.media("frames_glitch", "big"), handler, subjects.MEDIA_STREAM, batch=64)
    await _until(lambda: _has_consumer(bus, subjects.MEDIA_STREAM, "pulltest-big"))  # MEDIA keeps messages only for consumers
    for i in range(count):
        await bus.publish(subjects.media("frames_glitch", "big"), i.to_bytes(4, "big") + bytes(frame - 4))
    await asyncio.wait_for(done.wait(), 60)
    assert seen == list(range(count)), "every frame once, in stored order"
    assert peak <= 16 * 1024 * 1024 + MAX_PAYLOAD, f"one fetch brought {peak} bytes"
    assert bus.nc.stats["reconnects"] == disconnects_before
    assert _slow_consumers(nats_server) == 0


async def test_byte_budget_holds_back_a_pull_until_another_returns():
    budget = ByteBudget(10)
    order = []

    async def pull(name: str, amount: int, hold: float) -> None:
        async with budget.reserve(amount):
            order.append((name, budget.reserved))
            await asyncio.sleep(hold)

    await asyncio.gather(pull("a", 6, 0.2), pull("b", 6, 0.0))
    assert order == [("a", 6), ("b", 6)], "b waited until a's bytes were back"
    assert budget.reserved == 0
    assert FETCH_BUDGET < 64 * 1024 * 1024, "below nats-server's default max_pending"


async def test_byte_budget_serves_pulls_in_turn_so_none_starves():
    """Two consumers that pull again at once must not starve a third (fusion's three consumers)."""
    budget = ByteBudget(40)
    served = {"a": 0, "b": 0, "c": 0}
    stop = asyncio.Event()

    async def consumer(name: str) -> None:
        while not stop.is_set():
            async with budget.reserve(16):
                served[name] += 1
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(consumer(n)) for n in "abc"]
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    assert min(served.values()) >= 5, served
    assert budget.reserved == 0


async def test_consumers_waiting_for_work_do_not_hold_a_busy_ones_bytes(bus):
    """A replica holding 16 partitions: 15 idle consumers wait while one has 720p frames queued.

    Waiting pulls ask for PROBE_BYTES each, so the busy one's 3 MiB pulls are not queued behind
    the idle ones' expiry (with 3 MiB reserved by each waiting pull, 15 of them filled the 40 MiB
    budget and the busy consumer got one frame per expiry)."""
    budget = ByteBudget(FETCH_BUDGET)
    frame, count = 2_764_800, 6  # 1280x720 RGB
    fetchers = {}
    for name in [f"idle{i}" for i in range(15)] + ["busy"]:
        config = ConsumerConfig(durable_name=f"pulltest-{name}", ack_policy=AckPolicy.EXPLICIT, filter_subject=subjects.features("vision", name))
        await bus.js.add_consumer(subjects.FEATURES_STREAM, config=config)
        fetchers[name] = PullFetcher(bus.nc, subjects.FEATURES_STREAM, f"pulltest-{name}", budget, MAX_PAYLOAD)
    idle = [asyncio.create_task(fetchers[f"idle{i}"].fetch(8, 3 * 1024 * 1024, 30.0)) for i in range(15)]
    try:
        await _until(lambda: budget.reserved == 15 * PROBE_BYTES)
        for i in range(count):
            await bus.publish(subjects.features("vision", "busy"), i.to_bytes(4, "big") + bytes(frame - 4))
        got: list[int] = []

        async def take_all() -> None:
            while len(got) < count:
                got.extend(int.from_bytes(m.data[:4], "big") for m in await fetchers["busy"].fetch(8, 3 * 1024 * 1024, 1.0))

        await asyncio.wait_for(take_all(), 15.0)  # the idle pulls wait 30 s: the busy one did not queue behind them
        assert got == list(range(count))
        assert not any(task.done() for task in idle), "the idle pulls were still waiting all along"
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)
        for fetcher in fetchers.values():
            await fetcher.close()
    assert budget.reserved == 0


async def test_an_idle_consumer_sends_one_request_a_fetch_and_still_gets_a_message_at_once(bus):
    """Sixteen partitions' consumers of four stages poll while idle; a fetch that found nothing
    before goes straight to its lingering pull (one request, not a no_wait pull first)."""
    name = "pulltest-idle"
    config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, filter_subject=subjects.features("vision", "idlepoll"))
    await bus.js.add_consumer(subjects.FEATURES_STREAM, config=config)
    requests: list[bytes] = []

    async def count(msg) -> None:
        requests.append(msg.data)

    spy = await bus.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.FEATURES_STREAM}.{name}", cb=count)
    fetcher = PullFetcher(bus.nc, subjects.FEATURES_STREAM, name, ByteBudget(FETCH_BUDGET), MAX_PAYLOAD)
    try:
        for _ in range(4):
            assert await fetcher.fetch(8, 1024 * 1024, 0.2) == []
        await bus.nc.flush()
        no_wait = sum(b'"no_wait"' in r for r in requests)
        assert (len(requests), no_wait) == (5, 1), requests  # the first fetch: a no_wait pull, then a lingering one
        waiting = asyncio.create_task(fetcher.fetch(8, 1024 * 1024, 5.0))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await bus.publish(subjects.features("vision", "idlepoll"), b"x" * 10)
        await bus.publish(subjects.features("vision", "idlepoll"), b"y" * 10)
        got = await asyncio.wait_for(waiting, 5.0)
        took = asyncio.get_running_loop().time() - started
        assert [m.data[:1] for m in got] in ([b"x", b"y"], [b"x"]) and took < 2.0, (got, took)
    finally:
        await spy.unsubscribe()
        await fetcher.close()


async def test_a_message_larger_than_a_pull_is_still_delivered(bus):
    """Record consumers pull 1 MiB at a time; a 5 MiB message widens one pull instead of blocking."""
    got: list[int] = []
    subject = subjects.features("vision", "wide")
    for size in (100, 5 * 1024 * 1024, 200):
        await bus.publish(subject, bytes(size))
    bus.consume("pulltest-wide", subject, lambda m: _append_size(got, m), subjects.FEATURES_STREAM)
    await _until(lambda: len(got) == 3, timeout=20)
    assert got == [100, 5 * 1024 * 1024, 200]


async def test_a_consumer_deleted_under_the_service_is_recreated(bus):
    got: list[bytes] = []
    bus.consume("pulltest-gone", subjects.features("vision", "gone"), lambda m: _append(got, m), subjects.FEATURES_STREAM)
    await bus.publish(subjects.features("vision", "gone"), b"one")
    await _until(lambda: got == [b"one"])
    await bus.js.delete_consumer(subjects.FEATURES_STREAM, "pulltest-gone")
    await asyncio.sleep(1.5)
    await bus.publish(subjects.features("vision", "gone"), b"two")
    await _until(lambda: b"two" in got, timeout=20)
    info = await bus.js.consumer_info(subjects.FEATURES_STREAM, "pulltest-gone")
    assert info.config.max_deliver == 6, "server-side max_deliver: the handler's tries plus one"


async def test_streams_and_consumers_come_back_after_nats_restarts():
    with tempfile.TemporaryDirectory() as folder:
        server = NatsServer(Path(folder)).start()
        bus = await Bus.connect(server.url, "restarttest")
        try:
            await bus.ensure_streams()
            got: list[bytes] = []
            bus.consume("restart-media", subjects.media("audio"), lambda m: _append(got, m), subjects.MEDIA_STREAM)
            await _until(lambda: _has_consumer(bus, subjects.MEDIA_STREAM, "restart-media"))
            await bus.publish(subjects.media("audio", "r1"), b"before")
            await _until(lambda: got == [b"before"])
            server.stop()  # MEDIA lives in memory: it is gone with the server
            await asyncio.sleep(0.5)
            server.start()
            await _until(lambda: bus.nc.is_connected, timeout=20)
            await _until(lambda: _has_consumer(bus, subjects.MEDIA_STREAM, "restart-media"), timeout=20)
            await _until(lambda: _published(bus, b"after"), timeout=20)
            await _until(lambda: b"after" in got, timeout=20)
            assert bus.usable
        finally:
            await bus.close()
            server.stop()


async def test_a_message_that_kills_its_consumer_is_dead_lettered(nats_server):
    """Every delivery kills the consumer's process (here: its connection); the extra delivery
    past max_deliver is dead-lettered unhandled, so the next instance lives."""
    subject = subjects.features("audio", "poison")
    publisher = await Bus.connect(nats_server.url, "poisontest")
    await publisher.ensure_streams()
    await publisher.publish(subject, b"poison")
    tries = 0
    for _ in range(6):
        bus = await Bus.connect(nats_server.url, "poisontest")
        died = asyncio.Event()

        async def handler(msg, bus=bus, died=died):
            nonlocal tries
            tries += 1
            died.set()
            await asyncio.Event().wait()  # never answers: the process is gone

        bus.consume("poison", subject, handler, subjects.FEATURES_STREAM, max_deliver=3, ack_wait_s=1.0)
        try:
            await asyncio.wait_for(died.wait(), 6)
        except asyncio.TimeoutError:
            await bus.close()
            break
        await bus.close()
    letters = await publisher.read_all(subjects.DEADLETTER_STREAM, subjects.deadletter("poisontest"))
    await publisher.close()
    assert tries == 3, "tried max_deliver times, not for ever"
    assert [m.data for m in letters] == [b"poison"]
    assert "without an answer" in letters[0].headers["streamsight-dlq-reason"]


async def _append(out: list, msg) -> None:
    out.append(msg.data)


async def _append_size(out: list, msg) -> None:
    out.append(len(msg.data))


async def _has_consumer(bus: Bus, stream: str, durable: str) -> bool:
    try:
        await bus.js.consumer_info(stream, durable)
        return True
    except Exception:
        return False


async def _has_stream(bus: Bus) -> bool:
    try:
        await bus.js.stream_info(subjects.MEDIA_STREAM)
        return True
    except Exception:
        return False


async def _published(bus: Bus, data: bytes) -> bool:
    try:
        await bus.publish(subjects.media("audio", "r1"), data)
        return True
    except Exception:
        return False


async def _until(check, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)
