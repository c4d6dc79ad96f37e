"""Partitioned per-stream subjects: the partition token, wildcards, and parsing by position."""

import zlib

from streamsight import subjects


def test_a_stream_subject_carries_its_partition_before_the_stream_id():
    p = zlib.crc32(b"s1") % subjects.PARTITIONS
    assert subjects.media("audio", "s1") == f"streamsight.media.v1.audio.{p}.s1"
    assert subjects.features("vision", "s1") == f"streamsight.features.v1.vision.{p}.s1"
    assert subjects.event("highlight", "s1") == f"streamsight.events.v1.highlight.{p}.s1"
    assert subjects.event_for_type("streamsight.score.v1", "s1") == f"streamsight.events.v1.score.{p}.s1"
    assert subjects.stream_of(subjects.media("audio", "s1")) == "s1"
    assert subjects.media("audio", "s1").split(".")[3] == "audio"


def test_wildcards_select_every_stream_or_one_partition():
    assert subjects.media("windows") == "streamsight.media.v1.windows.*.*"
    assert subjects.media("windows", partition=0) == "streamsight.media.v1.windows.0.*"
    assert subjects.media("windows", partition=11) == "streamsight.media.v1.windows.11.*"
    assert subjects.event("status", ">") == "streamsight.events.v1.status.>"
    assert subjects.event("*", "*") == "streamsight.events.v1.*.*.*"


def test_partitions_spread_streams_and_stay_in_range():
    ids = [f"stream-{i}" for i in range(400)]
    parts = [subjects.partition_of(s) for s in ids]
    assert all(0 <= p < subjects.PARTITIONS for p in parts)
    assert len(set(parts)) == subjects.PARTITIONS  # 400 ids reach every one of 16
    assert subjects.partition_of("stream-7") == subjects.partition_of("stream-7")


def test_metric_pattern_drops_partition_and_stream():
    assert subjects.pattern_of(subjects.features("chat", "abc")) == "streamsight.features.v1.chat"
    assert subjects.pattern_of(subjects.deadletter("vision")) == "streamsight.deadletter.v1"
