"""The shadow child's pipe protocol: length-prefixed frames. Pure encoding, no IO.

A frame is ``>cI`` (kind, length) then ``length`` bytes. Parent → child: ``C`` the
configuration (JSON, once: the active version's input/output specs and heads, the
summary period), then ``Q`` one shadowed request (:func:`pack_request`: the active
version's latency, its input tensors and its raw output tensors). Child → parent: ``R``
ready (the candidate's interpreter is built), ``S`` a summary of everything compared so
far (JSON, :mod:`edge_agent.shadow.stats`), ``E`` a fatal error message (UTF-8).

A request frame carries arrays as a tiny binary header (dtype character, rank, dims) and
their raw bytes — never pickles, never JSON per request: building it is a few struct
packs and one copy per tensor on the client's thread. Every read is bounded by
:data:`MAX_FRAME_BYTES` (:class:`FrameReader`), and every array is checked against the
frame's length before it is viewed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import numpy as np

HEADER = struct.Struct(">cI")
MAX_FRAME_BYTES = 64 << 20
MAX_RANK = 8
DTYPES = frozenset("?bBhHiIlLqQefd")  # numpy type characters a tensor may have
_REQ = struct.Struct("<dB")  # active latency (s), number of arrays
_ARR = struct.Struct("<cB")  # dtype character, rank


class FrameError(Exception):
    """A malformed or oversized frame, or the pipe closed mid-frame."""


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def pack_request(latency_s: float, arrays: Sequence[np.ndarray]) -> bytes:
    """One ``Q`` frame (header included): the active latency, then every array."""
    parts = [b"", _REQ.pack(latency_s, len(arrays))]
    for a in arrays:
        parts.append(_ARR.pack(a.dtype.char.encode(), a.ndim))
        parts.append(struct.pack(f"<{a.ndim}I", *a.shape))
        parts.append(a.tobytes())
    body = b"".join(parts)
    return HEADER.pack(b"Q", len(body)) + body


def unpack_request(data: bytes) -> tuple[float, list[np.ndarray]]:
    """The inverse of :func:`pack_request`'s payload. Raises FrameError."""
    try:
        latency, n = _REQ.unpack_from(data, 0)
        at, out = _REQ.size, list[np.ndarray]()
        for _ in range(n):
            char, rank = _ARR.unpack_from(data, at)
            at += _ARR.size
            if char.decode() not in DTYPES or rank > MAX_RANK:
                raise ValueError(f"array {len(out)}: dtype {char!r}, rank {rank}")
            shape = struct.unpack_from(f"<{rank}I", data, at)
            at += 4 * rank
            dt = np.dtype(char.decode())
            count = int(np.prod(shape, dtype=np.int64))
            if at + count * dt.itemsize > len(data):
                raise ValueError(f"array {len(out)}: {count * dt.itemsize} bytes past the "
                                 "frame's end")
            out.append(np.frombuffer(data, dt, count, at).reshape(shape))
            at += count * dt.itemsize
        if at != len(data):
            raise ValueError(f"{len(data) - at} bytes after the arrays")
        return float(latency), out
    except (struct.error, ValueError, TypeError, UnicodeDecodeError) as e:
        raise FrameError(f"bad request frame: {e}") from e


class FrameReader:
    """Frames out of a byte stream fed in pieces (``os.read`` of a pipe): bounded, so a
    peer announcing a huge frame is refused before anything is buffered for it."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max = max_frame_bytes
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every complete frame now buffered. Raises FrameError for an oversized one."""
        self._buf += chunk
        while len(self._buf) >= HEADER.size:
            kind, n = HEADER.unpack_from(self._buf, 0)
            if n > self.max:
                raise FrameError(f"frame of {n} bytes, at most {self.max}")
            end = HEADER.size + n
            if len(self._buf) < end:
                return
            data = bytes(self._buf[HEADER.size:end])
            del self._buf[:end]
            yield kind, data

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (a pipe closed with some: a broken peer)."""
        return len(self._buf)
