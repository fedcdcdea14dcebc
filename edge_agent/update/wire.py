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
  model is, for whom, its chunk hashes and the HTTP(S) mirrors the publisher vouches
  for (the only announced mirrors a device uses without its own allowlist); or a signed
  command (rollback).

The announcement lives in :mod:`edge_agent.protocol.announce` and the topics in
:mod:`edge_agent.mqtt.topics`; both are re-exported here for existing callers.
The announcement itself is defined in :mod:`edge_agent.protocol.announce` and the
topics in :mod:`edge_agent.mqtt.topics`; both are re-exported here.

Parsers raise :class:`~edge_agent.update.errors.BadAnnouncementError` /
:class:`~edge_agent.update.errors.TargetMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from edge_agent.mqtt.topics import announce_topic, chunk_topic, group_announce_topic
from edge_agent.protocol.announce import (
    ANNOUNCE_TYPE,
    FILE_KEY_RE,
    SCHEMA,
    Announcement,
    parse_announcement,
)
from edge_agent.update.errors import (
    BundleRejectedError,
    CommandRejectedError,
    TargetMismatchError,
)

__all__ = ["ANNOUNCE_TYPE", "CHUNK_HEADER_BYTES", "CHUNK_MAGIC", "FILE_KEY_RE", "MAX_CHUNKS",
           "MAX_SHADOW_DURATION_S", "MAX_SHADOW_REQUESTS",
           "SCHEMA", "SHA256_RE", "Announcement", "Audience", "ChunkPlan", "Command",
           "ProbationTerms", "ShadowTerms", "TargetSpec", "announce_topic", "chunk_topic",
           "decode_chunk", "encode_chunk", "group_announce_topic", "parse_announcement",
           "parse_command", "parse_target_spec"]

CHUNK_MAGIC = b"EUC1"
_CHUNK_HEADER = struct.Struct(">4sIIQ32s")  # magic, index, count, total length, sha256(data)
CHUNK_HEADER_BYTES = _CHUNK_HEADER.size
MAX_CHUNKS = 4096
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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
    probation: ProbationTerms | None = None  # signed floors for the device's probation
    mirrors: tuple[str, ...] = ()  # HTTP(S) mirrors the publisher vouches for (base URLs)
    shadow: ShadowTerms | None = None  # mode = "shadow": evaluate before promotion
    uncompressed_length: int | None = None  # bytes of the tar inside a signed .tar.zst

    def to_custom(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, **self.audience.to_dict()}
        if self.kind == "model":
            d.update(name=self.name, version=self.version, profiles=list(self.profiles))
            if self.chunks is not None:
                d["chunk_size"] = self.chunks.size
                d["chunks"] = list(self.chunks.hashes)
            if self.probation is not None:
                d["probation"] = self.probation.to_dict()
            if self.mirrors:
                d["mirrors"] = list(self.mirrors)
            if self.shadow is not None:
                d["mode"] = "shadow"
                d["shadow"] = self.shadow.to_dict()
            if self.uncompressed_length is not None:
                d["uncompressed_length"] = self.uncompressed_length
        return {"edge": d}


@dataclass(frozen=True)
class ProbationTerms:
    """How much evidence the release demands before probation may fail it (signed, so no
    one but the publisher lowers it; the device's own ``[update]`` values are floors)."""

    min_requests: int = 0
    min_clients: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"min_requests": self.min_requests, "min_clients": self.min_clients}


def _probation_terms(d: dict[str, Any], path: str) -> ProbationTerms | None:
    raw = d.get("probation")
    if raw is None:
        return None
    vals = {k: raw.get(k, 0) for k in ("min_requests", "min_clients")} \
        if isinstance(raw, dict) else {}
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                       for v in vals.values()):
        raise BundleRejectedError(f"signed target {path!r}: 'probation' must map min_requests "
                                  "/ min_clients to non-negative ints")
    return ProbationTerms(**vals)


MAX_SHADOW_REQUESTS = 10_000_000  # compared requests a shadow release may ask for
MAX_SHADOW_DURATION_S = 7 * 86400  # seconds


@dataclass(frozen=True)
class ShadowTerms:
    """How a shadow release is judged (signed): the gate's normalized text, and either a
    count of compared requests (``min_requests``) or a ``duration_s`` (then at least one)."""

    gate: str
    min_requests: int = 0
    duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"gate": self.gate, "min_requests": self.min_requests}
        if self.duration_s is not None:  # whole seconds: canonical JSON signs no floats
            d["duration_s"] = max(1, math.ceil(self.duration_s))
        return d


def _shadow_terms(d: dict[str, Any], path: str) -> ShadowTerms | None:
    """Read and re-parse the signed shadow terms: the device never trusts the publisher's
    parser. Raises BundleRejectedError (code ``shadow_gate``) naming what is wrong."""
    from edge_agent.shadow.gate import GateError, parse_gate

    mode = d.get("mode", "direct")
    if mode == "direct" and "shadow" not in d:
        return None
    raw = d.get("shadow")
    if mode != "shadow" or not isinstance(raw, dict):
        raise BundleRejectedError(f"signed target {path!r}: mode {mode!r} with shadow "
                                  f"{raw!r:.80}: expected mode 'shadow' and a shadow table",
                                  code="shadow_gate")
    gate, n, dur = raw.get("gate"), raw.get("min_requests", 0), raw.get("duration_s")
    if not isinstance(gate, str):
        raise BundleRejectedError(f"signed target {path!r}: shadow gate must be a string",
                                  code="shadow_gate")
    try:
        parsed = parse_gate(gate)
    except GateError as e:
        raise BundleRejectedError(f"signed target {path!r}: shadow gate refused: {e}",
                                  code="shadow_gate") from e
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SHADOW_REQUESTS or (
            dur is not None and (isinstance(dur, bool) or not isinstance(dur, (int, float))
                                 or not 0 < dur <= MAX_SHADOW_DURATION_S)) or (
            dur is None and n < 1):
        raise BundleRejectedError(f"signed target {path!r}: shadow needs 1 <= min_requests "
                                  f"<= {MAX_SHADOW_REQUESTS} or 0 < duration_s <= 7 days, "
                                  f"got {n!r}, {dur!r}",
                                  code="shadow_gate")
    return ShadowTerms(parsed.text(), n, float(dur) if dur is not None else None)


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
    mirrors = _strs(d, "mirrors")
    if not all(re.match(r"^https?://[^\s]+$", m) for m in mirrors):
        raise BundleRejectedError(f"signed target {path!r}: 'mirrors' must be http(s) URLs")
    return TargetSpec("model", audience, name, version, _strs(d, "profiles"), plan,
                      _probation_terms(d, path), mirrors, _shadow_terms(d, path),
                      _uncompressed_length(d, path))


def _uncompressed_length(d: dict[str, Any], path: str) -> int | None:
    """A ``.tar.zst`` target must sign the length of its tar: it bounds decompression."""
    v = d.get("uncompressed_length")
    if v is None and not path.endswith(".tar.zst"):
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BundleRejectedError(f"signed target {path!r}: a .tar.zst needs a positive int "
                                  f"'uncompressed_length' (the tar's bytes), got {v!r}")
    return v


@dataclass(frozen=True)
class Command:
    """A signed operator command (the verified content of a ``kind=command`` target).

    Bound so that it cannot be replayed: it applies only while the device serves
    ``from_version`` of ``name``, only until ``expires_at`` (Unix seconds), and only once
    (``id`` is unique; the device remembers the ids it carried out). ``release`` is the
    targets metadata version it was signed into (for audit; later model releases drop it
    from the targets metadata).
    """

    command: str  # rollback
    name: str
    to_version: int | None
    id: str
    from_version: int = 0
    expires_at: float = 0.0
    release: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps({"command": self.command, "name": self.name,
                           "to_version": self.to_version, "id": self.id,
                           "from_version": self.from_version, "expires_at": self.expires_at,
                           "release": self.release}, sort_keys=True).encode()


def _pos_int(d: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise CommandRejectedError(f"rollback {key!r} must be a positive int, got {v!r}")
    return v


def parse_command(data: bytes) -> Command:
    """Parse verified command bytes. Raises CommandRejectedError (an unbound command —
    no from_version or expiry — is refused: it could be replayed at any later time)."""
    try:
        d = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandRejectedError(f"command is not JSON ({e})") from e
    what = d.get("command") if isinstance(d, dict) else d
    if not isinstance(d, dict) or what != "rollback":
        raise CommandRejectedError(f"unknown command {what!r} (this agent knows: rollback)")
    name, cid, exp = d.get("name"), d.get("id"), d.get("expires_at")
    if not isinstance(name, str) or not isinstance(cid, str) or not cid:
        raise CommandRejectedError("rollback command needs 'name' and 'id'")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not exp > 0:
        raise CommandRejectedError(f"rollback command needs 'expires_at' (Unix seconds), got "
                                   f"{exp!r}")
    frm = _pos_int(d, "from_version")
    assert frm is not None
    release = d.get("release", 0)
    if isinstance(release, bool) or not isinstance(release, int) or release < 0:
        raise CommandRejectedError(f"rollback 'release' must be an int >= 0, got {release!r}")
    return Command("rollback", name, _pos_int(d, "to_version", optional=True), cid, frm,
                   float(exp), release)
