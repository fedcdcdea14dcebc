"""Device key rotation, the device's side (docs/security.md, *Key rotation*).

``edge-agent keygen --rotate`` makes a new key and keeps the old one as
``<key>.previous``, so the versions installed sealed for the old key still open. The old
key is **retired** (the file removed) by :func:`retire_previous`:

- automatically, when a release sealed for the *new* key commits (:func:`on_commit`, called
  by the update flow): the fleet has the new key, so from now on releases come for it;
- or explicitly, ``edge-agent keygen --retire`` (the operator's grace ends when they say).

Retiring first re-wraps every installed ``bundle.sealed`` that only the old key opens
(:func:`edge_agent.crypto.sealed.rewrap`: a new recipient entry for the new key, the
encrypted parts untouched, the file replaced atomically), so rollback targets keep
opening; only then is the old key removed. A version that neither key opens is left as it
is and named in the report. Raises nothing for a missing previous key (nothing to do);
OSError for an unwritable store; SealedBundleError for a key file that does not parse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.bundle import MAX_BUNDLE_BYTES
from edge_agent.crypto import SEALED_FILE, is_sealed_file
from edge_agent.crypto.device_key import DeviceKeys, previous_path
from edge_agent.crypto.sealed import SealedBundleError, parse_header, rewrap
from edge_agent.fsutil import atomic_write_bytes

__all__ = ["RetireReport", "on_commit", "retire_previous"]

log = logging.getLogger(__name__)


@dataclass
class RetireReport:
    retired: str | None = None  # fingerprint of the key removed
    rewrapped: list[str] = field(default_factory=list)  # bundle.sealed files re-wrapped
    unopenable: list[str] = field(default_factory=list)  # for neither key: left as they are


def _installed_sealed(store_root: Path) -> list[Path]:
    return sorted(p for p in (store_root / "models").glob(f"*/*/{SEALED_FILE}")
                  if is_sealed_file(p))


def retire_previous(key_path: Path, store_root: Path) -> RetireReport:
    """Re-wrap what only ``<key>.previous`` opens for the current key, then remove it."""
    prev = previous_path(key_path)
    rep = RetireReport()
    if not prev.is_file():
        return rep
    keys = DeviceKeys(key_path)
    cur_fid, old_fid = keys.current(), keys.previous()
    if cur_fid is None or old_fid is None:  # no current key: never drop the only one left
        raise SealedBundleError(f"{key_path}: no current key; refusing to retire "
                                f"{prev.name}", code="device_key_missing")
    mine = keys.keys()
    for p in _installed_sealed(store_root):
        data = p.read_bytes()
        try:
            ids = {r.id for r in parse_header(data, max_bytes=MAX_BUNDLE_BYTES).recipients}
        except SealedBundleError:
            rep.unopenable.append(str(p))
            continue
        if cur_fid in ids:
            continue
        if old_fid not in ids:
            rep.unopenable.append(str(p))
            continue
        new = rewrap(data, mine[old_fid], mine[cur_fid].public_key(), max_bytes=MAX_BUNDLE_BYTES)
        atomic_write_bytes(p, new)
        rep.rewrapped.append(str(p))
    prev.unlink()
    rep.retired = old_fid
    log.info("device key %s retired (%d installed version(s) re-wrapped for %s)", old_fid,
             len(rep.rewrapped), cur_fid)
    return rep


def on_commit(key_path: Path, store_root: Path, committed: Path) -> RetireReport | None:
    """After a commit: retire the previous key if ``committed`` (a version directory) is
    sealed for the current key. None when there is nothing to retire."""
    sealed = committed / SEALED_FILE
    if not previous_path(key_path).is_file() or not is_sealed_file(sealed):
        return None
    cur = DeviceKeys(key_path).current()
    ids = {r.id for r in parse_header(sealed.read_bytes(),
                                      max_bytes=MAX_BUNDLE_BYTES).recipients}
    if cur is None or cur not in ids:
        return None
    return retire_previous(key_path, store_root)

