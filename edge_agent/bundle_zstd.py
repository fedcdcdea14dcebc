"""zstd as the bundle tar's one outer layer (``.tar.zst``): write it, read it bounded.

Pruned weights are runs of exact zeros that only shrink on the wire when the bundle is
compressed, so a bundle may be a zstd frame around the very tar bytes
:func:`edge_agent.bundle.tar_bytes` makes. Only the outer layer: what comes out of the
frame goes through the same header-by-header tar reader, whose ``compressed`` rule then
refuses a second layer (zstd in zstd, gzip in zstd).

Reading is bounded in bytes and memory, whatever the frame claims:

* the decompressed bytes may not pass ``max_output`` — for an update the *signed*
  ``uncompressed_length`` of the target, for a file on disk ``max_bundle_bytes`` — nor
  :data:`MAX_RATIO` × the compressed size: past either the stream is refused
  (rule ``compressed_too_large``) at the first byte over, before it is kept;
* compressed input is fed :data:`FEED` bytes at a time, and a zstd block yields at most
  128 KiB from at least 4 bytes, so one step holds ≤ 4 MiB of output; the decoder's
  window is capped at :data:`MAX_WINDOW` (a frame asking more is ``compressed_invalid``);
* a frame that ends early is ``compressed_truncated`` (the decoder itself returns what it
  has without an error), bytes after the frame or a corrupt frame ``compressed_invalid``.

``zstandard`` is imported lazily: without it a ``.tar.zst`` is refused with rule
``zstd_unavailable`` (the plain tar path never needs it).
"""

from __future__ import annotations

from typing import IO, Any

from edge_agent.errors import BundleMemberError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SUFFIX = ".tar.zst"
MAX_RATIO = 64  # uncompressed tar bytes per compressed byte, at most
MAX_WINDOW = 8 << 20  # bytes; the writer's window (level 19) fits in it
FEED = 128  # compressed bytes per decompress step (≤ 4 MiB of output each)
LEVEL = 19

# BundleMemberError.rule values (update events: code "bundle_<rule>")
TOO_LARGE, TRUNCATED, INVALID, UNAVAILABLE = (
    "compressed_too_large", "compressed_truncated", "compressed_invalid", "zstd_unavailable")


def _refuse(source: str, rule: str, problem: str) -> BundleMemberError:
    return BundleMemberError(f"{source}: member '(stream)': zstd: {problem}",
                             member="(stream)", rule=rule)


def _zstd(source: str) -> Any:
    try:
        import zstandard
    except ImportError as e:
        raise _refuse(source, UNAVAILABLE, "this agent has no zstandard module "
                      "(pip install zstandard); publish a plain .tar or install it") from e
    return zstandard


def is_zstd(head: bytes) -> bool:
    return head.startswith(ZSTD_MAGIC)


def output_bound(compressed_size: int, max_bytes: int) -> int:
    """The most a ``compressed_size``-byte stream may decompress to under ``max_bytes``."""
    return min(max_bytes, compressed_size * MAX_RATIO)


def compress(tar: bytes) -> bytes:
    """One deterministic zstd frame (fixed level, content size and checksum written)."""
    z = _zstd("<writer>")
    params = z.ZstdCompressionParameters.from_level(
        LEVEL, source_size=len(tar), write_content_size=True, write_checksum=True)
    out: bytes = z.ZstdCompressor(compression_params=params).compress(tar)
    return out


class ZstdReader:
    """A forward-only binary reader of the frame in ``src`` (for tarfile's ``r|`` mode).

    Raises BundleMemberError (rules above) from :meth:`read`.
    """

    def __init__(self, src: IO[bytes], *, max_output: int, source: str) -> None:
        z = _zstd(source)
        self._error = z.ZstdError
        self._d = z.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
        self._src, self._max, self._source = src, max_output, source
        self._buf = bytearray()
        self._out = 0  # bytes decompressed so far
        self._done = False

    @property
    def produced(self) -> int:
        return self._out

    def _step(self) -> None:
        data = self._src.read(FEED)
        if not data:
            if not self._d.eof:
                raise _refuse(self._source, TRUNCATED, f"the frame ends early, after "
                              f"{self._out} decompressed bytes")
            self._done = True
            return
        if self._d.eof:
            raise _refuse(self._source, INVALID, "bytes after the end of the frame")
        try:
            out = self._d.decompress(data)
        except self._error as e:
            raise _refuse(self._source, INVALID, f"not a valid frame ({e})") from e
        self._out += len(out)
        if self._out > self._max:
            raise _refuse(self._source, TOO_LARGE, f"decompresses past its bound of "
                          f"{self._max} bytes (the signed uncompressed length, "
                          f"max_bundle_bytes, or {MAX_RATIO}x the compressed size)")
        self._buf += out
        if self._d.eof and self._d.unused_data:
            raise _refuse(self._source, INVALID, "bytes after the end of the frame")

    def finish(self) -> None:
        """Read to the end of the frame (bounded, discarded): the checksum is checked and a
        truncated or trailing-garbage stream refused even when the tar ended early."""
        while not self._done:
            self._buf.clear()
            self._step()
        self._buf.clear()

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer at the end), left to be read."""
        while len(self._buf) < n and not self._done:
            self._step()
        return bytes(self._buf[:n])

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._max + 1
        while len(self._buf) < n and not self._done:
            self._step()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
