"""Emote-aware chat sentiment: VADER for words plus the project's Twitch lexicon (lexicon.json).

A message is split on whitespace. Tokens that are emotes (the source's emote ranges, or
the case-sensitive emote table) or chat slang (case-insensitive table) take their valence
from the project lexicon; the other words go through VADER. The two raw sums are added
and squashed with VADER's own normalisation, so the compound stays in -1..1 and a label
uses VADER's +-0.05 thresholds. See LEXICON.md for the scores and the spam rules:

- repeats of one emote in a message are collapsed (1, 1.5, 2 times its valence for
  1, 2, 3+ copies) and the emote sum of a message is capped at +-4;
- a message with no VADER word skips VADER (exactly the same result, much faster);
- scores are cached by (text, emote ranges), since chat repeats itself a lot.

Copypasta repeated by many people is down-weighted per window in `windows.py`.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vaderSentiment.vaderSentiment import NEGATE, SentimentIntensityAnalyzer

LEXICON_PATH = Path(__file__).with_name("lexicon.json")
POSITIVE_THRESHOLD = 0.05  # VADER's documented thresholds for its compound score
NEGATIVE_THRESHOLD = -0.05
MAX_EMOTE_SUM = 4.0  # about one very strong word: a wall of emotes is one strong reaction
_REPEAT_WEIGHTS = (0.0, 1.0, 1.5, 2.0)  # weight for 0, 1, 2, 3+ copies of one emote
_VADER_ALPHA = 15.0  # VADER's normalize(): x / sqrt(x^2 + alpha)
_PUNCT = string.punctuation
_NEGATIONS = frozenset(NEGATE)
# Laughter typed at any length: "hahahaha", "HEHEHE", "loool", "xDDD" (the table has the short forms).
_LAUGH = re.compile(r"^(?:(?:h+a+){2,}h*|(?:h+e+){2,}h*|l+o+l+|x+d+)$", re.IGNORECASE)
_LAUGH_ENTRY_SCORE = 2.0


def label_for(compound: float) -> str:
    """positive / neutral / negative with VADER's +-0.05 thresholds."""
    if compound >= POSITIVE_THRESHOLD:
        return "positive"
    if compound <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


def _normalize(raw: float) -> float:
    return raw / math.sqrt(raw * raw + _VADER_ALPHA)


def _denormalize(compound: float) -> float:
    """The raw valence sum behind a VADER compound (inverse of its normalize)."""
    c = max(-0.9999, min(0.9999, compound))
    return c * math.sqrt(_VADER_ALPHA / (1.0 - c * c))


@dataclass(frozen=True, slots=True)
class Sentiment:
    """One message's score. `emote_classes` maps class -> count in this message, each
    distinct emote counted at most 3 times (spam does not inflate class counts)."""

    compound: float
    label: str
    emote_classes: tuple[tuple[str, int], ...] = ()
    emotes: int = 0  # emote tokens in the message (source-marked or in the emote table), repeats included


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    score: float
    cls: str


class Lexicon:
    """The project-owned emote and slang table (lexicon.json)."""

    def __init__(self, path: str | Path = LEXICON_PATH) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            self.classes: tuple[str, ...] = tuple(data["classes"])
            self.emotes = {k: LexiconEntry(float(v["score"]), v["class"]) for k, v in data["emotes"].items()}
            self.slang = {k.lower(): LexiconEntry(float(v["score"]), v["class"]) for k, v in data["slang"].items()}
            self.vader_removed: tuple[str, ...] = tuple(data.get("vader_removed", ()))
            self.version = str(data.get("version", ""))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the chat lexicon {path}: {exc}") from exc
        for name, e in {**self.emotes, **self.slang}.items():
            if e.cls not in self.classes or not -4.0 <= e.score <= 4.0:
                raise ValueError(f"lexicon {path}: entry {name!r} has class {e.cls!r} / score {e.score}")

    def is_emote(self, token: str) -> bool:
        """True for a token of the (case-sensitive) emote table, bare or with letter runs collapsed."""
        if token in self.emotes:
            return True
        bare = token.strip(_PUNCT) or token
        return bare in self.emotes or _squeeze(bare) in self.emotes

    def lookup(self, token: str) -> LexiconEntry | None:
        """Emote (case-sensitive) or slang (case-insensitive); also tries the token without
        surrounding punctuation and with letter runs collapsed ("LULLLL" -> "LUL")."""
        e = self.emotes.get(token)
        if e is not None:
            return e
        bare = token.strip(_PUNCT) or token
        e = self.emotes.get(bare) or self.slang.get(bare.lower())
        if e is not None:
            return e
        squeezed = _squeeze(bare)
        if squeezed != bare:
            e = self.emotes.get(squeezed) or self.slang.get(squeezed.lower())
            if e is not None:
                return e
        if "laugh" in self.classes and _LAUGH.match(bare):
            return LexiconEntry(_LAUGH_ENTRY_SCORE, "laugh")
        return None


