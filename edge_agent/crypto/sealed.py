"""The sealed-bundle envelope: a bundle's files encrypted for a set of device keys.

Pure: bytes in, bytes out; no files, no clock (docs/security.md, *Encrypted bundles*).

Format (envelope version 1)::

    b"EDGESEAL" | u8 version (1) | u32 big-endian header length | header JSON | parts

The header (UTF-8 JSON, at most :data:`MAX_HEADER_BYTES`) is **clear**: ``name``,
``version``, ``target_profiles`` (what policy checks need before any decryption), the
``recipients`` (``id`` = key fingerprint, ``epk`` = ephemeral X25519 public key,
``wrapped`` = the content key wrapped for that recipient, base64) and the ``parts``
(``file``, ``nonce``, ``size`` of each ciphertext, in order). Everything else is
**encrypted**: every file of the bundle (``model.tflite`` and any other model file,
``manifest.json`` — inputs, outputs, labels, golden vectors, drift statistics —
and ``report.json``), each under the same fresh AES-256-GCM content key with its own
random nonce (:func:`seal_files` iterates over the files it is given: a bundle with
several model variants passes them all).

Key wrap, per recipient (HPKE-style, base mode): a fresh ephemeral X25519 key pair;
``KEK = HKDF-SHA256(X25519(eph, recipient), salt=None, info=b"edge-seal/1 wrap" || epk ||
recipient_pub)``; ``wrapped = AES-256-GCM(KEK, nonce=0^12, content_key, aad=release)``.
The KEK is used once, so the fixed nonce is safe.

Authenticated data: ``release`` = the canonical JSON of name, version and
target_profiles; each part's AAD adds its file name. A ciphertext (or a wrapped key)
therefore cannot be moved into another release, another file slot, or under another
clear header: any change fails the GCM tag.

Raises :class:`SealedBundleError` (a :class:`~edge_agent.errors.BundleError`) with a
machine ``code`` (see :data:`CODES`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.crypto import MAGIC
from edge_agent.errors import BundleError

__all__ = ["CODES", "ENVELOPE_VERSION", "MAGIC", "Recipient", "SealedBundleError",
           "SealedHeader", "fingerprint", "is_sealed", "open_files", "parse_header",
           "public_bytes", "recipient_key", "rewrap", "seal_files"]

ENVELOPE_VERSION = 1
_PREFIX = struct.Struct(">8sBI")  # magic, version, header length
MAX_HEADER_BYTES = 1 << 20  # bytes
MAX_RECIPIENTS = 4096
MAX_PARTS = 64
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_BYTES = KEY_BYTES + TAG_BYTES
FINGERPRINT_BYTES = 16
_WRAP_INFO = b"edge-seal/1 wrap"

CODES = {
    "sealed_version": "unknown envelope version",
    "sealed_malformed": "the clear header does not parse or breaks a limit",
    "sealed_truncated": "the envelope, a part or a wrapped key is cut short",
    "not_for_this_device": "no recipient is this device's key",
    "sealed_bad_tag": "a GCM tag does not verify (tampered, or the wrong key)",
    "sealed_mismatch": "the decrypted manifest is not the release the header names",
    "device_key_missing": "the bundle is sealed and this device has no key",
    "device_key_unsafe": "this device's key file may be read by group or others",
}


class SealedBundleError(BundleError):
    """A sealed bundle refused; ``code`` is one of :data:`CODES`."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Recipient:
    id: str  # fingerprint of the recipient's public key
    epk: bytes  # ephemeral public key, 32 bytes
    wrapped: bytes  # content key + tag, 48 bytes


@dataclass(frozen=True)
class Part:
    file: str
    nonce: bytes
    size: int  # ciphertext bytes, tag included


@dataclass(frozen=True)
class SealedHeader:
    name: str
    version: int
    target_profiles: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    parts: tuple[Part, ...]
    body_offset: int  # where the first part starts in the envelope

    def release_aad(self) -> bytes:
        return _release_aad(self.name, self.version, self.target_profiles)


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def recipient_key(raw: bytes) -> X25519PublicKey:
    """The X25519 public key of 32 ``raw`` bytes, refused when it is a small-order point
    (its shared secret with any key is all zero: no device has it). Raises ValueError."""
    pub = X25519PublicKey.from_public_bytes(raw)
    try:
        X25519PrivateKey.generate().exchange(pub)
    except ValueError as e:
        raise ValueError(f"{raw.hex()}: a small-order X25519 point, not a device's key "
                         "(check what was pasted)") from e
    return pub


def fingerprint(key: X25519PublicKey | bytes) -> str:
    """Hex of the first 16 bytes of sha256 over the raw 32-byte public key."""
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).digest()[:FINGERPRINT_BYTES].hex()


