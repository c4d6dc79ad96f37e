"""Typed settings for the whole stack: platform-wide values plus one section per service.

How to add a setting:
- a field of one service: declare it on that service's settings class (services/<name>/settings.py)
  with a default, bounds and a `description`. It is then read from `STREAMSIGHT_<SECTION>_<FIELD>`
  and from YAML `<section>: {<field>: ...}`, and listed by `streamsight config`. Do not repeat the
  section in the name (glitch's `fetch_batch`, not `glitch_fetch_batch`). Then regenerate README's
  settings tables: `streamsight config --markdown` (tests/platform/test_config.py checks them).
- a platform-wide field (one value for every service): add it to `BaseServiceSettings` and to
  `PLATFORM_FIELDS`; it is read from `STREAMSIGHT_<FIELD>` and the YAML file's top level. Its name
  must not start with a section name.
- a section (a new service): add it to `SECTIONS` and subclass `BaseServiceSettings` with
  `section = "<name>"`.

Where a value comes from, highest first: keyword arguments (tests, embedding); the environment;
the YAML file named by `STREAMSIGHT_CONFIG` (one file for the whole stack: platform keys at its
top level, each service's under its section); the default. A service's `metrics_port` defaults to
`metrics_base_port` plus the service's offset in `SECTIONS`, so that every process of one host
gets its own port from one variable.

Checks, at start (`load_settings`): a bad value raises `ConfigError` naming the setting by its
YAML path and environment variable (the service exits with code 2). An unknown key in the YAML
file's top level or in the service's own section is an error too: a typo must not be silently
ignored. An unknown `STREAMSIGHT_<SECTION>_*` variable of the service's own section, or a flat
`STREAMSIGHT_*` variable that is no platform setting, is a warning (on stderr): environments
carry variables for other programs and other versions. The old flat name of a per-service field
(`STREAMSIGHT_GRPC_PORT` for `<section>.grpc_port`) is still read, below the section's own
variable, with a warning, until every launcher uses the section names; `STREAMSIGHT_METRICS_PORT`
is not (one port for every service is what crash-looped `up`): use `metrics_base_port`.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "STREAMSIGHT_"
CONFIG_ENV = "STREAMSIGHT_CONFIG"

# Variables with this prefix that are read elsewhere and are no settings (not warned about).
OTHER_VARIABLES = {
    CONFIG_ENV: "YAML file with the settings of the whole stack",
    "STREAMSIGHT_REPLICA_ID": "this process's replica name, e.g. vision-2 (streamsight.partitions; default <hostname>-<pid>); `up` sets it",
    "STREAMSIGHT_ONNX_PROVIDER": "force an onnxruntime provider (cpu, cuda) for every model (streamsight.inference)",
    "STREAMSIGHT_PORT_SLICE": "k/n: free ports are picked from slice k of n of 10000 to the kernel's ephemeral range (streamsight.natsd; the test suite gives each worker its own)",
    # The gateway's Twitch extension backend (gateway/ebs/config.py), named as Twitch's docs name them.
    "STREAMSIGHT_TWITCH_EXTENSION_SECRET": "the Twitch extension secret, base64 as Twitch's console shows it; unset: no /ebs routes",
    "STREAMSIGHT_TWITCH_EXTENSION_ORIGIN": "the origin the extension's pages run on (CORS); default https://<client id>.ext-twitch.tv",
    "STREAMSIGHT_TWITCH_CLIENT_ID": "the extension's client id (enables the CORS default)",
    "STREAMSIGHT_TWITCH_EBS_RATE_PER_S": "EBS requests a second per viewer after the burst (default 1)",
    "STREAMSIGHT_TWITCH_EBS_BURST": "EBS requests a viewer may make at once (default 10)",
}


@dataclass(frozen=True)
class Section:
    """One service of the stack: its settings section, its module, its default ports."""

    name: str
    module: str  # `python -m <module>` runs it
    settings: str  # "module:Class" of its settings, imported only by `streamsight config`
    grpc_port: int  # default gRPC port (API and/or health); the same in docker-compose.yml
    metrics_offset: int  # its metrics port is metrics_base_port + this


# The stack's services, in the order `up` starts them (the gateway last, once its backends run).
SECTIONS: dict[str, Section] = {
    s.name: s
    for s in (
        Section("ingest", "services.ingest", "services.ingest.settings:IngestSettings", 50061, 1),
        Section("chat", "services.chat", "services.chat.settings:ChatSettings", 50062, 2),
        Section("vision", "services.vision", "services.vision.settings:VisionSettings", 50063, 3),
        Section("audio", "services.audio", "services.audio.settings:AudioSettings", 50064, 4),
        Section("glitch", "services.glitch", "services.glitch.settings:GlitchSettings", 50065, 5),
        Section("fusion", "services.fusion", "services.fusion.settings:FusionSettings", 50066, 6),
        Section("gateway", "gateway", "gateway.settings:GatewaySettings", 50051, 0),
    )
}

MAX_REPLICAS = 16  # processes of one service under `up`

PLATFORM_FIELDS = (
    "nats_url", "nats_replicas", "log_level", "log_format", "otlp_endpoint", "data_dir", "auth_token",
    "grpc_host", "shutdown_grace_s", "metrics_base_port", "metrics_host", "window_s", "stream_idle_s",
    "partition_lease_s", "partition_heartbeat_s",
)  # fmt: skip


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and why."""


