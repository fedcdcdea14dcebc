"""The closed vocabularies of the device↔fleet contract, as ``StrEnum`` s.

Every event kind the agent emits, every result an update attempt can end with, every
phase of the update machine, the device states of the retained status, the LiteRT
runtime names and the levels of an event. Members *are* strings (``EventKind.MODEL_LOADED
== "model.loaded"``), so they go on the wire unchanged and compare equal to what an
older device sends. docs/mqtt.md lists them; tests/test_protocol.py keeps the two in sync.

Pure: no IO, no imports beyond the standard library.
"""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, enum.Enum):
        """``enum.StrEnum`` for Python 3.10: members are strs and print as their value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


__all__ = [
    "RESULT_MEANING",
    "RETRIED_CODES",
    "RUNTIME_CHOICES",
    "RUNTIME_NAMES",
    "UPDATE_STOPPED",
    "DeviceState",
    "EventKind",
    "Level",
    "RuntimeName",
    "StrEnum",
    "UpdatePhase",
    "UpdateResult",
    "probe_event_kind",
]


class Level(StrEnum):
    """How bad an event is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class EventKind(StrEnum):
    """The ``kind`` of a message on ``edge/<device>/events`` (dotted: room.what)."""

    # the agent itself
    AGENT_STARTED = "agent.started"
    AGENT_STOPPED = "agent.stopped"
    AGENT_RELOADED = "agent.reloaded"
    COMPONENT_FAILED = "component.failed"
    # models and runtimes
    MODEL_LOADED = "model.loaded"
    MODEL_LOAD_FAILED = "model.load_failed"
    MODEL_FALLBACK = "model.fallback"
    MODEL_DEGRADED = "model.degraded"  # serving a less preferred variant (edge_agent.variants)
    MODEL_RECOVERED = "model.recovered"  # back on the preferred variant
    DELEGATE_UNAVAILABLE = "delegate.unavailable"
    RUNTIME_PROBE_OK = "runtime.probe_ok"
    RUNTIME_PROBE_CRASHED = "runtime.probe_crashed"
    RUNTIME_PROBE_TIMEOUT = "runtime.probe_timeout"
    RUNTIME_PROBE_LOAD_FAILED = "runtime.probe_load_failed"
    RUNTIME_PROBE_GOLDEN_MISMATCH = "runtime.probe_golden_mismatch"
    RUNTIME_PROBE_NOT_INSTALLED = "runtime.probe_not_installed"
    RUNTIME_PROBE_TOO_OLD = "runtime.probe_too_old"
    RUNTIME_PROBE_ERROR = "runtime.probe_error"
    # input sources
    SOURCE_FAILED = "source.failed"
    SOURCE_NO_OUTPUT = "source.no_output"
    # quality
    DRIFT_DETECTED = "drift.detected"
    DRIFT_CLEARED = "drift.cleared"
    # data capture (docs/capture.md)
    CAPTURE_STORE_FULL = "capture.store_full"
    CAPTURE_SKIPPED = "capture.skipped"
    # transport
    MQTT_BAD_MESSAGE = "mqtt.bad_message"
    MQTT_PUBLISH_REFUSED = "mqtt.publish_refused"
    OUTBOX_RESET = "outbox.reset"
    OUTBOX_DROPPED = "outbox.dropped"
    # signed updates (docs/update.md), in the order a successful update emits them
    UPDATE_NOTIFIED = "update.notified"
    UPDATE_RESUMED = "update.resumed"
    UPDATE_DOWNLOADING = "update.downloading"
    UPDATE_PROGRESS = "update.progress"
    UPDATE_DOWNLOADED = "update.downloaded"
    UPDATE_VERIFIED = "update.verified"
    UPDATE_TEST_LOADED = "update.test_loaded"
    UPDATE_GOLDEN_OK = "update.golden_ok"
    UPDATE_ACTIVATED = "update.activated"
    UPDATE_PROBATION = "update.probation"
    UPDATE_COMMITTED = "update.committed"
    UPDATE_ROLLED_BACK = "update.rolled_back"
    UPDATE_ROLLBACK_COMMAND = "update.rollback_command"
    UPDATE_IGNORED = "update.ignored"
    UPDATE_REJECTED = "update.rejected"
    UPDATE_FAILED = "update.failed"
    # shadow evaluation of a candidate before promotion (docs/update.md#shadow-evaluation)
    SHADOW_STARTED = "shadow.started"
    SHADOW_PROGRESS = "shadow.progress"
    SHADOW_PASSED = "shadow.passed"
    SHADOW_FAILED = "shadow.failed"

    @property
    def room(self) -> str:
        """``"update"`` for ``update.committed``: the part before the dot."""
        return self.value.split(".", 1)[0]

    @property
    def step(self) -> str:
        """``"committed"`` for ``update.committed``: the part after the dot."""
        return self.value.split(".", 1)[1]


