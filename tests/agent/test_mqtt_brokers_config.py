"""``[mqtt] brokers`` and ``protocol`` (issue 18): one list, validated once, the same for
the agent's TOML, its ``--mqtt`` flag, the environment and every ``edge-fleet`` command; and
the real client failing over to the next broker when the first is unreachable."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import build_parser, run_overrides
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import Broker, MqttConfig
from fleet.broker import add_broker_args, broker_config


def _cfg(mqtt: dict[str, Any]) -> MqttConfig:
    c = load_config(None, {"agent.device_id": "d1", **{f"mqtt.{k}": v for k, v in mqtt.items()}},
                    env={})
    assert c.mqtt is not None
    return c.mqtt


def test_a_broker_list_is_kept_in_order_and_the_first_is_the_default() -> None:
    m = _cfg({"brokers": ["mqtt://u:p@a:1883", "mqtts://u:p@b"], "protocol": "3.1.1"})
    assert m.broker_list == (Broker("a", 1883, False), Broker("b", 8883, True))
    assert (m.host, m.port, m.username, m.password, m.protocol) == ("a", 1883, "u", "p",
                                                                    "3.1.1")
    assert m.at(1).url == "mqtts://b:8883" and m.at(2).url == "mqtt://a:1883"
    assert _cfg({"url": "mqtt://a"}).broker_list == (Broker("a", 1883, False),)


@pytest.mark.parametrize("mqtt, message", [
    ({"brokers": []}, "mqtt.brokers: expected a non-empty list"),
    ({"brokers": "mqtt://a"}, "mqtt.brokers: expected a non-empty list"),
    ({"brokers": ["mqtt://a", 7]}, "mqtt.brokers: expected a non-empty list"),
    ({"url": "mqtt://a", "brokers": ["mqtt://b"]}, "mqtt.brokers: give either mqtt.url or"),
    ({"brokers": ["mqtt://a", "mqtt://a:1883"]}, "mqtt.brokers: the same broker is listed"),
    ({"brokers": ["mqtt://a", "http://b"]}, "mqtt.brokers: expected mqtt:// or mqtts://"),
    ({"brokers": ["mqtt://u:p@a", "mqtt://v:p@b"]}, "mqtt.brokers: the broker URLs carry"),
    ({"brokers": [f"mqtt://h{i}" for i in range(17)]}, "mqtt.brokers: at most 16"),
    ({"url": "mqtt://a", "protocol": "4"}, "mqtt.protocol"),
])
def test_a_bad_broker_list_fails_at_start_naming_the_key(mqtt: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _cfg(mqtt)
    assert message in str(e.value), e.value


def test_the_agent_flag_and_the_environment_set_the_list() -> None:
    a = build_parser().parse_args(["run", "--device-id", "d1", "--mqtt",
                                   "mqtt://a:1,mqtt://b:2"])  # every run flag, as parsed
    o = {k: v for k, v in run_overrides(a).items() if k.startswith("mqtt.")}
    assert o == {"mqtt.brokers": ["mqtt://a:1", "mqtt://b:2"]}
    env = {"EDGE_AGENT__MQTT__BROKERS": '["mqtt://a:1", "mqtt://b:2"]'}
    c = load_config(None, {"agent.device_id": "d1"}, env=env)
    assert c.mqtt is not None and c.mqtt.urls == "mqtt://a:1, mqtt://b:2"


def test_every_fleet_command_takes_a_list_and_a_protocol() -> None:
    p = argparse.ArgumentParser()
    add_broker_args(p)
    cfg = broker_config(p.parse_args(["--broker", "mqtt://a:1,mqtt://b:2",
                                      "--protocol", "3.1.1"]))
    assert cfg.urls == "mqtt://a:1, mqtt://b:2" and cfg.protocol == "3.1.1"
    assert broker_config(p.parse_args(["--broker", "mqtt://a"])).protocol == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--broker", "mqtt://a", "--protocol", "4"])


@pytest.mark.serial
def test_the_client_fails_over_past_a_dead_broker(mosquitto: Any, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: the first broker is "dead"
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = MqttConfig.from_section({"brokers": [f"mqtt://127.0.0.1:{dead}", mosquitto.url],
                                   "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}, "<test>")
    c = MqttClient(config=cfg, client_id="failover-1")
    t0 = time.monotonic()
    try:
        c.connect(10)
        took = time.monotonic() - t0
        assert c.broker_url == mosquitto.url and c.connects == 1
        assert took < 3, took
    finally:
        c.stop()
