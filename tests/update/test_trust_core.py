"""One test per attack on the device's TUF client, in memory (python-tuf's
``tests/test_trusted_metadata_set.py`` style).

:class:`RepositorySimulator` holds the signed objects and signs them on demand, so an
attack is "change a field, sign with whatever keys the attacker has, serve it". The
device is the product's own :class:`~edge_agent.update.trust.TrustStore` fed by the
product's :class:`~edge_agent.update.fetchers.AnnouncementFetcher` over the inlined
announcement files: no broker, no network, no store, only ``tmp_path`` for the trusted
metadata directory (ngclient persists there). Every attack test asserts the error class,
its machine ``code`` and message, and that the trusted metadata on the device is byte for
byte what it was, except roles the attack presented with valid signatures.

Chunk authentication (:func:`edge_agent.update.wire.decode_chunk`) is checked here too:
a chunk is trusted only against the *signed* plan.

Over 400 lines on purpose: the whole attack list (about 35 short tests) reads in one place.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
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

from edge_agent.update.errors import (
    BadAnnouncementError,
    ExpiredMetadataError,
    MetadataRollbackError,
    TargetMismatchError,
    UntrustedMetadataError,
    UpdateError,
)
from edge_agent.update.fetchers import AnnouncementFetcher
from edge_agent.update.staging import Staging
from edge_agent.update.trust import TrustStore
from edge_agent.update.wire import (
    Announcement,
    Audience,
    ChunkPlan,
    TargetSpec,
    decode_chunk,
    encode_chunk,
    parse_target_spec,
)

_SER = JSONSerializer(compact=True)
ROLE_KEYS = {"root": ("root-a", "root-b"), "targets": ("targets-a", "targets-b"),
             "snapshot": ("snapshot",), "timestamp": ("timestamp",)}
THRESHOLD = {"root": 2, "targets": 2, "snapshot": 1, "timestamp": 1}
PATH = "models/digits/digits-3.tar"
SPEC = TargetSpec("model", Audience(("dev1",), ()), "digits", 3, ("generic-x86_64",))


def _in(days: float) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


PAST = _in(-1 / 24)


class RepositorySimulator:
    """An in-memory repository (root 2-of-2, targets 2-of-2) that signs on demand.

    Change ``root``/``targets``/``snapshot``/``timestamp`` (the ``Signed`` objects) or
    ``signers``, then :meth:`files` signs and serialises everything as an announcement
    carries it, with the snapshot and timestamp hashes derived from what it just signed.
    """

    def __init__(self) -> None:
        names = {n for ns in ROLE_KEYS.values() for n in ns} | {"rogue", "timestamp-2"}
        self.keys = {n: CryptoSigner.generate_ed25519() for n in sorted(names)}
        self.root = Root(expires=_in(365), consistent_snapshot=True)
        for role, ns in ROLE_KEYS.items():
            for n in ns:
                self.root.add_key(self.keys[n].public_key, role)
            self.root.roles[role].threshold = THRESHOLD[role]
        self.signers: dict[str, Sequence[str]] = dict(ROLE_KEYS)
        self.roots = [self._sign(self.root, ROLE_KEYS["root"])]
        self.targets = Targets(version=1, expires=_in(30))
        self.snapshot = Snapshot(version=1, expires=_in(7))
        self.timestamp = Timestamp(version=1, expires=_in(1),
                                   snapshot_meta=MetaFile(version=1))
        self.blobs: dict[str, bytes] = {}

    def _sign(self, signed: Signed, by: Sequence[str]) -> bytes:
        md = Metadata(signed)
        for n in by:
            md.sign(self.keys[n], append=True)
        return md.to_bytes(_SER)

    def add_target(self, path: str, data: bytes, spec: TargetSpec = SPEC) -> TargetFile:
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = spec.to_custom()
        self.targets.targets[path] = tf
        self.blobs[path] = data
        return tf

    def next_release(self) -> None:
        """What a legitimate publish does: one version up for targets/snapshot/timestamp."""
        self.targets.version += 1
        self.snapshot.version += 1
        self.timestamp.version += 1

    def rotate_root(self, *, by: Sequence[str] | None = None) -> None:
        """Publish ``self.root`` (already changed) as the next root version."""
        self.root.version += 1
        self.roots.append(self._sign(self.root, by or ROLE_KEYS["root"]))

    @staticmethod
    def blob_key(path: str, sha256: str) -> str:
        parent, _, base = path.rpartition("/")
        return f"targets/{parent}/{sha256}.{base}"

    def files(self) -> dict[str, bytes]:
        tdata = self._sign(self.targets, self.signers["targets"])
        self.snapshot.meta["targets.json"] = MetaFile(
            version=self.targets.version, length=len(tdata),
            hashes={"sha256": hashlib.sha256(tdata).hexdigest()})
        sdata = self._sign(self.snapshot, self.signers["snapshot"])
        self.timestamp.snapshot_meta = MetaFile(
            version=self.snapshot.version, length=len(sdata),
            hashes={"sha256": hashlib.sha256(sdata).hexdigest()})
        out = {f"metadata/{v}.root.json": data
               for v, data in enumerate(self.roots[1:], start=2)}
        out[f"metadata/{self.targets.version}.targets.json"] = tdata
        out[f"metadata/{self.snapshot.version}.snapshot.json"] = sdata
        out["metadata/timestamp.json"] = self._sign(self.timestamp, self.signers["timestamp"])
        for path, data in self.blobs.items():
            out[self.blob_key(path, hashlib.sha256(data).hexdigest())] = data
        return out


class Device:
    """The device's trust state: the product's TrustStore over inlined announcement files."""

    def __init__(self, tmp: Path, root: bytes) -> None:
        (tmp / "provisioned").mkdir()
        root_file = tmp / "provisioned" / "1.root.json"
        root_file.write_bytes(root)
        self.trust = TrustStore(tmp / "metadata", root_file)
        self.staging = Staging(tmp / "staging")
        self.dest = tmp / "target.tar"

    def _updater(self, files: dict[str, bytes], target: str) -> tuple[object, AnnouncementFetcher]:
        ann = Announcement(target, files, chunks=False)
        fetcher = AnnouncementFetcher(ann, staging=self.staging, mqtt=None, http=None,
                                      transport="auto", stall_s=1.0, timeout_s=5.0,
                                      stop=threading.Event())
        return self.trust.updater(fetcher), fetcher

    def refresh(self, files: dict[str, bytes], target: str = PATH) -> TargetFile:
        """TUF client workflow 5.3-5.6 and the target lookup; raises the mapped error."""
        updater, _ = self._updater(files, target)
        return self.trust.target_info(updater, target)  # type: ignore[arg-type]

    def download(self, files: dict[str, bytes], target: str = PATH) -> bytes:
        """Refresh, then fetch and verify the target (5.7); returns its verified bytes."""
        updater, _ = self._updater(files, target)
        info = self.trust.target_info(updater, target)  # type: ignore[arg-type]
        self.trust.download(updater, info, self.dest)  # type: ignore[arg-type]
        return self.dest.read_bytes()

    def trusted(self) -> dict[str, bytes]:
        """Every file of the trusted metadata directory, by relative path."""
        return {str(p.relative_to(self.trust.dir)): p.read_bytes()
                for p in sorted(self.trust.dir.rglob("*")) if p.is_file()}


@pytest.fixture
def repo() -> RepositorySimulator:
    r = RepositorySimulator()
    r.add_target(PATH, b"model v3 bytes" * 100)
    return r


@pytest.fixture
def device(tmp_path: Path, repo: RepositorySimulator) -> Device:
    """A device that has already trusted release 1 (every role at version 1)."""
    d = Device(tmp_path, repo.roots[0])
    d.refresh(repo.files())
    assert d.trust.versions() == {"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1}
    return d


def served_roles(files: dict[str, bytes], *roles: str) -> dict[str, bytes]:
    """``{"<role>.json": bytes}`` of ``roles`` as ``files`` carries them."""
    return {f"{role}.json": next(v for k, v in files.items()
                                 if k.endswith((f"/{role}.json", f".{role}.json")))
            for role in roles}


def refused(device: Device, files: dict[str, bytes], err: type[UpdateError], code: str,
            message: str, *, accepted: Sequence[str] = (), download: bool = False) -> None:
    """The attack raises ``err`` (``code``, ``message``); trusted metadata did not move but
    for the roles in ``accepted``, which must now hold exactly the bytes served."""
    before = device.trusted()
    with pytest.raises(err, match=re.escape(message)) as e:
        device.download(files) if download else device.refresh(files)
    assert e.value.code == code
    assert device.trusted() == {**before, **served_roles(files, *accepted)}


# --- the simulator and a valid release (the baseline every attack departs from) ------------


def test_valid_release_is_trusted_and_persisted(repo: RepositorySimulator,
                                                device: Device) -> None:
    repo.next_release()
    files = repo.files()
    info = device.refresh(files)
    assert device.trust.versions() == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 2}
    assert device.trusted()["timestamp.json"] == files["metadata/timestamp.json"]
    assert parse_target_spec(info.custom, info.length, info.path) == SPEC


def test_valid_target_downloads_with_its_signed_bytes(repo: RepositorySimulator,
                                                      device: Device) -> None:
    assert device.download(repo.files()) == repo.blobs[PATH]


def test_valid_root_rotation_is_followed(repo: RepositorySimulator, device: Device) -> None:
    repo.rotate_root()
    device.refresh(repo.files())
    assert device.trust.versions()["root"] == 2


# --- signatures ------------------------------------------------------------------------------


def test_unsigned_timestamp_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    repo.signers["timestamp"] = ()
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "timestamp was signed by 0/1 keys")


def test_timestamp_signed_by_an_unknown_key_is_refused(repo: RepositorySimulator,
                                                       device: Device) -> None:
    repo.next_release()
    repo.signers["timestamp"] = ("rogue",)
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "timestamp was signed by 0/1 keys")


def test_unsigned_snapshot_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    repo.signers["snapshot"] = ()
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "snapshot was signed by 0/1 keys", accepted=("timestamp",))


def test_targets_signed_by_an_unknown_key_is_refused(repo: RepositorySimulator,
                                                     device: Device) -> None:
    """The attacker holds the online snapshot/timestamp keys but not the targets keys."""
    repo.next_release()
    repo.signers["targets"] = ("rogue",)
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "targets was signed by 0/2 keys", accepted=("timestamp", "snapshot"))


def test_targets_below_threshold_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    repo.signers["targets"] = ("targets-a",)
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "targets was signed by 1/2 keys", accepted=("timestamp", "snapshot"))


def test_root_rotation_below_threshold_is_refused(repo: RepositorySimulator,
                                                  device: Device) -> None:
    """One stolen root key cannot hand the timestamp role to the attacker."""
    repo.root.add_key(repo.keys["rogue"].public_key, "timestamp")
    repo.rotate_root(by=("root-a",))
    repo.next_release()
    repo.signers["timestamp"] = ("rogue",)
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "root was signed by 1/2 keys")
    assert device.trust.versions()["root"] == 1


def test_root_rotation_not_signed_by_the_old_root_keys_is_refused(
        repo: RepositorySimulator, device: Device) -> None:
    """A new root must meet the *old* root's threshold too (TUF 5.3.4)."""
    for keyid in list(repo.root.roles["root"].keyids):
        repo.root.revoke_key(keyid, "root")
    repo.root.add_key(repo.keys["rogue"].public_key, "root")
    repo.root.roles["root"].threshold = 1
    repo.rotate_root(by=("rogue",))
    refused(device, repo.files(), UntrustedMetadataError, "untrusted",
            "root was signed by 0/2 keys")


