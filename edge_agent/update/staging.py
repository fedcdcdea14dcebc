"""Staging area for downloads: one preallocated ``<sha256>.part`` file per target.

Resumption needs no bookkeeping file: which chunks are present is found by hashing each
chunk slot of the part file against the *signed* chunk hashes, so a chunk torn by a
crash simply counts as missing, and nothing unverified is ever treated as received.

Raises ``OSError`` for disk trouble.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from edge_agent.update.wire import ChunkPlan


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def part(self, sha256: str) -> Path:
        return self.root / f"{sha256}.part"

    def final(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

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
        fd = os.open(self.part(sha256), os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size != length:
            os.ftruncate(fd, length)
        return fd

    def cleanup(self, keep: set[str]) -> None:
        """Remove staged files of every target not in ``keep`` (sha256 values)."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.name.split(".")[0] not in keep:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
