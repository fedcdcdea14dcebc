"""Fault-injection seam for crash tests: ``EDGE_UPDATE_FAULT=<action>@<point>[,…]``.

``kill@swapping`` SIGKILLs the agent right after ``state.json`` says ``swapping``;
``kill@chunk:3`` after the 3rd chunk is written; ``pause@golden:2.5`` sleeps 2.5 s.
Points are the phase names plus ``chunk:<n>``, ``installed``, ``activated``,
``committing``. Unset in production (setting it needs control of the agent's
environment, which already means control of the device).
"""

from __future__ import annotations

import os
import signal
import time

ENV = "EDGE_UPDATE_FAULT"


def point(name: str) -> None:
    """Reached a named point of the flow: apply a matching fault, if one is configured."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        if action == "kill" and where == name:
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "pause":
            target, _, secs = where.rpartition(":")
            if target == name:
                time.sleep(float(secs))
