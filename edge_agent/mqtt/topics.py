"""The topic scheme, in one place (documented in docs/mqtt.md).

::

    edge/<device>/status             retained; birth (online) / Last Will + shutdown (offline)
    edge/<device>/telemetry          every N s: system + per-model figures          (outbox)
    edge/<device>/events             errors, warnings, update progress              (outbox)
    edge/<device>/results/<model>    prediction results for sources without a reply (outbox)
    edge/<device>/cmd/<name>         commands to the device (ping, reload, models, config)
    edge/<device>/reply/<name>       replies (or the MQTT 5 response topic of the command)
    edge/<device>/feedback           ground-truth labels for earlier request ids
    edge/group/<group>/...           fleet-wide messages a device reads (e.g. announcements)

A device writes only below ``edge/<device>/`` and reads only its own ``cmd``/``feedback``
and its groups' topics; see the broker ACL section of docs/mqtt.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ConfigError
from edge_agent.mqtt.config import SEGMENT_RE


def check_segment(value: str, what: str) -> str:
    """Refuse ids that would change the topic structure (``/``, ``+``, ``#``) or are empty."""
    if not SEGMENT_RE.match(value):
        raise ConfigError(f"{what} {value!r} cannot be an MQTT topic level: it must match "
                          f"{SEGMENT_RE.pattern}")
    return value


@dataclass(frozen=True)
class Topics:
    """Topic names for one device."""

    device: str
    prefix: str = "edge"

    def __post_init__(self) -> None:
        check_segment(self.device, "device id")
        check_segment(self.prefix, "topic prefix")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def feedback(self) -> str:
        return f"{self.base}/feedback"

    @property
    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def results(self, model: str) -> str:
        return f"{self.base}/results/{check_segment(model, 'model name')}"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def reply(self, name: str) -> str:
        return f"{self.base}/reply/{name}"

    def group(self, group: str, rest: str) -> str:
        return f"{self.prefix}/group/{check_segment(group, 'group')}/{rest}"

    @staticmethod
    def fleet_filter(kind: str, prefix: str = "edge") -> str:
        """``edge/+/<kind>``: what a fleet watcher subscribes to."""
        return f"{prefix}/+/{kind}"

    @staticmethod
    def device_of(topic: str) -> str | None:
        """``edge/pi-17/status`` → ``pi-17`` (None for anything that is not a device topic)."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[1] in ("group", "blobs"):
            return None
        return parts[1]
