"""Image → model input, exactly as the bundle's preprocessing says (Pillow only).

The converter uses the same code for image-folder datasets, so calibration and serving
see identical pixels.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.bundle import Preprocessing
from edge_agent.errors import InvalidRequestError

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
    """A PIL image → float32 ``(H, W, C)`` normalized as ``(pixel - mean) / std``.

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
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if pre.channel_order == "bgr" and arr.shape[-1] == 3:
        arr = arr[..., ::-1]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return (arr - mean) / std
