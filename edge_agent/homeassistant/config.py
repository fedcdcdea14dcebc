"""The ``[homeassistant]`` config section (opt-in).

Example (TOML; every key optional)::

    [homeassistant]
    enabled = false            # publish Home Assistant MQTT discovery for this device
    prefix = "homeassistant"   # Home Assistant's discovery prefix
    state_interval_s = 5       # at most this often: edge/<device>/ha/state (retained)

Read by :func:`edge_agent.config.load_config` through the one config reader; raises
:class:`~edge_agent.errors.ConfigError` naming ``homeassistant.<key>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config_reader import Table
from edge_agent.mqtt.config import SEGMENT_RE


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"
    state_interval_s: float = 5.0

    @classmethod
    def parse(cls, t: Table) -> HomeAssistantConfig:
        d = cls
        cfg = cls(enabled=t.flag("enabled", d.enabled),
                  prefix=t.text("prefix", d.prefix, pattern=SEGMENT_RE),
                  state_interval_s=t.number("state_interval_s", d.state_interval_s, 0.1))
        t.finish()
        return cfg
