"""NATS users: one per service, each allowed to publish only its own subjects.

A service publishes its products (subjects below), its dead letters, and what JetStream needs:
its API (`$JS.API.>`: streams, consumers, pulls, KV and object-store reads), acknowledgements
(`$JS.ACK.>`) and flow-control replies of ordered consumers (`$JS.FC.>`). It subscribes only to
inboxes (`_INBOX.>`): every read goes through a JetStream consumer that delivers to an inbox.
So a service cannot forge another's events, and a client without credentials is refused. Reading
through JetStream is not limited per stream (every service may create consumers).

`admin` may do anything: tools, the tests, an operator's `nats` CLI. `reader` may only read the
EVENTS stream through consumers of its own (a backend subscribing to events, README "Subscribing
to events on NATS"): no publishing, no other stream, no deleting.

`streamsight up` keeps random passwords in `<data_dir>/nats-users.json` (mode 0600), made on first
start and reused after; compose and k8s give nats-server the passwords through environment
variables (deploy/nats/nats.conf, deploy/k8s/nats.yaml) with these same permissions
(tests/platform/test_deploy.py compares them).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from streamsight import subjects

ADMIN = "admin"
READER = "reader"
JETSTREAM = ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"]
INBOXES = ["_INBOX.>"]
# Each service's own KV buckets: ingest_state and chat_state keep what a restarted ingest or chat resumes from,
# glitch_state and stage_state a partitioned stage's per-stream state (taken over with its partition),
# ingest_replicas and ingest_placements which ingest replica is alive and which holds a stream.
DEFAULT_BUCKETS = {"registry": subjects.REGISTRY_BUCKET, "fusion_state": "fusion", "clips": "clips",
                   "ingest_state": "ingest_streams", "chat_state": "chat_streams", "glitch_state": "glitch",
                   "stage_state": "stage_state", "partitions": "partitions",
                   "ingest_replicas": "ingest_replicas", "ingest_placements": "ingest_placements"}


def _events(*kinds: str) -> list[str]:
    return [subjects.event(kind, ">") for kind in kinds]


def service_subjects(name: str, buckets: dict[str, str] | None = None) -> list[str]:
    """What service `name` publishes besides JetStream's API: its products and dead letters.

    A partitioned service (chat, vision, audio, glitch, fusion) writes only its own group's leases in
    the partitions bucket (keys `<group>.member.<replica>`, `<group>.p.<k>`: streamsight.partitions)
    and, for vision and audio, its own keys of stage_state (`<stage>.<partition>.<stream>`)."""
    b = {**DEFAULT_BUCKETS, **(buckets or {})}

    def partitioned(group: str, stage_state: bool = False) -> list[str]:
        own = [f"$KV.{b['partitions']}.{group}.>"]
        return own + [f"$KV.{b['stage_state']}.{group}.>"] if stage_state else own

    own = {
        "ingest": [f"{subjects.PREFIX}.media.v1.>", *_events("status"), f"$O.{b['clips']}.>", f"$KV.{b['ingest_state']}.>",
                   f"$KV.{b['ingest_replicas']}.>", f"$KV.{b['ingest_placements']}.>"],
        "chat": [subjects.features("chat", ">"), *_events("status", "sentiment", "forecast"), f"$KV.{b['chat_state']}.>", *partitioned("chat")],
        "vision": [subjects.features("vision", ">"), *partitioned("vision", stage_state=True)],
        "audio": [subjects.features("audio", ">"), *partitioned("audio", stage_state=True)],
        "glitch": [*_events("glitch", "health"), *partitioned("glitch"), f"$KV.{b['glitch_state']}.>"],
        "fusion": [*_events("score", "highlight", "status"), f"$KV.{b['fusion_state']}.>", *partitioned("fusion")],
        "gateway": [*_events("status"), f"$KV.{b['registry']}.>"],
    }[name]
    return [*own, subjects.deadletter(name)]


@dataclass(frozen=True)
class User:
    name: str
    password: str
    publish: tuple[str, ...] | None  # None: anything
    subscribe: tuple[str, ...] | None

    def conf(self, password_expr: str | None = None) -> str:
        """This user in nats-server's configuration syntax (`password_expr`: e.g. `$VAR`, unquoted)."""
        fields = [f"user: {json.dumps(self.name)}", f"password: {password_expr or json.dumps(self.password)}"]
        perms = []
        if self.publish is not None:
            perms.append(f"publish: {{allow: {json.dumps(list(self.publish))}}}")
        if self.subscribe is not None:
            perms.append(f"subscribe: {{allow: {json.dumps(list(self.subscribe))}}}")
        if perms:
            fields.append("permissions: {" + ", ".join(perms) + "}")
        return "{" + ", ".join(fields) + "}"


