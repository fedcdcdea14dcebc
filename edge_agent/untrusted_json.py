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
returns a float), never reaches it: a body with a run of 19 or more digits goes straight to
``json``. ``EDGE_AGENT_JSON=stdlib`` turns orjson off.

Raises InvalidRequestError (and nothing else) for bad input.
"""

from __future__ import annotations

import importlib
import json
import os
import re
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
# 19+ digits in a row may be an integer beyond 64 bits, which orjson turns into a float
_LONG_DIGITS_B = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_S = re.compile(r"[0-9]{19}")


def _fast(data: bytes | str) -> tuple[bool, Any]:
    """(True, value) when orjson parsed ``data`` (the same value ``json`` gives)."""
    if _orjson is None:
        return False, None
    long_digits = (_LONG_DIGITS_S.search(data) if isinstance(data, str)
                   else _LONG_DIGITS_B.search(data))
    if long_digits is not None:
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
