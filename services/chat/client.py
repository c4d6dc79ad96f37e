"""Asyncio Twitch IRC client: login, JOIN, keep-alive, RECONNECT and reconnect with backoff.

`TwitchIrcClient(channel, stream_start).events()` is an async iterator of ChatMessage,
ChatNotice and ChatClear, each with a media time (wall clock at receipt minus the
stream's start). It reconnects by itself on a dropped connection (exponential backoff
with jitter) and at once on the server's RECONNECT; it stops with IrcAuthError when the
server rejects the login, since retrying a bad token only hits the auth rate limit.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from services.chat.irc import IrcMessage, IrcParseError, TokenBucket, format_line, parse_line, privmsg_to_chat
from services.chat.message import ChatMessage

log = structlog.get_logger(__name__)

_AUTH_FAILURES = ("login authentication failed", "improperly formatted auth", "invalid nick")


class IrcAuthError(RuntimeError):
    """The server rejected the login (bad or expired OAuth token)."""


@dataclass(frozen=True, slots=True)
class ChatNotice:
    """A NOTICE from the server (e.g. msg-id "msg_channel_suspended")."""

    media_time: float
    notice_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ChatClear:
    """A moderation clear: kind "all" (CLEARCHAT, whole chat), "user" (CLEARCHAT with a
    target: timeout or ban) or "message" (CLEARMSG, one message by id)."""

    media_time: float
    kind: str
    target_user: str = ""
    target_msg_id: str = ""
    duration_s: float | None = None


ChatEvent = ChatMessage | ChatNotice | ChatClear


@dataclass(frozen=True, slots=True)
class IrcConfig:
    """Connection settings. `token` None logs in anonymously as justinfan<digits> (read only)."""

    host: str = "irc.chat.twitch.tv"
    port: int = 6697
    tls: bool = True
    ssl_context: ssl.SSLContext | None = None  # None with tls: the system's default verification
    nick: str | None = None
    token: str | None = None
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 360.0  # Twitch PINGs about every 5 minutes
    pong_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    privmsg_per_30s: int = 20  # 100 for a moderator's account


class TwitchIrcClient:
    """One channel's chat over IRC; see the module docstring."""

    def __init__(
        self,
        channel: str,
        stream_start: float,
        config: IrcConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        channel = channel.strip().lstrip("#").lower()
        if not channel or any(c.isspace() for c in channel):
            raise ValueError(f"invalid Twitch channel name: {channel!r}")
        self.config = config or IrcConfig()
        if self.config.token and not self.config.nick:
            raise ValueError("an OAuth token needs the account's nick")
        self.channel = channel
        self.stream_start = stream_start
        self._clock = clock
        self._privmsg_bucket = TokenBucket(self.config.privmsg_per_30s, 30.0)
        self._join_bucket = TokenBucket(20, 10.0)
        self._auth_bucket = TokenBucket(20, 10.0)
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._closed = False
        self.connections = 0  # successful logins, for health and tests
        self.malformed_lines = 0

    def media_time(self) -> float:
        return self._clock() - self.stream_start

    async def close(self) -> None:
        """Stop: the events() iterator ends after its current read."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def say(self, text: str) -> None:
        """Send a chat message, waiting for Twitch's rate limit (needs a token login)."""
        if not self.config.token:
            raise PermissionError("anonymous (justinfan) logins cannot send chat messages")
        await self._privmsg_bucket.acquire()
        await self._send(format_line("PRIVMSG", f"#{self.channel}", text, trailing=True))

    async def _send(self, line: str) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        async with self._write_lock:
            self._writer.write(line.encode("utf-8"))
            await self._writer.drain()

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_initial_s * (2**attempt))
        return base * random.uniform(0.5, 1.0)  # jitter so many clients do not reconnect in step

    async def events(self) -> AsyncIterator[ChatEvent]:
        """Chat events until close(); reconnects on its own."""
        attempt = 0
        while not self._closed:
            immediate = False
            try:
                reader = await self._connect()
                async for item in self._read_loop(reader):
                    if item is None:  # logged in: the backoff starts over
                        attempt = 0
                        continue
                    if item == "reconnect":
                        immediate = True
                        break
                    yield item
            except IrcAuthError:
                await self.close()
                raise
            except (OSError, ConnectionError, asyncio.TimeoutError, ssl.SSLError, EOFError) as exc:
                if self._closed:
                    break
                log.warning("chat.irc.disconnected", channel=self.channel, error=type(exc).__name__, attempt=attempt)
            finally:
                writer, self._writer = self._writer, None
                if writer is not None:
                    writer.close()
            if self._closed:
                break
            delay = 0.0 if immediate else self._backoff(attempt)
            attempt = 0 if immediate else attempt + 1
            await asyncio.sleep(delay)

    async def _connect(self) -> asyncio.StreamReader:
        cfg = self.config
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.tls:
            ssl_ctx = cfg.ssl_context or ssl.create_default_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port, ssl=ssl_ctx, limit=1 << 20),
            cfg.connect_timeout_s,
        )
        self._writer = writer
        await self._auth_bucket.acquire()
        if cfg.token:
            token = cfg.token if cfg.token.startswith("oauth:") else f"oauth:{cfg.token}"
            await self._send(format_line("PASS", token))
            nick = cfg.nick or ""
        else:
            nick = cfg.nick or f"justinfan{random.randint(10000, 99999)}"
        await self._send(format_line("CAP", "REQ", "twitch.tv/tags twitch.tv/commands"))
        await self._send(format_line("NICK", nick.lower()))
        await self._join_bucket.acquire()
        await self._send(format_line("JOIN", f"#{self.channel}"))
        return reader

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readline(), self.config.idle_timeout_s)
        except asyncio.TimeoutError:
            # Quiet for too long: ask the server whether the connection is still alive.
            await self._send(format_line("PING", "tmi.twitch.tv", trailing=True))
            line = await asyncio.wait_for(reader.readline(), self.config.pong_timeout_s)
        if not line:
            raise EOFError("server closed the connection")
        return line

    async def _read_loop(self, reader: asyncio.StreamReader) -> AsyncIterator[ChatEvent | str | None]:
        while not self._closed:
            raw = await self._readline(reader)
            try:
                msg = parse_line(raw.decode("utf-8", errors="replace"))
            except IrcParseError:
                self.malformed_lines += 1
                log.warning("chat.irc.malformed_line", channel=self.channel)
                continue
            out = await self._handle(msg)
            if out is not None or msg.command == "001":
                yield out
            if out == "reconnect":
                return

    async def _handle(self, msg: IrcMessage) -> ChatEvent | str | None:
        cmd = msg.command
        if cmd == "PING":
            await self._send(format_line("PONG", msg.trailing or "tmi.twitch.tv", trailing=True))
        elif cmd == "001":
            self.connections += 1
            log.info("chat.irc.logged_in", channel=self.channel)
        elif cmd == "RECONNECT":
            log.info("chat.irc.reconnect_requested", channel=self.channel)
            return "reconnect"
        elif cmd == "PRIVMSG":
            try:
                return privmsg_to_chat(msg, self.media_time())
            except IrcParseError:
                self.malformed_lines += 1
        elif cmd == "NOTICE":
            text = msg.trailing
            if any(f in text.lower() for f in _AUTH_FAILURES):
                raise IrcAuthError(f"Twitch rejected the login: {text}")
            return ChatNotice(self.media_time(), msg.tags.get("msg-id", ""), text)
        elif cmd == "CLEARCHAT":
            target = msg.params[1] if len(msg.params) > 1 else ""
            dur = msg.tags.get("ban-duration", "")
            return ChatClear(
                self.media_time(),
                "user" if target else "all",
                target_user=target,
                duration_s=float(dur) if dur.isdigit() else None,
            )
        elif cmd == "CLEARMSG":
            return ChatClear(
                self.media_time(),
                "message",
                target_user=msg.tags.get("login", ""),
                target_msg_id=msg.tags.get("target-msg-id", ""),
            )
        return None
