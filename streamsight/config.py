"""Typed settings for every service, from `STREAMSIGHT_*` environment variables and optional YAML.

Each service subclasses `BaseServiceSettings` and adds its own fields. A field `foo_bar` is read
from `STREAMSIGHT_FOO_BAR`; a YAML file named by `STREAMSIGHT_CONFIG` may set any field by its
name (environment wins over YAML). `load_settings` validates at start and raises `ConfigError`
whose message names each bad field, the variable that sets it, and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

ENV_PREFIX = "STREAMSIGHT_"
CONFIG_ENV = "STREAMSIGHT_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and why."""


class BaseServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated")
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$", description="Log level")
    log_format: str = Field("json", pattern=r"^(json|console)$", description="Log renderer")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 disables the endpoint")
    otlp_endpoint: str = Field("", description="OTLP/gRPC endpoint for traces; empty keeps traces in process")
    data_dir: Path = Field(Path("var"), description="Folder for local state (clips, buffers)")
    shutdown_grace_s: float = Field(5.0, gt=0, description="Seconds to drain on shutdown")
    grpc_host: str = Field("0.0.0.0", description="Address the gRPC server (health, API) binds to")
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    auth_token: str = Field("", description="When set, gRPC callers must send 'authorization: Bearer <token>'")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = os.environ.get(CONFIG_ENV)
        if yaml_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)


S = TypeVar("S", bound=BaseServiceSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build and validate `cls`; raise ConfigError with one line per problem."""
    yaml_path = os.environ.get(CONFIG_ENV)
    if yaml_path and not Path(yaml_path).is_file():
        raise ConfigError(f"{CONFIG_ENV} names {yaml_path!r}, which is not a readable file")
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            env = ENV_PREFIX + field.upper()
            lines.append(f"  {field} (env {env}): {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid {cls.__name__}:\n" + "\n".join(lines)) from None
    except Exception as exc:  # a YAML syntax error, for instance
        raise ConfigError(f"cannot read settings for {cls.__name__}: {exc}") from None
