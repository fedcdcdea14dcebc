"""One builder per cached test artefact, across processes.

The suite runs in several pytest-xdist workers (scripts/test.sh), and CI steps may run beside
it, while session fixtures build artefacts into the shared ``.cache/test-artifacts``. Each
build runs under :func:`build_lock`: an exclusive ``fcntl.flock`` on ``<artefact>.lock``
beside it, held while the fixture checks for a finished build and, if there is none, builds
into a sibling and renames it into place. A second worker waits, then finds the finished
build and reuses it; nobody ever sees (or deletes) half a build.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def build_lock(artefact: Path) -> Iterator[None]:
    """Hold the exclusive build lock of ``artefact`` (a file or directory path) until exit.

    The lock file ``<artefact>.lock`` lives in the artefact's parent directory (created if
    missing); the lock goes with the process, so a killed builder does not block the next.
    """
    artefact.parent.mkdir(parents=True, exist_ok=True)
    with open(artefact.parent / f"{artefact.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