class BaseServiceSettings(BaseSettings):
    """Settings every service has: the platform-wide ones, and a gRPC and a metrics port of its own."""

    section: ClassVar[str] = ""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    # Platform-wide: one value for the whole stack (STREAMSIGHT_<FIELD>, YAML top level).
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated: list every node of a cluster, so losing one is a reconnect"
    )
    nats_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="JetStream replicas of FEATURES, EVENTS, DEADLETTER and every KV bucket (1-5, at most the cluster's nodes; 3 for a 3-node cluster); MEDIA stays 1",
    )
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$", description="Log level")
    log_format: str = Field("json", pattern=r"^(json|console)$", description="Log renderer")
    otlp_endpoint: str = Field("", description="OTLP/gRPC endpoint for traces; empty keeps traces in process")
    data_dir: Path = Field(Path("var"), description="Folder for local state (clips, buffers)")
    auth_token: str = Field("", description="When set, gRPC callers must send 'authorization: Bearer <token>'")
    grpc_host: str = Field("0.0.0.0", description="Address the gRPC servers (health, API) bind to")
    shutdown_grace_s: float = Field(5.0, gt=0, description="Seconds to drain on shutdown")
    metrics_base_port: int = Field(
        0, ge=0, le=65535 - len(SECTIONS), description="Prometheus ports: each service's metrics_port defaults to this plus its offset; 0: none"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the Prometheus /metrics servers bind to (0.0.0.0 for a scraper on another host or pod)"
    )
    window_s: float = Field(10.0, gt=0, le=600, description="Window length, media seconds: ingest cuts streams into windows of this length, every stage scores them")
    stream_idle_s: float = Field(
        300.0, gt=0, description="A stage flushes a stream that sent nothing for this long without its last window record (windows flagged partial)"
    )
    partition_lease_s: float = Field(
        6.0, gt=0, le=300,
        description="A partitioned service's lease on a partition of the streams lasts this long unrenewed: a dead replica's partitions move after it (streamsight.partitions)",
    )
    partition_heartbeat_s: float = Field(1.0, gt=0, le=60, description="How often a replica renews its leases and looks for members that joined or died (at most partition_lease_s / 3)")
    # Per service (STREAMSIGHT_<SECTION>_<FIELD>, YAML <section>.<field>): seven processes on one
    # host cannot share a port. Subclasses set their own grpc_port default.
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; unset: metrics_base_port plus the service's offset (none when the base is 0); 0 disables"
    )

    replicas: int = Field(
        1,
        ge=1,
        le=MAX_REPLICAS,
        description="Processes of this service `streamsight up` runs, each with STREAMSIGHT_REPLICA_ID=<service>-<n> and ports of its own (`up --replicas vision=2,...`); the gateway: 1",
    )

    cpu_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Run this service's process this much nicer (Unix niceness 0-19, no privilege needed): on a host short of CPU the other services go first. Glitch, whose lag no score waits for, at 5 lets the scores and highlights through first",
    )

    nats_monitor_url: str = Field(
        "",
        description="nats-server's monitoring URL (http://host:8222): this service then exports NATS's own metrics (streamsight_nats_server_*) on its /metrics; set it on one service only, the gateway; empty: none",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.section and cls.section not in SECTIONS:
            raise TypeError(f"{cls.__name__}.section {cls.section!r} is not in streamsight.config.SECTIONS")

    @model_validator(mode="after")
    def _one_gateway(self) -> "BaseServiceSettings":
        if self.section == "gateway" and self.replicas != 1:
            raise ValueError("gateway.replicas: `up` runs one gateway (its HTTP and gRPC ports are the stack's entry); run more behind a load balancer")
        return self

    @model_validator(mode="after")
    def _lease_outlives_beats(self) -> "BaseServiceSettings":
        if self.partition_heartbeat_s * 3 > self.partition_lease_s:
            raise ValueError(f"partition_heartbeat_s {self.partition_heartbeat_s} must be at most a third of partition_lease_s "
                             f"{self.partition_lease_s}: a lease renewed less often expires under a live replica")
        return self

    @model_validator(mode="after")
    def _default_metrics_port(self) -> "BaseServiceSettings":
        if self.metrics_port is None:
            section = SECTIONS.get(self.section)
            base = self.metrics_base_port
            self.metrics_port = base + section.metrics_offset if base and section else 0
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _StackSource(settings_cls))