def test_timestamp_signed_by_a_revoked_key_is_refused(repo: RepositorySimulator,
                                                      device: Device) -> None:
    """After a root rotation drops the old timestamp key, its signatures stop counting."""
    old = repo.keys["timestamp"].public_key.keyid
    repo.root.revoke_key(old, "timestamp")
    repo.root.add_key(repo.keys["timestamp-2"].public_key, "timestamp")
    repo.rotate_root()
    repo.next_release()
    files = repo.files()  # still signed by the revoked timestamp key
    root2 = files["metadata/2.root.json"]
    before = device.trusted()
    with pytest.raises(UntrustedMetadataError, match="timestamp was signed by 0/1 keys") as e:
        device.refresh(files)
    assert e.value.code == "untrusted"
    # the validly signed root v2 is trusted (that is the revocation); nothing else moved
    assert device.trusted() == {**before, "root_history/2.root.json": root2, "root.json": root2}


# --- versions and freshness ---------------------------------------------------------------------


def test_timestamp_version_rollback_is_refused(repo: RepositorySimulator,
                                               device: Device) -> None:
    repo.next_release()
    device.refresh(repo.files())
    repo.timestamp.version = 1  # validly signed, older than the trusted v2 (replay)
    refused(device, repo.files(), MetadataRollbackError, "rollback",
            "timestamp version 1 must be >= 2")


