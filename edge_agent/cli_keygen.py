"""``edge-agent keygen``: the device's X25519 key pair for sealed bundles.

Writes the private key (PKCS#8 PEM, mode 0600, owned by the user running it:
``install-service`` runs it as the service user) at ``--key``, else ``[agent]
device_key`` of ``--config``, else ``<store_dir>/device.key``; prints the public key (64
hex digits, what ``edge-fleet encrypt --to`` takes) and its fingerprint. Refuses to
overwrite an existing key without ``--force``; ``--rotate`` keeps the old one as
``<key>.previous`` so installed versions sealed for it still open.
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

    path = a.key
    if path is None:  # a bad config is a ConfigError: edge-agent's main says so, exit 2
        from edge_agent.config import load_config
        path = load_config(a.config).agent.device_key_path
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
    return 0


def add_keygen_command(subparsers: Any) -> None:
    k = subparsers.add_parser("keygen", help="create this device's key pair for sealed bundles")
    k.add_argument("--key", type=Path, help="private key path (default: [agent] device_key)")
    k.add_argument("--config", type=Path, default=os.environ.get("EDGE_AGENT_CONFIG"))
    k.add_argument("--pub", type=Path, help="also write the public key (PEM) here")
    g = k.add_mutually_exclusive_group()
    g.add_argument("--force", action="store_true", help="overwrite an existing key")
    g.add_argument("--rotate", action="store_true",
                   help="new key; the old one kept as <key>.previous")
    k.set_defaults(func=_cmd_keygen)
