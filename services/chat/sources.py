"""What a StartChat `source` names, and a replay file loaded with its bad lines counted.

A source is live IRC (`twitch:<channel>`, `irc://host[:port]/#channel`,
`ircs://host[:port]/#channel`) or a replay file path (format detected, see replay.py).
`load_replay_checked` reads the whole replay, skipping and counting bad lines; it
refuses the file (SourceError naming the file and the first bad line) when no line
could be read or when unreadable lines outnumber the readable ones, since such a file
is not a chat log of the detected format with a few damaged lines but the wrong file
(reading stops early after HOPELESS_ERRORS bad lines and no good one). The async variant
reads on the event loop in short slices. No NATS or gRPC.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.chat.message import ChatMessage
from services.chat.replay import ReplayFormatError, detect_format, iter_replay_unordered

_CHANNEL = re.compile(r"^[A-Za-z0-9_]{1,25}$")
MAX_ERRORS_KEPT = 20
HOPELESS_ERRORS = 1000  # this many unreadable lines before the first readable one: stop reading, refuse the file


class SourceError(ValueError):
    """A source that cannot be used; the message says what and why, for a person."""


@dataclass(frozen=True, slots=True)
class LiveSource:
    """Live IRC. `host` None means the configured Twitch server (and its OAuth token)."""

    channel: str
    host: str | None = None
    port: int | None = None
    tls: bool | None = None


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """A chat log on disk."""

    path: Path


@dataclass(slots=True)
class LoadedReplay:
    """A replay's messages (sorted by media time) and the lines that could not be read."""

    path: Path
    format: str
    messages: list[ChatMessage]
    rejected: int = 0
    errors: list[ReplayFormatError] = field(default_factory=list)  # the first MAX_ERRORS_KEPT
    messages_seen: int = 0


def parse_source(source: str) -> LiveSource | ReplaySource:
    """Classify a StartChat source; SourceError when it is empty or a malformed IRC source."""
    text = (source or "").strip()
    if not text:
        raise SourceError("chat source is empty: give twitch:<channel>, irc(s)://host/#channel or a replay file path")
    if text.lower().startswith("twitch:"):
        channel = text.split(":", 1)[1].strip().lstrip("#")
        if not _CHANNEL.match(channel):
            raise SourceError(f"chat source {text!r}: a Twitch channel name has 1-25 letters, digits or '_'")
        return LiveSource(channel.lower())
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("irc", "ircs"):
        channel = (parts.fragment or parts.path.strip("/")).lstrip("#")
        if not parts.hostname or not channel:
            raise SourceError(f"chat source {text!r} needs a host and a channel, e.g. ircs://irc.chat.twitch.tv:6697/#channel")
        if not _CHANNEL.match(channel):
            raise SourceError(f"chat source {text!r}: channel {channel!r} has characters a Twitch channel cannot have")
        try:
            port = parts.port
        except ValueError:
            raise SourceError(f"chat source {text!r} has an invalid port") from None
        tls = scheme == "ircs"
        return LiveSource(channel.lower(), parts.hostname, port or (6697 if tls else 6667), tls)
    if scheme == "file":
        return ReplaySource(Path(parts.path))
    if scheme and len(scheme) > 1:
        raise SourceError(f"chat source scheme {scheme!r} is not supported; use twitch:<channel>, irc://, ircs:// or a replay file")
    return ReplaySource(Path(text))


def check_replay_path(path: Path, roots: list[str], max_bytes: int) -> Path:
    """The resolved path of a readable replay file under one of `roots` (any when empty)."""
    resolved = path.expanduser().resolve()
    if roots and not any(resolved.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise SourceError(f"{path}: replay file is outside the allowed folders ({', '.join(roots)})")
    if not resolved.exists():
        raise SourceError(f"{path}: replay file not found")
    if not resolved.is_file():
        raise SourceError(f"{path}: not a regular file")
    size = resolved.stat().st_size
    if size > max_bytes:
        raise SourceError(f"{path}: replay file is {size / 1e6:.1f} MB; at most {max_bytes / 1e6:.1f} MB are accepted")
    return resolved


def load_replay_checked(path: Path) -> LoadedReplay:
    """Detect the format, read every message, count bad lines; SourceError for an unusable file."""
    loaded, messages = _open_replay(path)
    with _source_errors(path):
        loaded.messages = list(messages)
    return _checked(loaded)


async def load_replay_checked_async(path: Path, slice_s: float = 0.01) -> LoadedReplay:
    """`load_replay_checked` on the event loop, yielding to it every `slice_s` seconds.

    Not a thread: parsing is Python work that holds the GIL, so a thread would stall the
    loop just as much (in longer, less predictable pauses). A whole-file JSON document is
    still parsed in one go (json.load), which takes about 10 ms per MB.
    """
    loaded, messages = _open_replay(path)
    out: list[ChatMessage] = []
    with _source_errors(path):
        deadline = time.perf_counter() + slice_s
        for msg in messages:
            out.append(msg)
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + slice_s
    loaded.messages = out
    return _checked(loaded)


def _open_replay(path: Path) -> tuple[LoadedReplay, Iterator[ChatMessage]]:
    loaded = LoadedReplay(path, "", [])

    def on_error(exc: ReplayFormatError) -> None:
        loaded.rejected += 1
        if len(loaded.errors) < MAX_ERRORS_KEPT:
            loaded.errors.append(exc)
        if loaded.rejected >= HOPELESS_ERRORS and not loaded.messages_seen:
            raise SourceError(f"{loaded.errors[0]} (the first {loaded.rejected} {_unit(loaded.format)} are all unreadable; not a {loaded.format} chat log?)")

    with _source_errors(path):
        loaded.format = detect_format(path)
        messages = iter_replay_unordered(path, loaded.format, on_error=on_error)

    def counted() -> Iterator[ChatMessage]:
        for msg in messages:
            loaded.messages_seen += 1
            yield msg

    return loaded, counted()


@contextmanager
def _source_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except ReplayFormatError as exc:
        raise SourceError(str(exc)) from None
    except OSError as exc:  # a read error in the middle of the file
        raise SourceError(f"{path}: cannot read the chat log: {exc.strerror or exc}") from None


def _checked(loaded: LoadedReplay) -> LoadedReplay:
    """Sort by media time; refuse a file with more unreadable lines than readable ones."""
    good, bad = len(loaded.messages), loaded.rejected
    if bad and (good == 0 or bad > good):
        first = loaded.errors[0]
        raise SourceError(f"{first} ({bad} of {good + bad} {_unit(loaded.format)} unreadable; not a {loaded.format} chat log?)")
    loaded.messages.sort(key=lambda m: m.media_time)
    return loaded


def _unit(fmt: str) -> str:
    return "comments" if fmt in ("rechat", "twitchdownloader") else "lines"
