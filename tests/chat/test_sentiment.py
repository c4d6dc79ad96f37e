"""Emote-aware sentiment: typical Twitch lines, VADER agreement, spam rules, lexicon file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.chat.replay import load_replay
from services.chat.sentiment import (
    LEXICON_PATH,
    MAX_EMOTE_SUM,
    ChatSentiment,
    Lexicon,
    label_for,
)


@pytest.fixture(scope="module")
def scorer() -> ChatSentiment:
    return ChatSentiment()


@pytest.mark.parametrize(
    "text,label,cls",
    [
        ("KEKW", "positive", "laugh"),
        ("PogChamp PogChamp", "positive", "hype"),
        ("Sadge", "negative", "sad"),
        ("monkaS", "negative", "fear"),
        ("W", "positive", "hype"),
        ("L", "negative", "sad"),
        ("GG", "positive", "hype"),
        ("ResidentSleeper", "negative", "bored"),
        ("DansGame", "negative", "disgust"),
        ("OMEGALUL", "positive", "laugh"),
        ("BibleThump", "negative", "sad"),
        ("FeelsGoodMan", "positive", "love"),
        ("FeelsBadMan", "negative", "sad"),
    ],
)
def test_typical_twitch_lines(scorer, text, label, cls):
    s = scorer.score(text)
    assert s.label == label
    assert dict(s.emote_classes).get(cls, 0) >= 1


def test_case_sensitivity_and_matching(scorer):
    assert scorer.score("Kappa").emote_classes == (("sarcasm", 1),)
    assert scorer.score("kappa").emote_classes == ()  # not an emote in lower case
    assert scorer.score("w").label == "neutral" and scorer.score("l").label == "neutral"
    assert scorer.score("KEKW!!").label == "positive"
    assert scorer.score("LULLLLLL").compound == scorer.score("LUL").compound
    assert scorer.score("kekw").label == "positive"  # slang: typed without the extension
    assert scorer.score("that play was sick").label == "positive"


def test_negation_flips_an_emote(scorer):
    assert scorer.score("not pog").label == "negative"
    assert scorer.score("pog").label == "positive"


def test_hype_outweighs_single_emote(scorer):
    assert scorer.score("PogChamp PogChamp").compound > scorer.score("PogChamp").compound > scorer.score("EZ").compound


def test_spam_is_collapsed_and_capped(scorer):
    three = scorer.score("LUL LUL LUL").compound
    assert scorer.score(" ".join(["LUL"] * 60)).compound == three
    wall = " ".join(["PogU", "OMEGALUL", "KEKW", "POGGERS", "PogChamp", "LULW", "Kreygasm"] * 5)
    cap = MAX_EMOTE_SUM / (MAX_EMOTE_SUM**2 + 15) ** 0.5
    assert scorer.score(wall).compound == pytest.approx(cap, abs=1e-4)
    assert dict(scorer.score(wall).emote_classes)["laugh"] == 9  # 3 laugh emotes x at most 3


def test_marked_emotes_without_score_are_not_words(scorer):
    # A channel emote marked by the source: neither an emote score nor a VADER word.
    s = scorer.score("lionLove", emotes=("lionLove",))
    assert s.compound == 0.0
    assert scorer.score("love", emotes=("love",)).compound == 0.0
    assert scorer.score("love").compound > 0.5


def test_agrees_with_vader_on_plain_words(shared_data, scorer):
    """Messages without a lexicon token score exactly as VADER does (fast path included);
    words VADER knows only in their collapsed form ("yesss") are left out: those we fold."""
    vader = SentimentIntensityAnalyzer()
    lex = Lexicon()
    msgs = load_replay(shared_data / "chat" / "nlss" / "rechat-158202424.json")
    checked = nonzero = 0
    for m in msgs:
        if m.emotes or any(lex.lookup(t) for t in m.text.split()) or any(t.lower().strip(".,!?") == "l" for t in m.text.split()) \
                or any(scorer._vader_form(t) != t for t in m.text.split()):
            continue
        expected = vader.polarity_scores(m.text)["compound"]
        assert scorer.score(m.text).compound == pytest.approx(expected, abs=2e-4), "mismatch on a chat line"
        checked += 1
        nonzero += expected != 0
    assert checked > 500 and nonzero > 100


def test_laughter_smileys_and_stretched_words(scorer):
    for text in ("hahahaha", "HEHEHE", "loool", "xDDD", ":D", "Memes :)"):
        assert scorer.score(text).label == "positive", text
    for text in ("ughhh", "k8 is ded", "25 minute stream :("):
        assert scorer.score(text).label == "negative", text
    assert scorer.score("yesss").compound == scorer.score("yes").compound  # only VADER knows "yes"
    assert scorer.score("Memes :)", (":)",)).label == "positive"  # a marked smiley keeps its score


def test_labels_use_vader_thresholds():
    assert label_for(0.05) == "positive" and label_for(0.0499) == "neutral" and label_for(-0.05) == "negative"


def test_lexicon_file_is_valid_and_documented():
    lex = Lexicon()
    for name in ["PogChamp", "PogU", "Pog", "LUL", "KEKW", "OMEGALUL", "LULW", "Kappa", "monkaS", "Sadge",
                 "BibleThump", "FeelsBadMan", "FeelsGoodMan", "ResidentSleeper", "DansGame", "Pepega", "W", "L"]:
        assert name in lex.emotes
    doc = (LEXICON_PATH.parent / "LEXICON.md").read_text(encoding="utf-8")
    data = json.loads(LEXICON_PATH.read_text(encoding="utf-8"))
    missing = [k for sec in ("emotes", "slang") for k in data[sec] if f"`{k}`" not in doc]
    assert not missing, f"entries without documentation in LEXICON.md: {missing}"


def test_bad_lexicon_file_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "lex.json"
    bad.write_text(json.dumps({"classes": ["laugh"], "emotes": {"X": {"score": 9, "class": "laugh"}}, "slang": {}}))
    with pytest.raises(ValueError, match="'X'"):
        Lexicon(bad)
    with pytest.raises(ValueError, match="cannot read"):
        Lexicon(tmp_path / "missing.json")
