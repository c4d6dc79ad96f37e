"""10 s windows and the 30 s series: features, copypasta weighting, rate z-score, a flood."""

from __future__ import annotations

import asyncio
import math

import pytest

from services.chat.message import ChatMessage
from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import ChatAggregator, feature_names, series_from_messages


@pytest.fixture(scope="module")
def scorer() -> ChatSentiment:
    return ChatSentiment()


def _m(t: float, text: str, user: str = "u") -> ChatMessage:
    return ChatMessage(media_time=t, user=user, text=text)


def test_window_features(scorer):
    agg = ChatAggregator(scorer)
    agg.add_batch([_m(1, "KEKW", "a"), _m(2, "Sadge", "b"), _m(3, "hello there", "a"), _m(25, "PogChamp", "c")])
    windows, points = agg.advance(10.0)
    assert [i for i, _ in windows] == [0] and points == []
    f = windows[0][1]
    assert set(f) == set(feature_names(scorer.classes))
    assert (f["chat_messages"], f["chat_unique_chatters"], f["chat_positive"], f["chat_negative"]) == (3, 2, 1, 1)
    kekw, sadge = scorer.score("KEKW").compound, scorer.score("Sadge").compound
    assert f["chat_mean_compound"] == pytest.approx((kekw + sadge) / 3, abs=1e-6)
    assert f["chat_emote_laugh"] == 1 and f["chat_emote_sad"] == 1 and f["chat_emote_hype"] == 0
    windows, points = agg.advance(30.0)
    assert [i for i, _ in windows] == [1, 2]  # the empty window 1 is emitted too
    assert windows[0][1]["chat_messages"] == 0 and windows[1][1]["chat_emote_hype"] == 1
    assert [(p.index, p.messages) for p in points] == [(0, 4)]
    agg.add(_m(5, "too late"))
    assert agg.late_messages == 1 and agg.advance(40.0)[0][0][1]["chat_messages"] == 0


def test_copypasta_is_down_weighted(scorer):
    agg = ChatAggregator(scorer)
    pasta = "this stream is so bad and boring Sadge"
    msgs = [_m(0.1 * i, pasta, f"p{i}") for i in range(50)]
    msgs += [_m(5 + 0.1 * i, f"KEKW {i}", f"k{i}") for i in range(10)]
    agg.add_batch(msgs)
    f = agg.advance(10.0)[0][0][1]
    plain = (50 * scorer.score(pasta).compound + 10 * scorer.score("KEKW").compound) / 60
    assert f["chat_messages"] == 60 and f["chat_negative"] == 50  # counts are not reduced
    assert plain < 0 < f["chat_mean_compound"]


def test_rate_z_against_running_baseline(scorer):
    agg = ChatAggregator(scorer)
    counts = [5, 7, 5, 6, 60]
    for w, n in enumerate(counts):
        agg.add_batch(_m(10 * w + 0.01 * k, "hi") for k in range(n))
    windows, _ = agg.advance(50.0)
    z = [f["chat_rate_z"] for _, f in windows]
    assert z[:3] == [0.0, 0.0, 0.0]
    base = counts[:4]
    mean = sum(base) / 4
    std = math.sqrt(sum((c - mean) ** 2 for c in base) / 3)
    assert z[4] == pytest.approx((60 - mean) / max(std, 1.0), rel=1e-5)


async def test_flood_of_100k_messages_in_one_window(scorer):
    agg = ChatAggregator(scorer)
    n = 100_000
    flood = (_m(3.0 + i * 1e-5, f"Pog x{i % 500}" if i % 2 else "KEKW", f"user{i % 7000}") for i in range(n))
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await agg.add_batch_async(flood, batch=1000)
    stop.set()
    await t
    # ("187" alone would be negative: VADER knows it as slang for murder, hence the "x".)
    # The loop ran the other task between batches (about one tick per batch of 1000).
    assert ticks >= n // 1000 - 1
    windows, points = agg.advance(30.0)
    f = windows[0][1]
    assert f["chat_messages"] == n and f["chat_positive"] == n  # every message counted
    assert f["chat_unique_chatters"] == 7000
    assert points[0].messages == n and agg.late_messages == 0