def service_user(name: str, password: str, buckets: dict[str, str] | None = None) -> User:
    return User(name, password, tuple(JETSTREAM + service_subjects(name, buckets)), tuple(INBOXES))


def reader_user(password: str) -> User:
    """Consumers on EVENTS only: create (ephemeral or durable), info, fetch, ack, delete."""
    events = subjects.EVENTS_STREAM
    api = [
        "$JS.API.INFO", "$JS.API.STREAM.NAMES", f"$JS.API.STREAM.INFO.{events}",
        f"$JS.API.CONSUMER.CREATE.{events}", f"$JS.API.CONSUMER.CREATE.{events}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{events}.>",
        f"$JS.API.CONSUMER.INFO.{events}.>", f"$JS.API.CONSUMER.MSG.NEXT.{events}.>", f"$JS.API.CONSUMER.DELETE.{events}.>",
        f"$JS.ACK.{events}.>", "$JS.FC.>",
    ]  # fmt: skip
    return User(READER, password, tuple(api), tuple(INBOXES))


def users(passwords: dict[str, str], buckets: dict[str, str] | None = None) -> list[User]:
    """Every user of `passwords`: `admin` unrestricted, `reader` to EVENTS, each service to its own subjects."""
    made = []
    for name, password in sorted(passwords.items()):
        if name == ADMIN:
            made.append(User(name, password, None, None))
        elif name == READER:
            made.append(reader_user(password))
        else:
            made.append(service_user(name, password, buckets))
    return made


def authorization(all_users: list[User], password_exprs: dict[str, str] | None = None) -> str:
    """nats-server's `authorization` block for these users."""
    exprs = password_exprs or {}
    lines = ["authorization {", "  users = ["]
    lines += [f"    {u.conf(exprs.get(u.name))}" for u in all_users]
    lines += ["  ]", "}"]
    return "\n".join(lines)


def password_variable(name: str) -> str:
    """The environment variable that gives nats-server user `name`'s password in compose and k8s."""
    return f"NATS_{name.upper()}_PASSWORD"


def deployed_authorization(names: list[str]) -> str:
    """The `authorization` block of deploy/nats/nats.conf and deploy/k8s: the same users and
    permissions, passwords from the environment (`$NATS_<USER>_PASSWORD`)."""
    placeholders = {name: "" for name in names}
    return authorization(users(placeholders), {name: "$" + password_variable(name) for name in names})


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only (0600), whatever the umask, replacing the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def credentials(path: Path, names: list[str]) -> dict[str, str]:
    """Passwords for `names`, kept in `path` (0600): made once, reused, completed when a name is new."""
    path = Path(path)
    try:
        kept = json.loads(path.read_text())
        kept = {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    wanted = {name: kept.get(name) or secrets.token_urlsafe(24) for name in names}
    if wanted != kept or (path.exists() and path.stat().st_mode & 0o077):
        write_private(path, json.dumps(wanted, indent=2) + "\n")
    return wanted


def with_credentials(url: str, user: str, password: str) -> str:
    """`nats://host:port` with a user and password (URL-safe: token_urlsafe passwords)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{user}:{password}@{rest.rpartition('@')[2]}" if sep else url