def _squeeze(word: str) -> str:
    """Collapse runs of 3+ equal characters to one ("Poggg" -> "Pog", "KEKWWW" -> "KEKW")."""
    out: list[str] = []
    i = 0
    while i < len(word):
        j = i
        while j < len(word) and word[j] == word[i]:
            j += 1
        out.append(word[i] if j - i >= 3 else word[i:j])
        i = j
    return "".join(out)


class ChatSentiment:
    """VADER + Twitch lexicon scorer; see the module docstring. Thread-compatible, not thread-safe."""

    def __init__(self, lexicon: Lexicon | None = None, cache_size: int = 65536) -> None:
        self.lexicon = lexicon or Lexicon()
        self._vader = SentimentIntensityAnalyzer()
        for word in self.lexicon.vader_removed:
            self._vader.lexicon.pop(word, None)
        self._vader_words = self._vader.lexicon
        self._emojis = frozenset(self._vader.emojis)
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], Sentiment] = OrderedDict()
        self._cache_size = cache_size
        self._token_cache: dict[str, LexiconEntry | None] = {}  # chat reuses a small vocabulary
        self._emote_cache: dict[str, bool] = {}
        self.vader_calls = 0  # how often the slow path ran (for the benchmark)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return self.lexicon.classes

    def score(self, text: str, emotes: tuple[str, ...] = ()) -> Sentiment:
        """Score one message; `emotes` are emote names the source marked (IRC tag ranges)."""
        key = (text, emotes)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        result = self._score(text, emotes)
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _score(self, text: str, marked: tuple[str, ...]) -> Sentiment:
        tokens = text.split()
        marked_set = frozenset(marked)
        rest: list[str] = []
        counts: dict[str, int] = {}
        found: dict[str, tuple[float, str]] = {}
        token_cache = self._token_cache
        emote_cache = self._emote_cache
        n_emotes = 0
        for i, tok in enumerate(tokens):
            try:
                is_emote = emote_cache[tok]
            except KeyError:
                if len(emote_cache) > 200_000:
                    emote_cache.clear()
                is_emote = emote_cache[tok] = self.lexicon.is_emote(tok)
            if is_emote or tok in marked_set:
                n_emotes += 1
            try:
                entry = token_cache[tok]
            except KeyError:
                if len(token_cache) > 200_000:
                    token_cache.clear()
                entry = token_cache[tok] = self.lexicon.lookup(tok)
            if entry is None:
                if tok in marked_set:  # an emote we have no score for: not a word either
                    continue
                rest.append(self._vader_form(tok))
                continue
            score = entry.score
            # "not pog", "no KEKW": VADER's negation rule (previous three words), its scalar.
            if score and any(w.lower() in _NEGATIONS or "n't" in w.lower() for w in tokens[max(0, i - 3) : i]):
                score *= -0.74
            key = tok.strip(_PUNCT) or tok
            counts[key] = counts.get(key, 0) + 1
            found[key] = (score, entry.cls)
        emote_sum = 0.0
        classes: dict[str, int] = {}
        for key, n in counts.items():
            score, cls = found[key]
            emote_sum += score * _REPEAT_WEIGHTS[min(n, 3)]
            classes[cls] = classes.get(cls, 0) + min(n, 3)
        emote_sum = max(-MAX_EMOTE_SUM, min(MAX_EMOTE_SUM, emote_sum))
        raw = emote_sum
        if rest and self._needs_vader(rest):
            self.vader_calls += 1
            raw += _denormalize(self._vader.polarity_scores(" ".join(rest))["compound"])
        compound = round(_normalize(raw), 4) if raw else 0.0
        return Sentiment(compound, label_for(compound), tuple(sorted(classes.items())), n_emotes)

    def _vader_form(self, tok: str) -> str:
        """The token as VADER knows it: "ughhh" -> "ugh", "yesss" -> "yes" when only the
        collapsed form is in VADER's lexicon; otherwise the token unchanged."""
        lw = tok.lower().strip(_PUNCT)
        if not lw or lw in self._vader_words:
            return tok
        squeezed = _squeeze(lw)
        return squeezed if squeezed != lw and squeezed in self._vader_words else tok

    def _needs_vader(self, words: list[str]) -> bool:
        """True when VADER could give a non-zero score: a word in its lexicon or an emoji.
        VADER scores only lexicon words (boosters and negations alone give 0)."""
        lex = self._vader_words
        for w in words:
            lw = w.lower()
            if lw in lex:
                return True
            stripped = lw.strip(_PUNCT)
            if stripped in lex:
                return True
            if not w.isascii() and any(ch in self._emojis for ch in w):
                return True
        return False
