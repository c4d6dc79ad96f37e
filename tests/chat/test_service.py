"""The chat service on a real NATS server, through a real gRPC client.

The tests stand in for ingest: they publish WindowRecords on the stream's media subject
(and StreamStatus events where a test needs the stream to end), then read what the
service published from JetStream and compare it with the replay read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.service import ChatService
from services.chat.settings import ChatSettings
from services.chat.windows import ChatAggregator
from streamsight import events, subjects
from streamsight.bus import Bus
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.rpc import channel

HITMAN = "rechat-158202424.json"  # 650 s video, 1,970 comments (one after the video's end)
JACKBOX = "rechat-115328018.json"  # 756 s video, 2,862 comments
S = common_pb2


# ---------------------------------------------------------------- harness


@contextlib.asynccontextmanager
async def running_chat(nats_url: str, **overrides):
    """The chat service in this event loop, with a gRPC stub; yields (service, stub)."""
    # Short leases: joining the partition group takes a heartbeat, so a start costs 0.2 s, not 1 s.
    overrides = {"partition_lease_s": 2.0, "partition_heartbeat_s": 0.2, **overrides}
    replica = overrides.pop("replica", None)
    settings = ChatSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0, **overrides)
    service = ChatService(settings, replica=replica)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    assert ready.is_set(), "chat service did not become ready"
    try:
        async with channel(f"127.0.0.1:{service.rpc.port}") as ch:
            yield service, chat_pb2_grpc.ChatStub(ch)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def chat(nats_server):
    async with running_chat(nats_server.url) as pair:
        yield pair



async def features(bus: Bus, sid: str) -> list[features_pb2.FeatureRecord]:
    return [features_pb2.FeatureRecord.FromString(m.data) for m in await bus.read_all(subjects.FEATURES_STREAM, subjects.features("chat", sid))]


async def event_msgs(bus: Bus, kind: str, sid: str) -> list:
    return await bus.read_all(subjects.EVENTS_STREAM, subjects.event(kind, sid))


async def publish_windows(bus: Bus, sid: str, end_s: float, first: int = 0, last_index: int | None = None) -> None:
    """Window records as ingest publishes them, for windows first.. up to a media end of `end_s`."""
    n = int(-(-end_s // 10))
    final = n - 1
    for i in range(first, n if last_index is None else last_index + 1):
        rec = media_pb2.WindowRecord(stream_id=sid, index=i, start_s=10 * i, end_s=min(10 * i + 10, end_s), last=i == final)
        await bus.publish(subjects.media("windows", sid), rec)


async def wait_state(stub, sid: str, states: set[int], timeout: float = 30.0) -> chat_pb2.ChatStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await stub.GetChat(chat_pb2.GetChatRequest(stream_id=sid))
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"chat {sid} stayed {S.StreamState.Name(status.state)} ({status.last_error})")
        await asyncio.sleep(0.05)


async def wait_for(predicate, timeout: float = 15.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def status_code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details()


def expected(messages, end_s: float):
    """Windows and series computed directly from the messages, as the service should."""
    agg = ChatAggregator(ChatSentiment())
    agg.add_batch(m for m in messages if m.media_time < end_s)
    return agg.finish(end_s)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------- replays on the media clock


async def test_rechat_replay_follows_the_media_windows(chat, bus, shared_data):
    service, stub = chat
    path = shared_data / "chat" / "nlss" / HITMAN
    sid = "nlss-hitman"
    reply = await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path), pacing=S.PACING_VOD))
    assert (reply.state, reply.format, reply.rejected) == (S.STREAM_STATE_RUNNING, "rechat", 0)

    # The first half of the media: chat is complete up to 300 s and no further.
    await publish_windows(bus, sid, 650.0, last_index=29)
    msgs = load_replay(path)
    before_300 = sum(m.media_time < 300 for m in msgs)
    await wait_for(lambda: _has_window(bus, sid, 29), what="window 29")
    assert (await stub.GetChat(chat_pb2.GetChatRequest(stream_id=sid))).messages == before_300
    assert len(await features(bus, sid)) == 30
    # The rest, with windows 20..40 delivered twice (a redelivery): nothing is counted twice.
    await publish_windows(bus, sid, 650.0, first=20, last_index=40)
    await publish_windows(bus, sid, 650.0, first=20)
    final = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
    in_video = [m for m in msgs if m.media_time < 650.0]
    assert final.messages == len(in_video) < len(msgs)  # the comment after the video's end is in no window

    windows, points = expected(msgs, 650.0)
    records = await features(bus, sid)
    assert [r.window for r in records] == list(range(65))  # exactly one per window, in order
    for r, (i, values) in zip(records, windows):
        assert r.stream_id == sid and r.modality == S.MODALITY_CHAT and r.window == i
        assert (r.start_s, r.end_s) == (10.0 * i, 10.0 * i + 10)
        assert dict(r.values) == pytest.approx(values, abs=1e-9)
        assert ("empty" in r.flags) == (values["chat_messages"] == 0)
        assert r.info["source_format"] == "rechat" and r.info["lexicon"] and r.producer_version
    assert sum(r.values["chat_messages"] for r in records) == len(in_video)

    sentiment = await event_msgs(bus, "sentiment", sid)
    assert len(sentiment) == len(points) == 22  # 650 s in 30 s intervals, the last one 20 s long
    for msg, p in zip(sentiment, points):
        event = events.decode(msg.headers, msg.data)
        assert event.type == "streamsight.sentiment.v1" and event.id == f"{sid}:sentiment:{p.index}"
        assert msg.headers["Nats-Msg-Id"] == event.id and event.source == "/streamsight/chat"
        assert (event.sentiment.start_s, event.sentiment.messages) == (p.start_s, p.messages)
        assert event.sentiment.compound == pytest.approx(p.mean_compound)
    assert events.decode(sentiment[-1].headers, sentiment[-1].data).sentiment.end_s == 650.0

    forecasts = [events.decode(m.headers, m.data) for m in await event_msgs(bus, "forecast", sid)]
    assert [f.id for f in forecasts] == [f"{sid}:forecast:{p.index}" for p in points]
    values = [p.mean_compound for p in points]
    for j, f in enumerate(forecasts):
        fc = f.forecast
        assert fc.model.startswith("forecast@sha256:") and fc.issued_at_s == min(30.0 * (j + 1), 650.0)
        assert [p.start_s for p in fc.points] == [30.0 * (j + h) for h in range(1, 4)]  # 30, 60, 90 s ahead
        running_mean = sum(values[: j + 1]) / (j + 1)
        assert all(p.baseline == pytest.approx(running_mean) for p in fc.points)
        assert all(-1.0 <= p.compound <= 1.0 for p in fc.points)
        assert len(fc.lower) == len(fc.upper) == len(fc.activity) == len(fc.activity_baseline) == 3
        assert all(lo <= p.compound <= hi for lo, p, hi in zip(fc.lower, fc.points, fc.upper))
        assert all(lo <= a <= hi for lo, a, hi in zip(fc.activity_lower, fc.activity, fc.activity_upper))
        rate_mean = sum(p.messages for p in points[: j + 1]) / (j + 1) / 30.0
        assert all(b == pytest.approx(rate_mean) for b in fc.activity_baseline) and fc.interval_level == 0.8
    assert len({round(p.compound, 4) for f in forecasts for p in f.forecast.points}) > 10  # the LSTM really ran


async def _has_window(bus: Bus, sid: str, index: int) -> bool:
    return any(r.window == index for r in await features(bus, sid))


async def test_restart_republishes_under_the_same_ids(chat, bus, tmp_path):
    _, stub = chat
    rows = [{"time": 0.5 + 0.8 * k, "user": f"u{k % 7}", "message": ["KEKW", "PogChamp", "Sadge", "nice one"][k % 4]} for k in range(45)]
    path = write(tmp_path, "short.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    sid = "restart-me"
    for run in range(2):
        await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
        await publish_windows(bus, sid, 36.4)
        status = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
        assert status.messages == 45 and status.format == "jsonl"
        records = await features(bus, sid)
        # The second run published the same windows again; JetStream kept one of each.
        assert [r.window for r in records] == [0, 1, 2, 3]
        assert records[-1].end_s == pytest.approx(36.4)
        assert sum(r.values["chat_messages"] for r in records) == 45
        assert len(await event_msgs(bus, "sentiment", sid)) == 2  # [0, 30) and the partial [30, 36.4)


async def test_garbage_lines_are_counted_and_a_status_event_ends_the_replay(chat, bus, tmp_path, capfd):
    _, stub = chat
    good = [json.dumps({"time": 1.0 + k, "user": f"viewer{k}", "message": "GG"}) for k in range(20)]
    garbage = [
        '{"time": 3.5, "user": "secretuser42"',  # cut off
        json.dumps({"user": "secretuser42", "message": "no time"}),
        "[1, 2, 3]",
    ]
    path = write(tmp_path, "damaged.jsonl", "\n".join(good[:5] + garbage[:2] + good[5:] + garbage[2:]) + "\n")
    sid = "damaged"
    reply = await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
    assert reply.rejected == 3 and reply.state == S.STREAM_STATE_RUNNING
    # Ingest says the stream ended at 14.5 s (its last window record never came).
    await publish_windows(bus, sid, 14.5, last_index=0)
    ended = events_pb2.StreamStatus(stream_id=sid, state=S.STREAM_STATE_ENDED, reason="source_ended", media_time_s=14.5, reporter="ingest")
    await bus.publish_event(sid, ended, f"{sid}:status:ingest:ended")
    status = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
    assert (status.messages, status.rejected) == (14, 3)  # times 1..14 are before the end
    records = await features(bus, sid)
    assert [(r.window, r.values["chat_messages"], r.end_s) for r in records] == [(0, 9, 10.0), (1, 5, 14.5)]
    logged = capfd.readouterr()
    assert "damaged.jsonl" in logged.out + logged.err and "secretuser42" not in logged.out + logged.err


async def test_window_records_that_trail_the_end_status_are_still_taken(chat, bus, tmp_path):
    _, stub = chat
    path = write(tmp_path, "t.jsonl", "".join(json.dumps({"time": t, "user": "u", "message": "LUL"}) + "\n" for t in (3, 13, 23)))
    sid = "trailing"
    await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
    # Status and window records travel through different consumers; here the status overtakes them.
    failed = events_pb2.StreamStatus(stream_id=sid, state=S.STREAM_STATE_FAILED, reason="decode_error", reporter="ingest")
    await bus.publish_event(sid, failed, f"{sid}:status:ingest:failed")
    await publish_windows(bus, sid, 30.0)
    status = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
    assert status.messages == 3 and "media failed" in status.last_error  # the chat itself did not fail
    assert [r.values["chat_messages"] for r in await features(bus, sid)] == [1, 1, 1]


async def test_a_bad_window_record_is_dead_lettered_and_the_chat_goes_on(chat, bus, tmp_path):
    _, stub = chat
    path = write(tmp_path, "d.csv", "time,user,message\n1,a,hello\n12,b,LUL\n")
    sid = "dead-letter"
    await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
    await bus.publish(subjects.media("windows", sid), b"\xff\x00 not a protobuf")
    await bus.publish(subjects.media("windows", sid), media_pb2.WindowRecord(stream_id="other", index=0, end_s=10.0))
    await publish_windows(bus, sid, 20.0)
    assert (await wait_state(stub, sid, {S.STREAM_STATE_ENDED})).messages == 2
    assert [r.values["chat_messages"] for r in await features(bus, sid)] == [1, 1]
    dead = await bus.read_all(subjects.DEADLETTER_STREAM, subjects.deadletter("chat"))
    mine = [m for m in dead if m.headers["streamsight-dlq-subject"] == subjects.media("windows", sid)]
    assert len(mine) == 2 and "not a streamsight.media.v1.WindowRecord" in mine[0].headers["streamsight-dlq-reason"]


async def test_a_stream_that_ended_before_startchat_still_gets_its_windows(chat, bus, tmp_path):
    _, stub = chat
    path = write(tmp_path, "late.jsonl", "".join(json.dumps({"time": t, "user": "u", "message": "Pog"}) + "\n" for t in (1, 11, 21, 29)))
    sid = "ingest-raced-ahead"
    ended = events_pb2.StreamStatus(stream_id=sid, state=S.STREAM_STATE_ENDED, reason="source_ended", media_time_s=25.0, reporter="ingest")
    await bus.publish_event(sid, ended, f"{sid}:status:ingest:ended")  # before StartChat, and no window record kept
    start = Timestamp()
    start.FromNanoseconds(int((time.time() - 3.0) * 1e9))
    await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path), media_start=start))
    status = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
    assert status.messages == 3  # the message at 29 s is after the media's end
    assert [(r.window, r.values["chat_messages"], r.end_s) for r in await features(bus, sid)] == [(0, 1, 10.0), (1, 1, 20.0), (2, 1, 25.0)]


async def test_replay_without_media_progress_times_out(nats_server, tmp_path):
    path = write(tmp_path, "c.csv", "time,user,message\n1,a,hello\n2,b,LUL\n")
    async with running_chat(nats_server.url, stream_idle_s=0.5) as (_, stub):
        await stub.StartChat(chat_pb2.StartChatRequest(stream_id="no-media", source=str(path)))
        status = await wait_state(stub, "no-media", {S.STREAM_STATE_ENDED}, timeout=10)
        assert "no window record" in status.last_error and status.format == "csv"


@pytest.mark.slow
async def test_replay_with_live_pacing_runs_in_real_time(chat, bus, tmp_path):
    _, stub = chat
    path = write(tmp_path, "rt.jsonl", "".join(json.dumps({"time": t, "user": "u", "message": "W"}) + "\n" for t in (0.2, 0.5, 1.0)))
    sid = "realtime"
    started = time.monotonic()
    await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path), pacing=S.PACING_LIVE))
    await asyncio.sleep(2.0)
    assert await features(bus, sid) == []  # window 0 is open until 10 s after StartChat
    await wait_state(stub, sid, {S.STREAM_STATE_ENDED}, timeout=20)
    assert time.monotonic() - started >= 10.0
    assert [(r.window, r.values["chat_messages"]) for r in await features(bus, sid)] == [(0, 3)]


async def test_a_flood_in_one_window_keeps_the_service_answering(chat, bus, tmp_path):
    _, stub = chat
    n = 100_000
    lines = (json.dumps({"time": 2.0 + i * 5e-5, "user": f"u{i % 5000}", "message": "KEKW" if i % 2 else f"Pog x{i % 300}"}) for i in range(n))
    path = write(tmp_path, "flood.jsonl", "\n".join(lines) + "\n")
    sid = "flood"
    await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
    await publish_windows(bus, sid, 10.0)
    seen = []
    while True:
        status = await stub.GetChat(chat_pb2.GetChatRequest(stream_id=sid))
        seen.append(status.messages)
        if status.state == S.STREAM_STATE_ENDED:
            break
    # GetChat was answered while the flood was being scored, not only before and after it.
    assert any(0 < m < n for m in seen)
    (record,) = await features(bus, sid)
    assert record.values["chat_messages"] == n and record.values["chat_unique_chatters"] == 5000


# ---------------------------------------------------------------- bad requests


async def test_bad_start_requests_get_clear_status_codes(chat, tmp_path):
    _, stub = chat
    bad_json = write(tmp_path, "cut.json", '[{"length": 10},\n {"content_offset_seconds": 1, "message": {"body": "x"}},\n {"oops": ')
    garbage = write(tmp_path, "garbage.jsonl", '{"a": 1}\n{"b": 2}\n')
    words = write(tmp_path, "words.txt", "just some words\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    cases = [
        ({"stream_id": "Bad Id", "source": str(words)}, grpc.StatusCode.INVALID_ARGUMENT, ["stream id 'Bad Id' is not valid"]),
        ({"stream_id": "s1", "source": ""}, grpc.StatusCode.INVALID_ARGUMENT, ["chat source is empty"]),
        ({"stream_id": "s1", "source": "ftp://host/chat"}, grpc.StatusCode.INVALID_ARGUMENT, ["scheme 'ftp'"]),
        ({"stream_id": "s1", "source": "ircs://host"}, grpc.StatusCode.INVALID_ARGUMENT, ["needs a host and a channel"]),
        ({"stream_id": "s1", "source": str(tmp_path / "missing.json")}, grpc.StatusCode.INVALID_ARGUMENT, ["missing.json", "not found"]),
        ({"stream_id": "s1", "source": str(tmp_path)}, grpc.StatusCode.INVALID_ARGUMENT, ["not a regular file"]),
        ({"stream_id": "s1", "source": str(words)}, grpc.StatusCode.INVALID_ARGUMENT, [str(words), ":1:", "unrecognised"]),
        ({"stream_id": "s1", "source": str(binary)}, grpc.StatusCode.INVALID_ARGUMENT, [str(binary), "not UTF-8"]),
        ({"stream_id": "s1", "source": str(bad_json)}, grpc.StatusCode.INVALID_ARGUMENT, [str(bad_json), ":3:", "invalid JSON"]),
        ({"stream_id": "s1", "source": str(garbage)}, grpc.StatusCode.INVALID_ARGUMENT, [str(garbage), ":1:", "2 of 2 lines unreadable"]),
        ({"stream_id": "s1", "source": str(words), "pacing": 7}, grpc.StatusCode.INVALID_ARGUMENT, ["unknown pacing 7"]),
    ]
    for kwargs, code, words_expected in cases:
        got, details = await status_code(stub.StartChat(chat_pb2.StartChatRequest(**kwargs)))
        assert got == code, (kwargs, details)
        for w in words_expected:
            assert w in details, (kwargs, details)
    assert await status_code(stub.StopChat(chat_pb2.StopChatRequest(stream_id="nobody"))) == (
        grpc.StatusCode.NOT_FOUND, "no chat reader for stream 'nobody'")
    assert (await status_code(stub.GetChat(chat_pb2.GetChatRequest(stream_id="nobody"))))[0] == grpc.StatusCode.NOT_FOUND
    # None of the refused requests left a reader behind.
    assert (await status_code(stub.GetChat(chat_pb2.GetChatRequest(stream_id="s1"))))[0] == grpc.StatusCode.NOT_FOUND


async def test_second_start_and_the_stream_limit(nats_server, tmp_path):
    path = write(tmp_path, "c.csv", "time,user,message\n1,a,hello\n")
    async with running_chat(nats_server.url, max_streams=1) as (_, stub):
        await stub.StartChat(chat_pb2.StartChatRequest(stream_id="one", source=str(path)))
        code, details = await status_code(stub.StartChat(chat_pb2.StartChatRequest(stream_id="one", source=str(path))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "already running" in details
        code, details = await status_code(stub.StartChat(chat_pb2.StartChatRequest(stream_id="two", source=str(path))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "STREAMSIGHT_CHAT_MAX_STREAMS" in details
        stopped = await stub.StopChat(chat_pb2.StopChatRequest(stream_id="one"))
        assert stopped.state == S.STREAM_STATE_STOPPED
        assert (await stub.StopChat(chat_pb2.StopChatRequest(stream_id="one"))).state == S.STREAM_STATE_STOPPED  # idempotent
        assert (await stub.StartChat(chat_pb2.StartChatRequest(stream_id="two", source=str(path)))).state == S.STREAM_STATE_RUNNING


# ---------------------------------------------------------------- live IRC


def _privmsg(nick: str, text: str, tags: str = "") -> str:
    prefix = f"@{tags} " if tags else ""
    return f"{prefix}:{nick}!{nick}@{nick}.tmi.twitch.tv PRIVMSG #somechannel :{text}"


async def test_live_irc_windows_follow_the_wall_clock(chat, bus, irc_server):
    _, stub = chat
    sid = "live-irc"
    start = Timestamp()
    start.FromNanoseconds(int((time.time() - 8.0) * 1e9))  # the stream began 8 s ago: window 0 closes in about 2 s
    source = f"irc://127.0.0.1:{irc_server.port}/#somechannel"
    reply = await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=source, media_start=start))
    assert reply.format == "irc"
    await irc_server.wait_joined(0)
    assert (await irc_server.wait_line("NICK ")).startswith("NICK justinfan")  # a named server gets no account
    await irc_server.send(_privmsg("viewer1", "Kappa Kappa", "display-name=V1;emotes=25:0-4,6-10"))
    await irc_server.send(_privmsg("viewer2", "this is great PogChamp"))
    await irc_server.send("@garbage-without-a-command")
    await irc_server.send(_privmsg("viewer1", "KEKW"))
    assert (await wait_state(stub, sid, {S.STREAM_STATE_RUNNING})).format == "irc"

    first = await wait_for(lambda: features(bus, sid), timeout=10, what="window 0 by the wall clock")
    (w0,) = first
    assert w0.window == 0 and w0.values["chat_messages"] == 3 and w0.values["chat_unique_chatters"] == 2
    assert "partial" in w0.flags and w0.info["source_format"] == "irc"  # the reader joined 8 s into the window
    await irc_server.send(_privmsg("viewer3", "Sadge"))
    await wait_for(lambda: _get_messages(stub, sid, 4), what="the fourth message")
    stopped = await stub.StopChat(chat_pb2.StopChatRequest(stream_id=sid))
    assert (stopped.state, stopped.messages, stopped.rejected) == (S.STREAM_STATE_STOPPED, 4, 1)
    records = await features(bus, sid)
    assert [(r.window, r.values["chat_messages"]) for r in records] == [(0, 3), (1, 1)]
    assert 10.0 < records[1].end_s < 20.0  # cut at the moment of StopChat


async def test_live_irc_over_tls_with_a_configured_ca(nats_server, bus, tls_irc_server, self_signed_cert):
    cert, _ = self_signed_cert
    async with running_chat(nats_server.url, irc_ca_file=str(cert)) as (_, stub):
        sid = "live-tls"
        await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=f"ircs://127.0.0.1:{tls_irc_server.port}/#somechannel"))
        await tls_irc_server.wait_joined(0)
        await tls_irc_server.send(_privmsg("viewer1", "GG"))
        await wait_for(lambda: _get_messages(stub, sid, 1), what="a message over TLS")
        stopped = await stub.StopChat(chat_pb2.StopChatRequest(stream_id=sid))
        assert (stopped.state, stopped.messages, stopped.format) == (S.STREAM_STATE_STOPPED, 1, "irc")
    (record,) = await features(bus, sid)  # the stream started at StartChat: one window, cut at StopChat
    assert record.window == 0 and record.values["chat_messages"] == 1 and "partial" not in record.flags


async def _get_messages(stub, sid: str, n: int) -> bool:
    return (await stub.GetChat(chat_pb2.GetChatRequest(stream_id=sid))).messages >= n


async def test_a_chat_failure_leaves_the_stream_and_other_streams_alone(nats_server, bus, irc_server, shared_data):
    from gateway.registry import Registry
    from gateway.service import GatewayService
    from gateway.settings import GatewaySettings
    from streamsight.gen.gateway.v1 import gateway_pb2

    gateway = GatewayService(GatewaySettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0, http_port=0))
    gw_stop, gw_ready = asyncio.Event(), asyncio.Event()
    gw_task = asyncio.create_task(gateway.run(gw_stop, gw_ready))
    await asyncio.wait_for(gw_ready.wait(), 30)
    registry = Registry(await bus.kv(subjects.REGISTRY_BUCKET))
    await registry.create(gateway_pb2.Stream(id="bad-login", source="x", chat_source="twitch:somechannel", state=S.STREAM_STATE_RUNNING))

    overrides = dict(irc_host="127.0.0.1", irc_port=irc_server.port, irc_tls=False, irc_token="bad", irc_nick="someone")
    try:
        async with running_chat(nats_server.url, **overrides) as (_, stub):
            replays = {"two-a": shared_data / "chat" / "nlss" / HITMAN, "two-b": shared_data / "chat" / "nlss" / JACKBOX}
            for sid, path in replays.items():
                await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(path)))
            await stub.StartChat(chat_pb2.StartChatRequest(stream_id="bad-login", source="twitch:somechannel"))
            failed = await wait_state(stub, "bad-login", {S.STREAM_STATE_FAILED}, timeout=10)
            assert "Login authentication failed" in failed.last_error
            assert (await irc_server.wait_line("PASS ")) == "PASS oauth:bad"  # twitch:<channel> uses the account

            # Both replays go on, their windows interleaved.
            await publish_windows(bus, "two-a", 650.0, last_index=40)
            await publish_windows(bus, "two-b", 756.0)
            await publish_windows(bus, "two-a", 650.0, first=41)
            for sid, path in replays.items():
                end = 650.0 if sid == "two-a" else 756.0
                await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
                windows, _ = expected(load_replay(path), end)
                records = await features(bus, sid)
                assert [r.window for r in records] == [i for i, _ in windows]
                assert [r.values["chat_messages"] for r in records] == [v["chat_messages"] for _, v in windows]

        (msg,) = await event_msgs(bus, "status", "bad-login")
        status = events.decode(msg.headers, msg.data).status
        assert (status.reporter, status.state, status.reason) == ("chat", S.STREAM_STATE_UNSPECIFIED, "chat_failed")
        assert "Login authentication failed" in status.detail
        # The gateway applied the event (acknowledged it) and left the stream RUNNING.
        seq = msg.metadata.sequence.stream
        await wait_for(lambda: _acked(bus, seq), what="the gateway to apply the status event")
        assert (await registry.get("bad-login")).state == S.STREAM_STATE_RUNNING
    finally:
        gw_stop.set()
        await asyncio.wait_for(gw_task, 20)


async def _acked(bus: Bus, seq: int) -> bool:
    try:
        info = await bus.js.consumer_info(subjects.EVENTS_STREAM, "gateway-registry")
    except NotFoundError:
        return False
    return info.ack_floor.stream_seq >= seq
