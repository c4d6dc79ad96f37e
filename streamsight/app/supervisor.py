"""`streamsight up`: an embedded nats-server plus every built service as a supervised subprocess.

Services are the same modules that run in containers (`python -m services.<name>`). Only
services whose package has a `__main__` are started: one that is not built is absent, never
faked. A crashed service is restarted with exponential backoff (a configuration error, exit
code 2, is not retried). nats-server is watched the same way: if it exits, it is started again
on the same port with the same data folder (file-backed streams survive; the in-memory MEDIA
stream does not, and the services re-create it when they reconnect). Ctrl-C or SIGTERM stops
the services (SIGTERM, then SIGKILL after a grace period) and then NATS.

`up --nats-nodes 3` runs NATS as a JetStream cluster of that many nats-servers on loopback
(`nats-1` on the NATS port, the others on free ports, each with its own folder, log prefix and
restart), and every service gets all their URLs; with `nats_replicas: 3` the streams and KV
buckets then keep a copy on each (README "Scaling out").

NATS requires credentials (streamsight.natsauth): each service logs in as itself, with random
passwords kept in `<data_dir>/nats-users.json` (mode 0600), and may publish only its own
subjects; `admin` (same file) may do anything. Its URL reaches each service as its
`STREAMSIGHT_NATS_URL`.

Replicas: `up --replicas vision=2,glitch=2` (or each service's `replicas` setting,
STREAMSIGHT_<SECTION>_REPLICAS) runs that many processes of a service, `vision-1`, `vision-2`,
each with STREAMSIGHT_REPLICA_ID=<service>-<n> (streamsight.partitions splits the streams over
them), its own gRPC port (the first keeps the service's; ingest replicas also advertise theirs,
`ingest.advertise_address`) and, when metrics are on, its own metrics port (the first's plus
10 per replica after it); each is restarted on its own. They share the service's data folder
(ingest's clips are per stream, and a survivor serves a dead replica's streams). One gateway.

Each output line is prefixed with its process's name, nats-server's own log included (prefix
`nats`), so its "Slow Consumer Detected" lines are in the stack's log; the supervisor counts
those per client and the server's restarts, says so, and keeps the counts in
`<data_dir>/up.json`, which also records where the stack listens, so `streamsight analyze` can
find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from streamsight.config import (
    ENV_PREFIX,
    MAX_REPLICAS,
    OTHER_VARIABLES,
    SECTIONS,
    ConfigError,
    Section,
    env_name,
    is_platform,
    resolve,
    section_class,
)
from streamsight import natsauth
from streamsight.natsd import NatsCluster, NatsServer, distinct_free_ports, free_port
from streamsight.telemetry import NATS_SERVER_RESTARTS, NATS_SLOW_CONSUMERS

STATE_FILE = "up.json"
CREDENTIALS_FILE = "nats-users.json"
CONFIG_ERROR_EXIT = 2
SLOW_CONSUMER = "Slow Consumer Detected"
_CLIENT_NAME = re.compile(r"streamsight-([A-Za-z0-9_.-]+)")  # Bus.connect names each client so
MAX_BACKOFF_S = 30.0
MAX_NATS_NODES = 5
REPLICA_ID_ENV = "STREAMSIGHT_REPLICA_ID"  # streamsight.partitions.replica_id() reads it
METRICS_STEP = 10  # replica n serves metrics on the first replica's port + 10 * (n - 1)
STABLE_S = 30.0  # a process that ran this long before exiting restarts with the shortest backoff


ServiceSpec = Section  # a service of the stack: streamsight.config.SECTIONS is the catalogue
CATALOG = list(SECTIONS.values())


def _fields_of(section: str) -> set[str]:
    try:
        return set(section_class(section).model_fields)
    except ImportError:  # not built here
        return set()


def sectioned_environment(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The user's environment as `up` hands it to every service, and what it changed, one line each.

    One environment serves seven processes, so a flat name that sets a per-service field would
    reach all of them: `STREAMSIGHT_METRICS_PORT` is read as the base (`STREAMSIGHT_METRICS_BASE_PORT`,
    each service adds its offset), and a flat `STREAMSIGHT_<FIELD>` that only one section has (e.g.
    `STREAMSIGHT_HTTP_PORT`, the gateway's) becomes that section's variable. A section's own
    variable, when also set, wins.
    """
    env = dict(environ)
    said: list[str] = []
    flat_metrics = ENV_PREFIX + "METRICS_PORT"
    base = env_name("", "metrics_base_port")
    if flat_metrics in env:
        value = env.pop(flat_metrics)
        if base in env:
            said.append(f"{flat_metrics} is ignored: {base} is set ({env[base]})")
        else:
            env[base] = value
            said.append(f"{flat_metrics}={value} is read as {base}: each service serves metrics on it plus its offset")
    fields = {name: _fields_of(name) for name in SECTIONS}
    for name in sorted(environ):
        rest = name.removeprefix(ENV_PREFIX).lower()
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES or is_platform(rest) or name == flat_metrics:
            continue
        if any(rest.startswith(section + "_") for section in SECTIONS):
            continue
        owners = [section for section, known in fields.items() if rest in known]
        if len(owners) != 1:
            continue  # none: the services warn about it; several: each reads it as its own (old flat name)
        target = env_name(owners[0], rest)
        value = env.pop(name)
        if target in env:
            said.append(f"{name} is ignored: {target} is set ({env[target]})")
        else:
            env[target] = value
            said.append(f"{name}={value} is read as {target}")
    return env, said


