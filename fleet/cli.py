"""``edge-fleet``: keys, signing, publishing, rollouts, fleet status, wheelhouses.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parser
of a subcommand sets ``func`` (``args -> int``). Exit codes: 0 ok, 1 the operation
failed (e.g. a rollout halted), 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edge_agent.errors import EdgeError
from fleet import keys, publish, repo, rollout, serve, simulate, status, watch, wheelhouse

# In --help order; each module's register(subparsers) adds its subcommands.
SUBCOMMANDS = (
    keys,        # keygen
    repo,        # repo init / rotate / timestamp / show
    publish,     # publish (sign + announce + chunks), rollback
    serve,       # serve DIR over HTTP
    watch,       # live device table
    status,      # one-shot fleet table
    rollout,     # staged rollout
    simulate,    # N simulated agents
    wheelhouse,  # offline wheel directory for a board
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-fleet", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    for mod in SUBCOMMANDS:
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except EdgeError as e:
        print(f"edge-fleet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-fleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
