"""``edge-fleet keygen``: Ed25519 signing keys for the update repository.

A key is two files: ``<name>.key`` (PKCS#8 PEM private key, mode 0600, encrypted
when a passphrase is given) and ``<name>.pub`` (the TUF/securesystemslib public key
JSON with its keyid, safe to share). Which role a key serves (root, targets, snapshot,
timestamp) is decided when the repository is created or rotated, not here.

Raises :class:`KeyFileError` (bad input, exit 2) for unreadable, mistyped or
wrongly-unlocked key files.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, SSlibKey

from edge_agent.errors import BadInputError
from edge_agent.fsutil import atomic_write_bytes

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
PASSPHRASE_ENV = "EDGE_FLEET_PASSPHRASE"


class KeyFileError(BadInputError):
    """A key file is missing, malformed, not Ed25519, or the passphrase is wrong."""


def generate(out_dir: Path, name: str, passphrase: bytes | None = None) -> SSlibKey:
    """Write ``<name>.key`` (0600) and ``<name>.pub``; refuses to overwrite either."""
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}{PRIVATE_SUFFIX}", out_dir / f"{name}{PUBLIC_SUFFIX}"
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyFileError(f"{p} already exists; refusing to overwrite a key")
    priv = Ed25519PrivateKey.generate()
    enc = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    pem = priv.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, enc)
    atomic_write_bytes(priv_path, pem, mode=0o600)
    key = SSlibKey.from_crypto(priv.public_key())
    atomic_write_bytes(pub_path, public_json(key), mode=0o644)
    return key


def public_json(key: SSlibKey) -> bytes:
    return (json.dumps({"keyid": key.keyid, **key.to_dict()}, indent=1, sort_keys=True)
            + "\n").encode()


def load_public(path: Path) -> SSlibKey:
    """Read a ``.pub`` file (or derive the public key from an unencrypted ``.key``)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        keyid = d.pop("keyid")
        key = SSlibKey.from_dict(keyid, d)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read public key: {e.strerror}") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeyFileError(f"{path}: not a public key file written by edge-fleet keygen "
                           f"({type(e).__name__}: {e})") from e
    if key.keytype != "ed25519":
        raise KeyFileError(f"{path}: expected an ed25519 key, got {key.keytype}")
    try:
        derived = SSlibKey.from_crypto(
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.keyval["public"])))
    except ValueError as e:
        raise KeyFileError(f"{path}: malformed ed25519 public key ({e})") from e
    if derived.keyid != keyid:
        raise KeyFileError(f"{path}: keyid does not match the key it names")
    return key


def load_signer(path: Path, passphrase: bytes | None = None) -> CryptoSigner:
    """Open a ``.key`` file for signing. Raises KeyFileError (and says how to unlock)."""
    path = Path(path)
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read private key: {e.strerror}") from e
    if path.suffix == PUBLIC_SUFFIX or pem.lstrip().startswith(b"{"):
        raise KeyFileError(f"{path}: this is a public key; pass the {PRIVATE_SUFFIX} file "
                           f"({path.with_suffix(PRIVATE_SUFFIX).name}) to sign")
    mode = path.stat().st_mode & 0o077
    if mode:
        raise KeyFileError(f"{path}: private key is readable by group/others "
                           f"(mode {oct(path.stat().st_mode & 0o777)}); chmod 600 it")
    try:
        priv = load_pem_private_key(pem, password=passphrase)
    except TypeError as e:
        if passphrase is None:
            raise KeyFileError(f"{path}: key is encrypted; set {PASSPHRASE_ENV} or use "
                               "--passphrase-prompt") from e
        raise KeyFileError(f"{path}: key is not encrypted but a passphrase was given") from e
    except ValueError as e:
        raise KeyFileError(f"{path}: wrong passphrase or not a PEM private key") from e
    if not isinstance(priv, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, got "
                           f"{type(priv).__name__}")
    return CryptoSigner(priv)


def load_signers(paths: list[Path], passphrase: bytes | None) -> list[CryptoSigner]:
    """Open several keys with one passphrase (unencrypted keys ignore it)."""
    out = []
    for p in paths:
        try:
            out.append(load_signer(p, passphrase))
        except KeyFileError:
            if passphrase is None:
                raise
            out.append(load_signer(p, None))
    return out


def passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes | None:
    """From ``--passphrase-prompt`` (interactive) or the ``--passphrase-env`` variable."""
    if getattr(args, "passphrase_prompt", False):
        first = getpass.getpass("key passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise KeyFileError("passphrases do not match")
        return first.encode() or None
    env = getattr(args, "passphrase_env", PASSPHRASE_ENV)
    value = os.environ.get(env)
    return value.encode() if value else None


def add_passphrase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-env", default=PASSPHRASE_ENV, metavar="VAR",
                   help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV})")
    p.add_argument("--passphrase-prompt", action="store_true", help="ask for the passphrase")


def _cmd_keygen(args: argparse.Namespace) -> int:
    pw = passphrase(args, confirm=True)
    for name in args.names:
        key = generate(Path(args.out), name, pw)
        print(f"{Path(args.out) / name}{PRIVATE_SUFFIX}  keyid {key.keyid[:16]}…  "
              f"{'encrypted' if pw else 'UNENCRYPTED'}")
    if not pw:
        print("warning: private keys are not encrypted; keep them offline", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="create Ed25519 signing keys (<name>.key 0600 + .pub)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME", help="key names, e.g. root-a targets-a")
    p.add_argument("--out", default="keys", help="directory for the key files (default keys/)")
    add_passphrase_args(p)
    p.set_defaults(func=_cmd_keygen)
