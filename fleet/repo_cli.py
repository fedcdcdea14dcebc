"""``edge-fleet repo init | rotate | timestamp | show | status``: commands over a FleetRepo.

``status`` prints the committed versions and their expiry, and whether a publish was
interrupted while announcing (``<repo>/pending/``, see :mod:`fleet.staged`): exit 0 when
the repository is clean, 1 when a release is pending. The others exit 0 on success; bad
input (RepoError, ThresholdError, unreadable key files) raises an
:class:`~edge_agent.errors.EdgeError` that ``edge-fleet`` turns into exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from securesystemslib.signer import Key

from fleet.repo import ROLES, ExpiryPolicy, FleetRepo


def _keyfiles(paths: Sequence[str]) -> list[Key]:
    from fleet.keys import load_public

    return [load_public(Path(p)) for p in paths]


def _cmd_init(args: argparse.Namespace) -> int:
    from fleet import keys

    signers = keys.load_signers([Path(k) for k in args.key], keys.passphrase(args))
    repo = FleetRepo.create(
        args.repo, keys={r: _keyfiles(getattr(args, r)) for r in ROLES},
        thresholds={"root": args.root_threshold, "targets": args.targets_threshold},
        signers=signers, expiry=ExpiryPolicy(timestamp_days=args.timestamp_days))
    print(f"created {repo.path}: provision {repo.meta_dir / '1.root.json'} to devices "
          "as [update] root_file")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    from fleet import keys

    signers = keys.load_signers([Path(k) for k in args.key], keys.passphrase(args))
    repo = FleetRepo(args.repo)
    v = repo.rotate(args.role, add=_keyfiles(args.add),
                    remove=[k.keyid for k in _keyfiles(args.remove)],
                    threshold=args.threshold, signers=signers)
    print(f"root v{v}: {args.role} keys rotated; publish (or refresh the timestamp) with the "
          "new keys so devices fetch the new root")
    return 0


def _cmd_timestamp(args: argparse.Namespace) -> int:
    from fleet import keys

    signers = keys.load_signers([Path(k) for k in args.key], keys.passphrase(args))
    print(f"timestamp v{FleetRepo(args.repo).refresh_timestamp(signers)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    repo = FleetRepo(args.repo)
    root = repo.root().signed
    print(f"root v{root.version} (expires {root.expires:%Y-%m-%d})")
    for role in ROLES:
        r = root.roles[role]
        print(f"  {role:9} {r.threshold}-of-{len(r.keyids)}  "
              + " ".join(k[:12] for k in r.keyids))
    for path, tf in sorted(repo.targets().items()):
        print(f"  {path}  {tf.length} bytes  {tf.hashes['sha256'][:16]}…")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    repo = FleetRepo(args.repo)
    print(f"{repo.path}: root v{repo.latest_version('root')}")
    for role in ("targets", "snapshot", "timestamp"):
        v = repo.latest_version(role)
        exp = f" (expires {repo.load(role).signed.expires:%Y-%m-%d %H:%M} UTC)" if v else ""
        print(f"  {role:9} v{v}{exp}")
    pending = repo.pending()
    if pending is None:
        print("  no publish pending")
        return 0
    print(f"  PENDING: {pending.describe()}: signed and possibly announced, not committed; "
          "re-run the same edge-fleet publish to finish it (any other publish commits it "
          "first)")
    return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fleet.keys import add_passphrase_args

    p = sub.add_parser("repo", help="create and maintain the signed update repository")
    rs = p.add_subparsers(dest="repo_cmd", required=True)
    i = rs.add_parser("init", help="create root v1 naming each role's keys and thresholds")
    i.add_argument("repo", type=Path)
    for role in ROLES:
        i.add_argument(f"--{role}", nargs="+", required=True, metavar="PUB",
                       help=f"{role} public key files")
    i.add_argument("--root-threshold", type=int, default=1)
    i.add_argument("--targets-threshold", type=int, default=1)
    i.add_argument("--timestamp-days", type=float, default=1.0)
    i.add_argument("--key", action="append", default=[], help="root private keys to sign")
    add_passphrase_args(i)
    i.set_defaults(func=_cmd_init)
    r = rs.add_parser("rotate", help="replace a role's keys in a new root version")
    r.add_argument("repo", type=Path)
    r.add_argument("--role", required=True, choices=ROLES)
    r.add_argument("--add", nargs="*", default=[], metavar="PUB")
    r.add_argument("--remove", nargs="*", default=[], metavar="PUB")
    r.add_argument("--threshold", type=int)
    r.add_argument("--key", action="append", default=[],
                   help="old and new root private keys (thresholds of both)")
    add_passphrase_args(r)
    r.set_defaults(func=_cmd_rotate)
    t = rs.add_parser("timestamp", help="re-sign the timestamp (run before it expires)")
    t.add_argument("repo", type=Path)
    t.add_argument("--key", action="append", default=[])
    add_passphrase_args(t)
    t.set_defaults(func=_cmd_timestamp)
    s = rs.add_parser("show", help="roles, thresholds and targets")
    s.add_argument("repo", type=Path)
    s.set_defaults(func=_cmd_show)
    st = rs.add_parser("status", help="committed versions, and any interrupted publish")
    st.add_argument("repo", type=Path)
    st.set_defaults(func=_cmd_status)
