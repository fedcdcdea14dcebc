"""``edge-fleet``: keys, signing, publishing, rollouts, fleet status, wheelhouses.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parser
of a subcommand sets ``func`` (``args -> int``). Exit codes: 0 ok, 1 the operation
failed (e.g. a rollout halted), 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from edge_agent.errors import EdgeError
from fleet import (
    capture,
    dashboard,
    device_keys,
    keys,
    publish,
    repo,
    rollout,
    seal,
    serve,
    simulate,
    status,
    watch,
    wheelhouse,
)

DESCRIPTION = ("Workstation fleet tools: signing keys, the update repository, publishing and "
               "rollbacks, an HTTP mirror, fleet status, staged rollouts, a simulated fleet "
               "and offline wheelhouses. Exit status: 0 ok, 1 the operation failed (e.g. a "
               "rollout halted, or repo status found an interrupted publish), 2 bad input.")

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
    capture,     # capture pull
    dashboard,   # live fleet page in a browser
    seal,        # encrypt, reencrypt (sealed bundles for device keys)
    device_keys,  # device-keys add / rotate / remove / list
)


_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc):`~?([^`]+)`")


def plain(text: str) -> str:
    """Help text without the docstrings' reST markup: ``x`` → x, :func:`~a.b` → b."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~")
                     else m.group(1), text)
    text = re.sub(r"\n[ \t]*::[ \t]*\n", "\n", text)  # a paragraph of only "::"
    return re.sub(r"``([^`]+)``", r"\1", text).replace("::\n", ":\n")


def _plain_help(p: argparse.ArgumentParser) -> None:
    """Apply :func:`plain` to every (sub)command's description and help, once, here."""
    if p.description:
        p.description = plain(p.description)
    for action in p._actions:
        if action.help:
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help or "")
            for child in dict.fromkeys(action.choices.values()):
                _plain_help(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-fleet", description=DESCRIPTION)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    for mod in SUBCOMMANDS:
        mod.register(sub)
    _plain_help(p)
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
