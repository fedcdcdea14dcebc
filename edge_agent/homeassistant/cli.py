"""``edge-agent homeassistant-remove``: take this device out of Home Assistant.

::

    edge-agent homeassistant-remove [--config agent.toml]

Run it when uninstalling (or before switching ``[homeassistant]`` off): it connects with
the agent's own ``[mqtt]`` settings (client id ``<device>-ha-remove``, so a running agent
is not kicked off) and publishes the empty retained messages that make Home Assistant
delete the device and its entities (its discovery document and ``edge/<device>/ha/state``).

Exit codes: 0 removed, 2 bad config (no ``[mqtt] url``), 1 broker unreachable.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent.errors import BadInputError, TransportError


def _cmd_remove(a: argparse.Namespace) -> int:
    from edge_agent.config import load_config
    from edge_agent.homeassistant.discovery import discovery_topic
    from edge_agent.homeassistant.service import remove_discovery
    from edge_agent.mqtt.client import MqttClient
    from edge_agent.mqtt.topics import Topics

    cfg = load_config(a.config)
    if cfg.mqtt is None:
        raise BadInputError("homeassistant-remove needs the [mqtt] url of the broker that "
                            "Home Assistant reads")
    topics = Topics(cfg.agent.device_id, cfg.mqtt.topic_prefix)
    mcfg = replace(cfg.mqtt, client_id=None)
    client = MqttClient(config=mcfg, client_id=f"{topics.device}-ha-remove")
    client.connect()
    try:
        if not remove_discovery(client, cfg.homeassistant, topics, wait_s=10.0):
            raise TransportError(f"{mcfg.url} did not acknowledge the removal within 10 s")
    finally:
        client.stop()
    print(f"removed {discovery_topic(cfg.homeassistant.prefix, topics.device)} and "
          f"{topics.ha_state} (empty retained)")
    return 0


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("homeassistant-remove",
                              help="remove this device from Home Assistant (uninstall)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=os.environ.get("EDGE_AGENT_CONFIG"))
    p.set_defaults(func=_cmd_remove)
