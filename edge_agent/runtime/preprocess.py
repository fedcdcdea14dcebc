"""Image → model input, exactly as the bundle's preprocessing says (Pillow only).

The converter uses the same code for image-folder datasets, so calibration and serving
see identical pixels.

Two ways to the model input, equal bit for bit:

* :func:`image_to_array` — 8-bit pixels → float32 ``(pixel - mean) / std`` (model units; the
  serving path then quantizes them to the input tensor's scale and zero point);
* :func:`image_to_input` — for a quantized input: every 8-bit pixel value has one tensor
  value per channel, so :func:`pixel_table` computes the 256 of them once (with the very
  float32 operations of :func:`normalize` and
  :meth:`~edge_agent.runtime.quant.TensorCodec.quantize`) and a request only looks its
  pixels up. Why (issue 17): on MobileNetV2 the float route took 0.7 ms of a b64 JPEG
  request's 1.4 ms decode (four float32 copies of 150,528 values and a per-channel
  broadcast); the lookup takes no float intermediate at all.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.bundle import Preprocessing, TensorSpec
from edge_agent.errors import InvalidRequestError
from edge_agent.runtime.quant import TensorCodec

if TYPE_CHECKING:  # Pillow is imported by the first image (docs/agent.md#footprint)
    from PIL import Image

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding
_RESAMPLE = {"bilinear": "BILINEAR", "nearest": "NEAREST", "bicubic": "BICUBIC"}  # Resampling
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})  # averageable


def decode_image(data: bytes, pre: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """Decode image bytes to float32 ``(H, W, C)`` in model units.

    ``size`` is the model's (height, width). Raises InvalidRequestError for bytes that
    are not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InvalidRequestError(
                    f"image is {img.width}x{img.height}, over {MAX_IMAGE_PIXELS} pixels")
            img.load()
            return image_to_array(img, pre, size)
    except InvalidRequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        raise InvalidRequestError(f"not a decodable image ({type(e).__name__}: {e})") from e


def image_to_array(img: Image.Image, pre: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """A PIL image → float32 ``(H, W, C)`` normalized as ``(pixel - mean) / std``."""
    return normalize(image_to_pixels(img, pre, size), pre)


def image_to_input(img: Image.Image, pre: Preprocessing, size: tuple[int, int],
                   spec: TensorSpec) -> np.ndarray:
    """A PIL image → the input ``spec``'s values ``(H, W, C)``: in the tensor's own dtype
    when it is quantized (a :func:`pixel_table` lookup, equal to quantizing
    :func:`image_to_array`'s floats), else :func:`image_to_array`'s floats."""
    px = image_to_pixels(img, pre, size)
    table = pixel_table(pre, spec, int(px.shape[-1]))
    return normalize(px, pre) if table is None else table.lookup(px)


def image_to_pixels(img: Image.Image, pre: Preprocessing, size: tuple[int, int]
                    ) -> np.ndarray:
    """A PIL image → its 8-bit pixels ``(H, W, C)`` at the model's size, in the bundle's
    colour and channel order (the part of the preprocessing before ``mean``/``std``).

    A large image is first box-reduced by an integer factor (Pillow ``reduce``) to at most
    twice the target size, so the colour conversion and the resize work on a small copy
    (and take little memory) whatever the source resolution.
    """
    from PIL import Image

    h, w = pre.resize or size
    factor = min(img.width // (2 * w), img.height // (2 * h))
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)
    img = img.convert("L" if pre.color == "grayscale" else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling[_RESAMPLE.get(pre.resample, "BILINEAR")])
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if pre.channel_order == "bgr" and arr.shape[-1] == 3:
        arr = arr[..., ::-1]
    return arr


def _stats(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` as float32, 0-d when every channel shares them (a broadcast
    over a last axis of 3 costs ~15× a scalar one in numpy; the values are the same)."""
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    if (mean == mean.flat[0]).all() and (std == std.flat[0]).all():
        return mean.reshape(-1)[0], std.reshape(-1)[0]
    return mean, std


def normalize(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """8-bit pixels ``(…, C)`` → float32 ``(pixel - mean) / std``."""
    mean, std = _stats(pre)
    out: np.ndarray = (pixels.astype(np.float32) - mean) / std
    return out


class PixelTable:
    """Every 8-bit pixel value's tensor value, per channel (immutable; see
    :func:`pixel_table`).

    ``rows`` is ``(1 or C, 256)`` in the tensor's dtype. With one row and a 1-byte dtype
    there is also a table of pixel *pairs* (65,536 entries, 128 KiB): a lookup then takes
    half as many indices (62 µs instead of 118 µs for 224×224×3 on the bench machine).
    """

    __slots__ = ("_pairs", "rows")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.rows.flags.writeable = False
        self._pairs: np.ndarray | None = None
        if len(rows) == 1 and rows.dtype.itemsize == 1:
            k = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
            pairs = rows[0][k].view(np.uint16).reshape(-1)  # bytes (t[lo], t[hi]) at index k
            pairs.flags.writeable = False
            self._pairs = pairs

    def lookup(self, px: np.ndarray) -> np.ndarray:
        """8-bit pixels ``(…, C)`` → their tensor values, same shape, the tensor's dtype."""
        rows = self.rows
        if len(rows) == 1:
            if self._pairs is not None and px.size % 2 == 0 and px.flags.c_contiguous:
                flat = px.reshape(-1).view(np.uint16)
                return np.take(self._pairs, flat, mode="clip").view(rows.dtype).reshape(
                    px.shape)
            return np.take(rows[0], px, mode="clip")  # uint8 indices: never out of range
        out = np.empty(px.shape, dtype=rows.dtype)
        for c in range(len(rows)):
            np.take(rows[c], px[..., c], out=out[..., c], mode="clip")
        return out


@lru_cache(maxsize=16)  # a pair table is 128 KiB: at most 2 MiB of them
def pixel_table(pre: Preprocessing, spec: TensorSpec, channels: int) -> PixelTable | None:
    """The input ``spec``'s value for each 8-bit pixel value, per channel: ``(1 or C, 256)``
    in the tensor's dtype, row ``c`` = ``quantize(normalize(0…255))`` for channel ``c``
    (one row when every channel shares ``mean``/``std``), computed with the float32
    operations the two-step path runs, so a lookup equals it bit for bit.

    None when a table cannot stand in for that path: ``spec`` is not quantized, ``mean``
    or ``std`` do not fit ``channels``, or a normalized value is not finite (the float
    path then refuses it as it always has).
    """
    if not spec.quantized:
        return None
    mean, std = _stats(pre)
    if (mean.ndim and len(mean) not in (1, channels)) or \
            (std.ndim and len(std) not in (1, channels)):
        return None
    rows = 1 if mean.ndim == 0 and std.ndim == 0 else channels
    levels = np.arange(256, dtype=np.uint8)
    px = np.repeat(levels[:, None], rows, axis=1)  # (256, rows): every level per channel
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below
        x = normalize(px, pre)
    if not np.isfinite(x).all():
        return None
    return PixelTable(TensorCodec(spec).quantize(x).T.copy())  # (rows, 256)
