"""The shadow child's pipe protocol: length-prefixed frames of named arrays. Pure encoding.

A frame is ``>cI`` (kind, length) then ``length`` bytes: ``I`` inputs (parent → child, the
request's tensors by input name, float model units), ``O`` outputs (child
→ parent, with ``o0``, ``o1``… dequantized, and ``ms``, the invoke time),
``E`` an error message (UTF-8), ``R`` ready (the interpreter is built). Every read is
bounded by :data:`MAX_FRAME_BYTES`; arrays are a JSON header line (name, dtype, shape) and
raw bytes, never pickles.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

HEADER = struct.Struct(">cI")
MAX_FRAME_BYTES = 64 << 20


class FrameError(Exception):
    """A malformed or oversized frame, or the pipe closed mid-frame."""


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Named arrays → one JSON header line (name, dtype, shape) + their raw bytes.

    Not ``np.savez``: its zip container cost ~0.1 ms of Python per request, all of it
    holding the GIL that the agent's request threads need."""
    parts = [np.asarray(v) for v in arrays.values()]  # tobytes() is C order; 0-d stays 0-d
    head = json.dumps([[k, a.dtype.str, list(a.shape)] for k, a in zip(arrays, parts,
                                                                      strict=True)])
    return b"".join([head.encode(), b"\n", *(a.tobytes() for a in parts)])


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack_arrays`; raises FrameError for anything malformed."""
    try:
        cut = data.index(b"\n")
        head = json.loads(data[:cut])
        out, at = {}, cut + 1
        for name, dtype, shape in head:
            dt = np.dtype(dtype)
            if dt.hasobject or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"array {name!r}: dtype {dtype!r}, shape {shape!r}")
            size = dt.itemsize * int(np.prod(shape, dtype=np.int64))
            if at + size > len(data):
                raise ValueError(f"array {name!r}: {size} bytes past the frame's end")
            out[str(name)] = np.frombuffer(data, dt, int(np.prod(shape, dtype=np.int64)),
                                           at).reshape(shape)
            at += size
        if at != len(data):
            raise ValueError(f"{len(data) - at} bytes after the arrays")
        return out
    except (ValueError, TypeError, KeyError) as e:
        raise FrameError(f"bad array frame: {e}") from e


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def read_exact(f: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            raise FrameError(f"pipe closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def read_frame(f: BinaryIO) -> tuple[bytes, bytes]:
    kind, n = HEADER.unpack(read_exact(f, HEADER.size))
    if n > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {n} bytes, at most {MAX_FRAME_BYTES}")
    return kind, read_exact(f, n)
