"""Validation of what callers send: stream ids, media sources, chat sources.

Media sources must use an allowed URL scheme (http, https incl. HLS, rtmp(s), rtsp(s), srt);
`twitch.tv/<channel>` is accepted as https. Local paths (or file:// URLs) only when the gateway
allows them, optionally only under configured roots. Every refusal says what was wrong and what
would be accepted.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from streamsight import subjects
from streamsight.rpc import invalid

MEDIA_SCHEMES = ("http", "https", "rtmp", "rtmps", "rtsp", "rtsps", "srt")
CHAT_SCHEMES = ("irc", "ircs")
_TWITCH_BARE = re.compile(r"^(?:www\.)?twitch\.tv/([A-Za-z0-9_]{3,25})/?$")
_TWITCH_CHANNEL = re.compile(r"^[A-Za-z0-9_]{3,25}$")
MAX_SOURCE_LEN = 2048


def stream_id(value: str) -> str:
    if not subjects.is_valid_stream_id(value):
        raise invalid(
            f"stream id {value!r} is not valid: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value


def _local_path(path_text: str, allow_local: bool, roots: list[str], what: str) -> str:
    if not allow_local:
        raise invalid(f"{what} {path_text!r} is a local path, which this gateway does not accept; use one of {', '.join(MEDIA_SCHEMES)} URLs")
    path = Path(path_text).expanduser().resolve()
    if roots and not any(path.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise invalid(f"{what} {path_text!r} is outside the allowed folders ({', '.join(roots)})")
    if not path.is_file():
        raise invalid(f"{what} {path_text!r} does not exist or is not a file")
    return str(path)


def media_source(source: str, allow_local: bool = False, roots: list[str] | None = None) -> str:
    """The normalised source, or INVALID_ARGUMENT saying why it is refused."""
    source = (source or "").strip()
    if not source:
        raise invalid("source is empty: give a URL (http, https, rtmp, rtsp, srt) or, where allowed, a file path")
    if len(source) > MAX_SOURCE_LEN:
        raise invalid(f"source is {len(source)} characters long; at most {MAX_SOURCE_LEN} are accepted")
    if _TWITCH_BARE.match(source):
        return "https://" + source
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _local_path(parts.path, allow_local, roots or [], "source")
    if not scheme or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):
        return _local_path(source, allow_local, roots or [], "source")
    if scheme not in MEDIA_SCHEMES:
        raise invalid(f"source scheme {scheme!r} is not allowed; use one of {', '.join(MEDIA_SCHEMES)}")
    if not parts.hostname:
        raise invalid(f"source URL {source!r} has no host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise invalid(f"source URL {source!r} has an invalid port") from None
    return source


def chat_source(source: str, allow_local: bool = False, roots: list[str] | None = None) -> str:
    """'' (no chat), 'twitch:<channel>', an irc(s):// URL, or an allowed local replay file."""
    source = (source or "").strip()
    if not source:
        return ""
    if source.lower().startswith("twitch:"):
        channel = source.split(":", 1)[1].lstrip("#")
        if not _TWITCH_CHANNEL.match(channel):
            raise invalid(f"chat source {source!r}: a Twitch channel name has 3-25 letters, digits or '_'")
        return f"twitch:{channel.lower()}"
    parts = urlsplit(source)
    if parts.scheme.lower() in CHAT_SCHEMES:
        if not parts.hostname or not parts.path.strip("/#"):
            raise invalid(f"chat source {source!r} needs a host and a channel, e.g. ircs://irc.chat.twitch.tv:6697/#channel")
        return source
    if parts.scheme and parts.scheme.lower() != "file" and len(parts.scheme) > 1:
        raise invalid(f"chat source scheme {parts.scheme!r} is not allowed; use twitch:<channel>, irc://, ircs:// or a replay file")
    return _local_path(parts.path if parts.scheme else source, allow_local, roots or [], "chat source")
