"""The update repository on the workstation, kept with ``tuf.api.metadata``.

Layout (consistent snapshots: every file a device fetches is immutable)::

    <repo>/metadata/<n>.root.json       every root version; root.json = newest copy
    <repo>/metadata/<n>.targets.json    what may be installed, for whom (custom.edge)
    <repo>/metadata/<n>.snapshot.json   which targets version is current (mix-and-match)
    <repo>/metadata/timestamp.json      which snapshot is current; short expiry (freeze)
    <repo>/targets/<dir>/<sha256>.<file>

Roles and keys: ``root`` (k-of-n, offline) names the keys of every role; ``targets``
(k-of-n) signs what devices install; ``snapshot`` and ``timestamp`` (online keys) sign
consistency and freshness. Rotating a role's keys is a new root version signed by a
threshold of the old *and* of the new root keys (:meth:`FleetRepo.rotate`).

The ``edge-fleet repo`` commands that drive it are in :mod:`fleet.repo_cli`.

Raises :class:`RepoError` / :class:`ThresholdError` (bad input, exit 2).

Size: slightly over ~400 lines: staging, committing and key-role checks operate on the
same metadata set and are kept together; the CLI is :mod:`fleet.repo_cli`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edge_agent.errors import BadInputError, UpdateError
from edge_agent.fsutil import atomic_write_bytes
from edge_agent.update.wire import TargetSpec, parse_target_spec
from fleet.staged import StagedRelease, clear_pending, read_pending, write_blobs, write_pending

ROLES = ("root", "targets", "snapshot", "timestamp")
KEEP_MODEL_TARGETS = 5  # per model name, newest versions kept in targets metadata
KEEP_COMMANDS = 16
_SER = JSONSerializer(compact=True)
T = TypeVar("T", bound=Signed)


class RepoError(BadInputError):
    """The repository directory or a requested change is invalid."""


class ThresholdError(RepoError):
    """Not enough authorised keys were given to sign a role."""


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid; short for online roles (freeze attacks)."""

    root_days: float = 365.0
    targets_days: float = 90.0
    snapshot_days: float = 7.0
    timestamp_days: float = 1.0

    def expires(self, role: str, now: datetime | None = None) -> datetime:
        now = now or datetime.now(timezone.utc)
        return now.replace(microsecond=0) + timedelta(days=getattr(self, f"{role}_days"))


@dataclass(frozen=True)
class Release:
    """Versions written by one release (for logs and tests)."""

    targets: int
    snapshot: int
    timestamp: int


