"""HTTP/1.1 request heads: the request line and header fields (RFC 9112 §3, §5), strictly.

Why not ``http.client.parse_headers``: it runs the ``email`` package's feed parser, which
costs 40-130 µs per request, a quarter of the agent's whole per-request overhead. This parser is
a plain loop and stricter where strictness matters for a server. It refuses obsolete line
folding, header names that are not tokens, and conflicting ``Content-Length`` values
(request smuggling).

Limits: :data:`MAX_LINE` per line, :data:`MAX_HEADERS` fields, :data:`MAX_HEAD_BYTES` in
all (without it, 100 lines of 64 KiB held 6.5 MB per connection until the head deadline).

Raises :class:`HeadError` carrying the status to answer (400, 431, 505).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Protocol

MAX_LINE = 65536  # bytes per request line or header line
MAX_HEADERS = 100
MAX_HEAD_BYTES = 1 << 17  # bytes of a whole request head: the request line and every field
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/(\d)\.(\d)$")
_SINGLE = {"content-length", "host", "authorization", "content-type"}  # no duplicates


class LineReader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class HeadError(Exception):
    """A request head that cannot be served; ``status`` is the answer (400, 431, 505)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Headers(Mapping[str, str]):
    """Case-insensitive header fields; repeated list-valued fields are joined with ', '."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._d:
            if key in _SINGLE and self._d[key] != value:
                raise HeadError(400, f"conflicting {name} header fields")
            if key not in _SINGLE:
                value = f"{self._d[key]}, {value}"
        self._d[key] = value

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


def parse_request_line(raw: bytes) -> tuple[str, str, tuple[int, int]]:
    """``b"POST /v1/x HTTP/1.1\\r\\n"`` → (method, target, (1, 1))."""
    line = raw.decode("iso-8859-1").rstrip("\r\n")
    words = line.split()
    if len(words) != 3:
        raise HeadError(400, f"bad request line {line[:100]!r} (expected METHOD TARGET "
                             "HTTP/1.x)")
    method, target, version = words
    m = _VERSION.match(version)
    if m is None:
        raise HeadError(400, f"bad HTTP version {version[:20]!r}")
    ver = (int(m.group(1)), int(m.group(2)))
    if ver >= (2, 0):
        raise HeadError(505, f"HTTP version {version} is not supported (use HTTP/1.1)")
    if not _TOKEN.match(method):
        raise HeadError(400, f"bad method {method[:20]!r}")
    return method, target, ver


def parse_headers(rfile: LineReader) -> Headers:
    """Read header lines up to the empty line. Raises HeadError (400, 431)."""
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError(431, f"header line over {MAX_LINE} bytes")
        if line in (b"\r\n", b"\n", b""):
            return headers
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete header line folding is not accepted")
        text = line.decode("iso-8859-1")
        name, sep, value = text.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HeadError(400, f"bad header line {text.strip()[:100]!r}")
        headers.add(name, value.strip())
    raise HeadError(431, f"more than {MAX_HEADERS} header fields")
