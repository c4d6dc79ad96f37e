"""StartChat sources, lenient replay reading with counted bad lines, and closing windows at the media's end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.chat.message import ChatMessage
from services.chat.replay import ReplayFormatError, load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.sources import LiveSource, ReplaySource, SourceError, check_replay_path, load_replay_checked, parse_source
from services.chat.windows import ChatAggregator


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "source, parsed",
    [
        ("twitch:SomeChannel", LiveSource("somechannel")),
        ("twitch:#some_channel", LiveSource("some_channel")),
        ("irc://127.0.0.1:6667/#chan", LiveSource("chan", "127.0.0.1", 6667, False)),
        ("ircs://irc.example.org/#Chan", LiveSource("chan", "irc.example.org", 6697, True)),
        ("irc://irc.example.org/chan", LiveSource("chan", "irc.example.org", 6667, False)),
        ("/data/chat.json", ReplaySource(Path("/data/chat.json"))),
        ("file:///data/chat.json", ReplaySource(Path("/data/chat.json"))),
        ("relative/chat.csv", ReplaySource(Path("relative/chat.csv"))),
    ],
)
def test_parse_source(source, parsed):
    assert parse_source(source) == parsed


@pytest.mark.parametrize(
    "source, words",
    [
        ("", "empty"),
        ("twitch:", "channel name"),
        ("twitch:no spaces", "channel name"),
        ("ircs://host", "needs a host and a channel"),
        ("irc://host:99999/#c", "invalid port"),
        ("irc://host/#bad!name", "cannot have"),
        ("http://example.com/chat", "scheme 'http'"),
    ],
)
def test_parse_source_refuses_with_a_reason(source, words):
    with pytest.raises(SourceError, match=words):
        parse_source(source)


def test_check_replay_path(tmp_path):
    inside = _write(tmp_path, "a.csv", "time,user,message\n1,a,b\n")
    assert check_replay_path(inside, [str(tmp_path)], 10_000) == inside.resolve()
    with pytest.raises(SourceError, match="outside the allowed folders"):
        check_replay_path(inside, [str(tmp_path / "elsewhere")], 10_000)
    with pytest.raises(SourceError, match=r"at most 0\.0 MB"):
        check_replay_path(inside, [], 10)


def test_lenient_reading_counts_bad_lines_in_every_line_format(tmp_path):
    cases = {
        "c.csv": "time,user,message\n1,a,ok\nsoon,b,bad time\n2,c,ok\n3,d,ok,extra\n",
        "c.jsonl": '{"time": 1, "user": "a", "message": "ok"}\nnot json\n{"time": 2}\n{"time": 2, "user": "b", "message": "ok"}\n',
        "c.log": "[0:00:01] :a!a@a PRIVMSG #c :ok\n[0:00:02] no command here\nno stamp\n[0:00:03] :b!b@b PRIVMSG #c :ok\n",
    }
    for name, text in cases.items():
        p = _write(tmp_path, name, text)
        with pytest.raises(ReplayFormatError):
            load_replay(p)  # strict without a handler
        errors: list[ReplayFormatError] = []
        msgs = load_replay(p, on_error=errors.append)
        assert [m.text for m in msgs] == ["ok", "ok"], name
        assert len(errors) == 2 and all(e.where.isdigit() and str(p) in str(e) for e in errors), name


def test_lenient_reading_skips_bad_comments_of_a_json_document(tmp_path):
    doc = [{"length": 30}]
    doc += [{"content_offset_seconds": t, "commenter": {"name": "u"}, "message": {"body": "hi"}} for t in (1, 2)]
    doc.insert(2, {"content_offset_seconds": "later", "message": {"body": "x"}})
    doc.append("not a comment")
    p = _write(tmp_path, "r.json", json.dumps(doc))
    errors: list[ReplayFormatError] = []
    assert [m.media_time for m in load_replay(p, on_error=errors.append)] == [1.0, 2.0]
    assert [e.where for e in errors] == ["item 2", "item 4"]
    arr = _write(tmp_path, "cd.json", json.dumps([{"message": "x", "time_in_seconds": 1, "author": {"name": "a"}}, {"message": 5}]))
    errors.clear()
    assert len(load_replay(arr, on_error=errors.append)) == 1 and errors[0].where == "item 1"


def test_irc_log_errors_do_not_quote_the_line(tmp_path):
    p = _write(tmp_path, "n.log", "[0:00:01] :a!a@a PRIVMSG #c :fine\n[0:00:02] @badges=x :someuser!someuser@host\n[0:00:03] :b!b@b PRIVMSG\n")
    loaded = load_replay_checked(p)
    assert loaded.rejected == 1 and len(loaded.messages) == 1  # a PRIVMSG without text is not chat, not an error
    assert "someuser" not in str(loaded.errors[0]) and loaded.errors[0].reason == "IRC line has a prefix but no command"


def test_load_replay_checked_accepts_a_few_bad_lines_and_refuses_a_wrong_file(tmp_path):
    rows = [json.dumps({"time": t, "user": "u", "message": "W"}) for t in range(10)]
    ok = _write(tmp_path, "ok.jsonl", "\n".join(rows[:5] + ["{broken", '{"x": 1}'] + rows[5:]) + "\n")
    loaded = load_replay_checked(ok)
    assert (loaded.format, len(loaded.messages), loaded.rejected) == ("jsonl", 10, 2)
    assert [e.where for e in loaded.errors] == ["6", "7"]
    wrong = _write(tmp_path, "wrong.jsonl", "\n".join([rows[0]] + ['{"x": 1}'] * 3) + "\n")
    with pytest.raises(SourceError, match=r"wrong\.jsonl:2: .*3 of 4 lines unreadable"):
        load_replay_checked(wrong)
    empty_doc = _write(tmp_path, "header-only.json", json.dumps([{"length": 10}]))
    assert load_replay_checked(empty_doc).messages == []  # a video nobody chatted in is fine
    with pytest.raises(SourceError, match="not found"):
        load_replay_checked(tmp_path / "gone.json")


def _m(t: float, text: str = "GG") -> ChatMessage:
    return ChatMessage(media_time=t, user="u", text=text)


def test_finish_closes_partial_windows_at_the_media_end():
    agg = ChatAggregator(ChatSentiment())
    agg.add_batch([_m(1), _m(12), _m(31), _m(34.9), _m(80)])
    windows, points = agg.advance(20.0)
    assert [i for i, _ in windows] == [0, 1] and points == []
    windows, points = agg.finish(35.0)
    assert [(i, f["chat_messages"]) for i, f in windows] == [(2, 0), (3, 2)]  # window 3 is [30, 35)
    assert [(p.index, p.messages) for p in points] == [(0, 2), (1, 2)]
    assert agg.after_end_messages == 1  # 80 is in a window past the end
    assert agg.finish(35.0000001) == ([], [])  # all closed already; the tolerance opens no window 4
    fresh = ChatAggregator(ChatSentiment())
    fresh.add(_m(5))
    assert [i for i, _ in fresh.finish(650.0000001)[0]] == list(range(65))


def test_a_reader_that_joins_late_starts_at_the_current_window():
    agg = ChatAggregator(ChatSentiment(), start_s=47.0)
    agg.add(_m(20))  # before the reader joined: no window of its own holds it
    agg.add(_m(48))
    windows, points = agg.advance(60.0)
    assert [(i, f["chat_messages"]) for i, f in windows] == [(4, 1), (5, 0)]
    assert [(p.index, p.messages) for p in points] == [(1, 1)]
    assert agg.late_messages == 1


async def test_async_loading_matches_and_stops_early_on_a_hopeless_file(tmp_path, shared_data):
    from services.chat.sources import HOPELESS_ERRORS, load_replay_checked_async

    real = shared_data / "chat" / "nlss" / "rechat-158202424.json"
    a, b = load_replay_checked(real), await load_replay_checked_async(real)
    assert (a.format, a.rejected) == (b.format, b.rejected) == ("rechat", 0)
    assert [(m.media_time, m.text) for m in a.messages] == [(m.media_time, m.text) for m in b.messages] and len(a.messages) == 1970
    lines = ['{"x": 1}'] * (HOPELESS_ERRORS + 500) + [json.dumps({"time": 1, "user": "u", "message": "W"})] * 5000
    hopeless = _write(tmp_path, "hopeless.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=rf"hopeless\.jsonl:1: .*the first {HOPELESS_ERRORS} lines are all unreadable"):
        await load_replay_checked_async(hopeless)
