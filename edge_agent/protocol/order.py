"""Which of two status messages of one device is newer (docs/mqtt.md "Ordering statuses").

Pure, no I/O. Why not ``seq`` or ``ts`` alone: the Last Will is handed to the broker at
CONNECT, so its ``seq`` and ``ts`` are those of the connection's start — older than every
birth the device publishes during that connection. A consumer that kept "the highest seq"
would show a killed device as online. MQTT has no way to update a Will without a new
CONNECT, so the rule is carried in two fields every status has:

* ``boot_id`` — changes with every process start;
* ``session`` — the connection number within that boot (1, 2, …; the Will of connection
  *n* says ``n``, and so does every birth and the clean-shutdown status of connection *n*).

The rule, for two statuses *a* (held) and *b* (arriving) of the same device:

1. same ``boot_id`` and both carry ``session``: the higher ``session`` is newer; within
   one session an **offline** status is newer than any online one (a connection ends once);
   between two statuses of the same state, the higher ``seq``, then ``ts``;
2. otherwise (another boot, or a status without these fields): the higher ``(seq, ts)`` —
   the durable ``seq`` never goes back across restarts.

Raises nothing: fields of the wrong type count as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["newer_status", "status_key"]


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def status_key(doc: Mapping[str, Any]) -> tuple[int, int, int, float]:
    """``(session, offline, seq, ts)``: orders the statuses of one boot (rule 1)."""
    return (_int(doc.get("session")) or 0, 1 if doc.get("state") == "offline" else 0,
            _int(doc.get("seq")) or 0, _num(doc.get("ts")))


def newer_status(held: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True if ``new`` supersedes ``held`` (``None``: nothing held yet)."""
    if held is None:
        return True
    boot = held.get("boot_id")
    if isinstance(boot, str) and boot and boot == new.get("boot_id") \
            and _int(held.get("session")) is not None and _int(new.get("session")) is not None:
        return status_key(new) >= status_key(held)
    return (_int(new.get("seq")) or 0, _num(new.get("ts"))) >= \
        (_int(held.get("seq")) or 0, _num(held.get("ts")))
