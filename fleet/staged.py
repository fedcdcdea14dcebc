"""A release signed but not yet committed to the repository: all-or-nothing publishing.

``edge-fleet publish`` signs a whole release in memory (:class:`StagedRelease`: new
targets, snapshot and timestamp metadata plus the target blobs), so a missing key or a
threshold shortfall leaves the repository byte-identical. Only once the broker has taken
the chunks, and just before the first announcement leaves, is the release written to
``<repo>/pending/`` (one atomic directory swap); after every announcement is acknowledged
it is committed to ``<repo>/metadata/`` (``timestamp.json`` last, the commit point) and
``pending/`` is removed. A publish interrupted in between leaves ``pending/``: its
versions may already be on devices, so they are never signed again with other content.
``edge-fleet repo status`` reports it; re-running the same publish resumes it (no new
signature); any other publish commits it first.

Layout::

    <repo>/pending/release.json        versions, targets (path → sha256), file order
    <repo>/pending/metadata/<name>     the signed metadata, committed in this order

Target blobs are content-addressed and immutable, so they go straight to
``<repo>/targets/`` (an HTTP mirror must serve them while the announcement is out).

Raises :class:`PendingError` (bad input) for an unreadable ``pending/``; ``OSError``
from the disk.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from edge_agent.errors import BadInputError
from edge_agent.fsutil import atomic_write_bytes, staged_dir

PENDING_DIR = "pending"


class PendingError(BadInputError):
    """``<repo>/pending/`` exists but cannot be read back."""


@dataclass(frozen=True)
class StagedRelease:
    """One release, signed in memory. ``metadata`` is in commit order (timestamp last)."""

    targets_version: int
    snapshot_version: int
    timestamp_version: int
    metadata: dict[str, bytes]  # file name in <repo>/metadata/ -> signed bytes
    blobs: dict[str, bytes]  # path relative to the repo (targets/...) -> bytes
    targets: dict[str, str]  # target path -> sha256 (what this release adds)
    staged_at: str = field(default_factory=lambda: datetime.now(timezone.utc)
                           .isoformat(timespec="seconds"))

    def describe(self) -> str:
        return (f"{', '.join(sorted(self.targets)) or 'no new target'} (targets "
                f"v{self.targets_version}, snapshot v{self.snapshot_version}, timestamp "
                f"v{self.timestamp_version}, staged {self.staged_at})")


def write_pending(repo: Path, staged: StagedRelease) -> None:
    """Persist ``staged`` as ``<repo>/pending/`` in one swap; blobs into ``targets/``."""
    write_blobs(repo, staged)
    with staged_dir(repo / PENDING_DIR) as tmp:
        (tmp / "metadata").mkdir()
        for name, data in staged.metadata.items():
            (tmp / "metadata" / name).write_bytes(data)
        (tmp / "release.json").write_text(json.dumps({
            "versions": {"targets": staged.targets_version, "snapshot": staged.snapshot_version,
                         "timestamp": staged.timestamp_version},
            "order": list(staged.metadata), "blobs": sorted(staged.blobs),
            "targets": staged.targets, "staged_at": staged.staged_at}, indent=1) + "\n")


def read_pending(repo: Path) -> StagedRelease | None:
    """The pending release, or None. Raises PendingError if it is unreadable."""
    d = repo / PENDING_DIR
    if not d.exists():
        return None
    try:
        rec = json.loads((d / "release.json").read_text())
        v = rec["versions"]
        return StagedRelease(
            int(v["targets"]), int(v["snapshot"]), int(v["timestamp"]),
            {n: (d / "metadata" / n).read_bytes() for n in rec["order"]},
            {r: (repo / r).read_bytes() for r in rec["blobs"]},
            {str(k): str(s) for k, s in rec["targets"].items()}, str(rec["staged_at"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PendingError(f"{d}: unreadable pending release ({type(e).__name__}: {e}); "
                           "inspect it, then remove it or re-run the publish") from e


def clear_pending(repo: Path) -> None:
    shutil.rmtree(repo / PENDING_DIR, ignore_errors=True)


def write_blobs(repo: Path, staged: StagedRelease) -> None:
    """Store the release's target files (content-addressed, so an existing one is kept)."""
    for rel, data in staged.blobs.items():
        dest = repo / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, data)