def is_sealed(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


def _release_aad(name: str, version: int, profiles: Sequence[str]) -> bytes:
    return json.dumps({"name": name, "target_profiles": list(profiles), "version": version},
                      sort_keys=True, separators=(",", ":")).encode()


def _part_aad(release: bytes, file: str) -> bytes:
    return release + b"\0" + file.encode()


def _kek(shared: bytes, epk: bytes, rpk: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=_WRAP_INFO + epk + rpk).derive(shared)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def seal_files(files: Mapping[str, bytes], *, name: str, version: int,
               target_profiles: Sequence[str],
               recipients: Sequence[X25519PublicKey]) -> bytes:
    """Encrypt every file of ``files`` under one fresh content key for ``recipients``.

    Raises ValueError for no recipients, a duplicate recipient or too many files.
    """
    if not recipients:
        raise ValueError("a sealed bundle needs at least one recipient key")
    if len(files) > MAX_PARTS:
        raise ValueError(f"{len(files)} files, over {MAX_PARTS}")
    release = _release_aad(name, version, target_profiles)
    cek = AESGCM.generate_key(bit_length=256)
    recs = _wrap_for(cek, release, recipients)
    aead = AESGCM(cek)
    parts, bodies = [], []
    for file, data in files.items():  # every file of the bundle: model(s), manifest, report
        nonce = os.urandom(NONCE_BYTES)
        ct = aead.encrypt(nonce, data, _part_aad(release, file))
        parts.append({"file": file, "nonce": _b64(nonce), "size": len(ct)})
        bodies.append(ct)
    return _envelope(name, version, target_profiles, recs, parts, bodies)


def _wrap_for(cek: bytes, release: bytes, recipients: Sequence[X25519PublicKey]
              ) -> list[dict[str, str]]:
    """The content key wrapped for each recipient (a fresh ephemeral key each)."""
    recs, seen = [], set()
    for pub in recipients:
        rpk = public_bytes(pub)
        fid = fingerprint(rpk)
        if fid in seen:
            raise ValueError(f"recipient {fid} given twice")
        seen.add(fid)
        eph = X25519PrivateKey.generate()
        epk = public_bytes(eph.public_key())
        kek = _kek(eph.exchange(pub), epk, rpk)
        wrapped = AESGCM(kek).encrypt(b"\0" * NONCE_BYTES, cek, release)
        recs.append({"id": fid, "epk": _b64(epk), "wrapped": _b64(wrapped)})
    return recs


def _envelope(name: str, version: int, target_profiles: Sequence[str],
              recs: list[dict[str, str]], parts: list[dict[str, Any]],
              bodies: Sequence[bytes | memoryview]) -> bytes:
    header = json.dumps({"name": name, "version": version,
                         "target_profiles": list(target_profiles), "recipients": recs,
                         "parts": parts}, sort_keys=True, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(header)} bytes, over {MAX_HEADER_BYTES}")
    return b"".join([_PREFIX.pack(MAGIC, ENVELOPE_VERSION, len(header)), header, *bodies])


def rewrap(data: bytes, key: X25519PrivateKey, to: X25519PublicKey, *, max_bytes: int
           ) -> bytes:
    """Key rotation on the device: envelope ``data`` with ``key``'s recipient entry
    replaced by one for ``to`` (the content key unwrapped with ``key``, wrapped afresh
    for ``to``). The encrypted parts are not touched: their AAD is the release, not the
    recipient, so they still verify. Other recipients are kept. Raises
    SealedBundleError (``not_for_this_device``, ``sealed_bad_tag``, header codes)."""
    header = parse_header(data, max_bytes=max_bytes)
    cek = unwrap_key(header, key)
    gone = {fingerprint(key.public_key()), fingerprint(to)}
    recs = [{"id": r.id, "epk": _b64(r.epk), "wrapped": _b64(r.wrapped)}
            for r in header.recipients if r.id not in gone]
    recs += _wrap_for(cek, header.release_aad(), [to])
    parts = [{"file": p.file, "nonce": _b64(p.nonce), "size": p.size} for p in header.parts]
    return _envelope(header.name, header.version, header.target_profiles, recs, parts,
                     [memoryview(data)[header.body_offset:]])


def _bad(msg: str, code: str = "sealed_malformed") -> SealedBundleError:
    return SealedBundleError(f"sealed bundle: {msg}", code=code)


def _unb64(v: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(v, str) or len(v) > 4 * MAX_HEADER_BYTES:
        raise _bad(f"{what} must be a base64 string")
    try:
        b = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _bad(f"{what} is not base64 ({e})") from e
    if size is not None and len(b) != size:
        raise _bad(f"{what} is {len(b)} bytes, expected {size}", "sealed_truncated")
    return b


def parse_header(data: bytes, *, max_bytes: int) -> SealedHeader:
    """The clear header of envelope ``data``, checked against every limit before any
    decryption: size, version, counts, field types, and that the parts exactly fill
    the rest of ``data``. Raises SealedBundleError."""
    if len(data) > max_bytes:
        raise _bad(f"{len(data)} bytes, over the bound of {max_bytes}", "sealed_malformed")
    if len(data) < _PREFIX.size:
        raise _bad(f"{len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix",
                   "sealed_truncated")
    magic, ver, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _bad("not a sealed bundle (bad magic)")
    if ver != ENVELOPE_VERSION:
        raise _bad(f"envelope version {ver}; this agent reads version {ENVELOPE_VERSION}",
                   "sealed_version")
    if hlen > MAX_HEADER_BYTES:
        raise _bad(f"header claims {hlen} bytes, over {MAX_HEADER_BYTES}")
    start = _PREFIX.size
    if start + hlen > len(data):
        raise _bad(f"header claims {hlen} bytes, {len(data) - start} present",
                   "sealed_truncated")
    try:
        h = json.loads(data[start:start + hlen])
    except (ValueError, RecursionError) as e:
        raise _bad(f"header is not JSON ({e})") from e
    if not isinstance(h, dict):
        raise _bad("header must be a JSON object")
    name, version, profiles = h.get("name"), h.get("version"), h.get("target_profiles")
    if not isinstance(name, str) or not name:
        raise _bad("header.name must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad("header.version must be an integer >= 1")
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise _bad("header.target_profiles must be a list of strings")
    rlist, plist = h.get("recipients"), h.get("parts")
    if not isinstance(rlist, list) or not 1 <= len(rlist) <= MAX_RECIPIENTS:
        raise _bad(f"header.recipients must be a list of 1..{MAX_RECIPIENTS}")
    if not isinstance(plist, list) or not 1 <= len(plist) <= MAX_PARTS:
        raise _bad(f"header.parts must be a list of 1..{MAX_PARTS}")
    recs = []
    for i, r in enumerate(rlist):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise _bad(f"header.recipients[{i}] must be an object with an id")
        recs.append(Recipient(r["id"], _unb64(r.get("epk"), f"recipients[{i}].epk", KEY_BYTES),
                              _unb64(r.get("wrapped"), f"recipients[{i}].wrapped",
                                     WRAPPED_BYTES)))
    parts, total, names = [], 0, set()
    for i, p in enumerate(plist):
        if not isinstance(p, dict) or not isinstance(p.get("file"), str) \
                or not isinstance(p.get("size"), int) or p["size"] < TAG_BYTES:
            raise _bad(f"header.parts[{i}] must have a file and a size >= {TAG_BYTES}")
        if p["file"] in names:
            raise _bad(f"header.parts: {p['file']!r} twice")
        names.add(p["file"])
        parts.append(Part(p["file"], _unb64(p.get("nonce"), f"parts[{i}].nonce", NONCE_BYTES),
                          p["size"]))
        total += p["size"]
    body = len(data) - start - hlen
    if total != body:
        raise _bad(f"parts claim {total} bytes, {body} follow the header",
                   "sealed_truncated" if total > body else "sealed_malformed")
    return SealedHeader(name, version, tuple(profiles), tuple(recs), tuple(parts),
                        start + hlen)


def unwrap_key(header: SealedHeader, key: X25519PrivateKey) -> bytes:
    """The content key, unwrapped for ``key``. Raises SealedBundleError
    (``not_for_this_device``, ``sealed_bad_tag``)."""
    rpk = public_bytes(key.public_key())
    me = fingerprint(rpk)
    rec = next((r for r in header.recipients if r.id == me), None)
    if rec is None:
        ids = ", ".join(r.id for r in header.recipients[:8])
        raise _bad(f"{header.name} v{header.version} is not encrypted for this device (key "
                   f"{me}; recipients: {ids}{' …' if len(header.recipients) > 8 else ''})",
                   "not_for_this_device")
    try:
        kek = _kek(key.exchange(X25519PublicKey.from_public_bytes(rec.epk)), rec.epk, rpk)
        return AESGCM(kek).decrypt(b"\0" * NONCE_BYTES, rec.wrapped, header.release_aad())
    except (InvalidTag, ValueError) as e:
        raise _bad(f"the wrapped key for {me} does not verify (tampered header or key)",
                   "sealed_bad_tag") from e


def open_files(data: bytes, key: X25519PrivateKey, *, max_bytes: int
               ) -> tuple[SealedHeader, dict[str, bytes]]:
    """Decrypt envelope ``data`` with this device's ``key``: the clear header and the
    plaintext files, in memory. Raises SealedBundleError."""
    header = parse_header(data, max_bytes=max_bytes)
    aead = AESGCM(unwrap_key(header, key))
    release = header.release_aad()
    files: dict[str, bytes] = {}
    off = header.body_offset
    view = memoryview(data)
    for p in header.parts:
        try:
            files[p.file] = aead.decrypt(p.nonce, view[off:off + p.size],
                                         _part_aad(release, p.file))
        except InvalidTag as e:
            raise _bad(f"{p.file} of {header.name} v{header.version}: the GCM tag does not "
                       "verify (tampered ciphertext)", "sealed_bad_tag") from e
        off += p.size
    return header, files
