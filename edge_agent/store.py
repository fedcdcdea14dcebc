"""The on-disk model store: every installed bundle version, and which one is active.

Layout (all writes atomic; a crash leaves the old or the new state, never a part)::

    <root>/models/<name>/<version>/{model.tflite,manifest.json,report.json}
    <root>/models/<name>/<version>/bundle.sealed   (an encrypted bundle: kept encrypted)
    <root>/models/<name>/active.json     {"version": 3, "previous": 2}

A version directory is complete or absent (written to a temp dir, then renamed).
Raises BundleError for unreadable bundles, OSError for disk trouble.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edge_agent.bundle import MAX_BUNDLE_BYTES, Bundle, read_bundle, read_tar_file, write_bundle
from edge_agent.crypto import SEALED_FILE, is_sealed_file
from edge_agent.errors import BundleError
from edge_agent.fsutil import atomic_write_text, staged_dir
from edge_agent.manifest import NAME_RE


def read_target(path: Path, device_key: Path | None, *, source: str, max_bytes: int
                ) -> Bundle:
    """A bundle tar, or a sealed bundle decrypted in memory with ``device_key`` (the agent
    and the check child read staged targets alike). Raises BundleError, OSError."""
    if not is_sealed_file(path):
        return read_tar_file(path, source=source, max_bytes=max_bytes)
    from edge_agent.crypto.device_key import DeviceKeys, read_sealed_file  # cryptography: lazy
    return read_sealed_file(path, DeviceKeys(device_key), max_bytes=max_bytes, source=source)


def check_name(name: str) -> str:
    """Model names become path components: refuse anything that could escape the store."""
    if not NAME_RE.match(name):
        raise BundleError(f"model name {name!r} must match {NAME_RE.pattern}")
    return name


class ModelStore:
    """``max_bundle_bytes`` bounds every bundle read (``[agent] max_bundle_bytes``)."""

    def __init__(self, root: str | Path, *, max_bundle_bytes: int = MAX_BUNDLE_BYTES,
                 device_key: Path | None = None) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.max_bundle_bytes = max_bundle_bytes
        self.device_key = device_key  # [agent] device_key: opens sealed bundles

    def read(self, path: str | Path) -> Bundle:
        """A bundle from disk (installed, ``--model``, ``[[models]]``), read within the
        store's bound; a sealed one is decrypted in memory. Raises BundleError."""
        p = Path(path)
        sealed = p / SEALED_FILE if p.is_dir() else p
        try:
            if is_sealed_file(sealed):
                return read_target(sealed, self.device_key, source=str(sealed),
                                   max_bytes=self.max_bundle_bytes)
        except OSError as e:
            raise BundleError(f"{p}: cannot read: {e.strerror or e}") from e
        return read_bundle(path, max_bytes=self.max_bundle_bytes)

    def read_target(self, path: Path, *, source: str, max_bytes: int) -> Bundle:
        """A staged update target, read within its signed length (:func:`read_target`)."""
        return read_target(path, self.device_key, source=source, max_bytes=max_bytes)

    def ensure(self) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)

    def version_dir(self, name: str, version: int) -> Path:
        return self.models_dir / check_name(name) / str(int(version))

    def names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir()
                      if p.is_dir() and NAME_RE.match(p.name))

    def versions(self, name: str) -> list[int]:
        d = self.models_dir / check_name(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir()
                      if p.is_dir() and p.name.isdigit() and ((p / "manifest.json").exists()
                                                            or (p / SEALED_FILE).exists()))

    def install(self, bundle: Bundle) -> Path:
        """Write ``bundle`` as ``<name>/<version>``; an identical existing copy is kept."""
        self.ensure()
        dest = self.version_dir(bundle.name, bundle.version)
        if dest.is_dir():
            try:
                existing = self.read(dest)
                if existing.manifest.model_sha256 == bundle.manifest.model_sha256:
                    return dest
            except BundleError:
                pass  # damaged copy: replace it
        if bundle.sealed is not None:  # encrypted at rest: the envelope, never the plaintext
            with staged_dir(dest) as tmp:
                (tmp / SEALED_FILE).write_bytes(bundle.sealed)
            return dest
        write_bundle(bundle, dest)
        return dest

    def load(self, name: str, version: int) -> Bundle:
        return self.read(self.version_dir(name, version))

    def _active_file(self, name: str) -> Path:
        return self.models_dir / check_name(name) / "active.json"

    def active_version(self, name: str) -> int | None:
        """The version to serve; ``None`` if never set (then the highest version is used)."""
        f = self._active_file(name)
        try:
            data = json.loads(f.read_text())
            return int(data["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{f}: unreadable active-version file ({e})") from e

    def previous_version(self, name: str) -> int | None:
        try:
            data = json.loads(self._active_file(name).read_text())
            prev = data.get("previous")
            return int(prev) if prev is not None else None
        except (OSError, ValueError, TypeError):
            return None

    def set_active(self, name: str, version: int) -> None:
        """Atomically make ``version`` the active one, remembering the one it replaces."""
        if version not in self.versions(name):
            raise BundleError(f"{name} version {version} is not installed")
        prev = self.active_version(name)
        doc = {"version": int(version), "previous": prev if prev != version else
               self.previous_version(name)}
        atomic_write_text(self._active_file(name), json.dumps(doc) + "\n")

    def serving_version(self, name: str) -> int | None:
        """Active version if set and installed, else the highest installed version."""
        vs = self.versions(name)
        act = self.active_version(name)
        if act is not None and act in vs:
            return act
        return vs[-1] if vs else None

    def remove(self, name: str, version: int) -> None:
        shutil.rmtree(self.version_dir(name, version), ignore_errors=True)

    def prune(self, name: str, keep: int) -> list[int]:
        """Keep the ``keep`` newest versions plus the active and previous; return removed."""
        vs = self.versions(name)
        protect = {self.active_version(name), self.previous_version(name)}
        removed = []
        for v in vs[:-keep] if keep > 0 else vs:
            if v not in protect:
                self.remove(name, v)
                removed.append(v)
        return removed
