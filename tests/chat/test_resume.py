"""A chat service that goes away mid-stream leaves its readers in KV, and the next one resumes them
(real NATS, real gRPC; the test stands in for ingest by publishing window records). The kill -9
case on the real stack is tests/e2e/test_crash_resume.py."""

from __future__ import annotations

from services.chat.replay import load_replay
from services.chat.resume import ReaderPoint, ReaderStore
from streamsight.app.demo import make_chat
from streamsight.gen.chat.v1 import chat_pb2
from streamsight.gen.common.v1 import common_pb2 as S

from .test_service import event_msgs, expected, features, publish_windows, running_chat, wait_for, wait_state


async def test_a_restarted_chat_service_resumes_its_reader_and_publishes_only_what_was_not_out(nats_server, bus, tmp_path):
    replay = make_chat(tmp_path / "chat.jsonl", 120.0, [20.0, 80.0])
    sid = "resume-chat"
    async with running_chat(nats_server.url) as (service, stub):
        await stub.StartChat(chat_pb2.StartChatRequest(stream_id=sid, source=str(replay), pacing=S.PACING_VOD))
        await publish_windows(bus, sid, 120.0, last_index=5)  # the first minute of media
        await wait_for(lambda: _features_up_to(bus, sid, 5), what="chat windows 0-5")
    # The service went away with the reader running: its point stays, with what was published.
    kv = await bus.kv("chat_streams")
    point = ReaderPoint.from_bytes((await kv.get(sid)).value)
    assert (point.next_window, point.next_interval, point.source) == (6, 2, str(replay))

    async with running_chat(nats_server.url) as (service, stub):
        assert sid in service.sessions, "the reader was resumed when the service started"
        await publish_windows(bus, sid, 120.0, first=6)  # the second minute, the last record
        final = await wait_state(stub, sid, {S.STREAM_STATE_ENDED})
        session = service.finished[sid]
        assert (session.windows_published, session.intervals_published) == (6, 2), "only windows 6-11 and intervals 2-3 again"
    messages = load_replay(replay)
    assert final.messages == sum(m.media_time < 120.0 for m in messages)
    records = await features(bus, sid)
    assert [r.window for r in records] == list(range(12)), "each window once"
    want, _ = expected(messages, 120.0)
    got = {r.window: r.values["chat_messages"] for r in records}
    assert got == {i: values["chat_messages"] for i, values in want}, "the resumed windows count what an unbroken reader counts"
    assert len(await event_msgs(bus, "sentiment", sid)) == 4 and len(await event_msgs(bus, "forecast", sid)) == 4
    assert not await (await ReaderStore.open(bus, "chat_streams")).left(), "the finished reader's point is deleted"


async def test_a_reader_that_cannot_be_resumed_is_dropped(nats_server, bus, tmp_path):
    kv = await bus.kv("chat_streams")
    await kv.put("resume-gone", ReaderPoint(str(tmp_path / "gone.jsonl"), 1.0e9, S.PACING_VOD, 1.0e9, 3, 1).to_bytes())
    await kv.put("resume-bad", b"[1, 2")
    async with running_chat(nats_server.url) as (service, stub):
        assert "resume-gone" not in service.sessions
        assert not await (await ReaderStore.open(bus, "chat_streams")).left(), "both points are gone"
        status = await stub.StartChat(chat_pb2.StartChatRequest(stream_id="resume-gone", source=str(make_chat(tmp_path / "c.jsonl", 20.0, [5.0])),
                                                                pacing=S.PACING_VOD))
        assert status.state == S.STREAM_STATE_RUNNING, "the service serves"


async def _features_up_to(bus, sid: str, index: int) -> bool:
    return any(r.window == index for r in await features(bus, sid))
