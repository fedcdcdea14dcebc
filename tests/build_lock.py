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
import os
import shutil
from collections.abc import Callable, Iterator
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


def cached_build(out: Path, done: str, build: Callable[[Path], None]) -> Path:
    """``out``, built once across processes: under :func:`build_lock`, unless ``out / done``
    exists (the last file a build writes), ``build(tmp)`` fills a fresh sibling directory
    that then replaces ``out`` — never half a cache. Returns ``out``."""
    with build_lock(out):
        if not (out / done).exists():
            tmp = out.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            build(tmp)
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    return out
