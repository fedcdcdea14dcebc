"""Model-level moves of the update flow: install + atomic swap, and restore (rollback).

The swap order keeps a crash harmless at every instant: the version directory is
written atomically first (not yet active), then the registry serves the new version
(in-flight requests finish on the old interpreter), then ``active.json`` is replaced
atomically. A crash before the last step restarts on the old version.
"""

from __future__ import annotations

import logging

from edge_agent.bundle import Bundle
from edge_agent.errors import BundleError, NotFoundError
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.store import ModelStore
from edge_agent.update import faults

log = logging.getLogger(__name__)


def install_and_activate(registry: ModelRegistry, store: ModelStore, bundle: Bundle,
                         served: ServedModel) -> None:
    """Install, serve, persist. On a disk error the registry is put back; raises OSError."""
    name = bundle.name
    before = registry.active_version(name)
    store.install(bundle)
    faults.point("installed")
    registry.add(served, activate=True)
    faults.point("activated")
    try:
        store.set_active(name, bundle.version)
    except (OSError, BundleError):
        if before is not None:
            registry.activate(name, before)
        registry.unload(name, bundle.version)
        raise
    faults.point("persisted")


def ensure_serving(registry: ModelRegistry, store: ModelStore, name: str, version: int) -> None:
    """Make ``version`` the active served version, loading it from the store if needed."""
    try:
        registry.activate(name, version)
    except NotFoundError:
        registry.load(store.load(name, version), activate=True, verify=False)


def restore(registry: ModelRegistry, store: ModelStore, name: str, good: int | None,
            bad: int | None) -> OSError | None:
    """Serve ``good`` again (or nothing of ``name`` if there was no earlier version) and
    drop ``bad`` from memory and disk. Idempotent: safe to repeat after a crash.

    The safe direction is never held back by the disk: ``good`` serves from memory first,
    ``bad``'s directory is deleted before ``active.json`` is written (on a full disk that
    frees the space the write needs), and a write that still fails is returned, not
    raised — with ``bad`` gone from the store, a restart serves ``good`` anyway (the
    store falls back to the highest installed version) and recovery repeats this.
    """
    if good is not None:
        ensure_serving(registry, store, name, good)
    if bad is not None and bad != good:
        try:
            registry.unload(name, bad)
        except NotFoundError:
            pass
        store.remove(name, bad)
    if good is None:
        return None
    try:
        faults.disk_error("active", store.models_dir / name / "active.json")
        store.set_active(name, good)
    except OSError as e:
        log.error("update: active.json of %s not written (%s); v%s serves from memory", name,
                  e, good)
        return e
    return None
