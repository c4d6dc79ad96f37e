"""Chat replays keyed by media time, with the file format detected from its content.

Formats (unknown fields are ignored everywhere):

- ``rechat``: Twitch v5 "rechat" JSON, a list whose first element may describe the video
  and whose other elements are comments (``content_offset_seconds``, ``commenter``,
  ``message.body``, ``message.fragments`` with ``emoticon``); also ``{"comments": [...]}``.
- ``twitchdownloader``: TwitchDownloader's JSON (``streamer``/``video``/``comments``; the
  comments have the v5 shape).
- ``chat-downloader``: JSON lines (or a JSON array) from chat-downloader: ``message``,
  ``time_in_seconds`` (or ``timestamp`` in microseconds), ``author.name``, ``emotes``.
- ``irc``: raw IRC lines with a timestamp in front of each: ISO-8601 (optionally in
  brackets), Unix seconds or milliseconds, or a media offset ``[H:MM:SS]``.
- ``csv`` / ``jsonl``: simple rows with time, user and message (see `_TIME_KEYS` etc.
  for accepted column names); time in seconds or ``H:MM:SS``.

Absolute timestamps become media time by subtracting `stream_start` (Unix seconds) when
given, else the first timestamp in the file. Line formats are read as a stream; `iter_replay`
puts them in time order with a bounded reorder buffer, `load_replay` returns a sorted list.
Errors raise ReplayFormatError naming the file and the line (or JSON item). With an
`on_error` callback, a bad line or item is handed to it and skipped instead (a service
counts such lines and reads the rest); errors about the whole file still raise.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from services.chat.irc import IrcParseError, parse_line, privmsg_to_chat
from services.chat.message import ChatMessage

FORMATS = ("rechat", "twitchdownloader", "chat-downloader", "irc", "csv", "jsonl")

_TIME_KEYS = ("time", "t", "offset", "seconds", "media_time", "time_in_seconds", "content_offset_seconds", "timestamp")
_USER_KEYS = ("user", "username", "author", "name", "nick", "login", "commenter")
_TEXT_KEYS = ("message", "text", "body", "msg", "content")


class ReplayFormatError(ValueError):
    """A chat log that cannot be read; the message names the file and line or item.

    `where` (line number or "item N") and `reason` are kept apart for logs; reasons never
    quote a chat line, so they carry no usernames."""

    def __init__(self, message: str, where: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.reason = reason or message


ErrorHandler = Callable[[ReplayFormatError], None]


def _err(path: Path, where: str, reason: str) -> ReplayFormatError:
    return ReplayFormatError(f"{path}:{where}: {reason}", where, reason)


def _skip_or_raise(exc: ReplayFormatError, on_error: ErrorHandler | None) -> None:
    """A bad line or item: hand it to `on_error` (and go on), or raise when there is none."""
    if on_error is None:
        raise exc
    on_error(exc)


def _parse_clock(value: str) -> float | None:
    """'75.5' -> 75.5, '1:02:03' -> 3723.0, '02:03' -> 123.0; None when not a time."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = value.split(":")
    if 2 <= len(parts) <= 3 and all(re.fullmatch(r"\d+(\.\d+)?", p) for p in parts):
        total = 0.0
        for p in parts:
            total = total * 60 + float(p)
        return total
    return None


def _parse_iso(value: str) -> float | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


class _Clock:
    """Turns absolute timestamps into media time (first one seen is 0 unless a start is given)."""

    def __init__(self, stream_start: float | None) -> None:
        self.start = stream_start

    def media(self, absolute: float) -> float:
        if self.start is None:
            self.start = absolute
        return absolute - self.start


# ---------------------------------------------------------------- detection


