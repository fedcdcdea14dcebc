"""Staging area for downloads: one preallocated ``<sha256>.part`` file per target.

Resumption needs no bookkeeping file: which chunks are present is found by hashing each
chunk slot of the part file against the *signed* chunk hashes, so a chunk torn by a
crash simply counts as missing, and nothing unverified is ever treated as received.

Raises ``OSError`` for disk trouble, except :meth:`Staging.cleanup`: freeing space is
what a failure on a full disk does first, so it never fails its caller.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path

from edge_agent.update import faults
from edge_agent.update.wire import ChunkPlan

log = logging.getLogger(__name__)


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def part(self, sha256: str) -> Path:
        return self.root / f"{sha256}.part"

    def final(self, sha256: str, target: str = "") -> Path:
        """The verified target's file; a ``.tar.zst`` target stays compressed here."""
        return self.root / f"{sha256}{'.tar.zst' if target.endswith('.tar.zst') else '.tar'}"

    def free_bytes(self) -> int:
        self.ensure()
        return shutil.disk_usage(self.root).free

    def present(self, sha256: str, plan: ChunkPlan) -> set[int]:
        """Indices whose bytes in the part file already hash to the signed value."""
        p = self.part(sha256)
        have: set[int] = set()
        try:
            with open(p, "rb") as f:
                if os.fstat(f.fileno()).st_size != plan.length:
                    return have
                for i in range(plan.count):
                    off, n = plan.span(i)
                    f.seek(off)
                    if hashlib.sha256(f.read(n)).hexdigest() == plan.hashes[i]:
                        have.add(i)
        except FileNotFoundError:
            pass
        return have

    def open_part(self, sha256: str, length: int) -> int:
        """A read/write fd on the part file, sized to ``length`` (sparse); caller closes."""
        self.ensure()
        faults.disk_error("staging", self.part(sha256))
        fd = os.open(self.part(sha256), os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size != length:
            os.ftruncate(fd, length)
        return fd

    @staticmethod
    def write_at(fd: int, offset: int, data: bytes) -> None:
        """Write all of ``data`` at ``offset``. A nearly full disk takes part of a write
        and returns short: writing on surfaces the ENOSPC (a chunk silently cut short
        would only fail the final sha256, blaming the release for the disk)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(errno.EIO, f"write made no progress at offset {offset}")
            view, offset = view[n:], offset + n

    def cleanup(self, keep: set[str]) -> int:
        """Remove staged files of every target not in ``keep`` (sha256 values); returns the
        bytes freed. Best effort: a file that cannot be removed (read-only or failing
        disk) is logged and left, never raised."""
        freed = 0
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning("update: cannot list staging %s: %s", self.root, e)
            return 0
        for p in entries:
            if p.name.split(".")[0] in keep:
                continue
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    size = p.lstat().st_blocks * 512
                    p.unlink()
                    freed += size
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("update: cannot remove staged %s: %s", p, e)
        return freed
