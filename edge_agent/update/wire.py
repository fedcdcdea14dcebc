"""Wire formats shared by the workstation (``fleet``) and the device: pure data, no IO.

Three things travel:

* the **announcement** (JSON, retained on ``edge/<device>/update/announce`` or
  ``edge/group/<g>/update/announce``): an *untrusted* envelope carrying signed TUF
  metadata files, the target path and optional HTTP mirrors. Nothing in it is
  believed until python-tuf has verified the metadata it carries.
* a **chunk** (binary, retained on ``edge/blobs/<sha256>/<index>``): a fixed-size slice
  of a target with its own sha256. The topic is derived from the *signed* target
  hash, and every chunk is checked against the chunk hashes listed in the *signed*
  target entry (:class:`TargetSpec`), so a chunk is authenticated before it is written.
* the **signed target entry** (``custom.edge`` of a TUF ``TargetFile``): what the
  model is, for whom, and its chunk hashes; or a signed command (rollback).

Parsers raise :class:`~edge_agent.update.errors.BadAnnouncementError` /
:class:`~edge_agent.update.errors.TargetMismatchError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from edge_agent.update.errors import (
    BadAnnouncementError,
    BundleRejectedError,
    CommandRejectedError,
    TargetMismatchError,
)

ANNOUNCE_TYPE = "edge.update.announce"
SCHEMA = 1
CHUNK_MAGIC = b"EUC1"
_CHUNK_HEADER = struct.Struct(">4sIIQ32s")  # magic, index, count, total length, sha256(data)
CHUNK_HEADER_BYTES = _CHUNK_HEADER.size
MAX_CHUNKS = 4096
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FILE_KEY_RE = re.compile(r"^(metadata|targets)/[A-Za-z0-9._/-]{1,200}$")


def announce_topic(device: str, prefix: str = "edge") -> str:
    return f"{prefix}/{device}/update/announce"


def group_announce_topic(group: str, prefix: str = "edge") -> str:
    return f"{prefix}/group/{group}/update/announce"


def chunk_topic(sha256: str, index: int | str, prefix: str = "edge") -> str:
    return f"{prefix}/blobs/{sha256}/{index}"


@dataclass(frozen=True)
class Announcement:
    """An untrusted pointer to signed metadata; see the module docstring."""

    target: str
    files: dict[str, bytes]
    chunks: bool
    mirrors: tuple[str, ...] = ()
    published_at: float = 0.0
    digest: str = field(default="", compare=False)  # sha256 of the raw payload

    def to_bytes(self) -> bytes:
        doc = {"type": ANNOUNCE_TYPE, "schema": SCHEMA, "target": self.target,
               "files": {k: base64.b64encode(v).decode("ascii")
                         for k, v in sorted(self.files.items())},
               "chunks": self.chunks, "mirrors": list(self.mirrors),
               "published_at": self.published_at}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_announcement(payload: bytes, max_bytes: int) -> Announcement:
    """Parse (not trust) an announcement. Raises BadAnnouncementError saying what is wrong."""
    if len(payload) > max_bytes:
        raise BadAnnouncementError(f"announcement is {len(payload)} bytes, cap is {max_bytes}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadAnnouncementError(f"announcement is not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("type") != ANNOUNCE_TYPE:
        raise BadAnnouncementError(f"not an update announcement (type must be {ANNOUNCE_TYPE!r})")
    if doc.get("schema") != SCHEMA:
        raise BadAnnouncementError(f"announcement schema {doc.get('schema')!r} not supported "
                                   f"(this agent reads {SCHEMA})")
    target = doc.get("target")
    if not isinstance(target, str) or not re.match(r"^[A-Za-z0-9._/-]{1,200}$", target) \
            or ".." in target.split("/"):
        raise BadAnnouncementError(f"announcement target {target!r} is not a valid target path")
    raw_files = doc.get("files", {})
    if not isinstance(raw_files, dict):
        raise BadAnnouncementError("announcement 'files' must be an object")
    files: dict[str, bytes] = {}
    for k, v in raw_files.items():
        if not isinstance(k, str) or not FILE_KEY_RE.match(k) or ".." in k.split("/"):
            raise BadAnnouncementError(f"announcement file name {k!r} is not allowed")
        if not isinstance(v, str):
            raise BadAnnouncementError(f"announcement file {k!r} must be base64 text")
        try:
            files[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadAnnouncementError(f"announcement file {k!r} is not base64 ({e})") from e
    mirrors = doc.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(
            isinstance(m, str) and re.match(r"^https?://", m) for m in mirrors):
        raise BadAnnouncementError("announcement 'mirrors' must be a list of http(s) URLs")
    published = doc.get("published_at", 0.0)
    return Announcement(target=target, files=files, chunks=bool(doc.get("chunks", False)),
                        mirrors=tuple(mirrors),
                        published_at=float(published) if isinstance(published, (int, float))
                        else 0.0,
                        digest=hashlib.sha256(payload).hexdigest())


# --- chunks -------------------------------------------------------------------------------


def encode_chunk(index: int, count: int, total: int, data: bytes) -> bytes:
    return _CHUNK_HEADER.pack(CHUNK_MAGIC, index, count, total,
                              hashlib.sha256(data).digest()) + data


@dataclass(frozen=True)
class ChunkPlan:
    """How a target is cut: fixed ``size`` slices with signed sha256 each (last may be short)."""

    length: int
    size: int
    hashes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.hashes)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index`` within the target."""
        off = index * self.size
        return off, min(self.size, self.length - off)

    @classmethod
    def for_data(cls, data: bytes, size: int) -> ChunkPlan:
        hashes = tuple(hashlib.sha256(data[i:i + size]).hexdigest()
                       for i in range(0, max(len(data), 1), size))
        return cls(len(data), size, hashes)


