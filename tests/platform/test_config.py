"""Settings come from STREAMSIGHT_* variables and YAML, and bad values get clear messages."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings
from streamsight.config import ConfigError, load_settings


def test_environment_sets_fields(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_GRPC_PORT", "6000")
    monkeypatch.setenv("STREAMSIGHT_NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("STREAMSIGHT_LOCAL_ROOTS", '["/media"]')
    settings = load_settings(GatewaySettings)
    assert settings.grpc_port == 6000
    assert settings.nats_url == "nats://10.0.0.1:4222"
    assert settings.local_roots == ["/media"]


def test_yaml_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text("grpc_port: 7000\nauth_token: secret\n")
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(config))
    monkeypatch.setenv("STREAMSIGHT_AUTH_TOKEN", "from-env")
    settings = load_settings(GatewaySettings)
    assert settings.grpc_port == 7000
    assert settings.auth_token == "from-env"


def test_invalid_values_name_the_field_and_variable(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_GRPC_PORT", "99999")
    monkeypatch.setenv("STREAMSIGHT_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as err:
        load_settings(GatewaySettings)
    message = str(err.value)
    assert "grpc_port (env STREAMSIGHT_GRPC_PORT)" in message and "99999" in message
    assert "log_level (env STREAMSIGHT_LOG_LEVEL)" in message


def test_missing_yaml_file_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings(GatewaySettings)


def test_cli_passes_tool_options_through(capsys):
    """Options after a tool's name are the tool's own, --help included."""
    import pytest as _pytest

    from streamsight.cli import main

    with _pytest.raises(SystemExit) as done:
        main(["train-fusion", "--help"])
    assert done.value.code == 0
    assert "streamsight train-fusion" in capsys.readouterr().out
