"""The shadow child's pipe protocol: length-prefixed frames of named arrays. Pure encoding.

A frame is ``>cI`` (kind, length) then ``length`` bytes: ``I`` inputs (parent → child, an
``.npz`` of the request's tensors by input name, float model units), ``O`` outputs (child
→ parent, an ``.npz`` with ``o0``, ``o1``… dequantized, and ``ms``, the invoke time),
``E`` an error message (UTF-8), ``R`` ready (the interpreter is built). Every read is
bounded by :data:`MAX_FRAME_BYTES`; npz members are loaded without pickle.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

HEADER = struct.Struct(">cI")
MAX_FRAME_BYTES = 64 << 20


class FrameError(Exception):
    """A malformed or oversized frame, or the pipe closed mid-frame."""


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    savez: Any = np.savez  # numpy's stub types **kwds as its own keyword flags
    savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, KeyError) as e:
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
