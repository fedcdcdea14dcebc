"""Reading JSON objects field by field, with errors that name the message and the key.

:class:`Fields` wraps one decoded object; every typed read (``text``, ``integer``,
``number``, ``choice``, nested ``sub``/``objs``) raises :class:`ProtocolError` —
``status: update.last.result: 'won' is not one of …`` — instead of a KeyError or a
wrong type further on. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from edge_agent.errors import InvalidRequestError

__all__ = ["Fields", "ProtocolError", "decode_object", "tname"]


class ProtocolError(InvalidRequestError):
    """A message does not follow the schema. ``what`` is the message, ``field`` the key."""

    def __init__(self, what: str, field: str, problem: str) -> None:
        self.what = what
        self.field = field
        super().__init__(f"{what}: {field}: {problem}")


_T = TypeVar("_T")


def tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


class Fields:
    """Typed, optional reads of one JSON object; every failure names ``what`` and the key."""

    def __init__(self, d: Any, what: str, path: str = "") -> None:
        if not isinstance(d, Mapping):
            raise ProtocolError(what, path or "(document)", f"expected a JSON object, got "
                                f"{tname(d)}")
        self.d, self.what, self.path = d, what, path

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def fail(self, k: str, problem: str) -> ProtocolError:
        return ProtocolError(self.what, self.key(k), problem)

    def _typed(self, k: str, types: tuple[type, ...], expected: str, required: bool) -> Any:
        if k not in self.d or self.d[k] is None:
            if required:
                raise self.fail(k, f"missing (expected {expected})")
            return None
        v = self.d[k]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise self.fail(k, f"expected {expected}, got {tname(v)} {v!r:.40}")
        return v

    def text(self, k: str, required: bool = False) -> Any:
        return self._typed(k, (str,), "a string", required)

    def integer(self, k: str, required: bool = False) -> Any:
        return self._typed(k, (int,), "an integer", required)

    def number(self, k: str, required: bool = False) -> float | None:
        v = self._typed(k, (int, float), "a number", required)
        return None if v is None else float(v)

    def flag(self, k: str, required: bool = False) -> Any:
        return self._typed(k, (bool,), "true or false", required)

    def obj(self, k: str, required: bool = False) -> dict[str, Any] | None:
        v = self._typed(k, (dict,), "a JSON object", required)
        return None if v is None else dict(v)

    def sub(self, k: str) -> Fields | None:
        v = self.obj(k)
        return None if v is None else Fields(v, self.what, self.key(k))

    def strs(self, k: str) -> tuple[str, ...]:
        v = self._typed(k, (list,), "a list of strings", False) or []
        if not all(isinstance(x, str) for x in v):
            raise self.fail(k, "expected a list of strings")
        return tuple(v)

    def objs(self, k: str) -> list[Fields]:
        v = self._typed(k, (list,), "a list of objects", False) or []
        return [Fields(x, self.what, f"{self.key(k)}[{i}]") for i, x in enumerate(v)]

    def choice(self, k: str, enum: type[_T], required: bool = False) -> _T | None:
        v = self.text(k, required)
        if v is None:
            return None
        try:
            return enum(v)  # type: ignore[call-arg]
        except ValueError:
            known = ", ".join(str(m) for m in enum)  # type: ignore[attr-defined]
            raise self.fail(k, f"{v!r} is not one of {known}") from None


def decode_object(payload: bytes, what: str) -> dict[str, Any]:
    """``payload`` as a JSON object. Raises ProtocolError (not UTF-8, not JSON, not an object)."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProtocolError(what, "(payload)", f"not UTF-8 text ({e.reason})") from e
    except (ValueError, RecursionError) as e:  # JSONDecodeError or the int-digits limit
        raise ProtocolError(what, "(payload)", f"not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise ProtocolError(what, "(document)", f"expected a JSON object, got {tname(doc)}")
    return doc