def probe_event_kind(outcome: str) -> EventKind:
    """The event for a runtime probe verdict (``"load-failed"`` → ``runtime.probe_load_failed``).

    Raises ValueError for an outcome the probe does not produce.
    """
    return EventKind(f"runtime.probe_{outcome.replace('-', '_')}")


class UpdateResult(StrEnum):
    """``result`` of an update attempt (``update.last`` in the status, ``Outcome.result``)."""

    COMMITTED = "committed"
    REJECTED = "rejected"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ABANDONED = "abandoned"
    NOOP = "noop"
    INTERRUPTED = "interrupted"


# ``code`` of an ``update.failed`` the device retries by itself (after retry_backoff_s):
# trouble of the transport or of the device's own disk, never the release's fault, so
# a rollout does not count it against the release. ``deadline``: a source still sending
# at update.download_timeout_s was abandoned (a dripping mirror). ``disk``: not enough free space
# before staging; ``disk_full`` / ``read_only`` / ``io_error``: a write failed with
# ENOSPC or EDQUOT / EROFS / EIO.
RETRIED_CODES: tuple[str, ...] = ("transport", "deadline", "disk", "disk_full", "read_only",
                                 "io_error")

RESULT_MEANING: dict[UpdateResult, str] = {
    UpdateResult.COMMITTED: "the new version passed probation and serves",
    UpdateResult.REJECTED: "refused before the swap (bad, malicious, or not for this device)",
    UpdateResult.FAILED: "transient (code " + ", ".join(f"`{c}`" for c in RETRIED_CODES)
                         + "): retried; the announcement stays unsettled",
    UpdateResult.ROLLED_BACK: "swapped, then failed probation, or a signed rollback command",
    UpdateResult.ABANDONED: "given up after repeated restarts, or the state file was unreadable",
    UpdateResult.NOOP: "nothing to do: already installed, or a command already carried out",
    UpdateResult.INTERRUPTED: "the agent was stopping; the update resumes at the next start",
}


class UpdatePhase(StrEnum):
    """Phases of the update state machine (``update.phase`` in the status)."""

    IDLE = "idle"
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    TEST_LOADING = "test_loading"
    GOLDEN = "golden"
    SHADOW = "shadow"  # a shadow release: verified, not active, compared on live requests
    SWAPPING = "swapping"
    PROBATION = "probation"
    ROLLING_BACK = "rolling_back"


UPDATE_STOPPED = "stopped"  # ``update.phase`` of a configured update component not running


class DeviceState(StrEnum):
    """``state`` of the retained ``edge/<device>/status``."""

    ONLINE = "online"  # the birth
    OFFLINE = "offline"  # the Last Will, or a clean stop


class RuntimeName(StrEnum):
    """The LiteRT runtimes the agent can load, in the default order of preference."""

    AI_EDGE_LITERT = "ai-edge-litert"
    TFLITE_RUNTIME = "tflite-runtime"
    TENSORFLOW = "tensorflow"  # tf.lite: heavy, for workstations and tests


RUNTIME_NAMES: tuple[str, ...] = tuple(r.value for r in RuntimeName)
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *RUNTIME_NAMES)  # ``[agent] runtime``