def user_value(section: str, field: str, environ: dict[str, str]):
    """The raw value the user gave `section.field` (environment or STREAMSIGHT_CONFIG's YAML), or None."""
    try:
        return resolve(section_class(section), environ).values.get(field)
    except (ImportError, ConfigError):
        return None  # not built, or a settings file the service will report itself


def parse_replicas(text: str) -> dict[str, int]:
    """`vision=2,glitch=2` as {"vision": 2, "glitch": 2}; ConfigError saying what is wrong."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"--replicas: {item!r} is not SERVICE=COUNT (e.g. vision=2,glitch=2)")
        if name in counts:
            raise ConfigError(f"--replicas: {name} is given twice")
        counts[name] = int(value)
    return counts


def check_replicas(counts: dict[str, int], started: set[str]) -> None:
    """ConfigError for an unknown or unstarted service, a count out of 1..MAX_REPLICAS, or several gateways."""
    problems = []
    for name, count in counts.items():
        if name not in SECTIONS:
            problems.append(f"{name}: no such service (services: {', '.join(SECTIONS)})")
        elif not 1 <= count <= MAX_REPLICAS:
            problems.append(f"{name}={count}: a service runs 1 to {MAX_REPLICAS} replicas")
        elif name == "gateway" and count != 1:
            problems.append("gateway: `up` runs one gateway (the stack's HTTP and gRPC entry)")
        elif name not in started and count != 1:
            problems.append(f"{name}: not started by this `up` (not built here, or left out by --only)")
    if problems:
        raise ConfigError("replicas: " + "; ".join(problems))


def built_services() -> list[ServiceSpec]:
    """The services of CATALOG that exist in this installation."""
    found = []
    for spec in CATALOG:
        try:
            if importlib.util.find_spec(f"{spec.module}.__main__") is not None:
                found.append(spec)
        except ModuleNotFoundError:
            continue
    return found


@dataclass
class _Child:
    spec: ServiceSpec
    env: dict[str, str]
    port: int = 0  # its gRPC port
    replica: int = 1  # 1..count
    count: int = 1  # replicas of its service in this stack
    metrics_port: int = 0
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    gave_up: bool = False
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=3), repr=False)  # for a start that fails
    task: asyncio.Task | None = field(default=None, repr=False)
    gone: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set once it gave up

    @property
    def replica_id(self) -> str:
        return f"{self.spec.name}-{self.replica}"

    @property
    def name(self) -> str:
        """Its name in the log and status: the service's, `<service>-<n>` when it has replicas."""
        return self.replica_id if self.count > 1 else self.spec.name


