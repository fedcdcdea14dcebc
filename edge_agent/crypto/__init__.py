"""Confidentiality of bundles: the sealed envelope (pure, :mod:`.sealed`) and the device
key pair on disk (IO shell, :mod:`.device_key`). See docs/security.md, *Encrypted bundles*."""

from pathlib import Path

# constants the store needs without importing ``cryptography`` (kept lazy for idle RSS)
MAGIC = b"EDGESEAL"  # the first bytes of every sealed bundle
SEALED_FILE = "bundle.sealed"  # an installed sealed version: <store>/models/<n>/<v>/bundle.sealed


def is_sealed_file(path: Path) -> bool:
    """Whether ``path`` is a sealed bundle file (its magic), without ``cryptography``."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC
