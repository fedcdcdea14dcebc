"""Home Assistant MQTT discovery documents for one device (pure: no I/O).

One **device-based** discovery message (Home Assistant's ``<prefix>/device/<id>/config``,
retained): the shared ``dev`` (device) and ``o`` (origin) mappings, the shared
``availability`` and ``qos``, and the entities under ``cmps``, each with its platform
``p`` and a ``unique_id``:

* sensors read the agent's own topics through ``value_template`` s:
  ``edge/<device>/telemetry`` (CPU, temperature; per model predictions/s, p50 latency,
  drift PSI) and ``edge/<device>/ha/state`` (per model the last top-1 label and
  confidence);
* one ``update`` entity per model: its state (``installed_version``, ``latest_version``,
  ``in_progress``) from ``edge/<device>/ha/state``; its ``command_topic``
  ``edge/<device>/ha/install`` with ``payload_install`` ``{"model": "<name>"}``. The press
  can only ask the device to run the signed update the fleet already announced to it
  (:meth:`edge_agent.update.service.UpdateService.install_announced`): it carries no
  bundle, URL or version.

Availability is our retained status (``state`` is ``online``, or ``offline`` from the Last
Will and a clean stop). An empty retained payload on the discovery topic removes the
device from Home Assistant (:func:`removal`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent import __version__
from edge_agent.mqtt.topics import Topics

ORIGIN = {"name": "edge-agent", "sw": __version__}
_OBJECT_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ModelEntityState:
    """What the ``ha/state`` document says of one model."""

    installed: int | None
    latest: int | None = None  # the newest version an announcement of the fleet named
    in_progress: bool = False
    label: str | None = None  # the last prediction's top-1 label ...
    confidence: float | None = None  # ... and its probability


def object_id(*parts: str) -> str:
    """A Home Assistant object/component id (``[A-Za-z0-9_-]``) from our ids."""
    return _OBJECT_ID.sub("_", "_".join(parts))


def discovery_topic(ha_prefix: str, device: str) -> str:
    return f"{ha_prefix}/device/{object_id('edge', device)}/config"


def _sensor(uid: str, name: str, topic: str, template: str, **extra: Any) -> dict[str, Any]:
    return {"p": "sensor", "unique_id": uid, "object_id": uid, "name": name,
            "state_topic": topic, "value_template": template, **extra}


def discovery(topics: Topics, *, profile: str, models: Sequence[str]) -> dict[str, Any]:
    """The device-based discovery document of this device and its ``models``."""
    dev = topics.device
    tele, state = topics.telemetry, topics.ha_state

    def uid(*p: str) -> str:
        return object_id("edge", dev, *p)

    cmps: dict[str, Any] = {
        uid("cpu"): _sensor(uid("cpu"), "CPU", tele, "{{ value_json.system.cpu_percent }}",
                            unit_of_measurement="%", state_class="measurement"),
        uid("temperature"): _sensor(uid("temperature"), "CPU temperature", tele,
                                    "{{ value_json.system.cpu_temp_c }}",
                                    device_class="temperature", unit_of_measurement="°C",
                                    state_class="measurement"),
    }
    for m in models:
        tm = f"value_json.models['{m}']"  # model names never contain quotes (SEGMENT_RE)
        cmps[uid(m, "rps")] = _sensor(uid(m, "rps"), f"{m} predictions/s", tele,
                                      f"{{{{ {tm}.requests_per_s }}}}",
                                      unit_of_measurement="1/s", state_class="measurement")
        cmps[uid(m, "p50")] = _sensor(uid(m, "p50"), f"{m} p50 latency", tele,
                                      f"{{{{ {tm}.latency_ms.p50 }}}}", device_class="duration",
                                      unit_of_measurement="ms", state_class="measurement")
        cmps[uid(m, "psi")] = _sensor(uid(m, "psi"), f"{m} drift PSI", tele,
                                      f"{{{{ {tm}.quality.psi['class'] }}}}",
                                      state_class="measurement")
        cmps[uid(m, "label")] = _sensor(uid(m, "label"), f"{m} last label", state,
                                        f"{{{{ {tm}.label }}}}")
        cmps[uid(m, "confidence")] = _sensor(uid(m, "confidence"), f"{m} last confidence",
                                             state, f"{{{{ {tm}.confidence }}}}",
                                             state_class="measurement")
        cmps[uid(m, "update")] = {
            "p": "update", "unique_id": uid(m, "update"), "object_id": uid(m, "update"),
            "name": f"{m} model", "title": m, "state_topic": state,
            "value_template": f"{{{{ {tm}.update | tojson }}}}",
            "command_topic": topics.ha_install,
            "payload_install": json.dumps({"model": m}, separators=(",", ":")),
        }
    return {
        "dev": {"ids": [object_id("edge", dev)], "name": dev, "mf": "edge-inference",
                "mdl": profile, "sw": __version__},
        "o": dict(ORIGIN),
        "availability": [{"topic": topics.status, "value_template": "{{ value_json.state }}",
                          "payload_available": "online", "payload_not_available": "offline"}],
        "qos": 1,
        "cmps": cmps,
    }


def state(models: Mapping[str, ModelEntityState]) -> dict[str, Any]:
    """The ``edge/<device>/ha/state`` document the entities' templates read."""
    out = {}
    for name, m in models.items():
        installed = None if m.installed is None else str(m.installed)
        latest = max(v for v in (m.installed, m.latest) if v is not None) \
            if m.installed is not None or m.latest is not None else None
        out[name] = {"label": m.label, "confidence": m.confidence,
                     "update": {"installed_version": installed,
                                "latest_version": None if latest is None else str(latest),
                                "in_progress": m.in_progress, "title": name}}
    return {"models": out}


def removal() -> bytes:
    """The empty retained payload that removes a discovered device (and clears a state)."""
    return b""
