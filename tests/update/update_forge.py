"""Attack material: metadata and chunks an attacker could produce, built from raw parts.

Nothing here goes through :class:`fleet.repo.FleetRepo`'s threshold checks: signatures
are whatever the attacker has. The legitimate repository on disk is never modified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge_agent.update.wire import ChunkPlan, TargetSpec, encode_chunk
from fleet.repo import FleetRepo

_SER = JSONSerializer(compact=True)


def _in(days: float) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def forge_release(repo: FleetRepo, *, target: tuple[str, bytes, TargetSpec] | None,
                  targets_by: Sequence[Signer], snapshot_by: Sequence[Signer],
                  timestamp_by: Sequence[Signer], bump: int = 1) -> dict[str, bytes]:
    """A new targets/snapshot/timestamp set signed by exactly the given keys."""
    files = {f"metadata/{v}.root.json": repo.root_bytes(v)
             for v in range(2, repo.latest_version("root") + 1)}
    entries = dict(repo.targets())
    if target is not None:
        path, data, spec = target
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = spec.to_custom()
        entries[path] = tf
    tv = repo.latest_version("targets") + bump
    t = Metadata(Targets(version=tv, expires=_in(30), targets=entries))
    for s in targets_by:
        t.sign(s, append=True)
    tdata = t.to_bytes(_SER)
    sv = repo.latest_version("snapshot") + bump
    sn = Metadata(Snapshot(version=sv, expires=_in(7), meta={"targets.json": MetaFile(
        version=tv, length=len(tdata), hashes={"sha256": hashlib.sha256(tdata).hexdigest()})}))
    for s in snapshot_by:
        sn.sign(s, append=True)
    sdata = sn.to_bytes(_SER)
    ts = Metadata(Timestamp(version=repo.latest_version("timestamp") + bump, expires=_in(1),
                            snapshot_meta=MetaFile(version=sv, length=len(sdata), hashes={
                                "sha256": hashlib.sha256(sdata).hexdigest()})))
    for s in timestamp_by:
        ts.sign(s, append=True)
    files[f"metadata/{tv}.targets.json"] = tdata
    files[f"metadata/{sv}.snapshot.json"] = sdata
    files["metadata/timestamp.json"] = ts.to_bytes(_SER)
    return files


def chunk_payloads(data: bytes, plan: ChunkPlan) -> list[bytes]:
    """Chunks of ``data`` cut as ``plan`` says, each with a header hash of its own bytes."""
    out = []
    for i in range(plan.count):
        off, n = plan.span(i)
        out.append(encode_chunk(i, plan.count, plan.length, data[off:off + n]))
    return out
