"""The one stream lifecycle policy (streamsight.lifecycle), without NATS."""

from __future__ import annotations

from streamsight.lifecycle import StreamTable

from ..conftest import FakeClock as Clock


def test_first_message_last_record_and_late_messages():
    table: StreamTable[list] = StreamTable("test", clock=Clock())
    entry = table.entry("s1", list, from_start=True)
    assert entry == [] and "s1" in table
    assert table.entry("s1", lambda: ["other"], from_start=False) is entry, "one entry per stream"
    assert table.finish("s1") is entry
    assert len(table) == 0
    assert table.entry("s1", list, from_start=False) is None, "a late message makes no entry"
    assert table.entry("s1", list, from_start=False) is None
    assert table.counts == {"started": 1, "finished": 1, "late": 2}


def test_an_id_used_again_from_its_start_is_a_new_stream():
    table: StreamTable[dict] = StreamTable("test", clock=Clock())
    first = table.entry("s1", dict, from_start=True)
    table.finish("s1")
    again = table.entry("s1", dict, from_start=True)
    assert again is not first
    assert table.counts["reused"] == 1 and table.counts["started"] == 2


def test_joining_mid_way_is_counted_and_idle_streams_are_handed_back():
    clock = Clock()
    table: StreamTable[str] = StreamTable("test", idle_s=300.0, clock=clock)
    table.entry("a", lambda: "A", from_start=False)
    clock.now = 200.0
    table.entry("b", lambda: "B", from_start=True)
    clock.now = 301.0
    assert table.idle() == [("a", "A")]
    assert list(table) == ["b"]
    assert table.entry("a", lambda: "A2", from_start=False) is None, "an idle-flushed stream is finished"
    clock.now = 600.0
    assert table.idle() == [("b", "B")]
    assert len(table) == 0
    assert table.counts == {"joined": 1, "started": 1, "idle": 2, "late": 1}


def test_finished_ids_are_remembered_boundedly():
    table: StreamTable[int] = StreamTable("test", finished_memory=3, clock=Clock())
    for i in range(5):
        table.entry(f"s{i}", lambda: 0, from_start=True)
        table.finish(f"s{i}")
    assert [table.finished(f"s{i}") for i in range(5)] == [False, False, True, True, True]
