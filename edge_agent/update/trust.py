"""The device's TUF client state: the provisioned root and the trusted metadata directory.

python-tuf's ngclient does the trust work (root chain, thresholds, expiry, version
rollback, snapshot/targets consistency, target length and hashes) and persists each
newly trusted metadata file atomically *before* using it, so the highest trusted
versions survive restarts and can only move forward. This module wires it to our
fetcher and maps its exceptions onto :mod:`edge_agent.update.errors`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, UpdaterConfig

from edge_agent.errors import ConfigError
from edge_agent.fsutil import fsync_dir
from edge_agent.update.errors import BadAnnouncementError, from_tuf
from edge_agent.update.fetchers import BASE_URL, AnnouncementFetcher

METADATA_LIMITS = UpdaterConfig(
    max_root_rotations=64,
    root_max_length=256 * 1024,  # bytes
    timestamp_max_length=16 * 1024,  # bytes
    snapshot_max_length=256 * 1024,  # bytes
    targets_max_length=2 * 1024 * 1024,  # bytes
)


def _sync(d: Path) -> None:
    """ngclient replaces files atomically but does not fsync: make the trusted versions
    durable across power loss too (best effort; a missing file is fine)."""
    import os

    for p in (*d.glob("*.json"), *(d / "root_history").glob("*.json")):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(d)


class TrustStore:
    """``<update dir>/metadata``: root_history/, root.json, timestamp/snapshot/targets.json."""

    def __init__(self, metadata_dir: Path, root_file: Path) -> None:
        self.dir = Path(metadata_dir)
        self.root_file = Path(root_file)

    def bootstrap(self) -> bytes:
        """The provisioned root (trust anchor). Raises ConfigError if unreadable."""
        try:
            return self.root_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the provisioned TUF root: {e.strerror}",
                              source=str(self.root_file), key="update.root_file") from e

    def updater(self, fetcher: AnnouncementFetcher) -> Updater:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            return Updater(str(self.dir), BASE_URL + "metadata/", None, BASE_URL + "targets/",
                           fetcher, METADATA_LIMITS, bootstrap=self.bootstrap())
        except tuf_exc.RepositoryError as e:
            raise ConfigError(f"provisioned root is not valid TUF root metadata ({e})",
                              source=str(self.root_file), key="update.root_file") from e

    def target_info(self, updater: Updater, target: str) -> TargetFile:
        """Refresh top-level metadata (TUF client workflow 5.3–5.6) and look up ``target``.

        Raises the mapped UpdateError/UpdateTransportError on any verification failure,
        BadAnnouncementError if the signed targets metadata does not list ``target``.
        """
        try:
            updater.refresh()
            info = updater.get_targetinfo(target)
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as e:
            raise from_tuf(e) from e
        finally:
            _sync(self.dir)
        if info is None:
            raise BadAnnouncementError(f"{target} is not listed in the signed targets metadata")
        return info

    @staticmethod
    def download(updater: Updater, info: TargetFile, dest: Path) -> None:
        """ngclient's download_target: length + sha256 against the signed entry (5.7)."""
        try:
            updater.download_target(info, str(dest))
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as e:
            raise from_tuf(e) from e

    def versions(self) -> dict[str, int]:
        """Highest trusted version per top-level role, as persisted (0 = none yet)."""
        out = {"root": 0, "timestamp": 0, "snapshot": 0, "targets": 0}
        hist = self.dir / "root_history"
        if hist.is_dir():
            out["root"] = max((int(p.name.split(".")[0]) for p in hist.glob("*.root.json")
                               if p.name.split(".")[0].isdigit()), default=0)
        if not out["root"]:
            try:  # nothing fetched yet: the provisioned root is what is trusted
                out["root"] = int(json.loads(self.root_file.read_bytes())["signed"]["version"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        for role in ("timestamp", "snapshot", "targets"):
            try:
                out[role] = int(json.loads((self.dir / f"{role}.json").read_bytes())
                                ["signed"]["version"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return out