def test_snapshot_version_rollback_is_refused(repo: RepositorySimulator,
                                              device: Device) -> None:
    repo.next_release()
    device.refresh(repo.files())
    repo.timestamp.version += 1
    repo.snapshot.version = 1
    refused(device, repo.files(), MetadataRollbackError, "rollback",
            "New snapshot version must be >= 2, got version 1")


def test_targets_version_rollback_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    device.refresh(repo.files())
    repo.timestamp.version += 1
    repo.snapshot.version += 1
    repo.targets.version = 1
    refused(device, repo.files(), MetadataRollbackError, "rollback",
            "Expected targets.json version 1, got 2",
            accepted=("timestamp",))


def test_expired_timestamp_is_refused(repo: RepositorySimulator, device: Device) -> None:
    """Freeze attack: a validly signed but stale view of the repository."""
    repo.next_release()
    repo.timestamp.expires = PAST
    refused(device, repo.files(), ExpiredMetadataError, "expired", "timestamp.json is expired")


def test_expired_snapshot_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    repo.snapshot.expires = PAST
    refused(device, repo.files(), ExpiredMetadataError, "expired", "snapshot.json is expired",
            accepted=("timestamp",))


def test_expired_targets_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    repo.targets.expires = PAST
    refused(device, repo.files(), ExpiredMetadataError, "expired", "New targets is expired",
            accepted=("timestamp", "snapshot"))


