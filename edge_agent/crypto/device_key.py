"""IO shell of the sealed bundles: the device key pair on disk, and opening a sealed
bundle file into a :class:`~edge_agent.bundle.Bundle` in memory (the plaintext never
touches disk).

The private key is X25519 in PKCS#8 PEM, mode 0600, owned by the user that writes it
(``edge-agent keygen``; ``install-service`` runs it as the service user); a key file that
group or others may read is refused when it is loaded. After a
rotation (``keygen --rotate``) the old key is kept beside it as ``<key>.previous`` so
that installed versions sealed for it still open until a release re-encrypted for the
new key is committed; the recipient is picked by fingerprint, never by trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from edge_agent.bundle import MAX_BUNDLE_BYTES, Bundle, bundle_from_files
from edge_agent.crypto.sealed import (
    SealedBundleError,
    fingerprint,
    open_files,
    parse_header,
    public_bytes,
    recipient_key,
)

__all__ = ["DeviceKeys", "generate", "load_public", "open_sealed", "previous_path",
           "read_sealed_file"]

MAX_KEY_FILE_BYTES = 16 << 10


def _pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _write_private(path: Path, key: X25519PrivateKey) -> None:
    """0600 from the first byte (O_EXCL temp + rename), never group/other-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, _pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def generate(path: Path, *, force: bool = False, rotate: bool = False) -> X25519PublicKey:
    """Write a new device key at ``path``; refuses an existing one unless ``force``
    (overwrite) or ``rotate`` (keep it as ``<path>.previous``). Raises FileExistsError,
    OSError."""
    if path.exists() and not (force or rotate):
        raise FileExistsError(f"{path} exists; --force overwrites it, --rotate keeps it as "
                              f"{path.name}.previous")
    if rotate and path.exists():
        if previous_path(path).exists():  # a second rotation would lose the older key
            raise FileExistsError(
                f"{previous_path(path)} is still kept from the last rotation; it is retired "
                "when a release sealed for the new key commits, or now with --retire")
        os.replace(path, previous_path(path))
    key = X25519PrivateKey.generate()
    _write_private(path, key)
    return key.public_key()


def previous_path(path: Path) -> Path:
    """Where a rotation keeps the old key until it is retired (:mod:`.rotation`)."""
    return path.with_name(path.name + ".previous")


def _load_private(path: Path) -> X25519PrivateKey:
    """The key at ``path``; refused (``device_key_unsafe``) when group or others may read
    it, as ssh refuses such a key: it may no longer be this device's secret."""
    with path.open("rb") as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        if mode & 0o077:
            raise SealedBundleError(f"{path}: mode {mode:o} lets others read this device's "
                                    f"private key; chmod 600 {path} (or, if it may have "
                                    "leaked, edge-agent keygen --rotate)",
                                    code="device_key_unsafe")
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SealedBundleError(f"{path}: over {MAX_KEY_FILE_BYTES} bytes, not a device key",
                                code="device_key_missing")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SealedBundleError(f"{path}: not a device key ({e})",
                                code="device_key_missing") from e
    if not isinstance(key, X25519PrivateKey):
        raise SealedBundleError(f"{path}: not an X25519 key", code="device_key_missing")
    return key


def load_public(spec: str) -> X25519PublicKey:
    """A recipient: a PEM public key file, a device private key file (its public half),
    or 64 hex digits of the raw key. Raises ValueError naming what was wrong."""
    s = spec.strip()
    if len(s) == 64 and all(c in "0123456789abcdefABCDEF" for c in s):
        return recipient_key(bytes.fromhex(s))
    p = Path(spec)
    if not p.is_file():
        raise ValueError(f"{spec!r}: neither a key file nor 64 hex digits of an X25519 key")
    data = p.read_bytes()[:MAX_KEY_FILE_BYTES]
    if b"PRIVATE KEY" in data:
        return _load_private(p).public_key()
    try:
        pub = load_pem_public_key(data)
    except ValueError as e:
        raise ValueError(f"{spec}: not a PEM public key ({e})") from e
    if not isinstance(pub, X25519PublicKey):
        raise ValueError(f"{spec}: not an X25519 public key")
    return recipient_key(public_bytes(pub))


def public_pem(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class DeviceKeys:
    """This device's key file (``[agent] device_key``); read when a sealed bundle opens."""

    path: Path | None

    def keys(self) -> dict[str, X25519PrivateKey]:
        """Current and previous keys by fingerprint; raises SealedBundleError
        ``device_key_missing`` when there is none."""
        if self.path is None or not self.path.is_file():
            raise SealedBundleError(
                f"the bundle is encrypted and this device has no key at {self.path} "
                "([agent] device_key; make one with `edge-agent keygen`)",
                code="device_key_missing")
        out: dict[str, X25519PrivateKey] = {}
        for p in (self.path, previous_path(self.path)):
            if p.is_file():
                k = _load_private(p)
                out[fingerprint(public_bytes(k.public_key()))] = k
        return out

    def _fingerprint_of(self, p: Path | None) -> str | None:
        if p is None or not p.is_file():
            return None
        return fingerprint(public_bytes(_load_private(p).public_key()))

    def current(self) -> str | None:
        """Fingerprint of the current key (None without one). Raises SealedBundleError."""
        return self._fingerprint_of(self.path)

    def previous(self) -> str | None:
        """Fingerprint of the key kept by the last rotation, if any."""
        return self._fingerprint_of(previous_path(self.path) if self.path else None)

    def fingerprints(self) -> list[str]:
        try:
            return list(self.keys())
        except SealedBundleError:
            return []


def open_sealed(data: bytes, keys: DeviceKeys, source: str, *,
                max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Decrypt and parse a sealed bundle in memory; the result keeps ``data`` as
    ``Bundle.sealed`` (the store installs the ciphertext). Raises BundleError."""
    header = parse_header(data, max_bytes=max_bytes)
    mine = keys.keys()
    ids = {r.id for r in header.recipients}
    fid = next((f for f in mine if f in ids), next(iter(mine)))
    try:
        _, files = open_files(data, mine[fid], max_bytes=max_bytes)
    except SealedBundleError as e:
        raise SealedBundleError(f"{source}: {e}", code=e.code) from e
    bundle = bundle_from_files(files, source, sealed=data)
    m = bundle.manifest
    if (m.name, m.version) != (header.name, header.version):
        raise SealedBundleError(f"{source}: the clear header says {header.name} "
                                f"v{header.version}, the encrypted manifest {m.name} "
                                f"v{m.version}", code="sealed_mismatch")
    return bundle


def read_sealed_file(path: Path, keys: DeviceKeys, *, max_bytes: int,
                     source: str | None = None) -> Bundle:
    """A sealed bundle from its file, read within ``max_bytes``. Raises BundleError."""
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    return open_sealed(data, keys, source or str(path), max_bytes=max_bytes)