def target_path_for_model(name: str, version: int, *, compressed: bool = False) -> str:
    return f"models/{name}/{name}-{version}.tar{'.zst' if compressed else ''}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FleetRepo:
    """One repository directory; every write is atomic, every signature threshold-checked."""

    def __init__(self, path: str | Path, expiry: ExpiryPolicy | None = None) -> None:
        self.path = Path(path)
        self.meta_dir = self.path / "metadata"
        self.targets_dir = self.path / "targets"
        self.expiry = expiry or self._load_policy()

    # --- reading ---------------------------------------------------------------------------

    def _load_policy(self) -> ExpiryPolicy:
        try:
            return ExpiryPolicy(**json.loads((self.path / "repo.json").read_text())["expiry"])
        except FileNotFoundError:
            return ExpiryPolicy()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RepoError(f"{self.path / 'repo.json'}: unreadable ({e})") from e

    def latest_version(self, role: str) -> int:
        if role == "timestamp":
            return self.load("timestamp").signed.version if (
                self.meta_dir / "timestamp.json").exists() else 0
        vs = [int(p.name.split(".")[0]) for p in self.meta_dir.glob(f"*.{role}.json")
              if p.name.split(".")[0].isdigit()]
        return max(vs, default=0)

    def file_name(self, role: str, version: int | None = None) -> str:
        if role == "timestamp":
            return "timestamp.json"
        return f"{version or self.latest_version(role)}.{role}.json"

    def load(self, role: str, version: int | None = None) -> Metadata[Any]:
        p = self.meta_dir / self.file_name(role, version)
        try:
            return Metadata.from_bytes(p.read_bytes())
        except FileNotFoundError as e:
            raise RepoError(f"{p}: missing; is {self.path} an edge-fleet repository "
                            "(edge-fleet repo init)?") from e
        except Exception as e:  # tuf's DeserializationError and friends
            raise RepoError(f"{p}: unreadable metadata ({e})") from e

    def root(self) -> Metadata[Root]:
        return self.load("root")

    def root_bytes(self, version: int | None = None) -> bytes:
        return (self.meta_dir / self.file_name("root", version)).read_bytes()

    def targets(self) -> dict[str, TargetFile]:
        if not self.latest_version("targets"):
            return {}
        return dict(self.load("targets").signed.targets)

    # --- signing ---------------------------------------------------------------------------

    @staticmethod
    def _sign(md: Metadata[Any], role: str, signers: Sequence[Signer], delegator: Root,
              *, extra_delegator: Root | None = None) -> None:
        """Sign with every given key the delegator(s) authorise; raise unless threshold met."""
        allowed = set(delegator.roles[role].keyids)
        if extra_delegator is not None:
            allowed |= set(extra_delegator.roles[role].keyids)
        md.signatures.clear()
        for s in signers:
            if s.public_key.keyid in allowed and s.public_key.keyid not in md.signatures:
                md.sign(s, append=True)
        for d in (delegator, extra_delegator):
            if d is None:
                continue
            res = d.get_verification_result(role, md.signed_bytes, md.signatures)
            if not res:
                r = d.roles[role]
                raise ThresholdError(
                    f"{role} v{md.signed.version} needs {r.threshold} signature(s) from "
                    f"{len(r.keyids)} authorised key(s) (root v{d.version}); the keys given "
                    f"provide {len(res.signed)}{_misplaced(signers, role, d)}: pass "
                    f"{role} key files with --key")

    def _write(self, md: Metadata[Any], name: str) -> bytes:
        data = md.to_bytes(_SER)
        self._write_bytes(name, data)
        return data

    def _write_bytes(self, name: str, data: bytes) -> None:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.meta_dir / name, data)

    # --- creating and rotating ---------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, keys: dict[str, Sequence[Key]],
               thresholds: dict[str, int], signers: Sequence[Signer],
               expiry: ExpiryPolicy | None = None) -> FleetRepo:
        """Write root v1 naming every role's keys and thresholds. Refuses an existing repo."""
        repo = cls(path, expiry or ExpiryPolicy())
        if (repo.meta_dir / "1.root.json").exists():
            raise RepoError(f"{repo.path} already holds a repository")
        root = Root(expires=repo.expiry.expires("root"), consistent_snapshot=True)
        for role in ROLES:
            ks = keys.get(role) or []
            if not ks:
                raise RepoError(f"role {role!r} needs at least one key")
            t = thresholds.get(role, 1)
            if not 1 <= t <= len(ks):
                raise RepoError(f"{role} threshold {t} must be within 1..{len(ks)} (its keys)")
            for k in ks:
                root.add_key(k, role)
            root.roles[role].threshold = t
        md = Metadata(root)
        cls._sign(md, "root", signers, root)
        repo.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(repo.path / "repo.json",
                           (json.dumps({"expiry": asdict(repo.expiry)}, indent=1) + "\n")
                           .encode())
        data = repo._write(md, "1.root.json")
        atomic_write_bytes(repo.meta_dir / "root.json", data)
        return repo

    def rotate(self, role: str, *, add: Iterable[Key] = (), remove: Iterable[str] = (),
               threshold: int | None = None, signers: Sequence[Signer]) -> int:
        """Replace ``role``'s keys in a new root version; returns that version.

        The new root is signed by a threshold of the old root's root keys and of its own,
        so a device can follow the chain. Metadata signed by a removed key stops
        verifying on devices as soon as they load the new root.
        """
        if role not in ROLES:
            raise RepoError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        old = self.root()
        new = Metadata[Root].from_bytes(old.to_bytes(_SER))
        r = new.signed
        for keyid in remove:
            if keyid not in r.roles[role].keyids:
                raise RepoError(f"key {keyid[:16]}… is not a {role} key")
            r.revoke_key(keyid, role)
        for k in add:
            r.add_key(k, role)
        if threshold is not None:
            r.roles[role].threshold = threshold
        n = len(r.roles[role].keyids)
        if not 1 <= r.roles[role].threshold <= n:
            raise RepoError(f"{role} threshold {r.roles[role].threshold} must be within 1..{n}")
        r.version += 1
        r.expires = self.expiry.expires("root")
        self._sign(new, "root", signers, r, extra_delegator=old.signed)
        data = self._write(new, f"{r.version}.root.json")
        atomic_write_bytes(self.meta_dir / "root.json", data)
        return r.version

    # --- releasing ---------------------------------------------------------------------------

    def target_file(self, target_path: str, sha256: str) -> Path:
        parent, _, base = target_path.rpartition("/")
        return self.targets_dir / parent / f"{sha256}.{base}"

    def stage_targets(self, entries: dict[str, tuple[bytes, TargetSpec]],
                      signers: Sequence[Signer], *,
                      expires: dict[str, datetime] | None = None) -> StagedRelease:
        """Sign a release listing ``entries`` in memory; the repository is not touched.

        Raises ThresholdError (a role's keys missing) before anything is written.
        """
        root = self.root().signed
        current = self.targets()
        blobs: dict[str, bytes] = {}
        added: dict[str, str] = {}
        for path, (data, spec) in entries.items():
            tf = TargetFile.from_data(path, data, ["sha256"])
            tf.unrecognized_fields["custom"] = spec.to_custom()
            dest = self.target_file(path, tf.hashes["sha256"])
            blobs[dest.relative_to(self.path).as_posix()] = data
            added[path] = tf.hashes["sha256"]
            current[path] = tf
        if any(spec.kind == "model" for _, spec in entries.values()):
            current = _without_commands(current, keep=set(entries))
        tv = self.latest_version("targets") + 1
        targets = Metadata(Targets(version=tv, expires=self._exp("targets", expires),
                                   targets=_retain(current)))
        self._sign(targets, "targets", signers, root)
        tdata = targets.to_bytes(_SER)
        sv = self.latest_version("snapshot") + 1
        snap = Metadata(Snapshot(version=sv, expires=self._exp("snapshot", expires), meta={
            "targets.json": MetaFile(version=tv, length=len(tdata),
                                     hashes={"sha256": hashlib.sha256(tdata).hexdigest()})}))
        self._sign(snap, "snapshot", signers, root)
        sdata = snap.to_bytes(_SER)
        tsv, tsdata = self._timestamp(sdata, sv, signers, root, expires)
        return StagedRelease(tv, sv, tsv, {f"{tv}.targets.json": tdata,
                                           f"{sv}.snapshot.json": sdata,
                                           "timestamp.json": tsdata}, blobs, added)

    def commit(self, staged: StagedRelease) -> Release:
        """Write a staged release: blobs, then metadata with ``timestamp.json`` last (the
        commit point), then drop ``pending/``. Idempotent, so a crash here is re-run."""
        write_blobs(self.path, staged)
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        for name, data in staged.metadata.items():
            atomic_write_bytes(self.meta_dir / name, data)
        clear_pending(self.path)
        return Release(staged.targets_version, staged.snapshot_version,
                       staged.timestamp_version)

    def pending(self) -> StagedRelease | None:
        """The release staged by an interrupted publish (:mod:`fleet.staged`), or None."""
        return read_pending(self.path)

    def stage_pending(self, staged: StagedRelease) -> None:
        """Record ``staged`` as about to reach devices (``<repo>/pending/``)."""
        write_pending(self.path, staged)

    def add_targets(self, entries: dict[str, tuple[bytes, TargetSpec]],
                    signers: Sequence[Signer], *,
                    expires: dict[str, datetime] | None = None) -> Release:
        """Store target files, list them in a new targets version, release it."""
        return self.commit(self.stage_targets(entries, signers, expires=expires))

    def refresh_timestamp(self, signers: Sequence[Signer], *,
                          expires: dict[str, datetime] | None = None) -> int:
        """Re-sign timestamp (new version, new expiry) over the current snapshot.

        Raises RepoError before the first release (there is no snapshot to point at) and
        while a release is pending (its timestamp version may be on devices already).
        """
        root = self.root().signed
        if not self.latest_version("snapshot"):
            raise RepoError(f"{self.path}: nothing released yet, so no timestamp to refresh "
                            "(edge-fleet publish first)")
        pending = self.pending()
        if pending is not None:
            raise RepoError(f"{self.path}: a publish was interrupted ({pending.describe()}); "
                            "re-run it first (edge-fleet repo status)")
        snap_name = self.file_name("snapshot")
        tv, data = self._timestamp((self.meta_dir / snap_name).read_bytes(),
                                   self.latest_version("snapshot"), signers, root, expires)
        self._write_bytes("timestamp.json", data)
        return tv

    def _exp(self, role: str, expires: dict[str, datetime] | None) -> datetime:
        return (expires or {}).get(role) or self.expiry.expires(role)

    def _timestamp(self, sdata: bytes, sv: int, signers: Sequence[Signer], root: Root,
                   expires: dict[str, datetime] | None) -> tuple[int, bytes]:
        tv = self.latest_version("timestamp") + 1
        ts = Metadata(Timestamp(version=tv, expires=self._exp("timestamp", expires),
                                snapshot_meta=MetaFile(
                                    version=sv, length=len(sdata),
                                    hashes={"sha256": hashlib.sha256(sdata).hexdigest()})))
        self._sign(ts, "timestamp", signers, root)
        return tv, ts.to_bytes(_SER)

    # --- what devices receive ---------------------------------------------------------------

    def announce_files(self, staged: StagedRelease | None = None) -> dict[str, bytes]:
        """The signed files an announcement carries: root chain (v2+), timestamp, snapshot,
        targets, keyed as the device's fetcher asks for them (``metadata/<file>``) —
        those of ``staged`` if given, else the committed ones."""
        files: dict[str, bytes] = {}
        for v in range(2, self.latest_version("root") + 1):
            files[f"metadata/{v}.root.json"] = self.root_bytes(v)
        if staged is not None:
            files.update({f"metadata/{n}": d for n, d in reversed(staged.metadata.items())})
            return files
        for role in ("timestamp", "snapshot", "targets"):
            name = self.file_name(role)
            files[f"metadata/{name}"] = (self.meta_dir / name).read_bytes()
        return files


