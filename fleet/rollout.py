"""``edge-fleet rollout``: announce a signed model to waves of devices; halt when they fail.

::

    edge-fleet rollout BUNDLE --repo REPO --key K… --broker URL (--group G | --device ID…)
        [--canary 5%] [--step 25%] [--max-failure 10%] [--wait 60s] [--rollback]
        [--state FILE] [--http-url URL] [--chunk-size BYTES] [--discover 3s]
        [--dry-run] [--restart] [--json] [broker options: fleet.broker]

1. **Plan.** Members of ``--group`` are read from the devices' retained statuses
   (``edge/<device>/status`` carries ``groups``, also when offline); devices whose status
   already shows the target version are marked ``already``. The waves
   (:func:`fleet.rollout_core.plan_waves`) and everything that happens later are kept in
   a state file (default ``REPO/rollouts/<name>-v<version>-<scope>.json``), written
   atomically before each step is acted on.
2. **Sign once.** The bundle is signed for the whole group (or device list) — the
   signature's audience is the security boundary; waves only decide *when* a device
   hears of it. The announcement bytes are kept beside the state file so a resumed
   rollout announces exactly the same bytes (devices settle an announcement by digest).
   Chunks are published once, retained.
3. **Waves.** The announcement is published, retained, on each wave device's own topic
   ``edge/<device>/update/announce`` (never on the group topic while waves run). The
   tool then folds ``update.*`` events and retained statuses into device outcomes until
   :func:`fleet.rollout_core.judge_wave` decides: pass → next wave; halt → stop. On a
   halt no later wave hears of the update; the wave's offline devices lose their
   retained announcement (they would otherwise install it when they return); its
   in-flight devices are watched until they decide or the wave's wait ends; with
   ``--rollback`` the wave's devices that committed get a signed rollback command to the
   version they ran before; the report is printed and the exit code is 1. Offline
   devices are counted and not waited for; an online device with no outcome after
   ``--wait`` counts as a failure.
4. **Done.** After the last wave the announcement is also retained on the group topic,
   so devices that join the group later (or were unknown) update too.

Killed at any point, the same command resumes from the state file: announced waves are
not announced again, a wave's wait still counts from when it started, and outcomes that
arrived meanwhile are read from the retained statuses. Re-running a finished rollout
publishes nothing and prints its report (exit 0 completed, 1 halted); ``--restart``
discards the state file and starts over.

Raises BadInputError (exit 2) for bad arguments or a state file of another rollout,
TransportError when the broker is unreachable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fleet import keys
from fleet.broker import add_broker_args, broker_config
from fleet.observer import FleetObserver
from fleet.publish import DEFAULT_CHUNK
from fleet.rollout_core import Policy, parse_duration, parse_rate, summary
from fleet.rollout_run import Rollout, RolloutRequest
from fleet.shadow_args import shadow_terms

__all__ = ["FleetObserver", "Rollout", "RolloutRequest", "cmd_rollout", "register",
           "render_report", "request_from_args"]


# --- report and CLI ----------------------------------------------------------------------------


def render_report(rep: dict[str, Any]) -> str:
    """The summary as text: totals, one line per wave, then each problem device."""
    lines = [f"rollout {rep['rollout']} ({rep['target']}, {rep['scope']}): {rep['status']} — "
             + ", ".join(f"{k} {v}" for k, v in rep["outcomes"].items())]
    for w in rep["waves"]:
        counts = ", ".join(f"{k} {v}" for k, v in w.items()
                           if k not in ("wave", "devices", "status", "verdict"))
        lines.append(f"  wave {w['wave']}: {w['status']:<8} {w['devices']:>4} devices  "
                     f"{counts}{'  — ' + w['verdict'] if w['verdict'] else ''}")
    for d, p in rep["problems"].items():
        lines.append(f"  {d}: {p['outcome']}{': ' + p['detail'] if p['detail'] else ''}")
    if rep["rolled_back"]:
        lines.append(f"  signed rollback sent to: {', '.join(rep['rolled_back'])}")
    return "\n".join(lines)


def request_from_args(a: argparse.Namespace) -> RolloutRequest:
    policy = Policy(canary=a.canary, step=a.step,
                    max_failure=parse_rate(a.max_failure, "--max-failure"),
                    wait_s=parse_duration(a.wait, "--wait"), rollback=a.rollback)
    return RolloutRequest(
        bundle=a.bundle, repo=a.repo, broker=broker_config(a), group=a.group,
        devices=tuple(a.device or ()), policy=policy, state_path=a.state,
        http_url=a.http_url, chunk_size=a.chunk_size,
        discover_s=parse_duration(a.discover, "--discover"), restart=a.restart,
        dry_run=a.dry_run, shadow=shadow_terms(a.require_shadow, a.gate))


def cmd_rollout(a: argparse.Namespace) -> int:
    req = request_from_args(a)
    signers = [] if a.dry_run else keys.load_signers([Path(k) for k in a.key],
                                                     keys.passphrase(a))
    quiet = a.json
    ro = Rollout(req, signers, say=(lambda _m: None) if quiet else
                 (lambda m: print(m, flush=True)))
    st = ro.run()
    rep = summary(st)
    print(json.dumps(rep, indent=1) if a.json else render_report(rep), flush=True)
    return 1 if st.status == "halted" else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rollout", help="staged rollout in waves; halts on failures",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory, .tar or .tar.zst "
                   "(devices download the compressed bytes)")
    p.add_argument("--repo", type=Path, required=True, help="repository directory")
    p.add_argument("--key", action="append", default=[], metavar="KEY",
                   help="private key file (repeat: targets, snapshot, timestamp keys)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--group", metavar="G", help="devices whose status lists group G")
    who.add_argument("--device", nargs="+", metavar="ID", help="explicit device ids")
    p.add_argument("--canary", default="5%", help="first wave: %% of devices or a count")
    p.add_argument("--step", default="25%", help="later waves: %% of devices or a count")
    p.add_argument("--max-failure", default="10%", help="halt above this failure rate")
    p.add_argument("--wait", default="60s", help="per wave, for online devices to report")
    p.add_argument("--rollback", action="store_true",
                   help="on halt, sign a rollback for devices of the wave that committed")
    p.add_argument("--state", type=Path, help="state file (default REPO/rollouts/<id>.json)")
    p.add_argument("--http-url", metavar="URL", help="HTTP mirror of the repository")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, metavar="BYTES")
    p.add_argument("--require-shadow", metavar="DURATION|N",
                   help="sign the release as a shadow release: every device runs it in the "
                        "shadow of its active version and commits only if --gate holds; a "
                        "failed shadow counts as a failed device for the wave")
    p.add_argument("--gate", metavar="EXPR", help="the signed shadow gate (see publish)")
    p.add_argument("--discover", default="3s", help="max time to gather retained statuses")
    p.add_argument("--dry-run", action="store_true", help="print the waves; publish nothing")
    p.add_argument("--restart", action="store_true", help="discard the state file first")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    keys.add_passphrase_args(p)
    add_broker_args(p)
    p.set_defaults(func=cmd_rollout)


if __name__ == "__main__":  # pragma: no cover
    from fleet.cli import main
    sys.exit(main(["rollout", *sys.argv[1:]]))
