"""Chat as two replicas (real NATS, real gRPC; the test stands in for ingest by publishing window
records): the streams' readers split by partition, calls taken by either replica, and a replica
killed with SIGKILL mid-stream whose readers the other takes over, every chat window coming out
once and as one unbroken reader computes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from services.chat.replay import load_replay
from services.chat.resume import FINISHED_KEEP_S, ReaderPoint
from streamsight import subjects
from streamsight.app.demo import make_chat
from streamsight.bus import kv_entries
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2 as S
from streamsight.gen.events.v1 import events_pb2
from streamsight.partitions import lease_holders, owner
from streamsight.rpc import channel, wait_serving

from streamsight.natsd import free_port

from ..conftest import until_true
from .test_service import event_msgs, expected, features, publish_windows, running_chat, wait_state

REPO = Path(__file__).resolve().parents[2]
LOGS = ("rechat-158202424.json", "rechat-115328018.json", "rechat-84065913.json", "rechat-98355852.json")
END_S = 200.0  # media seconds each stream runs: windows 0-19, intervals 0-6
REPLICAS = ("chat-1", "chat-2")


def split_streams(per_replica: int = 2) -> dict[str, list[str]]:
    """Stream ids whose partitions two replicas named REPLICAS hold, `per_replica` each."""
    found: dict[str, list[str]] = {r: [] for r in REPLICAS}
    for i in range(200):
        sid = f"chat-rep-{i}"
        holder = owner("chat", subjects.partition_of(sid), set(REPLICAS))
        if len(found[holder]) < per_replica:
            found[holder].append(sid)
        if all(len(v) == per_replica for v in found.values()):
            return found
    raise AssertionError("no split found")


@contextlib.contextmanager
def chat_process(nats_url: str, replica: str, port: int, log: Path):
    env = {
        **os.environ, "STREAMSIGHT_NATS_URL": nats_url, "STREAMSIGHT_REPLICA_ID": replica, "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
        "STREAMSIGHT_CHAT_GRPC_PORT": str(port), "STREAMSIGHT_PARTITION_LEASE_S": "2.0", "STREAMSIGHT_PARTITION_HEARTBEAT_S": "0.25",
        "STREAMSIGHT_METRICS_BASE_PORT": "0", "STREAMSIGHT_LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.chat"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def reader_points(bus) -> dict[str, ReaderPoint]:
    """Every reader point in the bucket, read as the service reads it (kv_entries: nats-py's
    `keys()` drops keys while the replicas write others, and failed this test in CI)."""
    return {e.key: ReaderPoint.from_bytes(e.value) for e in await kv_entries(bus.js, "chat_streams") if e.value}


async def test_a_killed_replicas_readers_move_to_the_other_and_every_window_comes_out_once(nats_server, bus, shared_data, tmp_path):
    split = split_streams()
    streams = split["chat-1"] + split["chat-2"]
    logs = {sid: shared_data / "chat" / "nlss" / name for sid, name in zip(streams, LOGS)}
    ports = {r: free_port() for r in REPLICAS}
    with chat_process(nats_server.url, "chat-1", ports["chat-1"], tmp_path / "chat-1.log") as one, \
            chat_process(nats_server.url, "chat-2", ports["chat-2"], tmp_path / "chat-2.log"):
        await asyncio.gather(*(wait_serving(f"127.0.0.1:{p}", 30) for p in ports.values()))
        holders = await lease_holders(bus, "chat")
        assert sorted(holders) == list(range(subjects.PARTITIONS)) and set(holders.values()) == set(REPLICAS), holders
        async with channel(f"127.0.0.1:{ports['chat-1']}") as ch1, channel(f"127.0.0.1:{ports['chat-2']}") as ch2:
            first, second = chat_pb2_grpc.ChatStub(ch1), chat_pb2_grpc.ChatStub(ch2)
            # Every StartChat goes to chat-1: two it runs itself, two it records for chat-2.
            for sid in streams:
                reply = await first.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(logs[sid]), pacing=S.PACING_VOD))
                assert (reply.state, reply.format) == (S.STREAM_STATE_RUNNING, "rechat"), reply
            with pytest.raises(Exception, match="already running"):
                await second.StartChat(chat_pb2.StartChatRequest(stream_id=streams[3], source=str(logs[streams[3]]), pacing=S.PACING_VOD))

            async def all_taken() -> bool:
                points = await reader_points(bus)
                return all(sid in points and points[sid].replica == holder for holder, sids in split.items() for sid in sids)

            await until_true(all_taken, 10, "each reader runs on its partition's holder")
            for sid in streams:  # the first 100 s of media
                await publish_windows(bus, sid, END_S, last_index=9)

            async def windows_out(last: int) -> bool:
                got = await asyncio.gather(*(features(bus, sid) for sid in streams))
                return all(any(r.window == last for r in records) for records in got)

            await until_true(lambda: windows_out(9), 15, "windows 0-9 of every stream")
            # Status from either replica: chat-1 answers for chat-2's readers from the bucket.
            async def progress_seen() -> bool:  # the holder saves after each publish; chat-1's copy follows
                status = await first.GetChat(chat_pb2.GetChatRequest(stream_id=split["chat-2"][0]))
                return status.state == S.STREAM_STATE_RUNNING and status.messages > 0

            await until_true(progress_seen, 5, "chat-1 reports chat-2's reader with its messages")

            os.kill(one.pid, signal.SIGKILL)
            one.wait(5)
            for sid in streams:  # while chat-1's readers have no holder: theirs are missed, later records make up for them
                await publish_windows(bus, sid, END_S, first=10, last_index=12)

            async def taken_over() -> bool:
                points = await reader_points(bus)
                return all(sid in points and points[sid].replica == "chat-2" for sid in streams)

            took = await until_true(taken_over, 15, "chat-2 took chat-1's readers over")
            print(f"chat-1's readers taken over {took:.2f} s after its kill")
            assert set((await lease_holders(bus, "chat")).values()) == {"chat-2"}
            for sid in streams:  # the rest, and the end as ingest says it (a reader started after the records went still ends)
                await publish_windows(bus, sid, END_S, first=13)
                ended = events_pb2.StreamStatus(stream_id=sid, state=S.STREAM_STATE_ENDED, reason="source_ended", media_time_s=END_S,
                                                reporter="ingest")
                await bus.publish_event(sid, ended, f"{sid}:status:ingest:ended")
            finals = [await wait_state(second, sid, {S.STREAM_STATE_ENDED}, timeout=15) for sid in streams]
    log2 = (tmp_path / "chat-2.log").read_text()
    assert "chat reader resumed" in log2, "chat-2 resumed chat-1's readers from their points"
    for sid, final in zip(streams, finals):
        messages = load_replay(logs[sid])
        assert final.messages == sum(m.media_time < END_S for m in messages), sid
        records = await features(bus, sid)
        assert [r.window for r in records] == list(range(20)), f"{sid}: each window once"
        want, points = expected(messages, END_S)
        for record, (index, values) in zip(records, want):
            assert record.window == index
            assert set(record.values) == set(values), sid
            assert all(record.values[k] == pytest.approx(v, abs=1e-6) for k, v in values.items()), (sid, index)
        for kind in ("sentiment", "forecast"):
            ids = [m.headers.get("Nats-Msg-Id") for m in await event_msgs(bus, kind, sid)]
            assert len(ids) == len(points) == len(set(ids)), (sid, kind, ids)


async def test_any_replica_takes_start_get_and_stop_for_a_stream_the_other_holds(nats_server, bus, tmp_path):
    replay = make_chat(tmp_path / "chat.jsonl", 60.0, [20.0])
    async with running_chat(nats_server.url, replica="chat-a") as (a, stub_a), running_chat(nats_server.url, replica="chat-b") as (b, stub_b):
        await until_true(lambda: _settled(a, b), 10, "the two replicas split the partitions")
        sid = next(f"route-{i}" for i in range(100) if subjects.partition_of(f"route-{i}") in b.partitions.held)
        reply = await stub_a.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(replay), pacing=S.PACING_VOD))
        assert reply.state == S.STREAM_STATE_RUNNING
        await until_true(lambda: _async(sid in b.sessions), 5, "chat-b, the holder, runs the reader")
        assert sid not in a.sessions
        await publish_windows(bus, sid, 60.0, last_index=2)
        await until_true(lambda: _async((a.table.get(sid) or None) is not None and a.table.get(sid).point.next_window == 3), 5,
                         "chat-a sees chat-b's progress")
        status = await stub_a.StopChat(chat_pb2.StopChatRequest(stream_id=sid))
        assert status.state == S.STREAM_STATE_STOPPED, status
        await until_true(lambda: _async(sid not in b.sessions), 5, "chat-b's reader is over")
        assert b.finished[sid].state == S.STREAM_STATE_STOPPED
        assert (await stub_a.GetChat(chat_pb2.GetChatRequest(stream_id=sid))).state == S.STREAM_STATE_STOPPED
        assert (await stub_b.GetChat(chat_pb2.GetChatRequest(stream_id=sid))).state == S.STREAM_STATE_STOPPED
        again = await stub_a.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(replay), pacing=S.PACING_VOD))
        assert again.state == S.STREAM_STATE_RUNNING, "a finished stream may be started again"
        await until_true(lambda: _async(sid in b.sessions), 5, "chat-b runs the new reader")


async def _settled(a, b) -> bool:
    held_a, held_b = a.partitions.held, b.partitions.held
    return bool(held_a) and bool(held_b) and len(held_a | held_b) == subjects.PARTITIONS and not held_a & held_b


async def _async(value):
    return value


async def test_a_replica_taking_a_partition_settles_what_no_reader_was_left_to_do(nats_server, bus, tmp_path):
    """Points left without a running reader: one asked to stop (its holder died first) ends STOPPED
    without a reader; a reader finished over FINISHED_KEEP_S ago is deleted; a recent one stays."""
    kv = await bus.kv("chat_streams")
    replay = str(make_chat(tmp_path / "chat.jsonl", 60.0, [20.0]))
    now = time.time()
    await kv.put("left-stop", ReaderPoint(replay, now, S.PACING_VOD, now, 2, 0, stop=True, format="jsonl").to_bytes())
    await kv.put("left-old", ReaderPoint(replay, now, S.PACING_VOD, now, 6, 2, state=S.STREAM_STATE_ENDED,
                                         finished_at=now - FINISHED_KEEP_S - 1).to_bytes())
    await kv.put("left-new", ReaderPoint(replay, now, S.PACING_VOD, now, 6, 2, state=S.STREAM_STATE_ENDED, messages=7,
                                         finished_at=now - 5).to_bytes())
    async with running_chat(nats_server.url, replica="chat-c") as (service, stub):
        assert not {"left-stop", "left-old", "left-new"} & set(service.sessions), "no reader was started"
        assert (await stub.GetChat(chat_pb2.GetChatRequest(stream_id="left-stop"))).state == S.STREAM_STATE_STOPPED
        done = await stub.GetChat(chat_pb2.GetChatRequest(stream_id="left-new"))
        assert (done.state, done.messages) == (S.STREAM_STATE_ENDED, 7), "a finished reader is reported from its point"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetChat(chat_pb2.GetChatRequest(stream_id="left-old"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert set(await kv.keys()) >= {"left-stop", "left-new"} and "left-old" not in await kv.keys()


async def test_after_a_nats_restart_a_replica_still_sees_readers_recorded_elsewhere(tmp_path):
    """The watch of the readers' bucket is an ephemeral consumer that a restarted nats-server does
    not keep: the replica watches again, and a reader another replica records afterwards starts."""
    from streamsight.bus import Bus
    from streamsight.natsd import NatsServer

    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    try:
        replay = str(make_chat(tmp_path / "chat.jsonl", 60.0, [20.0]))
        async with running_chat(server.url, replica="chat-d") as (service, stub):
            server.kill()
            server.start()
            other = await Bus.connect(server.url, "test")
            try:
                kv = await other.kv("chat_streams")
                now = time.time()
                await until_true(lambda: _async(service.bus.nc.is_connected), 10, "the replica reconnected")
                await kv.put("after-restart", ReaderPoint(replay, now, S.PACING_VOD, now, format="jsonl").to_bytes())
                await until_true(lambda: _async("after-restart" in service.sessions), 15, "the reader recorded after the restart runs")
            finally:
                await other.close()
    finally:
        server.stop()