def _why_late(child: _Child, error: Exception) -> str:
    """A service that did not come up, with what tells why: its health check's last answer,
    its restarts and its last lines of output."""
    said = " | ".join(child.last_lines) or "nothing"
    return f"{child.name} ({error}; restarts {child.restarts}; last output: {said})"


class Supervisor:
    def __init__(
        self,
        data_dir: Path,
        nats_port: int = 0,
        ports: dict[str, int] | None = None,
        free_ports: bool = False,
        extra_env: dict[str, str] | None = None,
        only: list[str] | None = None,
        out=None,
        grace_s: float = 8.0,
        nats_auth: bool = True,
        replicas: dict[str, int] | None = None,
        nats_nodes: int = 1,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.base_env, self._env_notes = sectioned_environment(dict(os.environ))
        users = None
        if nats_auth:
            passwords = natsauth.credentials(self.data_dir / CREDENTIALS_FILE, [natsauth.ADMIN, natsauth.READER, *SECTIONS])
            users = natsauth.users(passwords, self._buckets())
        if not 1 <= nats_nodes <= MAX_NATS_NODES:
            raise ConfigError(f"--nats-nodes {nats_nodes}: `up` runs 1 to {MAX_NATS_NODES} nats-servers")
        if nats_nodes == 1:
            self.nats_nodes = [NatsServer(self.data_dir / "nats", port=nats_port, log_pipe=True, users=users)]
        else:  # a JetStream cluster on loopback: nats-1 on nats_port, the others on free ports
            self.nats_nodes = NatsCluster(self.data_dir / "nats", size=nats_nodes, name="nats", users=users, port=nats_port, log_pipe=True).nodes
        self.nats = self.nats_nodes[0]
        self.nats_restarts = 0
        self.slow_consumers: dict[str, int] = {}  # by client (service) name, from the server's log
        self._nats_tasks: list[asyncio.Task] = []
        self._back: set[str] = set()  # nodes restarted and not yet ready
        self._recovery: asyncio.Task | None = None
        self._stop_event = asyncio.Event()
        self.extra_env = extra_env or {}
        # free_ports: every service on a free port (an embedded stack beside a running `up`). Otherwise a
        # service's own grpc_port setting (STREAMSIGHT_<SECTION>_GRPC_PORT or the YAML) is its port, the
        # others are told it, and a service without one keeps its default.
        self.ports = dict(ports or {})
        if free_ports:
            picked = iter(self._free_ports(len(CATALOG)))
            self.ports = {spec.name: self.ports.get(spec.name) or next(picked) for spec in CATALOG}
        else:
            self.ports = {**self._user_ports(), **self.ports}
        chosen = user_value("gateway", "http_port", self.base_env)
        self._http_chosen = chosen is not None  # the user's own value reaches the gateway untouched
        try:
            self.http_port = int(chosen) if self._http_chosen else (0 if free_ports else 8080)
        except (TypeError, ValueError):
            self.http_port = 0  # not a port: the gateway says so and exits with a configuration error
        self.only = only
        self.out = out or sys.stdout
        self.grace_s = grace_s
        self.children: list[_Child] = []
        self._started = {s.name for s in built_services() if not only or s.name in only}
        self._stopping = False
        self.replicas = self._replica_counts(replicas or {})
        copies = user_value("gateway", "nats_replicas", self.base_env)
        try:
            too_many = copies is not None and int(copies) > len(self.nats_nodes)
        except (TypeError, ValueError):
            too_many = False  # not a number: the services say so
        if too_many:
            raise ConfigError(
                f"nats_replicas / {env_name('', 'nats_replicas')} is {copies}, more copies than `up`'s {len(self.nats_nodes)}"
                " nats-server(s) can keep: run `up --nats-nodes 3` (or docker-compose.yml, deploy/k8s)"
            )
        # Replicas after the first get ports of their own, picked together, none a service's.
        extra = [(name, n) for name, count in self.replicas.items() for n in range(2, count + 1)]
        self._replica_ports = dict(zip(extra, self._free_ports(len(extra), avoid={self._port(s) for s in CATALOG}) if extra else []))

    def _free_ports(self, n: int, avoid: set[int] = frozenset()) -> list[int]:
        """`n` different free ports, none that a listener of this stack holds or will hold: nats-server's
        (client, monitoring, route), every replica's metrics port, the ports given. Picked one call
        apart from those, a port could come twice, and a service then fails to bind it for good."""
        held = {p for node in self.nats_nodes for p in (node.port, node.monitor_port, node.cluster.port if node.cluster else 0)}
        held |= {self._metrics_port(spec, r) for spec in CATALOG for r in range(1, MAX_REPLICAS + 1)}
        held |= set(self.ports.values()) | set(avoid)
        held.discard(0)
        return [p for p in distinct_free_ports(n + len(held)) if p not in held][:n]

    def _replica_counts(self, given: dict[str, int]) -> dict[str, int]:
        """Processes per started service: `given` (--replicas) over each service's `replicas` setting."""
        check_replicas(given, self._started)
        counts = {}
        for name in self._started:
            if name in given:
                counts[name] = given[name]
                continue
            raw = user_value(name, "replicas", self.base_env)
            try:
                counts[name] = int(raw) if raw is not None else 1
            except (TypeError, ValueError):
                raise ConfigError(f"{name}.replicas / {env_name(name, 'replicas')}: {raw!r} is not a whole number") from None
        check_replicas(counts, self._started)
        return counts

    def _metrics_port(self, spec: ServiceSpec, replica: int) -> int:
        """Replica `replica`'s metrics port: the service's (its setting, or the base plus its offset) + 10 per replica before it; 0: none."""
        given = {**self.base_env, **self.extra_env}  # an embedded stack's settings come as extra_env
        own = user_value(spec.name, "metrics_port", given)
        base = user_value(spec.name, "metrics_base_port", given)
        try:
            first = int(own) if own is not None else (int(base) + spec.metrics_offset if base and int(base) else 0)
        except (TypeError, ValueError):
            return 0  # not a port: the service reports its own setting
        return first + METRICS_STEP * (replica - 1) if first else 0

    def _buckets(self) -> dict[str, str]:
        """The KV and object-store buckets the services use (their user's permissions name them)."""
        found = {
            "fusion_state": user_value("fusion", "state_bucket", self.base_env),
            "clips": user_value("ingest", "clip_bucket", self.base_env),
            "ingest_state": user_value("ingest", "resume_bucket", self.base_env),
            "chat_state": user_value("chat", "resume_bucket", self.base_env),
            "glitch_state": user_value("glitch", "state_bucket", self.base_env),  # read by natsauth once it grants glitch its bucket
        }
        return {k: str(v) for k, v in found.items() if v}

    def nats_url(self, service: str) -> str:
        """The NATS URL(s) service `service` connects with (its own credentials when NATS has users),
        every node's, comma-separated."""
        return ",".join(n.url_for(service) if service in n.users else n.url for n in self.nats_nodes)

    @property
    def nats_address(self) -> str:
        """Every node's address, without credentials, comma-separated."""
        return ",".join(n.address for n in self.nats_nodes)

    def _label(self, node: NatsServer) -> str:
        """A node's name in the log: `nats`, or `nats-<n>` in a cluster."""
        return node.cluster.name if node.cluster is not None else "nats"

    def _say(self, name: str, line: str) -> None:
        self.out.write(f"{name:<8}| {line}\n")
        self.out.flush()

    def _user_ports(self) -> dict[str, int]:
        """The gRPC ports the user set for each service; a value that is not a port is left for the service
        to refuse. The old unsectioned STREAMSIGHT_GRPC_PORT would put every service on one port: `up` keeps
        ignoring it."""
        environ = {k: v for k, v in self.base_env.items() if k != "STREAMSIGHT_GRPC_PORT"}
        chosen = {spec.name: user_value(spec.name, "grpc_port", environ) for spec in CATALOG}
        return {name: int(value) for name, value in chosen.items() if str(value).isdigit() and 0 < int(value) < 65536}

    def _port(self, spec: ServiceSpec) -> int:
        return self.ports.get(spec.name) or spec.grpc_port

    def addresses(self) -> dict[str, str]:
        """gRPC address of every started service, by name (a service with replicas: its first)."""
        return {c.spec.name: f"127.0.0.1:{c.port}" for c in self.children if c.replica == 1}

    def replica_addresses(self) -> dict[str, str]:
        """gRPC address of every process, by its replica id (`vision-2`)."""
        return {c.replica_id: f"127.0.0.1:{c.port}" for c in self.children}

    async def wait_serving(self, timeout_s: float = 120.0) -> None:
        """Wait until every started service answers health SERVING, or gave up on a configuration
        error (no use waiting for it); TimeoutError names the laggards and those that gave up."""
        from streamsight.rpc import wait_serving

        async def one(child: _Child) -> None:
            serving = asyncio.ensure_future(wait_serving(f"127.0.0.1:{child.port}", timeout_s))
            gone = asyncio.ensure_future(child.gone.wait())
            try:
                await asyncio.wait({serving, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (serving, gone):
                    task.cancel()
                await asyncio.gather(serving, gone, return_exceptions=True)
            if child.gave_up:
                raise RuntimeError("gave up")
            serving.result()

        results = await asyncio.gather(*(one(c) for c in self.children), return_exceptions=True)
        late = [(c, r) for c, r in zip(self.children, results) if isinstance(r, Exception) and not c.gave_up]
        gave_up = [c.name for c in self.children if c.gave_up]
        if late or gave_up:
            parts = [f"not serving after {timeout_s:.0f} s: {'; '.join(_why_late(c, r) for c, r in late)}"] if late else []
            parts += [f"stopped on a configuration error: {', '.join(gave_up)}"] if gave_up else []
            raise TimeoutError("; ".join(parts))

    def environment(self, spec: ServiceSpec) -> dict[str, str]:
        """The stack's one environment (each service reads its own section of it), plus the
        service's own data folder."""
        env = dict(self.base_env)
        env.setdefault("STREAMSIGHT_LOG_FORMAT", "console")
        # Two glibc malloc arenas, not 8 per core: every worker thread's arena keeps its own
        # high-water mark (streamsight.heap), and fewer arenas hold less between trims.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        address = {name: f"127.0.0.1:{self._port(SECTIONS[name])}" for name in ("ingest", "chat")}
        env.update(
            {
                "STREAMSIGHT_NATS_URL": self.nats_url(spec.name),
                "STREAMSIGHT_DATA_DIR": str(self.data_dir / spec.name),
                "STREAMSIGHT_GRPC_HOST": "127.0.0.1",
                env_name("gateway", "allow_local_files"): "true",
                env_name("gateway", "ingest_address"): address["ingest"],
                env_name("gateway", "chat_address"): address["chat"],
                env_name("fusion", "ingest_address"): address["ingest"],
                "PYTHONUNBUFFERED": "1",
            }
        )
        if len(self.nats_nodes) > 1:
            env[env_name("", "nats_replicas")] = str(self.nats_copies())  # a copy per node, up to 3, unless the user says
        if not self._http_chosen:
            env[env_name("gateway", "http_port")] = str(self.http_port)
        monitor = env_name("gateway", "nats_monitor_url")
        if monitor not in env and user_value("gateway", "nats_monitor_url", self.base_env) is None:
            env[monitor] = f"http://127.0.0.1:{self.nats.monitor_port}"  # the gateway exports NATS's own metrics
        for other in CATALOG:
            env[env_name(other.name, "grpc_port")] = str(self._port(other))
        expected = env_name("fusion", "expected_modalities")
        stages = [m for m in ("vision", "audio") if m in self._started]
        if expected not in os.environ and stages:  # fusion waits only for the stages this stack runs
            env[expected] = json.dumps(stages)
        env.update(self.extra_env)
        return env

    def replica_environment(self, spec: ServiceSpec, replica: int) -> dict[str, str]:
        """`environment(spec)` for replica `replica` of it: its id, its gRPC and metrics ports."""
        env = self.environment(spec)
        env[REPLICA_ID_ENV] = f"{spec.name}-{replica}"
        port = self.replica_port(spec, replica)
        env[env_name(spec.name, "grpc_port")] = str(port)
        if spec.name == "ingest":  # where the gateway and the other ingests reach this one (KV registry)
            env[env_name("ingest", "advertise_address")] = f"127.0.0.1:{port}"
        if replica > 1 and (metrics := self._metrics_port(spec, replica)):
            env[env_name(spec.name, "metrics_port")] = str(metrics)
        return env

    def replica_port(self, spec: ServiceSpec, replica: int) -> int:
        return self._port(spec) if replica == 1 else self._replica_ports[(spec.name, replica)]

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "nats_url": self.nats_address,
            "nats_credentials": str(self.data_dir / CREDENTIALS_FILE) if self.nats.users else None,
            "gateway": f"127.0.0.1:{self._port(SECTIONS['gateway'])}",
            "web": f"http://127.0.0.1:{self.http_port}/" if self.http_port else None,
            "nats": {
                "pid": self.nats.process.pid if self.nats.process else None,
                "restarts": self.nats_restarts,
                "slow_consumers": dict(self.slow_consumers),
                **({"nodes": [{"name": self._label(n), "address": n.address, "pid": n.process.pid if n.process else None}
                              for n in self.nats_nodes]} if len(self.nats_nodes) > 1 else {}),
            },
            "services": {
                c.spec.name: {**self._child_state(c), "replicas": [self._child_state(r) for r in self.children if r.spec is c.spec]}
                for c in self.children
                if c.replica == 1
            },
        }

    @staticmethod
    def _child_state(child: _Child) -> dict:
        return {
            "id": child.replica_id,
            "pid": child.process.pid if child.process else None,
            "restarts": child.restarts,
            "port": child.port,
            "metrics_port": child.metrics_port or None,
        }

    def status_lines(self) -> list[str]:
        """One line per process: id, pid, gRPC port, metrics port, restarts (what `up` prints)."""
        lines = []
        for c in self.children:
            metrics = f", metrics :{c.metrics_port}" if c.metrics_port else ""
            pid = c.process.pid if c.process else "-"
            lines.append(f"{c.replica_id:<10} pid {pid}, gRPC 127.0.0.1:{c.port}{metrics}, restarts {c.restarts}")
        return lines

    def _write_state(self) -> None:
        (self.data_dir / STATE_FILE).write_text(json.dumps(self.state(), indent=2))

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nats_nodes:
            await self._start_nats(node)
        auth = f"users and passwords in {self.data_dir / CREDENTIALS_FILE}" if self.nats.users else "no auth"
        if len(self.nats_nodes) > 1:
            await asyncio.to_thread(self._wait_cluster)
            await self._provision_streams()
            self._say("nats", f"JetStream cluster of {len(self.nats_nodes)} nats-servers at {self.nats_address} ({auth}; data in {self.nats.data_dir.parent})")
        else:
            self._say("nats", f"nats-server with JetStream at {self.nats.address} ({auth}; data in {self.nats.data_dir})")
        for node in self.nats_nodes:
            task = asyncio.create_task(self._keep_nats(node), name=f"supervise:{self._label(node)}")
            task.add_done_callback(self._nats_watch_ended)
            self._nats_tasks.append(task)
        specs = [s for s in built_services() if s.name in self._started]
        for spec in specs:
            count = self.replicas.get(spec.name, 1)
            for n in range(1, count + 1):
                env = self.replica_environment(spec, n)
                child = _Child(spec, env, self.replica_port(spec, n), n, count, self._metrics_port(spec, n))
                child.task = asyncio.create_task(self._keep_running(child), name=f"supervise:{child.name}")
                self.children.append(child)
        for line in self._env_notes:
            self._say("up", line)
        self._say("up", "services: " + ", ".join(f"{s.name} x{self.replicas[s.name]}" if self.replicas.get(s.name, 1) > 1 else s.name for s in specs))

    def nats_copies(self) -> int:
        """The stream and KV copies the services keep: the user's nats_replicas, else one per node up to 3."""
        raw = user_value("gateway", "nats_replicas", self.base_env)
        try:
            return int(raw) if raw is not None else min(3, len(self.nats_nodes))
        except (TypeError, ValueError):
            return 1  # not a number: the services say so

    async def _provision_streams(self) -> None:
        """Create the platform's streams with `nats_copies()` copies before any service starts (they
        keep an existing stream's count), so that the first node lost already loses nothing."""
        from streamsight.bus import Bus

        bus = await Bus.connect(self.nats_url(natsauth.ADMIN), "up", replicas=self.nats_copies())
        try:
            await bus.ensure_streams()
        finally:
            await bus.close()

    def _wait_cluster(self, timeout_s: float = 30.0) -> None:
        """Until every node reports full JetStream health (the cluster has its meta leader)."""
        deadline = time.monotonic() + timeout_s
        while not all(n.healthy(full=True) for n in self.nats_nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the NATS cluster was not healthy within {timeout_s:.0f} s")
            time.sleep(0.1)

    async def _start_nats(self, node: NatsServer | None = None) -> None:
        """Start a nats-server (the first); if it fails, relay what it said before raising."""
        node = node or self.nats
        try:
            await asyncio.to_thread(node.start)
        except Exception:
            with contextlib.suppress(OSError, ValueError):  # no process, or an old pipe already closed
                if node.log is not None:  # it exited (or was stopped): the pipe holds its last words
                    for raw in (await asyncio.to_thread(node.log.read)).splitlines():
                        self._nats_line(raw, node)
            raise

    def _nats_line(self, raw: bytes, node: NatsServer | None = None) -> None:
        node = node or self.nats
        label = self._label(node)
        line = raw.decode(errors="replace").rstrip()
        self._say(label, line)
        if label in self._back and line.endswith("Server is ready"):
            self._back.discard(label)
            self._say(label, f"nats-server back at {node.address} (restart {self.nats_restarts})")
        if SLOW_CONSUMER in line:
            match = _CLIENT_NAME.search(line)
            client = match.group(1) if match else "unknown"
            self.slow_consumers[client] = self.slow_consumers.get(client, 0) + 1
            NATS_SLOW_CONSUMERS.labels(client, "server").inc()
            self._say("up", f"nats-server reports a slow consumer: {client} ({self.slow_consumers[client]} so far)")
            self._write_state()

    async def _relay_nats_log(self, node: NatsServer) -> None:
        """Relay the running server's log until the pipe closes (the server exited)."""
        pipe = node.log
        if pipe is None:
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # a line over the limit (the reader dropped it); keep reading: a
                    self._say(self._label(node), "(a log line over 1 MiB was skipped)")  # closed pipe would kill the server
                    continue
                if not raw:
                    return
                self._nats_line(raw, node)
        finally:
            transport.close()

    def _nats_watch_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._say("nats", f"no longer watched: {task.exception()!r}")

    async def _keep_nats(self, node: NatsServer) -> None:
        """Start a nats-server again, same port and data folder, whenever it exits."""
        label = self._label(node)
        backoff = 1.0
        while True:
            started = time.monotonic()
            await self._relay_nats_log(node)
            code = await asyncio.to_thread(node.process.wait)
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_S:
                backoff = 1.0
            self.nats_restarts += 1
            NATS_SERVER_RESTARTS.inc()
            self._say(label, f"nats-server exited with code {code}; restarting in {backoff:.0f} s (restart {self.nats_restarts})")
            self._write_state()
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), backoff)
                if self._stopping:
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                try:
                    await self._start_nats(node)
                    break
                except Exception as exc:
                    self._say(label, f"nats-server did not start: {exc}; retrying in {backoff:.0f} s")
            if self._stopping:  # stop() came while it was starting: stop() found nothing to stop
                await asyncio.to_thread(node.stop)
                return
            self._write_state()
            self._back.add(label)  # said once its log says it is ready, so the line comes after its start-up log
            if self.children:
                self._recovery = asyncio.create_task(self._announce_recovery(self.nats_restarts), name="recovery")

    async def _announce_recovery(self, restart: int) -> None:
        """Tell the operator when every service is SERVING again after a nats-server restart."""
        try:
            await self.wait_serving(timeout_s=120)
        except TimeoutError as exc:
            self._say("up", f"after nats-server restart {restart}: {exc}")
        else:
            self._say("up", f"all services SERVING again after nats-server restart {restart}")

    async def _keep_running(self, child: _Child) -> None:
        backoff = 1.0
        while not self._stopping:
            started = time.monotonic()
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                child.spec.module,
                env=child.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            )
            self._write_state()
            assert child.process.stdout is not None
            async for raw in child.process.stdout:
                line = raw.decode(errors="replace").rstrip()
                child.last_lines.append(line)
                self._say(child.name, line)
            code = await child.process.wait()
            if self._stopping:
                return
            if code == CONFIG_ERROR_EXIT:
                child.gave_up = True
                child.gone.set()
                self._say(child.name, "exited with a configuration error; not restarting (fix the settings above)")
                return
            if time.monotonic() - started > 30:
                backoff = 1.0
            child.restarts += 1
            self._say(child.name, f"exited with code {code}; restarting in {backoff:.0f} s (restart {child.restarts})")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self._recovery is not None:
            self._recovery.cancel()
        running = [c for c in self.children if c.process and c.process.returncode is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        for child in running:
            try:
                await asyncio.wait_for(child.process.wait(), self.grace_s)
            except asyncio.TimeoutError:
                self._say(child.name, "did not stop in time; killed")
                child.process.kill()
                await child.process.wait()
        for child in self.children:
            if child.task:
                child.task.cancel()
        await asyncio.gather(*(c.task for c in self.children if c.task), return_exceptions=True)
        for node in self.nats_nodes:
            await asyncio.to_thread(node.stop)
        for node, task in zip(self.nats_nodes, self._nats_tasks):
            # It ends by itself once the server is gone; if a restart was under way it stops that one.
            try:
                await asyncio.wait_for(task, 30)
            except asyncio.TimeoutError:
                self._say(self._label(node), "watcher did not end in time")
            except Exception:
                pass  # already said by _nats_watch_ended
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        self._say("up", "stopped")


def find_running(data_dir: Path) -> dict | None:
    """The state of a stack that `streamsight up` runs from `data_dir`, or None."""
    path = Path(data_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
        return state
    except (OSError, ValueError, KeyError):
        return None


async def run_up(data_dir: Path, nats_port: int, gateway_port: int, only: list[str] | None, replicas: str = "", nats_nodes: int = 1) -> int:
    try:
        sup = Supervisor(
            data_dir,
            nats_port=nats_port,
            ports={"gateway": gateway_port} if gateway_port else None,
            only=only,
            replicas=parse_replicas(replicas),
            nats_nodes=nats_nodes,
        )
    except ConfigError as exc:
        print(f"streamsight up: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sup.start()  # seconds at most (nats-server, then spawning): a signal meanwhile is kept in `stop`
    if not stop.is_set():
        serving = asyncio.ensure_future(sup.wait_serving(timeout_s=120))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():  # Ctrl-C while services start: stop now, not after the health wait
            serving.cancel()
            sup._say("up", "stopping during start-up")
        elif isinstance(serving.exception(), TimeoutError):
            sup._say("up", str(serving.exception()))
        elif serving.exception() is None:
            sup._say("up", f"all services SERVING; gRPC API at {sup.state()['gateway']}, web page at {sup.state()['web']}; Ctrl-C stops everything")
            if any(c.count > 1 for c in sup.children):
                for line in sup.status_lines():
                    sup._say("up", line)
        await asyncio.gather(serving, return_exceptions=True)
        await stopping
    await sup.stop()
    return 0


__all__ = ["Supervisor", "built_services", "check_replicas", "find_running", "parse_replicas", "run_up", "free_port"]
