"""What devices tell a rollout, as :class:`~fleet.rollout_core.Observation` s (pure).

Two sources, both JSON documents from :mod:`edge_agent.mqtt` (docs/mqtt.md):

* ``update.*`` events on ``edge/<device>/events`` (the ``data`` part names the model and
  version; docs/update.md lists the kinds) — fast, but not retained: a rollout tool that
  was not running misses them;
* the retained status ``edge/<device>/status``: online/offline, the active version of
  each model, and ``update`` (phase, last outcome) — what a resumed rollout reads.

Nothing here does IO; :mod:`fleet.rollout_run` feeds these functions and folds their
results into :class:`~fleet.rollout_core.RolloutState`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.rollout_core import Observation, Outcome, Target


def _target_of(d: Mapping[str, Any]) -> tuple[str | None, int | None]:
    name = d.get("name") or d.get("model")
    version = d.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        version = None
    return (name if isinstance(name, str) else None), version


_FAILED_RESULTS = ("rejected", "failed", "rolled_back", "abandoned")


def observe_event(device: str, kind: str, data: Mapping[str, Any],
                  target: Target) -> Observation | None:
    """An ``update.*`` event from ``edge/<device>/events`` → an observation about ``target``.

    Events about another model or version are ignored (None). A refusal with code
    ``version`` means the device already has this version or a newer one.
    """
    if not kind.startswith("update."):
        return None
    name, version = _target_of(data)
    if name is not None and name != target.name:
        return None
    if version is not None and version != target.version:
        return None
    if name is None and version is None:
        sha = data.get("sha256") or data.get("target_sha256")
        if not (isinstance(sha, str) and target.sha256 and sha == target.sha256):
            return None
    step = kind.split(".", 1)[1]
    code = str(data.get("code") or "")
    reason = str(data.get("reason") or data.get("message") or "")
    if step == "committed":
        return Observation(device, Outcome.COMMITTED, "committed")
    if step == "ignored" and code == "installed":  # re-announced: it already serves it
        return Observation(device, Outcome.ALREADY, "already installed")
    if step == "failed" and code == "transport":  # transient: the device retries by itself
        return Observation(device, None, f"retrying: {reason}".strip(": "))
    if step in _FAILED_RESULTS:
        if step == "rejected" and code == "version":
            return Observation(device, Outcome.ALREADY, f"rejected: {code}: {reason}".strip())
        return Observation(device, Outcome.FAILED,
                           f"{step}: {code + ': ' if code else ''}{reason}".strip(": "))
    return Observation(device, None, step)


def observe_status(device: str, doc: Mapping[str, Any], target: Target) -> Observation:
    """A retained ``edge/<device>/status`` document → online/offline and, when the status
    carries it, the device's result for ``target`` (active version, last update outcome)."""
    state = doc.get("state")
    online = state != "offline" if isinstance(state, str) else bool(doc)
    if not online:
        return Observation(device, Outcome.OFFLINE, "offline", online=False)
    upd = doc.get("update")
    if isinstance(upd, Mapping):
        last = upd.get("last")
        if isinstance(last, Mapping):
            name, version = _target_of(last)
            result = str(last.get("result") or "")
            if name == target.name and version == target.version:
                if result == "committed":
                    return Observation(device, Outcome.COMMITTED, "committed", online=True)
                if result == "noop" or (result == "rejected" and last.get("code") == "version"):
                    return Observation(device, Outcome.ALREADY, "already", online=True)
                if result in _FAILED_RESULTS and last.get("code") != "transport":
                    return Observation(device, Outcome.FAILED,
                                       f"{result}: {last.get('code', '')}: "
                                       f"{last.get('reason', '')}".strip(": "), online=True)
    active = active_version(doc, target.name)
    if active is not None and active >= target.version:
        # The target (or newer) serves. If an update is still on probation it is not
        # committed yet: only an idle update machine makes it final.
        phase = upd.get("phase") if isinstance(upd, Mapping) else None
        if phase in (None, "idle"):
            return Observation(device, Outcome.ALREADY if active > target.version
                               else Outcome.COMMITTED, "active", online=True)
    return Observation(device, None, "online", online=True)


def active_version(doc: Mapping[str, Any], model: str) -> int | None:
    """The active version of ``model`` in a status document (``models`` list), or None."""
    models = doc.get("models")
    if not isinstance(models, list):
        return None
    for m in models:
        if isinstance(m, Mapping) and m.get("name") == model:
            v = m.get("active")
            return v if isinstance(v, int) and not isinstance(v, bool) else None
    return None
