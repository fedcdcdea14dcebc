"""JSON from clients (REST bodies, MQTT payloads), parsed so that bad input is always a 400.

Why a module of its own: ``json.loads`` raises more than ``JSONDecodeError`` for hostile
text. A 5000-digit integer literal trips Python's int-digits limit (CVE-2020-10735) and
raises a plain ``ValueError``; deep nesting raises ``RecursionError``; undecodable bytes
``UnicodeDecodeError``. Each became a 500 with a logged traceback. :func:`loads` turns every
one into :class:`~edge_agent.errors.InvalidRequestError` naming the problem, at no cost on
the happy path (no per-number callback). Every transport that reads client JSON uses it.

With the optional ``orjson`` (``pip install edge-agent[fast]``: 4–5× faster on a 3 MB body,
and fewer temporary allocations) the result is the same as the standard library's, by
construction: orjson parses only what it parses exactly as ``json`` does, and anything else
goes to ``json``, which then decides (and words any error). orjson refuses ``NaN`` /
``Infinity`` tokens, numbers out of float range, lone surrogates, BOMs and UTF-16/32, so
those fall back; the one thing it would parse *differently*, an integer beyond 64 bits (it
returns a float), never reaches it: a body with a run of 19 or more digits outside a
fraction or exponent goes straight to ``json`` (and so does a ``str``: bodies are bytes).
``EDGE_AGENT_JSON=stdlib`` turns orjson off.

Raises InvalidRequestError (and nothing else) for bad input.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from edge_agent.errors import InvalidRequestError

__all__ = ["BACKEND", "loads"]

_orjson: Any = None
if os.environ.get("EDGE_AGENT_JSON", "") != "stdlib":
    try:
        _orjson = importlib.import_module("orjson")  # optional: the [fast] extra
    except ImportError:
        pass
BACKEND = "stdlib" if _orjson is None else "orjson"
# An integer literal beyond 64 bits, which orjson would turn into a float, is a run of 19+
# digits that does not follow "." or "e" (a fraction's or exponent's digits may run that
# long). Found with two C passes (translate, find), no regex: every digit becomes "0",
# "." / "e" / "E" become ".", anything else " ", then look for " " + 19 × "0".
_CLASSES = bytes(48 if chr(i).isdigit() and i < 128 else 46 if chr(i) in ".eE" else 32
                 for i in range(256))
_RUN = b"0" * 19


def _may_hold_big_int(data: bytes) -> bool:
    t = data.translate(_CLASSES)
    return t.startswith(_RUN) or t.find(b" " + _RUN) >= 0


def _fast(data: bytes | str) -> tuple[bool, Any]:
    """(True, value) when orjson parsed ``data`` (the same value ``json`` gives)."""
    if _orjson is None or isinstance(data, str) or _may_hold_big_int(data):
        return False, None
    try:
        return True, _orjson.loads(data)
    except _orjson.JSONDecodeError:  # not JSON orjson takes: the standard library decides
        return False, None


def loads(data: bytes | str, what: str = "request body") -> Any:
    """``data`` → a JSON value. Raises InvalidRequestError naming ``what`` and the problem."""
    if not data:
        raise InvalidRequestError(f"empty {what}: expected a JSON object")
    done, value = _fast(data)
    if done:
        return value
    try:
        return json.loads(data)
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"{what} is not UTF-8 JSON ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"malformed JSON in {what}: {e.msg} at line {e.lineno} "
                                  f"column {e.colno}") from e
    except RecursionError as e:
        raise InvalidRequestError(f"malformed JSON in {what}: nested too deeply") from e
    except ValueError as e:  # the int-digits limit: not a JSONDecodeError
        if "integer string conversion" in str(e):
            raise InvalidRequestError(
                f"malformed JSON in {what}: an integer literal has more than "
                f"{sys.get_int_max_str_digits()} digits") from e
        raise InvalidRequestError(f"malformed JSON in {what}: {str(e)[:200]}") from e
