"""Fault-injection seam for crash tests: ``EDGE_UPDATE_FAULT=<action>@<point>[,…]``.

``kill@swapping`` SIGKILLs the agent right after ``state.json`` says ``swapping``;
``kill@chunk:3`` after the 3rd chunk is written; ``pause@golden:2.5`` sleeps 2.5 s.
Points are the phase names plus ``chunk:<n>``, ``installed``, ``activated``,
``committing``. Unset in production (setting it needs control of the agent's
environment, which already means control of the device).

Disk errors (:func:`disk_error`): ``enospc@state`` makes every write of ``state.json``
raise ``OSError(ENOSPC)``, ``enospc@staging`` every opening of a download's staging
file; ``eio@…`` and ``erofs@…`` raise EIO / EROFS instead.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

ENV = "EDGE_UPDATE_FAULT"
DISK_ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO, "erofs": errno.EROFS}


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


def disk_error(name: str, path: Path) -> None:
    """About to write ``path`` at disk point ``name`` (``state``, ``staging``): raise the
    configured disk error as the kernel would (``OSError`` with errno and filename)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        if where == name and action in DISK_ERRNO:
            code = DISK_ERRNO[action]
            raise OSError(code, os.strerror(code), str(path))
