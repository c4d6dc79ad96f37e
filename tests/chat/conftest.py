"""A local Twitch-dialect IRC server for the client tests (asyncio, 127.0.0.1, free port)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest


class FakeTwitchServer:
    """Speaks enough of Twitch IRC: CAP/PASS/NICK/JOIN login, 001 welcome, PONG capture,
    bad-token NOTICE; tests push lines to the current client and drop connections."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, bad_token: str = "oauth:bad") -> None:
        self.ssl_context = ssl_context
        self.bad_token = bad_token
        self.received: list[list[str]] = []  # lines per connection
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._joined: list[asyncio.Event] = []
        self._new_line = asyncio.Condition()

    async def start(self) -> FakeTwitchServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[str] = []
        self.received.append(lines)
        self._writers.append(writer)
        joined = asyncio.Event()
        self._joined.append(joined)
        nick = ""
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8").rstrip("\r\n")
                async with self._new_line:
                    lines.append(line)
                    self._new_line.notify_all()
                if line.startswith("PASS ") and line[5:] == self.bad_token:
                    writer.write(b":tmi.twitch.tv NOTICE * :Login authentication failed\r\n")
                    await writer.drain()
                    writer.close()
                    return
                if line.startswith("NICK "):
                    nick = line[5:]
                    writer.write(f":tmi.twitch.tv 001 {nick} :Welcome, GLHF!\r\n".encode())
                if line.startswith("CAP REQ"):
                    writer.write(b":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands\r\n")
                if line.startswith("JOIN "):
                    writer.write(f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {line[5:]}\r\n".encode())
                    joined.set()
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass  # the test is over or dropped the connection on purpose
        finally:
            writer.close()

    @property
    def connections(self) -> int:
        return len(self.received)

    async def wait_joined(self, connection: int, timeout: float = 5.0) -> None:
        """Wait for the client's JOIN on connection number `connection` (0-based)."""
        async def _wait() -> None:
            while len(self._joined) <= connection:
                await asyncio.sleep(0.01)
            await self._joined[connection].wait()
        await asyncio.wait_for(_wait(), timeout)

    async def wait_line(self, prefix: str, connection: int = -1, timeout: float = 5.0) -> str:
        """Wait until the client sent a line starting with `prefix` on a connection."""
        async def _wait() -> str:
            async with self._new_line:
                while True:
                    if self.received:
                        for line in self.received[connection]:
                            if line.startswith(prefix):
                                return line
                    await self._new_line.wait()
        return await asyncio.wait_for(_wait(), timeout)

    async def send(self, line: str) -> None:
        """Send a raw line (CRLF added) to the newest connection."""
        w = self._writers[-1]
        w.write(line.encode("utf-8") + b"\r\n")
        await w.drain()

    def drop(self) -> None:
        """Close the newest connection from the server's side."""
        self._writers[-1].close()


@pytest.fixture
async def irc_server():
    server = await FakeTwitchServer().start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not found: cannot make a self-signed certificate for the TLS test")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_irc_server(self_signed_cert):
    cert, key = self_signed_cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    server = await FakeTwitchServer(ssl_context=ctx).start()
    yield server
    await server.stop()