def _kind(tf: TargetFile, path: str) -> str | None:
    try:
        return parse_target_spec(tf.custom, tf.length, path).kind
    except UpdateError:
        return None


def _without_commands(targets: dict[str, TargetFile], keep: set[str]) -> dict[str, TargetFile]:
    """A model release ends every earlier command: none stays listed for a later replay."""
    return {p: tf for p, tf in targets.items() if p in keep or _kind(tf, p) != "command"}


def _misplaced(signers: Sequence[Signer], role: str, root: Root) -> str:
    """``"; key 1a2b… is a root key, not a targets key"`` for each key given that cannot
    sign this operation (a release takes targets + snapshot + timestamp keys together, so
    those are not called misplaced for each other)."""
    operation = {"root"} if role == "root" else {"targets", "snapshot", "timestamp"}
    notes = []
    for s in signers:
        keyid = s.public_key.keyid
        roles = [r for r in ROLES if keyid in root.roles[r].keyids]
        if operation & set(roles):
            continue
        notes.append(f"key {keyid[:12]} is {'a ' + '/'.join(roles) if roles else 'not a'} "
                     f"key{'' if roles else f' of root v{root.version}'}, not a {role} key")
    return "".join(f"; {n}" for n in dict.fromkeys(notes))


def _retain(targets: dict[str, TargetFile]) -> dict[str, TargetFile]:
    """Keep the newest KEEP_MODEL_TARGETS versions per model and the last commands."""
    models: dict[str, list[tuple[int, str]]] = {}
    commands: list[str] = []
    for path, tf in targets.items():
        try:
            spec = parse_target_spec(tf.custom, tf.length, path)
        except UpdateError:
            continue  # not ours (or malformed): dropped from the next version
        if spec.kind == "model":
            models.setdefault(spec.name, []).append((spec.version, path))
        else:
            commands.append(path)
    keep = {p for vs in models.values() for _, p in sorted(vs)[-KEEP_MODEL_TARGETS:]}
    keep |= set(commands[-KEEP_COMMANDS:])
    return {p: tf for p, tf in targets.items() if p in keep}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``edge-fleet repo init | rotate | timestamp | show | status`` (:mod:`fleet.repo_cli`)."""
    from fleet.repo_cli import register as register_cli

    register_cli(sub)