def decode_chunk(payload: bytes, index: int, plan: ChunkPlan) -> bytes:
    """Check one received chunk against the *signed* plan; returns its data.

    Raises TargetMismatchError naming the chunk and what differs (bad header, wrong
    index/count/length, truncated or oversized data, hash not the signed one).
    """
    if len(payload) < CHUNK_HEADER_BYTES:
        raise TargetMismatchError(f"chunk {index}: {len(payload)} bytes, shorter than its header")
    magic, idx, count, total, digest = _CHUNK_HEADER.unpack_from(payload)
    data = payload[CHUNK_HEADER_BYTES:]
    if magic != CHUNK_MAGIC:
        raise TargetMismatchError(f"chunk {index}: bad magic {magic!r}")
    if idx != index or count != plan.count or total != plan.length:
        raise TargetMismatchError(
            f"chunk {index}: header says index {idx} of {count}, total {total} bytes; signed "
            f"metadata says {plan.count} chunks, {plan.length} bytes")
    if not 0 <= index < plan.count:
        raise TargetMismatchError(f"chunk {index}: beyond the {plan.count} signed chunks")
    _, want_len = plan.span(index)
    if len(data) != want_len:
        what = "truncated" if len(data) < want_len else "oversized (endless data)"
        raise TargetMismatchError(f"chunk {index}: {what}: {len(data)} bytes, signed "
                                  f"length {want_len}")
    got = hashlib.sha256(data).hexdigest()
    if got != digest.hex():
        raise TargetMismatchError(f"chunk {index}: data does not match its own header hash")
    if got != plan.hashes[index]:
        raise TargetMismatchError(f"chunk {index}: sha256 {got[:16]}… is not the signed "
                                  f"{plan.hashes[index][:16]}… (tampered)")
    return data


# --- signed target entries -----------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def includes(self, device: str, groups: tuple[str, ...]) -> bool:
        return device in self.devices or bool(set(groups) & set(self.groups))

    def to_dict(self) -> dict[str, list[str]]:
        return {"devices": sorted(self.devices), "groups": sorted(self.groups)}


@dataclass(frozen=True)
class TargetSpec:
    """The ``custom.edge`` part of a signed TUF target entry."""

    kind: str  # model | command
    audience: Audience
    name: str = ""
    version: int = 0
    profiles: tuple[str, ...] = ()
    chunks: ChunkPlan | None = None

    def to_custom(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, **self.audience.to_dict()}
        if self.kind == "model":
            d.update(name=self.name, version=self.version, profiles=list(self.profiles))
            if self.chunks is not None:
                d["chunk_size"] = self.chunks.size
                d["chunks"] = list(self.chunks.hashes)
        return {"edge": d}


def _strs(d: dict[str, Any], key: str) -> tuple[str, ...]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BundleRejectedError(f"signed target entry: {key!r} must be a list of strings")
    return tuple(v)


def parse_target_spec(custom: Any, length: int, path: str) -> TargetSpec:
    """Read the signed ``custom`` of target ``path``. Raises BundleRejectedError."""
    d = custom.get("edge") if isinstance(custom, dict) else None
    if not isinstance(d, dict):
        raise BundleRejectedError(f"signed target {path!r} has no 'custom.edge' entry: it is "
                                  "not an edge update")
    kind = d.get("kind")
    audience = Audience(_strs(d, "devices"), _strs(d, "groups"))
    if kind == "command":
        return TargetSpec("command", audience)
    if kind != "model":
        raise BundleRejectedError(f"signed target {path!r}: unknown kind {kind!r}")
    name, version = d.get("name"), d.get("version")
    if not isinstance(name, str) or not name:
        raise BundleRejectedError(f"signed target {path!r}: 'name' missing")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleRejectedError(f"signed target {path!r}: 'version' must be a positive int")
    plan = None
    if "chunks" in d:
        size, hashes = d.get("chunk_size"), d.get("chunks")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 \
                or not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_CHUNKS \
                or not all(isinstance(h, str) and SHA256_RE.match(h) for h in hashes):
            raise BundleRejectedError(f"signed target {path!r}: malformed chunk list")
        if len(hashes) != max(1, -(-length // size)):
            raise BundleRejectedError(f"signed target {path!r}: {len(hashes)} chunk hashes for "
                                      f"{length} bytes in {size}-byte chunks")
        plan = ChunkPlan(length, size, tuple(hashes))
    return TargetSpec("model", audience, name, version, _strs(d, "profiles"), plan)


@dataclass(frozen=True)
class Command:
    """A signed operator command (the verified content of a ``kind=command`` target)."""

    command: str  # rollback
    name: str
    to_version: int | None
    id: str

    def to_bytes(self) -> bytes:
        return json.dumps({"command": self.command, "name": self.name,
                           "to_version": self.to_version, "id": self.id},
                          sort_keys=True).encode()


def parse_command(data: bytes) -> Command:
    """Parse verified command bytes. Raises CommandRejectedError."""
    try:
        d = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandRejectedError(f"command is not JSON ({e})") from e
    what = d.get("command") if isinstance(d, dict) else d
    if not isinstance(d, dict) or what != "rollback":
        raise CommandRejectedError(f"unknown command {what!r} (this agent knows: rollback)")
    name, to, cid = d.get("name"), d.get("to_version"), d.get("id")
    if not isinstance(name, str) or not isinstance(cid, str) or not cid:
        raise CommandRejectedError("rollback command needs 'name' and 'id'")
    if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 1):
        raise CommandRejectedError(f"rollback 'to_version' must be a positive int, got {to!r}")
    return Command("rollback", name, to, cid)