def test_series_on_real_chat(shared_data, scorer):
    msgs = load_replay(shared_data / "chat" / "nlss" / "rechat-158202424.json")
    pts = series_from_messages(msgs, scorer)
    assert len(pts) == math.ceil(msgs[-1].media_time / 30 + 1e-9)
    assert sum(p.messages for p in pts) == len(msgs)
    assert all(-1 <= p.mean_compound <= 1 for p in pts)
    assert len({round(p.mean_compound, 3) for p in pts}) > len(pts) // 2  # a real, varying series
    assert all(sum(p.parts) == p.messages and len(p.parts) == 3 for p in pts)


def test_interval_parts_count_each_third(scorer):
    """The forecast sees an interval's messages per 10 s third (a burst at its end)."""
    agg = ChatAggregator(scorer)
    agg.add_batch([_m(t, "hi", "u") for t in (0.5, 9.99, 10.0, 25.0, 29.9, 29.99, 31.0)])
    _, points = agg.advance(60.0)
    assert [p.parts for p in points] == [(2, 1, 3), (1, 0, 0)]
    assert points[0].inputs() == (points[0].mean_compound, 6, points[0].emote_density, (2, 1, 3))


def test_burst_features(scorer):
    """Per-second counts, duplicates, emote density, length and copy-pasta share (issue 19)."""
    agg = ChatAggregator(scorer)
    pasta = "this is the copy pasta of the day"  # 8 words
    msgs = [_m(10.2, "KEKW KEKW", "a"), _m(10.9, "hello", "b"), _m(13.5, "hello", "c"),
            _m(14.0, pasta, "d"), _m(15.0, pasta, "e"), _m(16.0, pasta, "f"), _m(19.99, "short dup", "g"),
            _m(25.0, "short dup", "h")]
    agg.add_batch(msgs)
    windows, _ = agg.advance(30.0)
    f = {i: v for i, v in windows}[1]
    assert [f[f"chat_messages_s{k}"] for k in range(10)] == [2, 0, 0, 1, 1, 1, 1, 0, 0, 1]
    assert f["chat_messages"] == 7
    # duplicates: the 2nd "hello", the 2nd and 3rd pasta (the 1st of each is not)
    assert f["chat_duplicate_ratio"] == pytest.approx(3 / 7, abs=1e-6)
    assert f["chat_copypasta_share"] == pytest.approx(1 / 7, abs=1e-6)  # only the 3rd copy of >= 6 words
    assert f["chat_emote_density"] == pytest.approx(2 / 7, abs=1e-6)  # KEKW twice, nothing else is an emote
    lengths = [len(m.text) for m in msgs[:7]]
    assert f["chat_mean_length"] == pytest.approx(sum(lengths) / 7, abs=1e-6)
    g = {i: v for i, v in windows}[2]
    assert g["chat_duplicate_ratio"] == 1.0 and g["chat_copypasta_share"] == 0.0  # "short dup" has 2 words
    empty = {i: v for i, v in windows}[0]
    assert all(empty[k] == 0.0 for k in ("chat_duplicate_ratio", "chat_emote_density", "chat_mean_length"))


def test_duplicates_expire_after_the_span(scorer):
    agg = ChatAggregator(scorer, copypasta_span_s=30.0)
    agg.add_batch([_m(1.0, "gg"), _m(35.0, "gg"), _m(36.0, "GG  ")])
    windows, _ = agg.advance(40.0)
    f = {i: v for i, v in windows}
    assert f[0]["chat_duplicate_ratio"] == 0.0
    assert f[3]["chat_duplicate_ratio"] == pytest.approx(0.5)  # 35 s is past the span; 36 s repeats it (folded)


def test_marked_emotes_count_in_density(scorer):
    agg = ChatAggregator(scorer)
    agg.add(ChatMessage(media_time=1.0, user="u", text="myCustomEmote hi", emotes=("myCustomEmote",)))
    f = agg.advance(10.0)[0][0][1]
    assert f["chat_emote_density"] == 1.0
