"""Fault-injection seam for crash tests: ``EDGE_UPDATE_FAULT=<action>@<point>[,…]``.

``kill@swapping`` SIGKILLs the agent right after ``state.json`` says ``swapping``;
``kill@chunk:3`` after the 3rd chunk is written; ``pause@golden:2.5`` sleeps 2.5 s.
Points are the phase names plus ``chunk:<n>``, ``installed``, ``activated``,
``committing``, and ``check``: inside the candidate-check child process
(:mod:`edge_agent.update.check_child`), where the interpreter is about to be created —
so ``kill@check`` kills that child, not the agent; and ``shadow_child``: inside a shadow
candidate's process (:mod:`edge_agent.shadow.child`), before each shadowed request.

Actions: ``kill`` (SIGKILL), ``segv`` (a real SIGSEGV in native code: a NULL read through
ctypes), ``pause@<point>:<seconds>``, and ``alloc@<point>:<MiB>`` (allocates and keeps
that much memory: a memory-hungry model, as the memory limit sees it).

Disk errors (:func:`disk_error`): ``enospc@state`` makes every write of ``state.json``
raise ``OSError(ENOSPC)``, ``enospc@staging`` every opening of a download's staging
file; ``eio@…`` and ``erofs@…`` raise EIO / EROFS instead.

Unset in production (setting it needs control of the agent's environment, which already
means control of the device).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

ENV = "EDGE_UPDATE_FAULT"
_HELD: list[bytearray] = []  # what ``alloc`` took, kept until the process ends
DISK_ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO, "erofs": errno.EROFS}


def _items() -> list[tuple[str, str]]:
    spec = os.environ.get(ENV)
    if not spec:
        return []
    return [(a, w) for a, _, w in (item.strip().partition("@") for item in spec.split(","))]


def point(name: str) -> None:
    """Reached a named point of the flow: apply a matching fault, if one is configured."""
    for action, where in _items():
        target, _, arg = where.rpartition(":")  # for the actions taking an argument
        if action == "kill" and where == name:
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "segv" and where == name:
            import ctypes

            ctypes.string_at(0)
        elif action == "pause" and target == name:
            time.sleep(float(arg))
        elif action == "alloc" and target == name:
            _HELD.append(bytearray(int(arg) << 20))


def disk_error(name: str, path: Path) -> None:
    """About to write ``path`` at disk point ``name`` (``state``, ``staging``): raise the
    configured disk error as the kernel would (``OSError`` with errno and filename)."""
    for action, where in _items():
        if where == name and action in DISK_ERRNO:
            code = DISK_ERRNO[action]
            raise OSError(code, os.strerror(code), str(path))
