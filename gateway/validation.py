"""Validation of what callers send: stream ids, media sources, chat sources.

Media sources must use an allowed URL scheme (http, https incl. HLS, rtmp(s), rtsp(s), srt);
`twitch.tv/<channel>` is accepted as https (which addresses a URL may reach is ingest's check,
services/ingest/netguard.py, after DNS). Local paths (or file:// URLs) only when the gateway
allows them, and only under its allowed folders (`local_roots`, by default its data folder).
Text fields are bounded and free of control characters. Every refusal says what was wrong and
what would be accepted.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from streamsight import subjects
from streamsight.rpc import invalid

MEDIA_SCHEMES = ("http", "https", "rtmp", "rtmps", "rtsp", "rtsps", "srt")
CHAT_SCHEMES = ("irc", "ircs")
_TWITCH_BARE = re.compile(r"^(?:www\.)?twitch\.tv/([A-Za-z0-9_]{3,25})/?$")
_TWITCH_CHANNEL = re.compile(r"^[A-Za-z0-9_]{3,25}$")
MAX_SOURCE_LEN = 2048
MAX_OPTION_ENTRIES = 16
MAX_OPTION_LEN = 256
MAX_AFTER_SEQUENCE = 2**63 - 2  # JetStream sequences are signed 64-bit; the watch starts at after + 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABELS = 32
_LABEL_KEY = re.compile(r"^[a-z0-9._/-]{1,63}$")
TWITCH_CHANNEL_LABEL = "twitch.channel_id"  # the label the Twitch extension backend serves a channel by


def _text(value: str, what: str, max_len: int) -> str:
    """`value` stripped; INVALID_ARGUMENT when too long or holding control characters (NUL, newlines)."""
    value = (value or "").strip()
    if len(value) > max_len:
        raise invalid(f"{what} is {len(value)} characters long; at most {max_len} are accepted")
    if _CONTROL.search(value):
        raise invalid(f"{what} contains control characters (NUL, newline, ...), which no source or id may hold")
    return value


def _split(source: str, what: str):
    try:
        parts = urlsplit(source)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        problem = "has an invalid port" if "port" in str(exc).lower() else f"is not a valid URL ({exc})"
        raise invalid(f"{what} {source!r} {problem}") from None
    return parts


def stream_options(extra: dict[str, str]) -> dict[str, str]:
    """The free-form `options.extra` map: a few short entries (ingest reads flow_fps, cnn_fps, glitch_fps)."""
    if len(extra) > MAX_OPTION_ENTRIES:
        raise invalid(f"options.extra has {len(extra)} entries; at most {MAX_OPTION_ENTRIES} are accepted")
    for key, value in extra.items():
        _text(key, "an options.extra key", 64)
        _text(value, f"options.extra[{key[:64]!r}]", MAX_OPTION_LEN)
    return dict(extra)


def labels(given: dict[str, str]) -> dict[str, str]:
    """A stream's labels: at most 32, keys of lowercase letters, digits and . _ / -, short values;
    `twitch.channel_id` is a Twitch channel id (digits)."""
    if len(given) > MAX_LABELS:
        raise invalid(f"{len(given)} labels; at most {MAX_LABELS} are accepted")
    for key, value in given.items():
        if not _LABEL_KEY.match(key):
            raise invalid(f"label key {key[:64]!r} is not valid: 1-63 lowercase letters, digits, '.', '_', '/' or '-'")
        _text(value, f"label {key!r}", MAX_OPTION_LEN)
        if key == TWITCH_CHANNEL_LABEL and not value.isdigit():
            raise invalid(f"label {key!r} is a Twitch channel id, digits only (not the channel's name)")
    return dict(given)


def since_time(value) -> datetime:
    """A WatchEvents since_time as an aware datetime; INVALID_ARGUMENT when out of range."""
    try:
        return value.ToDatetime(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise invalid(f"since_time {value.seconds}s is not a valid time") from None


def after_sequence(value: int) -> int:
    if not 0 <= value <= MAX_AFTER_SEQUENCE:
        raise invalid(f"after_sequence {value} is beyond any event sequence (at most {MAX_AFTER_SEQUENCE})")
    return value


def stream_id(value: str) -> str:
    if not subjects.is_valid_stream_id(value):
        raise invalid(
            f"stream id {value[:80]!r} is not valid: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value


def _local_path(path_text: str, allow_local: bool, roots: list[str], what: str) -> str:
    """A local file under one of `roots`. The refusal of a path outside them reads the same whether
    or not it exists, so callers cannot probe the host's files."""
    if not allow_local:
        instead = f"use one of {', '.join(MEDIA_SCHEMES)} URLs" if what == "source" else "use twitch:<channel> or an irc(s):// URL"
        raise invalid(f"{what} {path_text!r} is a local path, which this gateway does not accept; {instead}")
    try:
        path = Path(path_text).expanduser().resolve()
        allowed = [Path(r).expanduser().resolve() for r in roots]
    except (OSError, RuntimeError, ValueError):
        raise invalid(f"{what} is not a usable path") from None
    if not any(path.is_relative_to(root) for root in allowed):
        raise invalid(
            f"{what} {path_text!r} is outside the allowed folders ({', '.join(map(str, allowed)) or 'none'}): put it in one, "
            f"or name its folder in gateway.local_roots (STREAMSIGHT_GATEWAY_LOCAL_ROOTS)"
        )
    if not path.is_file():
        raise invalid(f"{what} {path_text!r} does not exist or is not a file")
    return str(path)


def media_source(source: str, allow_local: bool = False, roots: list[str] | None = None) -> str:
    """The normalised source, or INVALID_ARGUMENT saying why it is refused."""
    source = _text(source, "source", MAX_SOURCE_LEN)
    if not source:
        raise invalid("source is empty: give a URL (http, https, rtmp, rtsp, srt) or, where allowed, a file path")
    if _TWITCH_BARE.match(source):
        return "https://" + source
    parts = _split(source, "source URL")
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _local_path(parts.path, allow_local, roots or [], "source")
    if not scheme or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):
        return _local_path(source, allow_local, roots or [], "source")
    if scheme not in MEDIA_SCHEMES:
        raise invalid(f"source scheme {scheme!r} is not allowed; use one of {', '.join(MEDIA_SCHEMES)}")
    if not parts.hostname:
        raise invalid(f"source URL {source!r} has no host")
    return source


def chat_source(source: str, allow_local: bool = False, roots: list[str] | None = None) -> str:
    """'' (no chat), 'twitch:<channel>', an irc(s):// URL, or an allowed local replay file."""
    source = _text(source, "chat source", MAX_SOURCE_LEN)
    if not source:
        return ""
    if source.lower().startswith("twitch:"):
        channel = source.split(":", 1)[1].lstrip("#")
        if not _TWITCH_CHANNEL.match(channel):
            raise invalid(f"chat source {source!r}: a Twitch channel name has 3-25 letters, digits or '_'")
        return f"twitch:{channel.lower()}"
    parts = _split(source, "chat source")
    if parts.scheme.lower() in CHAT_SCHEMES:
        if not parts.hostname or not parts.path.strip("/#"):
            raise invalid(f"chat source {source!r} needs a host and a channel, e.g. ircs://irc.chat.twitch.tv:6697/#channel")
        return source
    if parts.scheme and parts.scheme.lower() != "file" and len(parts.scheme) > 1:
        raise invalid(f"chat source scheme {parts.scheme!r} is not allowed; use twitch:<channel>, irc://, ircs:// or a replay file")
    return _local_path(parts.path if parts.scheme else source, allow_local, roots or [], "chat source")
