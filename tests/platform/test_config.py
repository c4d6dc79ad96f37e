"""Settings: platform-wide values plus one section per service, from the environment and one YAML file.

Every check here could fail: a value read from the wrong section, a typo silently ignored, two
services on one metrics port, a README that no longer lists the real settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from streamsight import config
from streamsight.config import SECTIONS, ConfigError, load_settings, section_class

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests see only the STREAMSIGHT_* variables they set."""
    for name in list(os.environ):
        if name.startswith("STREAMSIGHT_"):
            monkeypatch.delenv(name)


def _load(name: str, warnings: list[str] | None = None):
    sink = warnings if warnings is not None else []
    return load_settings(section_class(name), warn=lambda cls, line: sink.append(line))


def test_each_service_reads_its_own_section_from_one_environment(monkeypatch):
    """The same field name in two sections keeps two values (the collision of the flat namespace)."""
    monkeypatch.setenv("STREAMSIGHT_VISION_INTRA_THREADS", "3")
    monkeypatch.setenv("STREAMSIGHT_AUDIO_INTRA_THREADS", "2")
    monkeypatch.setenv("STREAMSIGHT_VISION_FETCH_BATCH", "30")
    monkeypatch.setenv("STREAMSIGHT_STREAM_IDLE_S", "120")
    monkeypatch.setenv("STREAMSIGHT_CHAT_MAX_STREAMS", "5")
    monkeypatch.setenv("STREAMSIGHT_INGEST_MAX_STREAMS", "7")
    monkeypatch.setenv("STREAMSIGHT_NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("STREAMSIGHT_GATEWAY_LOCAL_ROOTS", '["/media"]')
    vision, audio, chat, ingest, gateway = (_load(n) for n in ("vision", "audio", "chat", "ingest", "gateway"))
    assert (vision.intra_threads, audio.intra_threads) == (3, 2)
    assert (vision.fetch_batch, _load("glitch").fetch_batch) == (30, 64)
    assert (vision.stream_idle_s, audio.stream_idle_s) == (120.0, 120.0), "one lifecycle policy for every stage"
    assert (chat.max_streams, ingest.max_streams) == (5, 7)
    assert {s.nats_url for s in (vision, audio, chat, ingest, gateway)} == {"nats://10.0.0.1:4222"}
    assert gateway.local_roots == ["/media"]
    assert [s.grpc_port for s in (vision, audio, chat, ingest, gateway)] == [50063, 50064, 50062, 50061, 50051]


def test_one_yaml_file_configures_the_stack_and_environment_wins(monkeypatch, tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text(
        "log_level: debug\nauth_token: from-yaml\n"
        "vision: {max_batch: 8, intra_threads: 4}\n"
        "glitch:\n  fetch_batch: 16\n  open_score: 0.9\n"
        "gateway: {grpc_port: 7000}\n"
    )
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(path))
    monkeypatch.setenv("STREAMSIGHT_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("STREAMSIGHT_VISION_MAX_BATCH", "12")
    vision, glitch, gateway = _load("vision"), _load("glitch"), _load("gateway")
    assert (vision.max_batch, vision.intra_threads) == (12, 4)
    assert (glitch.fetch_batch, glitch.open_score) == (16, 0.9)
    assert gateway.grpc_port == 7000 and vision.grpc_port == 50063
    assert {s.log_level for s in (vision, glitch, gateway)} == {"debug"}
    assert {s.auth_token for s in (vision, glitch, gateway)} == {"from-env"}


def test_keyword_arguments_win_over_environment(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_GATEWAY_GRPC_PORT", "6000")
    assert GatewaySettings(grpc_port=0).grpc_port == 0
    assert GatewaySettings().grpc_port == 6000


def test_bad_values_name_yaml_path_variable_and_origin(monkeypatch, tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("vision: {fetch_batch: 0}\n")
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(path))
    monkeypatch.setenv("STREAMSIGHT_VISION_MAX_BATCH", "0")
    monkeypatch.setenv("STREAMSIGHT_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as err:
        _load("vision")
    message = str(err.value)
    assert "vision.max_batch / STREAMSIGHT_VISION_MAX_BATCH" in message and "from env STREAMSIGHT_VISION_MAX_BATCH" in message
    assert "vision.fetch_batch / STREAMSIGHT_VISION_FETCH_BATCH" in message and f"from {path}: vision.fetch_batch" in message
    assert "log_level / STREAMSIGHT_LOG_LEVEL" in message and "'loud'" in message


def test_missing_or_malformed_yaml_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not a readable file"):
        _load("gateway")
    bad = tmp_path / "bad.yaml"
    bad.write_text("vision: [1, 2\n")
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="cannot read settings file"):
        _load("gateway")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        _load("gateway")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vision: {max_bath: 8}\n", "vision.max_bath: vision has no such setting; did you mean 'max_batch'?"),
        ("vision: {log_level: debug}\n", "vision.log_level: log_level is platform-wide; set it at the top level"),
        ("grpc_port: 7000\n", "grpc_port: not a platform setting nor a service section; grpc_port is set per service"),
        ("nats_ulr: nats://x\n", "did you mean 'nats_url'?"),
        ("vision: 3\n", "vision: must be a mapping"),
    ],
)
def test_unknown_yaml_keys_stop_the_service(monkeypatch, tmp_path, text, expected):
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        _load("vision")
    assert expected in str(err.value)


def test_another_sections_yaml_is_that_services_business(monkeypatch, tmp_path):
    """A typo under audio: stops audio, not vision (each service checks its own section)."""
    path = tmp_path / "stack.yaml"
    path.write_text("audio: {intra_thread: 2}\n")
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(path))
    assert _load("vision").intra_threads == 1  # its default
    with pytest.raises(ConfigError, match="audio.intra_thread: audio has no such setting; did you mean 'intra_threads'"):
        _load("audio")


