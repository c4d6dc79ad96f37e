"""The labelling rule for chat sentiment evaluation (and weak labels for training).

No crowd-labelled Twitch chat with a commercial-use licence installs here, so the
project's evaluation labels come from this documented rule, applied to whole replays
that no backend was fitted on. The rule is deliberately narrow: it labels only messages
whose polarity is plain from a small set of *anchors*, and leaves the rest unlabelled.

- **positive**: at least one positive anchor and no negative anchor;
- **negative**: at least one negative anchor and no positive anchor;
- **neutral**: no anchor, no emote of any kind (marked by the source or of the anchor
  lists), no word with a sentiment in a general-purpose reference lexicon (VADER's
  7,500 words, |valence| >= 0.5: "fun", "fuck", "delicious" make a message unlabelled,
  not neutral), no "!" and at least two words: a plain statement or question ("what
  game is this", "he has 3 bombs left");
- **None** (unlabelled): both polarities, sarcasm markers (Kappa, Keepo, "/s"), or an
  emote or cue the rule has no opinion about.

Anchors are global Twitch emotes (case-sensitive, as typed) and chat words (folded to
lower case, punctuation stripped, letter runs of 3+ collapsed: "lolll" -> "lol"). The
lists are the project's own, written from the emotes' common use; they share emotes with
the shipped lexicon (that is unavoidable: it is what the emotes mean), so a lexicon
backend has an advantage on these labels. `training/chat/DATA.md` says so with the
figures.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

POSITIVE_EMOTES = frozenset({
    "PogChamp", "Pog", "PogU", "POGGERS", "Kreygasm", "LUL", "LULW", "OMEGALUL", "KEKW", "EleGiggle",
    "FeelsGoodMan", "SeemsGood", "<3", ":D", ":)", ";)", "HeyGuys", "VoHiYo", "CurseLit", "KomodoHype",
    "BloodTrail", "TwitchLit", "Clap", "peepoHappy",
})
NEGATIVE_EMOTES = frozenset({
    "NotLikeThis", "BibleThump", "FeelsBadMan", "Sadge", "PepeHands", "DansGame", "ResidentSleeper",
    "FailFish", "SwiftRage", "BabyRage", "WutFace", "monkaS", ":(", "D:", "PJSalt", "WeirdChamp",
})
POSITIVE_WORDS = frozenset({
    "lol", "lmao", "lmfao", "rofl", "haha", "hahaha", "hehe", "xd", "gg", "ggs", "ggwp", "nice", "love",
    "awesome", "amazing", "great", "beautiful", "pog", "poggers", "hype", "yay", "yes", "good", "best",
    "wow", "cool", "cute", "perfect", "genius", "clutch", "thanks", "thank", "ty", "lit", "wp",
})
NEGATIVE_WORDS = frozenset({
    "rip", "sad", "ugh", "boring", "hate", "worst", "bad", "terrible", "awful", "trash", "garbage",
    "cringe", "yikes", "oof", "wtf", "rigged", "stupid", "dumb", "sucks", "annoying", "ruined", "noo",
    "nooo", "f", "dead", "fail", "bs", "wrong", "kill", "ded", "ouch",
})
SARCASM = frozenset({"Kappa", "Keepo", "KappaPride", "Jebaited", "/s"})
_PUNCT = string.punctuation
_LAUGH = re.compile(r"^(ha){2,}h?$|^(he){2,}$|^l+o+l+$|^x+d+$")

LABELS = ("negative", "neutral", "positive")


@lru_cache(maxsize=1)
def _opinion_words() -> frozenset[str]:
    return frozenset(w for w, v in SentimentIntensityAnalyzer().lexicon.items() if abs(v) >= 0.5)


def _fold(token: str) -> str:
    word = token.lower().strip(_PUNCT)
    return re.sub(r"(.)\1{2,}", r"\1", word)


def weak_label(text: str, marked_emotes: tuple[str, ...] = ()) -> str | None:
    """positive / negative / neutral by the rule in the module docstring, or None."""
    tokens = text.split()
    if not tokens:
        return None
    pos = neg = 0
    other_emote = bool(set(marked_emotes) - POSITIVE_EMOTES - NEGATIVE_EMOTES - SARCASM)
    for tok in tokens:
        bare = tok.strip(".,!?") or tok
        if bare in SARCASM or tok.lower() == "/s":
            return None
        if bare in POSITIVE_EMOTES:
            pos += 1
            continue
        if bare in NEGATIVE_EMOTES:
            neg += 1
            continue
        word = _fold(tok)
        if word in POSITIVE_WORDS or _LAUGH.match(word):
            pos += 1
        elif word in NEGATIVE_WORDS:
            neg += 1
    opinion = _opinion_words()
    if not pos and not neg and any(_fold(t) in opinion or t.lower() in opinion for t in tokens):
        return None
    if pos and neg:
        return None
    if pos:
        return "positive"
    if neg:
        return "negative"
    if other_emote or "!" in text or len(tokens) < 2:
        return None
    return "neutral"