class StageSettings(BaseServiceSettings):
    """Settings of a feature stage that saves its streams' state (vision, audio: streamsight.stage)."""

    snapshot_interval_s: float = Field(
        1.0,
        ge=0,
        le=10,
        description="A stream's state is saved at most this often; the messages applied since stay unacknowledged until then, so a replica taking the stream over gets them again. A stream that ended, or has 16 messages waiting, is saved at once. 0: after every fetch (a live stream's vision saved 3.75 times a second, 1.1 MB/s, against 0.75 and 0.23 MB/s at 1 s)",
    )


assert not [f for f in PLATFORM_FIELDS for s in SECTIONS if f.startswith(s + "_")], "a platform field reads like a section variable"


# Names ------------------------------------------------------------------------


def is_platform(field: str) -> bool:
    return field in PLATFORM_FIELDS


def env_name(section: str, field: str) -> str:
    """The variable that sets `field` of `section` (platform fields: no section)."""
    if is_platform(field) or not section:
        return ENV_PREFIX + field.upper()
    return f"{ENV_PREFIX}{section.upper()}_{field.upper()}"


def yaml_path(section: str, field: str) -> str:
    """Where `field` of `section` goes in the YAML file."""
    return field if is_platform(field) or not section else f"{section}.{field}"


def service_fields(cls: type[BaseServiceSettings]) -> list[str]:
    return [name for name in cls.model_fields if not is_platform(name)]


# Reading ----------------------------------------------------------------------


@dataclass
class Resolved:
    """Raw values found for one settings class, where each came from, and warnings."""

    values: dict[str, Any]
    origins: dict[str, str]
    warnings: list[str]


def _is_complex(info: FieldInfo) -> bool:
    """Lists and mappings come as JSON in the environment."""
    annotation = info.annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) in (list, dict, set, tuple) or arg in (list, dict, set, tuple):
            return True
    return False


def _from_env(raw: str, info: FieldInfo) -> Any:
    if _is_complex(info):
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # validation then says what kind of value it wants
    return raw


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML settings file as a mapping; ConfigError when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{CONFIG_ENV} names {str(path)!r}, which is not a readable file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the settings file must be a mapping (platform keys, and one mapping per service)")
    return data


