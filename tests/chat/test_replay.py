"""Replay readers: every format on real and hand-made logs, detection, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.chat.replay import ReplayFormatError, detect_format, iter_replay, load_replay

RECHAT = {
    "rechat-84065913.json": 3926,
    "rechat-103227724.json": 2622,
    "rechat-98355852.json": 1632,
    "rechat-115328018.json": 2862,
    "rechat-158202424.json": 1970,
}


@pytest.mark.parametrize("name,count", sorted(RECHAT.items()))
def test_real_rechat_files(shared_data, name, count):
    path = shared_data / "chat" / "nlss" / name
    assert detect_format(path) == "rechat"
    msgs = load_replay(path)
    assert len(msgs) == count  # the video header is not a comment
    times = [m.media_time for m in msgs]
    assert times == sorted(times) and times[0] >= 0
    assert all(m.user and isinstance(m.text, str) for m in msgs)
    # Emote fragments are carried as emote names that occur in the text.
    with_emotes = [m for m in msgs if m.emotes]
    assert with_emotes and all(e in m.text for m in with_emotes for e in m.emotes)
    assert [m.media_time for m in iter_replay(path)] == times


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_twitchdownloader_json(tmp_path):
    doc = {
        "FileInfo": {"Version": {"Major": 1}},
        "streamer": {"name": "somestreamer", "id": 1},
        "video": {"start": 0, "end": 100},
        "comments": [
            {"_id": "b", "content_offset_seconds": 12.5, "commenter": {"display_name": "B", "name": "b"},
             "message": {"body": "PogChamp nice", "fragments": [
                 {"text": "PogChamp", "emoticon": {"emoticon_id": "88"}}, {"text": " nice", "emoticon": None}],
                 "user_badges": []}, "extra": {"ignored": True}},
            {"_id": "a", "content_offset_seconds": 3, "commenter": {"display_name": "A", "name": "a"},
             "message": {"body": "hello", "fragments": [{"text": "hello"}]}},
        ],
    }
    p = _write(tmp_path, "td.json", json.dumps(doc, indent=2))
    assert detect_format(p) == "twitchdownloader"
    msgs = load_replay(p)
    assert [(m.media_time, m.text, m.emotes) for m in msgs] == [(3.0, "hello", ()), (12.5, "PogChamp nice", ("PogChamp",))]


def test_chat_downloader_jsonl_and_array(tmp_path):
    lines = [
        {"message_id": "1", "message": "LUL that was funny", "time_in_seconds": 20.0, "time_text": "0:20",
         "author": {"name": "x", "id": "9"}, "emotes": [{"id": "425618", "name": "LUL", "locations": ["0-2"]}],
         "message_type": "text_message"},
        {"message_id": "2", "message": "subscribed!", "time_in_seconds": 5.0, "author": {"name": "y"},
         "message_type": "subscription"},
        {"message_id": "3", "message": "first", "time_in_seconds": 1.0, "author": {"name": "z"}},
    ]
    p = _write(tmp_path, "cd.jsonl", "\n".join(json.dumps(o) for o in lines) + "\n")
    assert detect_format(p) == "chat-downloader"
    msgs = load_replay(p)
    assert [(m.media_time, m.text, m.emotes) for m in msgs] == [(1.0, "first", ()), (20.0, "LUL that was funny", ("LUL",))]
    arr = _write(tmp_path, "cd.json", json.dumps(lines, indent=1))
    assert detect_format(arr) == "chat-downloader"
    assert [m.text for m in load_replay(arr)] == ["first", "LUL that was funny"]


def test_irc_log_with_timestamps(tmp_path):
    text = (
        "[2021-03-04 12:00:00] :tmi.twitch.tv 001 justinfan1 :Welcome\n"
        "[2021-03-04 12:00:10.500] @display-name=Ab;emotes=25:5-9 :ab!ab@ab.tmi.twitch.tv PRIVMSG #c :\U0001F600 hi Kappa\n"
        "[2021-03-04 12:00:05] :cd!cd@cd.tmi.twitch.tv PRIVMSG #c :earlier line\n"
        "[2021-03-04 12:00:11] PING :tmi.twitch.tv\n"
    )
    p = _write(tmp_path, "chat.log", text)
    assert detect_format(p) == "irc"
    start = 1614859200.0  # 2021-03-04T12:00:00Z
    msgs = load_replay(p, stream_start=start)
    assert [(m.media_time, m.text) for m in msgs] == [(5.0, "earlier line"), (10.5, "\U0001F600 hi Kappa")]
    assert msgs[1].emotes == ("Kappa",) and msgs[1].display_name == "Ab"
    # Without a stream start the log's first timestamp (here the welcome line) is media time 0.
    assert [m.media_time for m in load_replay(p)] == [5.0, 10.5]
    epoch = _write(tmp_path, "epoch.log", "1614859210500 :a!a@a PRIVMSG #c :ms stamp\n1614859211 :a!a@a PRIVMSG #c :s stamp\n")
    assert [m.media_time for m in load_replay(epoch, stream_start=start)] == [10.5, 11.0]


def test_csv_and_jsonl_simple(tmp_path):
    p = _write(tmp_path, "chat.csv", 'Time,User,Message,Extra\n0:01:05,u1,"hi, there",x\n2.5,u2,GG,y\n')
    assert detect_format(p) == "csv"
    assert [(m.media_time, m.user, m.text) for m in load_replay(p)] == [(2.5, "u2", "GG"), (65.0, "u1", "hi, there")]
    j = _write(tmp_path, "chat.jsonl", '{"time": 4, "user": "u", "message": "W", "color": "red"}\n\n{"time": "0:02", "user": "v", "message": "L"}\n')
    assert detect_format(j) == "jsonl"
    assert [(m.media_time, m.text) for m in load_replay(j)] == [(2.0, "L"), (4.0, "W")]


def test_iter_replay_reorders_within_horizon(tmp_path):
    rows = "".join(f'{{"time": {t}, "user": "u", "message": "m{t}"}}\n' for t in [5, 1, 3, 200, 150, 400])
    p = _write(tmp_path, "o.jsonl", rows)
    assert [m.media_time for m in iter_replay(p, reorder_s=100)] == [1, 3, 5, 150, 200, 400]


@pytest.mark.parametrize(
    "name,text,where",
    [
        ("bad.json", '[{"length": 10},\n {"content_offset_seconds": 1, "message": {"body": "x"}},\n {"oops": ', ":3:"),
        ("bad2.json", '{"comments": [{"content_offset_seconds": "soon", "message": {"body": "x"}}]}', ":item 0:"),
        ("bad.jsonl", '{"time": 1, "user": "u", "message": "ok"}\n{"time": 2, "user": "u"\n', ":2:"),
        ("bad3.jsonl", '{"time": 1, "user": "u", "message": "ok"}\n{"time": "later", "user": "u", "message": "x"}\n', ":2:"),
        ("bad.csv", "time,user,message\n1,u,ok\nnot-a-time,u,x\n", ":3:"),
        ("bad.log", "[2021-03-04 12:00:00] :a!a@a PRIVMSG #c :ok\ngarbage without a stamp\n", ":2:"),
        ("cd_bad.jsonl", '{"message_id": "1", "message": "x", "author": {"name": "a"}}\n', ":1:"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, text, where):
    p = _write(tmp_path, name, text)
    with pytest.raises(ReplayFormatError) as info:
        load_replay(p)
    assert str(p) in str(info.value) and where in str(info.value)


def test_unrecognised_empty_and_missing(tmp_path):
    with pytest.raises(ReplayFormatError, match="unrecognised"):
        load_replay(_write(tmp_path, "x.txt", "just some words\n"))
    with pytest.raises(ReplayFormatError, match="empty"):
        load_replay(_write(tmp_path, "e.txt", "\n\n"))
    with pytest.raises(ReplayFormatError, match="not found"):
        load_replay(tmp_path / "missing.json")
    with pytest.raises(ReplayFormatError, match="time and a message column"):
        load_replay(_write(tmp_path, "h.csv", "a,b\n1,2\n"))