def detect_format(path: str | Path) -> str:
    """The format name of a chat log (one of FORMATS), from its first bytes."""
    path = Path(path)
    with _open(path) as f:
        try:
            head = f.read(65536)
        except UnicodeDecodeError:
            raise _err(path, "1", "not UTF-8 text (a binary file?)") from None
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise _err(path, "1", "empty chat log")
    first_line = stripped.splitlines()[0].strip()
    if _IRC_LINE.match(first_line):
        return "irc"
    if stripped[0] in "[{":
        try:
            obj = json.loads(first_line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "time_in_seconds" in obj or "author" in obj or "message_id" in obj:
                return "chat-downloader"
            if "comments" not in obj:
                return "jsonl"
        # A whole-file JSON document: look at its top-level keys.
        if stripped[0] == "{":
            if re.search(r'"(streamer|FileInfo|embeddedData)"\s*:', head):
                return "twitchdownloader"
            return "rechat"
        if re.search(r'"(time_in_seconds|message_id)"\s*:', head):
            return "chat-downloader"
        return "rechat"
    if "," in first_line or "\t" in first_line:
        return "csv"
    raise _err(path, "1", "unrecognised chat log format (expected rechat/TwitchDownloader JSON, "
               "chat-downloader JSON lines, timestamped IRC lines, or CSV/JSONL with time,user,message)")


def _open(path: Path) -> io.TextIOWrapper:
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise ReplayFormatError(f"{path}: chat log not found") from None
    except IsADirectoryError:
        raise ReplayFormatError(f"{path}: is a folder, not a chat log") from None
    except OSError as exc:
        raise ReplayFormatError(f"{path}: cannot read the chat log: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- JSON documents


def _load_json(path: Path) -> Any:
    with _open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise _err(path, str(exc.lineno), f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        except UnicodeDecodeError:
            raise _err(path, "?", "not UTF-8 text") from None


def _v5_comment(path: Path, i: int, c: Any) -> ChatMessage:
    where = f"item {i}"
    if not isinstance(c, dict):
        raise _err(path, where, "a comment must be a JSON object")
    offset = c.get("content_offset_seconds")
    if not isinstance(offset, (int, float)) or isinstance(offset, bool):
        raise _err(path, where, "comment has no numeric content_offset_seconds")
    message = c.get("message")
    if not isinstance(message, dict):
        raise _err(path, where, "comment has no message object")
    body = message.get("body")
    fragments = message.get("fragments") or []
    if not isinstance(body, str):
        if not isinstance(fragments, list):
            raise _err(path, where, "comment message has no body text")
        body = "".join(str(f.get("text", "")) for f in fragments if isinstance(f, dict))
    emotes = tuple(
        str(f.get("text", ""))
        for f in (fragments if isinstance(fragments, list) else [])
        if isinstance(f, dict) and f.get("emoticon")
    )
    commenter = c.get("commenter") if isinstance(c.get("commenter"), dict) else {}
    user = str(commenter.get("name") or commenter.get("_id") or commenter.get("display_name") or "")
    return ChatMessage(
        media_time=float(offset),
        user=user,
        text=body,
        emotes=emotes,
        display_name=str(commenter.get("display_name") or ""),
        msg_id=str(c.get("_id") or c.get("id") or ""),
        is_action=bool(message.get("is_action", False)),
    )


def _read_comments_json(path: Path, on_error: ErrorHandler | None = None) -> Iterator[ChatMessage]:
    data = _load_json(path)
    if isinstance(data, dict):
        comments = data.get("comments")
        if not isinstance(comments, list):
            raise _err(path, "1", "JSON object without a 'comments' list")
        items: Iterable[tuple[int, Any]] = enumerate(comments)
    elif isinstance(data, list):
        items = enumerate(data)
        # The rechat dump's first element describes the video, not a comment.
        if data and isinstance(data[0], dict) and "content_offset_seconds" not in data[0]:
            items = itertools.islice(items, 1, None)
    else:
        raise _err(path, "1", "expected a JSON list or object of comments")
    for i, c in items:
        try:
            msg = _v5_comment(path, i, c)
        except ReplayFormatError as exc:
            _skip_or_raise(exc, on_error)
            continue
        yield msg


def _chat_downloader_item(path: Path, where: str, obj: Any, clock: _Clock) -> ChatMessage | None:
    if not isinstance(obj, dict):
        raise _err(path, where, "expected a JSON object")
    if obj.get("message_type", "text_message") != "text_message":
        return None  # subscriptions, raids, ...: not chat lines
    text = obj.get("message")
    if not isinstance(text, str):
        raise _err(path, where, "item has no 'message' text")
    t = obj.get("time_in_seconds")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        media = float(t)
    elif isinstance(obj.get("timestamp"), (int, float)):
        media = clock.media(obj["timestamp"] / 1e6)  # chat-downloader stamps in microseconds
    else:
        raise _err(path, where, "item has neither time_in_seconds nor timestamp")
    author = obj.get("author") if isinstance(obj.get("author"), dict) else {}
    emotes: list[str] = []
    for e in obj.get("emotes") or []:
        if isinstance(e, dict) and isinstance(e.get("name"), str):
            emotes.extend([e["name"]] * max(1, len(e.get("locations") or [])))
    return ChatMessage(
        media_time=media,
        user=str(author.get("name") or author.get("id") or ""),
        text=text,
        emotes=tuple(emotes),
        display_name=str(author.get("display_name") or ""),
        msg_id=str(obj.get("message_id") or ""),
    )


# ---------------------------------------------------------------- line formats


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open(path) as f:
        try:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, line.rstrip("\r\n")
        except UnicodeDecodeError:
            raise _err(path, "?", "not UTF-8 text") from None


def _read_jsonl(path: Path, stream_start: float | None, kind: str, on_error: ErrorHandler | None = None) -> Iterator[ChatMessage]:
    clock = _Clock(stream_start)
    for n, line in _lines(path):
        try:
            msg = _jsonl_line(path, n, line, kind, clock)
        except ReplayFormatError as exc:
            _skip_or_raise(exc, on_error)
            continue
        if msg is not None:
            yield msg


def _jsonl_line(path: Path, n: int, line: str, kind: str, clock: _Clock) -> ChatMessage | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _err(path, str(n), f"invalid JSON line: {exc.msg}") from None
    if kind == "chat-downloader":
        return _chat_downloader_item(path, str(n), obj, clock)
    if not isinstance(obj, dict):
        raise _err(path, str(n), "expected a JSON object per line")
    return _simple_row(path, str(n), {k.lower(): v for k, v in obj.items()}, clock)


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def _simple_row(path: Path, where: str, row: dict[str, Any], clock: _Clock) -> ChatMessage:
    t = _pick(row, _TIME_KEYS)
    text = _pick(row, _TEXT_KEYS)
    user = _pick(row, _USER_KEYS)
    if text is None or not isinstance(text, str):
        raise _err(path, where, "row has no message text (columns: message/text/body)")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        media = float(t)
    elif isinstance(t, str) and (sec := _parse_clock(t)) is not None:
        media = sec
    elif isinstance(t, str) and (absolute := _parse_iso(t)) is not None:
        media = clock.media(absolute)
    else:
        raise _err(path, where, f"row has no readable time (got {t!r}; seconds, H:MM:SS or ISO-8601)")
    if isinstance(user, dict):
        user = user.get("name") or user.get("id") or ""
    return ChatMessage(media_time=media, user=str(user or ""), text=text)


def _read_csv(path: Path, stream_start: float | None, on_error: ErrorHandler | None = None) -> Iterator[ChatMessage]:
    clock = _Clock(stream_start)
    with _open(path) as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if not any(h in _TIME_KEYS for h in header) or not any(h in _TEXT_KEYS for h in header):
            raise _err(path, "1", f"CSV header needs a time and a message column, got {header}")
        try:
            for row in reader:
                try:
                    if None in row:
                        raise _err(path, str(reader.line_num), "row has more fields than the header")
                    clean = {k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
                    if not any(clean.values()):
                        continue
                    msg = _simple_row(path, str(reader.line_num), clean, clock)
                except ReplayFormatError as exc:
                    _skip_or_raise(exc, on_error)
                    continue
                yield msg
        except csv.Error as exc:
            raise _err(path, str(reader.line_num), f"bad CSV: {exc}") from None


# "[2021-03-04 12:34:56.789] ", "2021-03-04T12:34:56Z ", "1614861296.5 ", "[1:02:03] " then an IRC line.
_IRC_LINE = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|\d{9,13}(?:\.\d+)?|\d{1,3}:\d{2}(?::\d{2})?(?:\.\d+)?)\]?\s+(?P<irc>[@:A-Z0-9].*)$"
)


def _read_irc_log(path: Path, stream_start: float | None, on_error: ErrorHandler | None = None) -> Iterator[ChatMessage]:
    clock = _Clock(stream_start)
    for n, line in _lines(path):
        try:
            msg = _irc_log_line(path, n, line, clock)
        except ReplayFormatError as exc:
            _skip_or_raise(exc, on_error)
            continue
        if msg is not None:
            yield msg


def _irc_log_line(path: Path, n: int, line: str, clock: _Clock) -> ChatMessage | None:
    m = _IRC_LINE.match(line)
    if not m:
        raise _err(path, str(n), "expected '<timestamp> <IRC line>'")
    ts = m.group("ts")
    if re.fullmatch(r"\d{9,13}(\.\d+)?", ts):
        value = float(ts)
        media = clock.media(value / 1000.0 if value > 1e11 else value)  # ms vs s since 1970
    elif "-" in ts[:5]:
        absolute = _parse_iso(ts)
        if absolute is None:
            raise _err(path, str(n), f"bad timestamp {ts!r}")
        media = clock.media(absolute)
    else:
        media = _parse_clock(ts) or 0.0  # an offset into the stream already
    try:
        msg = parse_line(m.group("irc"))
    except IrcParseError as exc:
        # The parser quotes the raw line, which names the user: keep only what is wrong.
        raise _err(path, str(n), str(exc).split(": ", 1)[0]) from None
    if msg.command == "PRIVMSG" and len(msg.params) >= 2:
        return privmsg_to_chat(msg, media)
    return None


# ---------------------------------------------------------------- public API


def iter_replay_unordered(
    path: str | Path, fmt: str | None = None, stream_start: float | None = None, on_error: ErrorHandler | None = None
) -> Iterator[ChatMessage]:
    """Messages in file order (streamed for the line formats). With `on_error`, bad lines or
    items are passed to it and skipped; without, the first one raises ReplayFormatError."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt in ("rechat", "twitchdownloader"):
        return _read_comments_json(path, on_error)
    if fmt == "chat-downloader":
        with _open(path) as f:
            first = f.read(1).lstrip("\ufeff")
            while first.isspace():
                first = f.read(1)
        if first == "[":
            return _read_chat_downloader_array(path, stream_start, on_error)
        return _read_jsonl(path, stream_start, "chat-downloader", on_error)
    if fmt == "jsonl":
        return _read_jsonl(path, stream_start, "jsonl", on_error)
    if fmt == "irc":
        return _read_irc_log(path, stream_start, on_error)
    if fmt == "csv":
        return _read_csv(path, stream_start, on_error)
    raise ValueError(f"unknown chat log format {fmt!r}; expected one of {FORMATS}")


def iter_replay(
    path: str | Path,
    fmt: str | None = None,
    stream_start: float | None = None,
    reorder_s: float = 120.0,
) -> Iterator[ChatMessage]:
    """Messages in media-time order, streamed: a message is held until one `reorder_s`
    later has been read. A message later than that by more is still emitted (never
    dropped), just out of order; use `load_replay` for a strictly sorted list."""
    heap: list[tuple[float, int, ChatMessage]] = []
    newest = float("-inf")
    for seq, msg in enumerate(iter_replay_unordered(path, fmt, stream_start)):
        heapq.heappush(heap, (msg.media_time, seq, msg))
        newest = max(newest, msg.media_time)
        while heap and heap[0][0] <= newest - reorder_s:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def _read_chat_downloader_array(path: Path, stream_start: float | None, on_error: ErrorHandler | None) -> Iterator[ChatMessage]:
    clock = _Clock(stream_start)
    data = _load_json(path)
    if not isinstance(data, list):
        raise _err(path, "1", "expected a JSON list of chat items")
    for i, obj in enumerate(data):
        try:
            msg = _chat_downloader_item(path, f"item {i}", obj, clock)
        except ReplayFormatError as exc:
            _skip_or_raise(exc, on_error)
            continue
        if msg is not None:
            yield msg


def load_replay(
    path: str | Path, fmt: str | None = None, stream_start: float | None = None, on_error: ErrorHandler | None = None
) -> list[ChatMessage]:
    """All messages of a chat log, sorted by media time (stable for equal times)."""
    return sorted(iter_replay_unordered(path, fmt, stream_start, on_error), key=lambda m: m.media_time)