def _check_yaml(cls: type[BaseServiceSettings], data: dict[str, Any], path: str) -> None:
    """Unknown keys at the top level and in the class's own section are errors."""
    problems = []
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS:
            if value is not None and not isinstance(value, dict):
                problems.append(f"  {key}: must be a mapping of {key}'s settings")
        elif not is_platform(key):
            hint = (
                f"; {key} is set per service, under a section ({', '.join(SECTIONS)})"
                if key in cls.model_fields or key in ("grpc_port", "metrics_port")
                else _suggest(key, [*PLATFORM_FIELDS, *SECTIONS])
            )
            problems.append(f"  {key}: not a platform setting nor a service section{hint}")
    own = data.get(cls.section) if cls.section else None
    if isinstance(own, dict):
        known = service_fields(cls)
        for key in map(str, own):
            if is_platform(key):
                problems.append(f"  {cls.section}.{key}: {key} is platform-wide; set it at the top level")
            elif key not in known:
                problems.append(f"  {cls.section}.{key}: {cls.section} has no such setting{_suggest(key, known)}")
    if problems:
        raise ConfigError(f"{path}: unknown settings:\n" + "\n".join(problems))


def _scan_env(cls: type[BaseServiceSettings], environ: typing.Mapping[str, str]) -> list[str]:
    """Warnings for variables of this service's section, or flat ones, that set nothing."""
    warnings = []
    own = f"{ENV_PREFIX}{cls.section.upper()}_" if cls.section else None
    known = service_fields(cls)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if is_platform(rest):
            continue
        if own and name.startswith(own):
            field = rest[len(cls.section) + 1 :]
            if is_platform(field):
                warnings.append(f"{name} is ignored: {field} is platform-wide, set {env_name('', field)}")
            elif field not in known:
                warnings.append(f"{name} is ignored: {cls.section} has no setting {field!r}{_suggest(field, known)}")
            continue
        other = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if other:
            continue  # that section's service reports it
        if rest in known and rest != "metrics_port":
            continue  # an old flat name of one of ours: resolve() warns when it reads it
        if rest == "metrics_port":
            warnings.append(f"{name} is ignored: set {ENV_PREFIX}METRICS_BASE_PORT (each service adds its offset) or {ENV_PREFIX}<SECTION>_METRICS_PORT")
        elif cls.section:
            warnings.append(
                f"{name} sets nothing in {cls.section}: not a platform setting{_suggest(rest, list(PLATFORM_FIELDS))},"
                f" and {cls.section}'s own settings are {own}<FIELD>"
            )
    return warnings


def resolve(cls: type[BaseServiceSettings], environ: typing.Mapping[str, str] | None = None) -> Resolved:
    """Collect the raw values for `cls` from the environment and the YAML file (no validation)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    warnings = _scan_env(cls, environ)
    yaml_file = environ.get(CONFIG_ENV)
    if yaml_file:
        data = read_yaml(yaml_file)
        _check_yaml(cls, data, yaml_file)
        for key, value in data.items():
            if is_platform(str(key)) and key in cls.model_fields:
                values[key], origins[key] = value, f"{yaml_file}: {key}"
        own = data.get(cls.section) if cls.section else None
        for key, value in (own or {}).items():
            values[key], origins[key] = value, f"{yaml_file}: {cls.section}.{key}"
    for field, info in cls.model_fields.items():
        name = env_name(cls.section, field)
        if name in environ:
            values[field], origins[field] = _from_env(environ[name], info), f"env {name}"
            continue
        old = ENV_PREFIX + field.upper()
        if cls.section and not is_platform(field) and field != "metrics_port" and old in environ:
            values[field], origins[field] = _from_env(environ[old], info), f"env {old} (old flat name)"
            warnings.append(f"{old} is an old flat name, read as {cls.section}.{field}; set {name} instead")
    return Resolved(values, origins, warnings)


class _StackSource(PydanticBaseSettingsSource):
    """The environment and the YAML file, by section (see the module docstring)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        return resolve(self.settings_cls).values