def test_expired_root_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.root.expires = PAST
    repo.rotate_root()
    repo.next_release()
    files = repo.files()
    before = device.trusted()
    with pytest.raises(ExpiredMetadataError, match=r"root\.json is expired") as e:
        device.refresh(files)
    assert e.value.code == "expired"
    root2 = files["metadata/2.root.json"]  # validly signed: kept, but trusts nothing newer
    assert device.trusted() == {**before, "root_history/2.root.json": root2, "root.json": root2}


# --- consistency between the roles ----------------------------------------------------------


def test_mix_and_match_targets_is_refused(repo: RepositorySimulator, device: Device) -> None:
    """Release 1's targets served under release 2's snapshot."""
    old_targets = repo.files()["metadata/1.targets.json"]
    repo.add_target("models/digits/digits-4.tar", b"another model")
    repo.next_release()
    files = repo.files()
    files["metadata/2.targets.json"] = old_targets
    refused(device, files, TargetMismatchError, "mismatch", "length or hash mismatch",
            accepted=("timestamp", "snapshot"))


def test_snapshot_other_than_the_timestamp_names_is_refused(repo: RepositorySimulator,
                                                            device: Device) -> None:
    repo.next_release()
    files = repo.files()
    repo.snapshot.expires = _in(6)  # a different, validly signed snapshot v2
    evil = repo._sign(repo.snapshot, ROLE_KEYS["snapshot"])
    assert len(evil) == len(files["metadata/2.snapshot.json"])
    files["metadata/2.snapshot.json"] = evil
    refused(device, files, TargetMismatchError, "mismatch", "length or hash mismatch",
            accepted=("timestamp",))


def test_missing_snapshot_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    files = repo.files()
    del files["metadata/2.snapshot.json"]
    refused(device, files, BadAnnouncementError, "announcement", "signed file is not available",
            accepted=("timestamp",))


def test_oversized_timestamp_is_refused(repo: RepositorySimulator, device: Device) -> None:
    """Endless data for metadata: ngclient caps timestamp at METADATA_LIMITS (16 KiB)."""
    repo.next_release()
    repo.timestamp.unrecognized_fields["padding"] = "x" * (17 * 1024)
    refused(device, repo.files(), TargetMismatchError, "mismatch", "more data than signed")


# --- the target ------------------------------------------------------------------------------


def test_target_not_listed_in_signed_targets_is_refused(repo: RepositorySimulator,
                                                        device: Device) -> None:
    repo.next_release()
    files = repo.files()
    before = device.trusted()
    with pytest.raises(BadAnnouncementError, match="not listed in the signed targets") as e:
        device.refresh(files, "models/digits/digits-9.tar")
    assert e.value.code == "announcement"
    # the metadata itself was valid: trusted, exactly as served
    assert device.trusted() == {**before,
                                **served_roles(files, "timestamp", "snapshot", "targets")}


