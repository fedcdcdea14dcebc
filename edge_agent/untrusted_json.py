"""JSON from clients (REST bodies, MQTT payloads), parsed so that bad input is always a 400.

Why a module of its own: ``json.loads`` raises more than ``JSONDecodeError`` for hostile
text. A 5000-digit integer literal trips Python's int-digits limit (CVE-2020-10735) and
raises a plain ``ValueError``; deep nesting raises ``RecursionError``; undecodable bytes
``UnicodeDecodeError``. Each became a 500 with a logged traceback. :func:`loads` turns every
one into :class:`~edge_agent.errors.InvalidRequestError` naming the problem, at no cost on
the happy path (no per-number callback). Every transport that reads client JSON uses it.

Raises InvalidRequestError (and nothing else) for bad input.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from edge_agent.errors import InvalidRequestError

__all__ = ["loads"]


def loads(data: bytes | str, what: str = "request body") -> Any:
    """``data`` → a JSON value. Raises InvalidRequestError naming ``what`` and the problem."""
    if not data:
        raise InvalidRequestError(f"empty {what}: expected a JSON object")
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