S = TypeVar("S", bound=BaseServiceSettings)


def load_settings(cls: type[S], warn=None, **overrides: Any) -> S:
    """Build and validate `cls`; raise ConfigError with one line per problem.

    Warnings (variables that set nothing, old names) go to `warn` (default: one stderr line each).
    """
    resolved = resolve(cls)
    for line in resolved.warnings:
        (warn or _warn_stderr)(cls, line)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = f"{yaml_path(cls.section, field)} / {env_name(cls.section, field)}"
            origin = "argument" if field in overrides else resolved.origins.get(field, "default")
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r} from {origin})")
        raise ConfigError(f"invalid {cls.__name__} settings:\n" + "\n".join(lines)) from None


def _warn_stderr(cls: type[BaseServiceSettings], line: str) -> None:
    print(f"streamsight-{cls.section or 'settings'}: settings warning: {line}", file=sys.stderr, flush=True)


# Describing -------------------------------------------------------------------


def section_class(name: str) -> type[BaseServiceSettings]:
    """Import the settings class of section `name`."""
    import importlib

    module, _, attr = SECTIONS[name].settings.partition(":")
    return getattr(importlib.import_module(module), attr)


def _show_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Path):
        root = Path(__file__).resolve().parents[1]
        try:
            return str(value.resolve().relative_to(root))
        except ValueError:
            return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def describe(sections: list[str] | None = None) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """Every setting as (YAML path, env variable, default, description), platform first, then by section."""
    platform = BaseServiceSettings.model_fields
    out = [("platform", [(f, env_name("", f), _show_default(platform[f].default), platform[f].description or "") for f in PLATFORM_FIELDS])]
    for name in sections or list(SECTIONS):
        cls = section_class(name)
        rows = []
        for field in service_fields(cls):
            info = cls.model_fields[field]
            default = _show_default(info.get_default(call_default_factory=True))
            if field == "metrics_port":
                default = f"metrics_base_port + {SECTIONS[name].metrics_offset}"
            rows.append((yaml_path(name, field), env_name(name, field), default, info.description or ""))
        out.append((name, rows))
    return out


def markdown(sections: list[str] | None = None) -> str:
    """`describe()` as one Markdown table per section (README's settings reference)."""
    parts = []
    for name, rows in describe(sections):
        title = "Platform-wide (YAML top level)" if name == "platform" else f"`{name}`"
        lines = [f"#### {title}", "", "| YAML | Environment | Default | Meaning |", "|---|---|---|---|"]
        for path, env, default, text in rows:
            cell = f"`{default}`" if default else ""
            lines.append(f"| `{path}` | `{env}` | {cell} | {text.replace('|', '/')} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def text(sections: list[str] | None = None) -> str:
    """`describe()` as plain text for a terminal."""
    out = []
    for name, rows in describe(sections):
        out.append(f"[{name}]")
        for path, env, default, desc in rows:
            out.append(f"  {path:<34} {env:<44} default {default or '(empty)'}\n      {desc}")
    return "\n".join(out) + "\n"


def config_command(check: bool = False, as_markdown: bool = False, sections: list[str] | None = None, out=None, err=None) -> int:
    """`streamsight config`: list every setting, or (--check) load each service's as it would start.

    --check returns 2 when any section is invalid, like the service would, and prints warnings.
    """
    out, err = out or sys.stdout, err or sys.stderr
    unknown = [s for s in sections or [] if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}", file=err)
        return 2
    if not check:
        out.write(markdown(sections) if as_markdown else text(sections))
        return 0
    failed = 0
    for name in sections or list(SECTIONS):
        try:
            load_settings(section_class(name), warn=lambda cls, line: print(f"{cls.section}: warning: {line}", file=err))
            print(f"{name}: ok", file=out)
        except ConfigError as exc:
            failed += 1
            print(f"{name}: {exc}", file=err)
    return 2 if failed else 0