def _swap_blob(repo: RepositorySimulator, files: dict[str, bytes], data: bytes) -> None:
    sha = repo.targets.targets[PATH].hashes["sha256"]
    files[repo.blob_key(PATH, sha)] = data


def test_target_hash_mismatch_is_refused(repo: RepositorySimulator, device: Device) -> None:
    repo.next_release()
    files = repo.files()
    good = repo.blobs[PATH]
    _swap_blob(repo, files, good[:-1] + bytes([good[-1] ^ 1]))  # same length, one bit off
    refused(device, files, TargetMismatchError, "mismatch", "length or hash mismatch",
            accepted=("timestamp", "snapshot", "targets"), download=True)
    assert not device.dest.exists()


def test_target_longer_than_signed_is_refused(repo: RepositorySimulator, device: Device) -> None:
    """Endless data: bytes past the signed length are never accepted."""
    repo.next_release()
    files = repo.files()
    _swap_blob(repo, files, repo.blobs[PATH] + b"\0" * 4096)
    refused(device, files, TargetMismatchError, "mismatch", "more data than signed",
            accepted=("timestamp", "snapshot", "targets"), download=True)
    assert not device.dest.exists()


def test_target_shorter_than_signed_is_refused(repo: RepositorySimulator,
                                               device: Device) -> None:
    repo.next_release()
    files = repo.files()
    _swap_blob(repo, files, repo.blobs[PATH][:-10])
    refused(device, files, TargetMismatchError, "mismatch", "length or hash mismatch",
            accepted=("timestamp", "snapshot", "targets"), download=True)
    assert not device.dest.exists()


# --- chunks: each is authenticated against the signed plan before it is written ----------------

DATA = bytes(range(256)) * 10
PLAN = ChunkPlan.for_data(DATA, 1000)  # 3 chunks: 1000, 1000, 560 bytes


def test_chunk_matching_the_signed_plan_is_accepted() -> None:
    assert decode_chunk(encode_chunk(2, 3, len(DATA), DATA[2000:]), 2, PLAN) == DATA[2000:]


def test_tampered_chunk_is_refused() -> None:
    with pytest.raises(TargetMismatchError, match=r"chunk 0: sha256 .* \(tampered\)") as e:
        decode_chunk(encode_chunk(0, 3, len(DATA), b"x" * 1000), 0, PLAN)
    assert e.value.code == "mismatch"


def test_chunk_replayed_at_another_index_is_refused() -> None:
    with pytest.raises(TargetMismatchError, match="header says index 1 of 3"):
        decode_chunk(encode_chunk(1, 3, len(DATA), DATA[1000:2000]), 2, PLAN)


def test_chunk_of_another_target_is_refused() -> None:
    other = DATA + b"more"
    with pytest.raises(TargetMismatchError, match="signed metadata says 3 chunks, 2560 bytes"):
        decode_chunk(encode_chunk(0, 3, len(other), other[:1000]), 0, PLAN)


def test_truncated_chunk_is_refused() -> None:
    with pytest.raises(TargetMismatchError, match="chunk 2: truncated: 280 bytes"):
        decode_chunk(encode_chunk(2, 3, len(DATA), DATA[2000:2280]), 2, PLAN)


def test_oversized_chunk_is_refused() -> None:
    with pytest.raises(TargetMismatchError, match=r"chunk 2: oversized \(endless data\)"):
        decode_chunk(encode_chunk(2, 3, len(DATA), DATA[2000:] + b"\0" * 100), 2, PLAN)


def test_chunk_whose_data_does_not_match_its_header_is_refused() -> None:
    good = encode_chunk(0, 3, len(DATA), DATA[:1000])
    with pytest.raises(TargetMismatchError, match="does not match its own header hash"):
        decode_chunk(good[:-1] + b"!", 0, PLAN)


def test_chunk_with_a_bad_magic_is_refused() -> None:
    good = encode_chunk(0, 3, len(DATA), DATA[:1000])
    with pytest.raises(TargetMismatchError, match="bad magic"):
        decode_chunk(b"XXXX" + good[4:], 0, PLAN)


def test_chunk_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(TargetMismatchError, match="shorter than its header"):
        decode_chunk(b"EUC1", 0, PLAN)