def test_stray_variables_are_warned_about_not_fatal(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_VISION_MAX_BATH", "8")
    monkeypatch.setenv("STREAMSIGHT_VISION_LOG_LEVEL", "debug")
    monkeypatch.setenv("STREAMSIGHT_LOG_LEVLE", "debug")
    monkeypatch.setenv("STREAMSIGHT_AUDIO_NOPE", "1")  # audio's business, not vision's
    monkeypatch.setenv("STREAMSIGHT_ONNX_PROVIDER", "cpu")  # read by streamsight.inference: no warning
    monkeypatch.setenv("STREAMSIGHT_VISION_ADDRESS", "127.0.0.1:1")  # an old name `up` no longer sets: vision has no such setting
    warnings: list[str] = []
    vision = _load("vision", warnings)
    assert vision.max_batch == 16 and vision.log_level == "info"
    joined = "\n".join(warnings)
    assert "STREAMSIGHT_VISION_MAX_BATH is ignored: vision has no setting 'max_bath'; did you mean 'max_batch'?" in joined
    assert "STREAMSIGHT_VISION_LOG_LEVEL is ignored: log_level is platform-wide, set STREAMSIGHT_LOG_LEVEL" in joined
    assert "STREAMSIGHT_LOG_LEVLE sets nothing in vision" in joined and "did you mean 'log_level'?" in joined
    assert "STREAMSIGHT_VISION_ADDRESS is ignored: vision has no setting 'address'" in joined
    assert "AUDIO_NOPE" not in joined and "ONNX_PROVIDER" not in joined
    assert len(warnings) == 4


def test_metrics_ports_differ_per_service_from_one_base(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_METRICS_BASE_PORT", "9100")
    monkeypatch.setenv("STREAMSIGHT_FUSION_METRICS_PORT", "9200")
    ports = {name: _load(name).metrics_port for name in SECTIONS}
    assert ports == {"gateway": 9100, "ingest": 9101, "chat": 9102, "vision": 9103, "audio": 9104, "glitch": 9105, "fusion": 9200}
    monkeypatch.delenv("STREAMSIGHT_METRICS_BASE_PORT")
    assert _load("vision").metrics_port == 0  # no base: off


def test_one_flat_metrics_port_is_not_shared_by_every_service(monkeypatch):
    """STREAMSIGHT_METRICS_PORT for all seven would crash-loop six of them: it is refused, loudly."""
    monkeypatch.setenv("STREAMSIGHT_METRICS_PORT", "9100")
    warnings: list[str] = []
    assert _load("glitch", warnings).metrics_port == 0
    assert any("STREAMSIGHT_METRICS_PORT is ignored" in w and "METRICS_BASE_PORT" in w for w in warnings)


def test_old_flat_names_are_read_below_the_section_variable_with_a_warning(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_GRPC_PORT", "7001")
    monkeypatch.setenv("STREAMSIGHT_MAX_STREAMS", "3")
    monkeypatch.setenv("STREAMSIGHT_CHAT_GRPC_PORT", "7002")
    warnings: list[str] = []
    chat = _load("chat", warnings)
    assert (chat.grpc_port, chat.max_streams) == (7002, 3)
    assert warnings == ["STREAMSIGHT_MAX_STREAMS is an old flat name, read as chat.max_streams; set STREAMSIGHT_CHAT_MAX_STREAMS instead"]


def test_every_section_is_declared_and_no_field_repeats_its_section():
    for name in SECTIONS:
        cls = section_class(name)
        assert cls.section == name
        assert not [f for f in config.service_fields(cls) if f.startswith(name + "_")], f"{name} has a prefixed field"
        for field in config.service_fields(cls):
            assert cls.model_fields[field].description, f"{name}.{field} has no description"


def test_a_section_unknown_to_the_table_is_refused():
    with pytest.raises(TypeError, match="not in streamsight.config.SECTIONS"):

        class Stray(config.BaseServiceSettings):
            section = "stray"


def test_readme_lists_every_setting_as_generated():
    """README's settings reference is `streamsight config --markdown`, kept in step."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert block, "README.md lacks the generated settings block"
    assert block.group(1).strip() == config.markdown().strip(), "regenerate README's settings: streamsight config --markdown"


def test_cli_config_lists_and_checks_settings(monkeypatch, capsys, tmp_path):
    from streamsight.app.cli import main

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "STREAMSIGHT_GLITCH_FETCH_BATCH" in out and "vision.max_batch" in out and "STREAMSIGHT_METRICS_BASE_PORT" in out
    path = tmp_path / "stack.yaml"
    path.write_text("glitch: {fetch_batch: 0}\naudio: {intra_thread: 2}\n")
    monkeypatch.setenv("STREAMSIGHT_CONFIG", str(path))
    assert main(["config", "--check"]) == 2
    err = capsys.readouterr()
    assert "glitch.fetch_batch / STREAMSIGHT_GLITCH_FETCH_BATCH" in err.err and "audio.intra_thread" in err.err
    path.write_text("glitch: {fetch_batch: 8}\n")
    assert main(["config", "--check"]) == 0


def test_a_bad_setting_stops_the_service_with_exit_code_2(tmp_path):
    """Through the real entry point, as compose or `up` starts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSIGHT_")}
    env["STREAMSIGHT_GLITCH_FETCH_BATCH"] = "0"
    done = subprocess.run([sys.executable, "-m", "services.glitch"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "glitch.fetch_batch / STREAMSIGHT_GLITCH_FETCH_BATCH" in done.stderr


def test_cli_passes_tool_options_through(capsys):
    """Options after a tool's name are the tool's own, --help included."""
    from streamsight.app.cli import main

    with pytest.raises(SystemExit) as done:
        main(["train-fusion", "--help"])
    assert done.value.code == 0
    assert "streamsight train-fusion" in capsys.readouterr().out


def test_a_lease_renewed_too_rarely_is_refused(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_PARTITION_LEASE_S", "2")
    with pytest.raises(ConfigError) as err:
        _load("vision")
    assert "partition_heartbeat_s 1.0 must be at most a third of partition_lease_s 2.0" in str(err.value)
    monkeypatch.setenv("STREAMSIGHT_PARTITION_HEARTBEAT_S", "0.5")
    assert _load("vision").partition_lease_s == 2.0
