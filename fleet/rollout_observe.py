"""What devices tell a rollout, as :class:`~fleet.rollout_core.Observation` s (pure).

Two sources, both JSON documents from :mod:`edge_agent.mqtt` (docs/mqtt.md):

* ``update.*`` events on ``edge/<device>/events`` (the ``data`` part names the model and
  version; docs/mqtt.md lists the kinds) — fast, but not retained: a rollout tool that
  was not running misses them;
* the retained status ``edge/<device>/status``: online/offline, the active version of
  each model, and ``update`` (phase, last outcome) — what a resumed rollout reads.

Both are read through :mod:`edge_agent.protocol` (no guessing at field names). Nothing
here does IO; :mod:`fleet.rollout_run` feeds these functions and folds their
results into :class:`~fleet.rollout_core.RolloutState`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_agent.protocol import (
    RETRIED_CODES,
    DeviceState,
    EventKind,
    ProtocolError,
    Status,
    UpdateOutcome,
    UpdatePhase,
    UpdateResult,
)
from fleet.rollout_core import Observation, Outcome, Target

_FAILED_RESULTS = (UpdateResult.REJECTED, UpdateResult.FAILED, UpdateResult.ROLLED_BACK,
                   UpdateResult.ABANDONED)
# the event that ends an attempt with each result (update.ignored: a noop re-announcement)
_RESULT_OF_EVENT = {EventKind.UPDATE_COMMITTED: UpdateResult.COMMITTED,
                    EventKind.UPDATE_REJECTED: UpdateResult.REJECTED,
                    EventKind.UPDATE_FAILED: UpdateResult.FAILED,
                    EventKind.UPDATE_ROLLED_BACK: UpdateResult.ROLLED_BACK,
                    EventKind.UPDATE_IGNORED: UpdateResult.NOOP}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def observe_event(device: str, kind: str, data: Mapping[str, Any],
                  target: Target) -> Observation | None:
    """An ``update.*`` event from ``edge/<device>/events`` → an observation about ``target``.

    Every ``update.*`` event's ``data`` names the model and version (``name``,
    ``version``; docs/mqtt.md); a rejected announcement names neither, and is matched by
    the ``sha256`` of an ``update.verified``, if any. Events about another model or
    version are ignored (None). A refusal with code ``version`` means the device already
    has this version or a newer one.
    """
    try:
        k = EventKind(kind)
    except ValueError:
        k = None
    if k is None or k.room != "update":
        return None
    name, version = _str(data.get("name")), _int(data.get("version"))
    if name is not None and name != target.name:
        return None
    if version is not None and version != target.version:
        return None
    if name is None and version is None:
        sha = data.get("sha256")
        if not (isinstance(sha, str) and target.sha256 and sha == target.sha256):
            return None
    code = str(data.get("code") or "")
    reason = str(data.get("reason") or "")
    result = _RESULT_OF_EVENT.get(k)
    if result == UpdateResult.COMMITTED:
        return Observation(device, Outcome.COMMITTED, "committed")
    if result == UpdateResult.NOOP and code == "installed":  # re-announced: already serves it
        return Observation(device, Outcome.ALREADY, "already installed")
    if result == UpdateResult.FAILED and code in RETRIED_CODES:  # transient: it retries itself
        return Observation(device, None, f"retrying: {reason}".strip(": "))
    if result in _FAILED_RESULTS:
        if result == UpdateResult.REJECTED and code == "version":
            return Observation(device, Outcome.ALREADY, f"rejected: {code}: {reason}".strip())
        return Observation(device, Outcome.FAILED,
                           f"{k.step}: {code + ': ' if code else ''}{reason}".strip(": "))
    return Observation(device, None, k.step)


def _last_for(last: UpdateOutcome | None, target: Target) -> UpdateOutcome | None:
    if last is not None and last.name == target.name and last.version == target.version:
        return last
    return None


def observe_status(device: str, doc: Status | Mapping[str, Any],
                   target: Target) -> Observation:
    """A retained ``edge/<device>/status`` → online/offline and, when the status carries
    it, the device's result for ``target`` (active version, last update outcome).

    ``doc`` is a parsed :class:`Status` or its body; an empty body (the retained status
    was deleted) counts as offline, one that does not parse as online with nothing known.
    """
    if isinstance(doc, Mapping):
        if not doc:
            return Observation(device, Outcome.OFFLINE, "offline", online=False)
        try:
            doc = Status.from_dict(doc)
        except ProtocolError as e:
            return Observation(device, None, f"unreadable status: {e}", online=True)
    if doc.state == DeviceState.OFFLINE:
        return Observation(device, Outcome.OFFLINE, "offline", online=False)
    upd = doc.update
    last = _last_for(upd.last if upd is not None else None, target)
    if last is not None:
        if last.result == UpdateResult.COMMITTED:
            return Observation(device, Outcome.COMMITTED, "committed", online=True)
        if last.result == UpdateResult.NOOP or (last.result == UpdateResult.REJECTED
                                                and last.code == "version"):
            return Observation(device, Outcome.ALREADY, "already", online=True)
        if last.result in _FAILED_RESULTS and not (last.result == UpdateResult.FAILED
                                                   and last.code in RETRIED_CODES):
            return Observation(device, Outcome.FAILED,
                               f"{last.result}: {last.code}: {last.reason}".strip(": "),
                               online=True)
    active = doc.active_version(target.name)
    # The target (or newer) serves. If an update is still on probation it is not committed
    # yet: only an idle update machine makes it final.
    if active is not None and active >= target.version \
            and (upd is None or upd.phase == UpdatePhase.IDLE):
        return Observation(device, Outcome.ALREADY if active > target.version
                           else Outcome.COMMITTED, "active", online=True)
    return Observation(device, None, "online", online=True)


def active_version(doc: Status | None, model: str) -> int | None:
    """The active version of ``model`` in a status, or None."""
    return None if doc is None else doc.active_version(model)
