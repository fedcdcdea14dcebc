"""``edge-fleet encrypt`` / ``reencrypt``: seal a bundle for a set of device keys
(docs/security.md, *Encrypted bundles*).

The fleet keeps the **plaintext** bundle; a sealed bundle is made from it for one
recipient set and published like any bundle (``edge-fleet publish SEALED`` or
``publish PLAIN --encrypt-to KEY…``). A recipient is a key (64 hex digits, a PEM file) or
a name in the device-key registry: ``device:ID`` or ``group:NAME``
(:mod:`fleet.device_keys`). ``reencrypt`` seals a release again, under a fresh content
key, for its group as the registry has it now (members added, removed or rotated) and
says what changed against the sealed file published before; devices already running that
version see the new one as installed, a device that joined installs it. Rotating a
device's key is ``edge-agent keygen --rotate`` on the device, ``edge-fleet device-keys
rotate`` here, then a release sealed for the new key.
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
from fleet import device_keys

__all__ = ["is_sealed_file", "recipients", "register", "seal_bundle", "sealed_for_publish"]


def recipients(specs: Sequence[str], registry: Path | None = None) -> list[X25519PublicKey]:
    """``--to`` values → keys, each once (a device in two named groups is one
    recipient). Raises BadInputError naming the bad one."""
    out: dict[str, X25519PublicKey] = {}
    for spec in specs:
        try:
            keys = [load_public(k) for k in device_keys.resolve(spec, registry) or [spec]]
        except (ValueError, OSError) as e:
            raise BadInputError(f"--to: {e}") from e
        except BadInputError as e:
            raise BadInputError(f"--to {spec}: {e}") from e
        for k in keys:
            out.setdefault(fingerprint(k), k)
    return list(out.values())


def seal_bundle(bundle_path: Path, to: Sequence[X25519PublicKey]) -> bytes:
    """The sealed envelope of the bundle at ``bundle_path`` for ``to``."""
    b = read_bundle(bundle_path)
    try:
        return seal_files(b.files(), name=b.name, version=b.version,
                          target_profiles=b.manifest.target_profiles, recipients=to)
    except ValueError as e:
        raise BadInputError(f"{bundle_path}: {e}") from e


def sealed_for_publish(bundle_path: Path, encrypt_to: Sequence[str],
                       tmp_dir: Path, registry: Path | None = None) -> Path:
    """``publish --encrypt-to``: the bundle sealed into ``tmp_dir`` (ciphertext only)."""
    out = tmp_dir / f"{bundle_path.name}.sealed"
    atomic_write_bytes(out, seal_bundle(bundle_path, recipients(encrypt_to, registry)))
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
    to = recipients(args.to, args.device_keys)
    was = sealed_header(Path(args.was)) if args.was else None
    b = read_bundle(Path(args.bundle))
    if was is not None and (was[0], was[1]) != (b.name, b.version):
        raise BadInputError(f"--was {args.was} is {was[0]} v{was[1]}, {args.bundle} is "
                            f"{b.name} v{b.version}: not the same release")
    data = seal_bundle(Path(args.bundle), to)
    atomic_write_bytes(Path(args.out), data)
    ids = ", ".join(fingerprint(k) for k in to)
    print(f"sealed {args.bundle} → {args.out} ({len(data)} bytes) for {len(to)} "
          f"recipient(s): {ids}", file=sys.stdout)
    if was is not None:
        before = {r.id for r in parse_header(was[3], max_bytes=len(was[3])).recipients}
        now = {fingerprint(k) for k in to}
        print(f"against {args.was}: added {', '.join(sorted(now - before)) or 'none'}; "
              f"dropped {', '.join(sorted(before - now)) or 'none'} (a dropped key still "
              "opens the release sealed before; only later releases are closed to it)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("encrypt", help="seal a bundle for device keys (AES-256-GCM, X25519)",
                       description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("bundle", type=Path, help="the plaintext bundle directory or .tar")
    p.add_argument("--to", nargs="+", action="extend", required=True, metavar="KEY",
                   help="device public key: a .pub/PEM file or 64 hex digits "
                        "(`edge-agent keygen` prints it), device:ID or group:NAME of the "
                        "registry (edge-fleet device-keys); repeatable")
    p.add_argument("-o", "--out", required=True, type=Path, help="the sealed bundle file")
    device_keys.add_registry_arg(p)
    p.set_defaults(func=_cmd_encrypt, was=None)
    r = sub.add_parser("reencrypt", help="seal a release again for its group as it is now "
                                         "(fresh content key), against the one sent before",
                       description=(__doc__ or "").split("\n\n")[1])
    r.add_argument("bundle", type=Path, help="the release's plaintext bundle")
    r.add_argument("--to", nargs="+", action="extend", required=True, metavar="KEY",
                   help="group:NAME, device:ID or a key; repeatable")
    r.add_argument("--was", type=Path, metavar="SEALED",
                   help="the sealed file published before: checked to be the same release, "
                        "and the recipients added and dropped are listed")
    r.add_argument("-o", "--out", required=True, type=Path, help="the new sealed file")
    device_keys.add_registry_arg(r)
    r.set_defaults(func=_cmd_encrypt)


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edge-seal-")
