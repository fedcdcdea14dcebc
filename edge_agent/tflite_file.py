"""Is this a TFLite flatbuffer? The cheap, bounded check before any interpreter sees bytes.

A TFLite model is a FlatBuffer whose file identifier, bytes 4..8, is ``TFL3``
(tensorflow/lite/schema/schema.fbs: ``file_identifier "TFL3"``), after a little-endian
uint32 offset to the root table, which must lie inside the file. Checking this (and the
size, against a cap) first means a tar, an ONNX file or a truncated download is refused
with one line naming it, instead of being handed to native code.

Pure: bytes in, an error or nothing out. Raises ModelLoadError.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.errors import ModelLoadError

TFLITE_IDENTIFIER = b"TFL3"
HEADER_BYTES = 8


def looks_like_tflite(head: bytes) -> bool:
    """True when ``head`` (at least the first 8 bytes of a file) carries the identifier."""
    return len(head) >= HEADER_BYTES and head[4:8] == TFLITE_IDENTIFIER


def check_tflite(data: bytes, source: str) -> None:
    """Raise ModelLoadError unless ``data`` is a TFLite flatbuffer (identifier and root)."""
    if not looks_like_tflite(data):
        raise ModelLoadError(f"{source}: not a TFLite flatbuffer (no {TFLITE_IDENTIFIER!r} "
                             f"identifier at bytes 4-8, got {data[4:8]!r})")
    root = int.from_bytes(data[:4], "little")
    if not HEADER_BYTES <= root < len(data):
        raise ModelLoadError(f"{source}: not a TFLite flatbuffer (root table offset {root} "
                             f"outside the file's {len(data)} bytes)")


def read_tflite(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, at most ``max_bytes``, checked to be a TFLite flatbuffer.

    Raises ModelLoadError (too large, unreadable, not a flatbuffer)."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:  # refused before a byte is read
                raise ModelLoadError(f"{path}: model is {size} bytes, over the limit of "
                                     f"{max_bytes}")
            data = f.read(max_bytes + 1)  # a file that grows while read: still bounded
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read model ({e.strerror or e})") from e
    if len(data) > max_bytes:
        raise ModelLoadError(f"{path}: model is over the limit of {max_bytes} bytes")
    check_tflite(data, str(path))
    return data


def is_tflite_file(path: Path) -> bool:
    """True when ``path`` is a regular file that starts like a TFLite flatbuffer."""
    try:
        with path.open("rb") as f:
            return looks_like_tflite(f.read(HEADER_BYTES))
    except OSError:
        return False
