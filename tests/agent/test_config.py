"""agent.toml → env overrides → flags → validated frozen dataclasses; errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_config, parse_env_value
from edge_agent.errors import ConfigError

TOML = """
[agent]
device_id = "cam-7"
profile = "rpi4"
store_dir = "store"
threads = 2
groups = ["lab", "canary"]

[http]
port = 9000
token = "abc"

[[models]]
bundle = "bundles/digits"

[watch]
dir = "inbox"
model = "digits"

[mqtt]
url = "mqtt://broker:1883"
username = "cam-7"
password = "hunter2"

[telemetry]
interval_s = 5
"""


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(TOML)
    (tmp_path / "bundles" / "digits").mkdir(parents=True)
    return p


def test_file_values_become_typed_frozen_settings(toml: Path) -> None:
    cfg = load_config(toml, env={})
    a = cfg.agent
    assert (a.device_id, a.profile, a.threads, a.groups) == ("cam-7", "rpi4", 2, ("lab", "canary"))
    assert a.store_dir == toml.parent / "store"  # relative to the file
    assert cfg.models[0].bundle == toml.parent / "bundles" / "digits"
    assert cfg.watch.enabled and cfg.watch.done_dir == toml.parent / "inbox" / "done"
    assert cfg.http.port == 9000 and cfg.http.host == "127.0.0.1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.http.port = 1  # type: ignore[misc]


def test_mqtt_telemetry_and_update_sections_are_typed(toml: Path) -> None:
    cfg = load_config(toml, env={})
    assert cfg.mqtt is not None and (cfg.mqtt.host, cfg.mqtt.port) == ("broker", 1883)
    assert cfg.telemetry.interval_s == 5.0 and cfg.telemetry.enabled
    assert cfg.update is None  # no [update] section: updates off


def test_env_overrides_file_and_flags_override_env(toml: Path) -> None:
    env = {"EDGE_AGENT__HTTP__PORT": "9100", "EDGE_AGENT__HTTP__HOST": "0.0.0.0",
           "EDGE_AGENT__AGENT__GROUPS": '["a", "b"]', "EDGE_AGENT__MQTT__URL": "mqtt://x:1",
           "EDGE_AGENT__TELEMETRY__ENABLED": "false", "OTHER": "ignored"}
    cfg = load_config(toml, {"http.port": 9200, "agent.device_id": None}, env=env)
    assert cfg.http.port == 9200 and cfg.http.host == "0.0.0.0"
    assert cfg.agent.groups == ("a", "b") and cfg.agent.device_id == "cam-7"
    assert cfg.mqtt is not None and cfg.mqtt.url == "mqtt://x:1"
    assert cfg.telemetry.enabled is False


def test_flag_models_are_appended_and_the_mqtt_url_flag_wins(toml: Path) -> None:
    v2 = toml.parent / "v2.tar"
    v2.write_bytes(b"")
    cfg = load_config(toml, {"models": [{"bundle": str(v2), "activate": True}],
                             "mqtt.url": "mqtts://b:8883"}, env={})
    assert [str(m.bundle) for m in cfg.models][1:] == [str(v2)]
    assert cfg.models[1].activate
    assert cfg.mqtt is not None and cfg.mqtt.url == "mqtts://b:8883" and cfg.mqtt.tls


@pytest.mark.parametrize("text,value", [("8080", 8080), ("true", True), ("1.5", 1.5),
                                        ('["a"]', ["a"]), ("127.0.0.1", "127.0.0.1"),
                                        ('"quoted"', "quoted"), ("plain words", "plain words")])
def test_env_values_parse_as_toml_then_string(text: str, value: object) -> None:
    assert parse_env_value(text) == value


@pytest.mark.parametrize(("toml_text", "message"), [
    ("[http]\nport = 'x'\n", "agent.toml: http.port: expected int 1..65535, got 'x'"),
    ("[http]\nport = 70000\n", "agent.toml: http.port: expected int 1..65535, got 70000"),
    ("[http]\nprot = 1\n", "agent.toml: http.prot: unknown key"),
    ("[agent]\nworkers = true\n", "agent.toml: agent.workers: expected int 1..64, got True"),
    ("[agent]\nlog_format = 'xml'\n", "agent.toml: agent.log_format: expected one of text, json"),
    ("[agent]\nprofile = 'rpi9'\n", "agent.toml: agent.profile: unknown device profile 'rpi9'"),
    ("[agent]\ndevice_id = 'a/b'\n", "agent.toml: agent.device_id: expected a name matching"),
    ("[watch]\ndir = 'in'\n", "agent.toml: watch.model: missing required key"),
    ("[[models]]\nactivate = true\n", "agent.toml: models[0].bundle: missing required key"),
    ("[[models]]\nbundle = 'gone'\n", "agent.toml: models[0].bundle: "),  # + path, below
    ("[http]\ntoken = 'a'\ntoken_file = 'f'\n", "agent.toml: http.token_file: set http.token"),
    ("[http]\ntoken_file = 'missing'\n", "agent.toml: http.token_file: cannot read"),
    ("[camera]\nenabled = true\n", "agent.toml: camera.model: missing required key"),
    ("[agent]\ncomponents = ['telemetry', 'x.y:create']\n", "agent.toml: agent.components: "
     "expected component names from telemetry, capture, update, homeassistant, systemd, "
     "dashboard, "
     "got 'x.y:create'"),
    ("[mqtt]\nurl = 'mqtt://b'\nkeepalive_s = 1\n", "agent.toml: mqtt.keepalive_s: expected "
     "int 5..65535, got 1"),
    ("[telemetry]\ninterval_s = 0\n", "agent.toml: telemetry.interval_s: expected a number"),
    ("[update]\nprobation_s = 60\n", "agent.toml: update.root_file: missing required key"),
    ("[update]\nroot_file = 'r.json'\ntransport = 'usb'\n", "agent.toml: update.transport: "
     "expected one of auto, mqtt, http"),
    ("[http.version_labels.digits]\ncanary = 0\n", "agent.toml: "
     "http.version_labels.digits.canary: expected a version (int >= 1), got 0"),
    ("[http.version_labels.digits]\n7up = 1\n", "agent.toml: http.version_labels.digits.7up: "
     "expected a label matching"),
    ("[http.version_labels]\n'a/b' = {canary = 1}\n", "agent.toml: http.version_labels.a/b: "
     "expected a model name matching"),
    ("[http]\nversion_labels = 3\n", "agent.toml: http.version_labels: expected a table"),
    ("http = 3\n", "agent.toml: http: expected a table"),
    ("stray = 3\n", "agent.toml: stray: unknown section"),
    ("[mqtt_request]\nqos = 0\n", "agent.toml: mqtt_request: unknown section"),
    ("[agent\n", "agent.toml: invalid TOML"),
])
def test_errors_name_the_file_and_the_key(tmp_path: Path, toml_text: str, message: str) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(toml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert str(e.value).replace(str(p), "agent.toml").startswith(message), str(e.value)


def test_a_models_bundle_path_that_does_not_exist_is_a_config_error_at_load(
        tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text("[[models]]\nbundle = 'bundles/gone'\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert str(e.value) == (f"{p}: models[0].bundle: {tmp_path / 'bundles' / 'gone'}: "
                            "no such bundle directory or .tar")


def test_errors_from_env_and_flags_name_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^env EDGE_AGENT__HTTP__PORT: http.port: expected"):
        load_config(None, env={"EDGE_AGENT__HTTP__PORT": "x"})
    with pytest.raises(ConfigError, match=r"^command line: http.port: expected int"):
        load_config(None, {"http.port": "x"}, env={})


@pytest.mark.parametrize("name, value, key", [
    ("EDGE_AGENT__MQTT__KEEPALIVE_S", "1", "mqtt.keepalive_s"),
    ("EDGE_AGENT__TELEMETRY__INTERVAL_S", "fast", "telemetry.interval_s"),
    ("EDGE_AGENT__UPDATE__PROBATION_MAX_ERROR_RATE", "2", "update.probation_max_error_rate"),
    ("EDGE_AGENT__MQTT__PROTOCOL", "4", "mqtt.protocol"),
])
def test_a_bad_env_override_fails_at_load_naming_the_variable(
        toml: Path, name: str, value: str, key: str) -> None:
    """Every section is validated by load_config, so the error names the environment
    variable, not the file, and comes before anything starts."""
    env = {name: value, "EDGE_AGENT__UPDATE__ROOT_FILE": "/etc/edge/root.json"}
    with pytest.raises(ConfigError) as e:
        load_config(toml, env=env)
    assert str(e.value).startswith(f"env {name}: {key}: expected"), str(e.value)
    assert e.value.key == key


def test_a_bad_env_override_stops_edge_agent_run_before_it_serves(tmp_path: Path) -> None:
    """Through the real CLI: exit code 2 and one line naming the variable."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGE_AGENT__MQTT__URL": "mqtt://127.0.0.1:1",
           "EDGE_AGENT__MQTT__KEEPALIVE_S": "1"}
    p = subprocess.run([sys.executable, "-m", "edge_agent.cli", "run", "--http", "127.0.0.1:0",
                        "--store", str(tmp_path / "store"), "--profile", "generic-x86_64"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "env EDGE_AGENT__MQTT__KEEPALIVE_S: mqtt.keepalive_s: expected int 5..65535" in (
        p.stderr), p.stderr
    assert "ready" not in p.stderr


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", env={})


def test_components_list_chooses_the_built_in_components() -> None:
    assert load_config(None, env={}).agent.components is None  # every one that applies
    cfg = load_config(None, env={"EDGE_AGENT__AGENT__COMPONENTS": "[]"})
    assert cfg.agent.components == () and not cfg.wants("telemetry")
    cfg = load_config(None, {"agent.components": ["update", "telemetry"]}, env={})
    assert cfg.agent.components == ("update", "telemetry") and not cfg.wants("systemd")


def test_old_module_factory_component_names_still_work_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="write 'telemetry'"):
        cfg = load_config(None, {"agent.components": ["edge_agent.telemetry.service:create"]},
                          env={})
    assert cfg.agent.components == ("telemetry",)


def test_version_labels_are_read_per_model(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text("[http.version_labels.digits]\ncanary = 3\nstable = 2\n")
    cfg = load_config(p, env={})
    assert cfg.http.version_labels == (("digits", (("canary", 3), ("stable", 2))),)
    assert load_config(None, env={}).http.version_labels == ()  # default: none set


def test_defaults_are_safe(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    assert cfg.http.host == "127.0.0.1" and cfg.http.token is None
    assert str(cfg.agent.store_dir) == "/var/lib/edge-agent"
    assert cfg.agent.runtime == "auto" and cfg.agent.threads is None
    assert not cfg.watch.enabled and not cfg.camera.enabled and cfg.models == ()


def test_redacted_masks_secrets_everywhere(toml: Path) -> None:
    cfg: AgentConfig = load_config(toml, env={})
    red = cfg.redacted()
    assert red["http"]["token"] == "***" and red["mqtt"]["password"] == "***"
    assert red["mqtt"]["username"] == "cam-7"  # a user name is not a secret
    assert red["watch"]["dir"] == str(toml.parent / "inbox")  # nor is a path
    assert red["agent"]["store_dir"] == str(toml.parent / "store")
    assert "abc" not in repr(red) and "hunter2" not in repr(red)
    import json

    json.dumps(red)  # JSON-able as a whole
