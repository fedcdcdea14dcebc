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


def retire_after_commit(key: Path | None, store_root: Path, version_dir: Path) -> str | None:
    """The update flow's hook after a commit: when the committed version is sealed for
    the current key and a rotation left ``<key>.previous``, retire it
    (:func:`edge_agent.crypto.rotation.on_commit`). Returns the retired fingerprint, or
    None; never raises (a failure is logged and the old key kept, which is safe)."""
    if key is None or not key.with_name(key.name + ".previous").is_file():
        return None  # the common case: no rotation pending, no `cryptography` import
    import logging

    from edge_agent.crypto.rotation import on_commit
    from edge_agent.errors import BundleError
    try:
        rep = on_commit(key, store_root, version_dir)
    except (OSError, BundleError) as e:
        logging.getLogger(__name__).warning("device key: retiring %s.previous failed: %s",
                                            key.name, e)
        return None
    return rep.retired if rep else None
