"""``edge-agent keygen``: the device's X25519 key pair for sealed bundles.

Writes the private key (PKCS#8 PEM, mode 0600, owned by the user running it:
``install-service`` runs it as the service user) at ``--key``, else ``[agent]
device_key`` of ``--config``, else ``<store_dir>/device.key``; prints the public key (64
hex digits, what ``edge-fleet encrypt --to`` takes) and its fingerprint. Refuses to
overwrite an existing key without ``--force``; ``--rotate`` keeps the old one as
``<key>.previous`` so installed versions sealed for it still open, until it is retired
(:mod:`edge_agent.crypto.rotation`: automatically when a release sealed for the new key
commits, or ``--retire``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edge_agent.errors import BadInputError


def _cmd_keygen(a: argparse.Namespace) -> int:
    from edge_agent.crypto.device_key import generate, public_pem
    from edge_agent.crypto.sealed import fingerprint, public_bytes

    path, store = a.key, a.store
    if path is None or (a.retire and store is None and a.config is not None):
        from edge_agent.config import load_config  # a bad config is a ConfigError: exit 2
        agent = load_config(a.config).agent
        path, store = path or agent.device_key_path, store or agent.store_dir
    if a.retire:
        return _retire(Path(path), Path(store) if store else Path(path).parent)
    try:
        pub = generate(Path(path), force=a.force, rotate=a.rotate)
    except FileExistsError as e:
        raise BadInputError(f"keygen: {e}") from e
    except OSError as e:
        raise BadInputError(f"keygen: {path}: {e.strerror or e}") from e
    if a.pub:
        Path(a.pub).write_bytes(public_pem(pub))
    print(f"device key {path} (0600){' rotated' if a.rotate else ''}")
    print(f"public key  {public_bytes(pub).hex()}")
    print(f"fingerprint {fingerprint(pub)}")
    if a.rotate:
        print(f"the old key is kept as {Path(path).name}.previous until a release sealed for "
              "the new key commits (or `edge-agent keygen --retire`); give the fleet the new "
              "key: edge-fleet device-keys rotate DEVICE <public key>")
    return 0


def _retire(key: Path, store: Path) -> int:
    from edge_agent.crypto.rotation import retire_previous
    from edge_agent.crypto.sealed import SealedBundleError

    try:
        rep = retire_previous(key, store)
    except (OSError, SealedBundleError) as e:
        raise BadInputError(f"keygen --retire: {e}") from e
    if rep.retired is None:
        print(f"no previous key beside {key}: nothing to retire")
        return 0
    for p in rep.rewrapped:
        print(f"re-wrapped {p} for the current key")
    for p in rep.unopenable:
        print(f"left as it is (opens with neither key): {p}")
    print(f"retired {rep.retired}")
    return 0


def add_keygen_command(subparsers: Any) -> None:
    k = subparsers.add_parser("keygen", help="create this device's key pair for sealed bundles")
    k.add_argument("--key", type=Path, help="private key path (default: [agent] device_key)")
    k.add_argument("--config", type=Path, default=os.environ.get("EDGE_AGENT_CONFIG"))
    k.add_argument("--pub", type=Path, help="also write the public key (PEM) here")
    g = k.add_mutually_exclusive_group()
    g.add_argument("--force", action="store_true", help="overwrite an existing key")
    g.add_argument("--rotate", action="store_true",
                   help="new key; the old one kept as <key>.previous until retired")
    g.add_argument("--retire", action="store_true",
                   help="end the rotation's grace now: re-wrap installed versions sealed "
                        "only for <key>.previous for the current key, then remove it")
    k.add_argument("--store", type=Path,
                   help="the store whose versions --retire re-wraps (default: [agent] "
                        "store_dir, else the key's folder)")
    k.set_defaults(func=_cmd_keygen)
