"""``edge-fleet encrypt``: seal a bundle for a set of device keys (docs/security.md,
*Encrypted bundles*).

The fleet keeps the **plaintext** bundle; a sealed bundle is made from it for one
recipient set and published like any bundle (``edge-fleet publish SEALED`` or
``publish PLAIN --encrypt-to KEY…``). Re-encrypting a release for a changed group is
sealing the plaintext again for the new set and publishing it; rotating a device's key
is ``edge-agent keygen --rotate`` on the device, then a release sealed for the new key.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge_agent.bundle import read_bundle
from edge_agent.crypto import is_sealed_file
from edge_agent.crypto.device_key import load_public
from edge_agent.crypto.sealed import fingerprint, parse_header, seal_files
from edge_agent.errors import BadInputError
from edge_agent.fsutil import atomic_write_bytes

__all__ = ["is_sealed_file", "recipients", "register", "seal_bundle", "sealed_for_publish"]


def recipients(specs: Sequence[str]) -> list[X25519PublicKey]:
    """``--to`` values → keys. Raises BadInputError naming the bad one."""
    try:
        return [load_public(s) for s in specs]
    except (ValueError, OSError) as e:
        raise BadInputError(f"--to: {e}") from e


def seal_bundle(bundle_path: Path, to: Sequence[X25519PublicKey]) -> bytes:
    """The sealed envelope of the bundle at ``bundle_path`` for ``to``."""
    b = read_bundle(bundle_path)
    try:
        return seal_files(b.files(), name=b.name, version=b.version,
                          target_profiles=b.manifest.target_profiles, recipients=to)
    except ValueError as e:
        raise BadInputError(f"{bundle_path}: {e}") from e


def sealed_for_publish(bundle_path: Path, encrypt_to: Sequence[str],
                       tmp_dir: Path) -> Path:
    """``publish --encrypt-to``: the bundle sealed into ``tmp_dir`` (ciphertext only)."""
    out = tmp_dir / f"{bundle_path.name}.sealed"
    atomic_write_bytes(out, seal_bundle(bundle_path, recipients(encrypt_to)))
    return out


def sealed_header(path: Path) -> tuple[str, int, tuple[str, ...], bytes]:
    """Name, version, profiles and bytes of a sealed bundle file, for publishing."""
    data = path.read_bytes()
    try:
        h = parse_header(data, max_bytes=len(data))
    except BadInputError as e:
        raise BadInputError(f"{path}: {e}") from e
    return h.name, h.version, h.target_profiles, data


def _cmd_encrypt(args: argparse.Namespace) -> int:
    to = recipients(args.to)
    data = seal_bundle(Path(args.bundle), to)
    atomic_write_bytes(Path(args.out), data)
    ids = ", ".join(fingerprint(k) for k in to)
    print(f"sealed {args.bundle} → {args.out} ({len(data)} bytes) for {len(to)} "
          f"recipient(s): {ids}", file=sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("encrypt", help="seal a bundle for device keys (AES-256-GCM, X25519)",
                       description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("bundle", type=Path, help="the plaintext bundle directory or .tar")
    p.add_argument("--to", nargs="+", action="extend", required=True, metavar="KEY",
                   help="device public key: a .pub/PEM file or 64 hex digits "
                        "(`edge-agent keygen` prints it); repeatable")
    p.add_argument("-o", "--out", required=True, type=Path, help="the sealed bundle file")
    p.set_defaults(func=_cmd_encrypt)


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edge-seal-")
