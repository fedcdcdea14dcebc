"""The topic scheme, in one place (documented in docs/mqtt.md): every topic the agent,
the fleet tools and the broker ACL use is built here.

::

    edge/<device>/status             retained; birth (online) / Last Will + shutdown (offline)
    edge/<device>/telemetry          every N s: system + per-model figures          (outbox)
    edge/<device>/events             errors, warnings, update progress              (outbox)
    edge/<device>/results/<model>    prediction results for sources without a reply (outbox)
    edge/<device>/cmd/<name>         commands to the device (ping, reload, models, config)
    edge/<device>/reply/<name>       replies (or the MQTT 5 response topic of the command)
    edge/<device>/feedback           ground-truth labels for earlier request ids
    edge/<device>/infer/<model>      MQTT inference requests (docs/agent.md)
    edge/<device>/update/announce    retained update announcement for one device
    edge/<device>/update/want        the device asks for chunks it is missing (protocol.wants)
    edge/<device>/ha/state           retained; what Home Assistant's entities read (opt-in
                                     [homeassistant]: docs/homeassistant.md)
    edge/<device>/ha/install         Home Assistant's update "install" press (control plane:
                                     only ever re-runs the signed update already announced)
    edge/group/<group>/...           fleet-wide messages a device reads (e.g. announcements)
    edge/blobs/<sha256>/<index>      retained update chunks, shared by the whole fleet
    edge/rollouts/<id>/progress      retained; a staged rollout's report, wave by wave
                                     (``edge-fleet rollout`` writes, the dashboard reads)
    replies/...                      replies to MQTT inference requests that ask for a topic
                                     ("reply_to" / MQTT 5 response topic): only below the
                                     ``[mqtt_requests] reply_prefix``, never below ``edge/``

:class:`Topics` names one device's topics; :class:`FleetTopics` the fleet-wide ones
(filters over every device, group and chunk topics) and the Mosquitto ACL patterns
(``%u`` = the authenticated user, i.e. the device id). A device writes only below
``edge/<device>/`` and reads only its own ``cmd``/``feedback``/``infer``/``announce``,
its groups' topics and the chunks; see the broker ACL section of docs/mqtt.md.

Raises ConfigError for an id that would change the topic structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ConfigError, InvalidRequestError
from edge_agent.mqtt.config import SEGMENT_RE

DEFAULT_PREFIX = "edge"
GROUP = "group"  # the level after the prefix that is not a device id
BLOBS = "blobs"
ROLLOUTS = "rollouts"  # fleet tools: retained rollout progress (not a device id)
RESERVED = (GROUP, BLOBS, ROLLOUTS)  # levels after the prefix that are not device ids
ANNOUNCE = "update/announce"
UPDATE_WANT = "update/want"  # device → fleet: chunks it is missing (protocol.wants)
STATUS_WANT = "status/want"  # fleet → group: publish your status again (protocol.wants)
# what fleet tools read of every device (telemetry and events are durable, status retained)
DEVICE_OUTPUT = ("status", "telemetry", "events")
# where a requester may have inference replies sent (outside every device's namespace: a
# reply_to inside it would let an inference client publish as the device, e.g. cmd/reload)
DEFAULT_REPLY_PREFIX = "replies/"
MAX_TOPIC_CHARS = 256


def check_reply_prefix(value: str) -> str:
    """A reply prefix: whole levels ending in ``/``, no wildcards, NUL or empty levels.

    Raises ConfigError."""
    levels = value.split("/")
    if not value.endswith("/") or len(value) > MAX_TOPIC_CHARS // 2 or value.startswith("$") \
            or any(not lvl or any(c in lvl for c in "+#\x00") for lvl in levels[:-1]):
        raise ConfigError(f"reply prefix {value!r} must be whole topic levels ending in '/' "
                          "(e.g. 'replies/'), without wildcards, '$' or empty levels")
    return value


class ReplyRefusedError(InvalidRequestError):
    """A reply topic outside the allowed reply prefix (answered 403 on the default topic)."""


def _short(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


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
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_segment(self.device, "device id")
        check_segment(self.prefix, "topic prefix")
        if self.device in RESERVED:
            raise ConfigError(f"device id {self.device!r} is reserved for fleet topics "
                              f"({', '.join(RESERVED)})")

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

    @property
    def infer_filter(self) -> str:
        return f"{self.base}/infer/+"

    @property
    def announce(self) -> str:
        return f"{self.base}/{ANNOUNCE}"

    @property
    def update_want(self) -> str:
        """Chunks this device asks the fleet tools for (edge_agent.protocol.wants)."""
        return f"{self.base}/{UPDATE_WANT}"

    @property
    def ha_state(self) -> str:
        """Retained state of the Home Assistant entities (edge_agent.homeassistant)."""
        return f"{self.base}/ha/state"

    @property
    def ha_install(self) -> str:
        """Home Assistant's install press: "install the update the fleet announced"."""
        return f"{self.base}/ha/install"

    def results(self, model: str) -> str:
        return f"{self.base}/results/{check_segment(model, 'model name')}"

    def infer(self, model: str) -> str:
        return f"{self.base}/infer/{check_segment(model, 'model name')}"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def reply(self, name: str) -> str:
        return f"{self.base}/reply/{name}"

    def group(self, group: str, rest: str) -> str:
        return FleetTopics(self.prefix).group(group, rest)

    def check_reply_prefix(self, reply_prefix: str) -> str:
        """``reply_prefix`` if it is valid and outside the fleet's ``<prefix>/`` tree (where
        this device may write as itself). Raises ConfigError."""
        check_reply_prefix(reply_prefix)
        if reply_prefix.startswith(f"{self.prefix}/"):
            raise ConfigError(f"reply prefix {reply_prefix!r} is inside the device topics "
                              f"({self.prefix}/…): replies there could act as the device")
        return reply_prefix

    def requested_reply(self, topic: object, reply_prefix: str) -> str:
        """A requester's reply topic (``reply_to`` or the MQTT 5 response topic), if it lies
        below ``reply_prefix``. Raises InvalidRequestError (malformed) or ReplyRefusedError
        (outside the prefix)."""
        if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC_CHARS \
                or any(c in topic for c in "+#\x00"):
            raise InvalidRequestError(f"reply_to must be a topic name without wildcards, "
                                      f"got {_short(topic)}")
        if not topic.startswith(self.check_reply_prefix(reply_prefix)) \
                or topic.startswith(f"{self.prefix}/") or "//" in topic:
            raise ReplyRefusedError(f"reply topic {_short(topic)} is not below the reply "
                                    f"prefix {reply_prefix!r}; answered on "
                                    "the default topic instead")
        return topic

    @staticmethod
    def fleet_filter(kind: str, prefix: str = DEFAULT_PREFIX) -> str:
        """``edge/+/<kind>``: what a fleet watcher subscribes to."""
        return f"{prefix}/+/{kind}"

    @staticmethod
    def split(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str] | None:
        """``edge/pi-17/results/digits`` → ``("pi-17", "results/digits")``; None for a topic
        outside ``prefix`` or one that is not a device's (group, blobs)."""
        parts = topic.split("/", 2)
        if len(parts) < 3 or parts[0] != prefix or parts[1] in RESERVED \
                or not parts[1] or not parts[2]:
            return None
        return parts[1], parts[2]

    @staticmethod
    def device_of(topic: str, prefix: str = DEFAULT_PREFIX) -> str | None:
        """``edge/pi-17/status`` → ``pi-17`` (None for anything that is not a device topic)."""
        s = Topics.split(topic, prefix)
        return None if s is None else s[0]

    @staticmethod
    def last_level(topic: str) -> str:
        """``edge/pi-17/cmd/ping`` → ``ping`` (the command, model, … a topic names)."""
        return topic.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FleetTopics:
    """Fleet-wide topics and filters for tools and the broker ACL."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_segment(self.prefix, "topic prefix")

    def device(self, device: str) -> Topics:
        return Topics(device, self.prefix)

    def filter(self, kind: str) -> str:
        """``edge/+/<kind>`` (``kind`` may itself have levels: ``results/+``)."""
        return Topics.fleet_filter(kind, self.prefix)

    def announce(self, device: str) -> str:
        return Topics(device, self.prefix).announce

    def group(self, group: str, rest: str) -> str:
        return f"{self.prefix}/{GROUP}/{check_segment(group, 'group')}/{rest}"

    def group_announce(self, group: str) -> str:
        return self.group(group, ANNOUNCE)

    def group_status_want(self, group: str) -> str:
        """Fleet tools ask every member of ``group`` to publish its status again."""
        return self.group(group, STATUS_WANT)

    def group_status_want_filter(self) -> str:
        return f"{self.prefix}/{GROUP}/+/{STATUS_WANT}"

    def group_filter(self, group: str) -> str:
        """Everything a member of ``group`` reads: ``edge/group/<g>/#``."""
        return self.group(group, "#")

    def chunk(self, sha256: str, index: int | str) -> str:
        return f"{self.prefix}/{BLOBS}/{sha256}/{index}"

    @property
    def blobs_filter(self) -> str:
        return f"{self.prefix}/{BLOBS}/#"

    def rollout_progress(self, rollout_id: str) -> str:
        """Retained report of one rollout (``fleet.rollout_core.summary`` + timestamps)."""
        return f"{self.prefix}/{ROLLOUTS}/{check_segment(rollout_id, 'rollout id')}/progress"

    @property
    def rollout_progress_filter(self) -> str:
        return f"{self.prefix}/{ROLLOUTS}/+/progress"

    # --- Mosquitto ACL patterns: %u is substituted with the authenticated user name ------

    def acl_device_write(self) -> str:
        """What a device may write: everything below its own id."""
        return f"{self.prefix}/%u/#"

    @staticmethod
    def acl_device_replies(reply_prefix: str = DEFAULT_REPLY_PREFIX) -> str:
        """Where a device may also write: replies to inference requests that asked for a
        topic (below the reply prefix, outside every device's namespace)."""
        return f"{check_reply_prefix(reply_prefix)}#"

    def acl_device_reads(self) -> tuple[str, ...]:
        """What a device may read besides its groups: its inputs and the shared chunks."""
        own = f"{self.prefix}/%u"
        return (f"{own}/cmd/+", f"{own}/feedback", f"{own}/infer/+", f"{own}/{ANNOUNCE}",
                f"{own}/ha/install", self.blobs_filter)

    def operator_reads(self) -> tuple[str, ...]:
        """What the fleet tools read of every device."""
        return (*(self.filter(k) for k in (*DEVICE_OUTPUT, "results/+", "reply/+",
                                           UPDATE_WANT)), self.rollout_progress_filter)

    def operator_writes(self) -> tuple[str, ...]:
        """What the fleet tools write: commands, feedback, announcements, chunks, and the
        requests to publish statuses again."""
        return (self.filter("cmd/+"), self.filter("feedback"), self.filter(ANNOUNCE),
                f"{self.prefix}/{GROUP}/+/{ANNOUNCE}", self.blobs_filter,
                self.group_status_want_filter(), self.rollout_progress_filter)


def announce_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    return FleetTopics(prefix).announce(device)


def group_announce_topic(group: str, prefix: str = DEFAULT_PREFIX) -> str:
    return FleetTopics(prefix).group_announce(group)


def chunk_topic(sha256: str, index: int | str, prefix: str = DEFAULT_PREFIX) -> str:
    return FleetTopics(prefix).chunk(sha256, index)
