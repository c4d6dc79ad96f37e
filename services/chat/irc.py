"""Twitch's IRC dialect: IRCv3 line parsing, tag escaping, emote ranges, badges, rate limits.

Reference for the dialect: https://dev.twitch.tv/docs/irc/ (tags, commands, rate limits)
and the IRCv3 message-tags specification (escaping rules). Pure functions and a token
bucket; the network client lives in `client.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.chat.message import ChatMessage


class IrcParseError(ValueError):
    """A line that is not a valid IRC message (the message names the line)."""


# IRCv3 tag value escapes: "\:" is ";", "\s" is a space, "\\" a backslash, "\r" and "\n".
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}


def unescape_tag_value(value: str) -> str:
    """Undo IRCv3 tag escaping; an unknown escape yields the character, a trailing lone backslash is dropped."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 < len(value):
                nxt = value[i + 1]
                out.append(_UNESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def escape_tag_value(value: str) -> str:
    """IRCv3 tag escaping (used by tests and by anyone writing tagged lines)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One parsed IRC line: tags, optional prefix, command (upper case) and params.

    The trailing parameter (after " :") is the last element of `params`.
    """

    command: str
    params: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str | None = None

    @property
    def nick(self) -> str:
        """The nick in a `nick!user@host` prefix, or "" for a server prefix."""
        if not self.prefix or "!" not in self.prefix:
            return ""
        return self.prefix.split("!", 1)[0]

    @property
    def trailing(self) -> str:
        return self.params[-1] if self.params else ""


def parse_line(line: str) -> IrcMessage:
    """Parse one IRC line (with or without its CRLF). Raises IrcParseError on a malformed line."""
    raw = line.rstrip("\r\n")
    rest = raw
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        tag_part, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise IrcParseError(f"IRC line has tags but no command: {raw[:200]!r}")
        for item in tag_part.split(";"):
            if not item:
                continue
            key, _, value = item.partition("=")
            tags[key] = unescape_tag_value(value)
        rest = rest.lstrip(" ")
    prefix = None
    if rest.startswith(":"):
        prefix, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise IrcParseError(f"IRC line has a prefix but no command: {raw[:200]!r}")
        rest = rest.lstrip(" ")
    trailing: str | None = None
    if " :" in rest:
        rest, trailing = rest.split(" :", 1)
    elif rest.startswith(":"):
        raise IrcParseError(f"IRC line has no command: {raw[:200]!r}")
    words = rest.split()
    if not words:
        raise IrcParseError(f"IRC line has no command: {raw[:200]!r}")
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(command=words[0].upper(), params=params, tags=tags, prefix=prefix)


def format_line(command: str, *params: str, tags: dict[str, str] | None = None, trailing: bool = False) -> str:
    """Build one IRC line with CRLF; the last param becomes trailing (":...") when it needs
    to be or when `trailing` asks for it (Twitch's own PONG and PRIVMSG use that form)."""
    parts: list[str] = []
    if tags:
        parts.append("@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in tags.items()))
    parts.append(command)
    for i, p in enumerate(params):
        last = i == len(params) - 1
        if "\r" in p or "\n" in p:
            raise ValueError("IRC parameters cannot contain CR or LF")
        if last and (trailing or " " in p or p.startswith(":") or not p):
            parts.append(":" + p)
        else:
            parts.append(p)
    return " ".join(parts) + "\r\n"


def parse_emote_ranges(tag: str, text: str) -> list[tuple[str, int, int]]:
    """Twitch's `emotes` tag ("25:0-4,12-16/1902:6-10") -> [(emote_id, start, end)], sorted by start.

    Ranges are inclusive and count Unicode code points (Python str indices), so emoji
    before an emote do not shift it. Ranges outside the text are dropped, not trusted.
    """
    found: list[tuple[str, int, int]] = []
    if not tag:
        return found
    for group in tag.split("/"):
        emote_id, _, ranges = group.partition(":")
        for rng in ranges.split(","):
            a, sep, b = rng.partition("-")
            if not sep or not a.isdigit() or not b.isdigit():
                continue
            start, end = int(a), int(b)
            if 0 <= start <= end < len(text):
                found.append((emote_id, start, end))
    found.sort(key=lambda r: r[1])
    return found


def parse_badges(tag: str) -> dict[str, str]:
    """`badges` tag ("broadcaster/1,subscriber/12") -> {"broadcaster": "1", "subscriber": "12"}."""
    badges: dict[str, str] = {}
    for item in tag.split(","):
        if item:
            name, _, version = item.partition("/")
            badges[name] = version
    return badges


_ACTION_START = "\x01ACTION "


def privmsg_to_chat(msg: IrcMessage, media_time: float) -> ChatMessage:
    """Turn a PRIVMSG into a ChatMessage (emote names cut from the text by the tag ranges)."""
    if msg.command != "PRIVMSG" or len(msg.params) < 2:
        raise IrcParseError(f"not a chat PRIVMSG: {msg.command} {msg.params[:1]}")
    text = msg.params[-1]
    is_action = text.startswith(_ACTION_START) and text.endswith("\x01")
    if is_action:
        # /me lines: Twitch counts emote ranges on the inner text.
        text = text[len(_ACTION_START) : -1]
    emotes = tuple(text[s : e + 1] for _, s, e in parse_emote_ranges(msg.tags.get("emotes", ""), text))
    ts = msg.tags.get("tmi-sent-ts", "")
    return ChatMessage(
        media_time=media_time,
        user=msg.tags.get("login") or msg.nick,
        text=text,
        emotes=emotes,
        display_name=msg.tags.get("display-name", ""),
        msg_id=msg.tags.get("id", ""),
        sent_ts_ms=int(ts) if ts.isdigit() else None,
        badges=parse_badges(msg.tags.get("badges", "")),
        is_action=is_action,
    )


class TokenBucket:
    """Rate limiter: at most `capacity` sends per `period` seconds, refilled continuously.

    Twitch's limits (dev.twitch.tv/docs/irc, "Rate limits"): 20 PRIVMSG per 30 s for a
    regular user (100 for moderators), 20 JOIN per 10 s, 20 authentication attempts per 10 s.
    """

    def __init__(self, capacity: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity <= 0 or period <= 0:
            raise ValueError("token bucket needs a positive capacity and period")
        self.capacity = float(capacity)
        self.rate = capacity / period
        self._tokens = float(capacity)
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self) -> bool:
        """Take a token now if one is there."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait until a token is there, then take it."""
        while not self.try_acquire():
            await asyncio.sleep(self.delay())
