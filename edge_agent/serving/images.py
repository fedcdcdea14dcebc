"""Encoded images → a model batch, bounded in memory before any pixel is decoded.

Why: a 93 KB PNG can hold 12 million 16-bit RGBA pixels, which Pillow decodes into 48 MB
(and a colour conversion doubles that). Counting pixels per image is not enough: 17 such
requests at once pushed the agent past 1 GB on a board with a 512 MB budget. So, for every
request and from the image headers only:

1. the format must be a common raster one (never EPS/PDF, which would run Ghostscript) and
   the mode one we know the in-memory size of; the pixel count stays under ``max_pixels``;
2. JPEGs are decoded at the smallest DCT scale that still covers the model's input size
   (Pillow ``draft``), so a 12 MP photo for a 224×224 model decodes at 1/8 of its size;
3. the bytes the decode will take (image buffer + one converted copy) are summed over the
   request; a request over :meth:`DecodeBudget.request_limit` is refused (413);
4. the sum is then reserved from one process-wide :class:`DecodeBudget` (derived from the
   profile's ``memory_budget_mb`` by the agent at start), waiting a little when other
   requests hold it, else refused with 503 + Retry-After;
5. before all that, an image whose decoded size (after a JPEG draft) is more than
   ``max_image_factor`` times the model input's pixels is refused (413): a model that takes
   224×224 has no use for 30 million pixels, and a small PNG that claims them is a
   decompression bomb. ``agent.max_image_factor`` (default 64) sets the factor for every
   source, through the process budget.

Every source (REST, MQTT requests, watch folder, CLI) goes through :func:`image_batch`, so the
budget bounds all image decoding in the process, however the images arrive.

Raises :class:`~edge_agent.errors.InvalidRequestError` (bad or unsupported image),
:class:`ImageTooLarge` (413) and :class:`~edge_agent.serving.admission.Overloaded` (503).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.bundle import TensorSpec
from edge_agent.errors import EdgeError, InvalidRequestError
from edge_agent.manifest import image_candidates
from edge_agent.registry import ServedModel
from edge_agent.runtime.preprocess import image_to_input
from edge_agent.serving.admission import Overloaded

if TYPE_CHECKING:  # Pillow is imported by the first image (docs/agent.md#footprint)
    from PIL import Image

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")  # never EPS/PDF & co.
MIB = 1024 * 1024
# Pillow's in-memory bytes per pixel for each mode it decodes to (Unpack.c / Storage.c).
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
               "LA": 4, "La": 4, "PA": 4, "RGB": 4, "RGBA": 4, "RGBa": 4, "RGBX": 4,
               "CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "I": 4, "F": 4}
CONVERTED_BYTES = 4  # the L/RGB copy image_to_pixels makes (RGB is stored 4 bytes a pixel)
BUDGET_SHARE = 4  # the process-wide decode budget is memory_budget_mb / BUDGET_SHARE
MAX_IMAGE_FACTOR = 64  # decoded pixels per model-input pixel an image may have
WAIT_S = 5.0  # how long a request waits for budget that other requests hold


class ImageTooLarge(InvalidRequestError):
    """Decoding the request's images would take more memory than one request may (413)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image header says, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # at the size it will be decoded (after a JPEG draft)
    height: int
    bits: int  # bits per sample in the file (16 for a 16-bit PNG)

    @property
    def decode_bytes(self) -> int:
        """Memory the decode takes: Pillow's image buffer plus one converted copy."""
        return self.width * self.height * (PIXEL_BYTES[self.mode] + CONVERTED_BYTES)


class DecodeBudget:
    """Bytes of decoded pixels the process may hold at once (a counting semaphore in bytes).

    ``request_limit`` (a quarter of the total) is the most one request may ask for, so a
    few large requests cannot take the whole budget from everyone else.
    """

    def __init__(self, total_bytes: int, max_image_factor: int = MAX_IMAGE_FACTOR) -> None:
        self._cond = threading.Condition()
        self._used = 0
        self.total_bytes = max(1, total_bytes)
        self.max_image_factor = max(1, max_image_factor)

    @property
    def request_limit(self) -> int:
        return max(1, self.total_bytes // 4)

    def configure(self, total_bytes: int, max_image_factor: int | None = None) -> None:
        """Set the total (the agent does, from its profile, at start) and the image
        factor (``agent.max_image_factor``)."""
        with self._cond:
            self.total_bytes = max(1, total_bytes)
            if max_image_factor is not None:
                self.max_image_factor = max(1, max_image_factor)
            self._cond.notify_all()

    def in_use(self) -> int:
        with self._cond:
            return self._used

    @contextmanager
    def reserve(self, n: int, *, wait_s: float = WAIT_S) -> Iterator[None]:
        """Hold ``n`` bytes of the budget. Raises ImageTooLarge (413) or Overloaded (503)."""
        limit = self.request_limit
        if n > limit:
            raise ImageTooLarge(f"decoding these images takes {_mib(n)}, over the limit of "
                                f"{_mib(limit)} per request on this device; send smaller "
                                "images (the model takes far fewer pixels)")
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._used + n > self.total_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Overloaded(f"image decoding is busy ({_mib(self._used)} of "
                                     f"{_mib(self.total_bytes)} in use); retry later")
                self._cond.wait(left)
            self._used += n
        try:
            yield
        finally:
            with self._cond:
                self._used -= n
                self._cond.notify_all()


_PROCESS_BUDGET = DecodeBudget(256 * MIB)


def process_budget() -> DecodeBudget:
    """The one decode budget of this process (every source and agent in it shares it)."""
    return _PROCESS_BUDGET


def budget_for(memory_budget_mb: int) -> int:
    """The decode budget in bytes for a profile's ``memory_budget_mb``."""
    return memory_budget_mb * MIB // BUDGET_SHARE


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def open_header(data: bytes, where: str, target: tuple[int, int], max_pixels: int,
                max_factor: int | None = None) -> tuple[Image.Image, ImageHeader]:
    """Open ``data`` lazily (header only) and plan its decode at ``target`` (width, height).

    Raises InvalidRequestError for bytes that are not an image of a known format and mode,
    or an image over ``max_pixels``; ImageTooLarge when, at the size it would decode to, it
    has more than ``max_factor`` times the pixels of ``target``.
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Exception as e:  # PIL raises many types for garbage bytes
        raise InvalidRequestError(f"{where}: not a decodable image (expected "
                                  f"{', '.join(IMAGE_FORMATS)}; {type(e).__name__})") from e
    try:
        w, h = img.size
        if w * h > max_pixels:
            raise InvalidRequestError(f"{where}: {w}x{h} is over the limit of {max_pixels} "
                                      "pixels")
        if img.mode not in PIXEL_BYTES:
            raise InvalidRequestError(f"{where}: image mode {img.mode!r} is not supported")
        raw = str(img.tile[0][3]) if img.tile else ""
        bits = 16 if ";16" in raw or img.mode.startswith("I;16") else 8
        if img.format == "JPEG":  # decode at a 1/2, 1/4 or 1/8 DCT scale (no pixel read yet)
            img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", target)
        header = ImageHeader(str(img.format), img.mode, img.width, img.height, bits)
        want = target[0] * target[1]
        if max_factor is not None and header.width * header.height > want * max_factor:
            raise ImageTooLarge(
                f"{where}: {w}x{h} decodes to {header.width}x{header.height} pixels, over "
                f"{max_factor} times the model input's {target[0]}x{target[1]}; send it "
                "downscaled (agent.max_image_factor)")
        if img.mode not in PIXEL_BYTES:  # draft may change the mode
            raise InvalidRequestError(f"{where}: image mode {img.mode!r} is not supported")
    except BaseException:
        img.close()
        raise
    return img, header


def image_note(served: ServedModel) -> str:
    """Where images go for ``served``, in words: its image input, or why it has none."""
    m = served.manifest
    spec = m.image_input
    if spec is not None:
        return f"{served.name}'s image input is {spec.name!r}"
    cands = image_candidates(m.inputs)
    if len(cands) > 1:
        return (f"{served.name} has several image inputs "
                f"({', '.join(repr(s.name) for s in cands)}) and its manifest does not say "
                "which one images feed (preprocessing.image_input)")
    described = ", ".join(f"{s.name} {list(s.shape)}" for s in m.inputs)
    return (f"{served.name} does not take images (inputs: {described}; an image feeds an "
            "NHWC input of 1 or 3 channels)")


def image_target(served: ServedModel) -> TensorSpec:
    """The input a request of images only (a raw body, classify examples of one image, an
    MQTT request or a watched file, a camera frame) feeds: the one the manifest names
    (``preprocessing.image_input``), else the model's only NHWC input of 1 or 3 channels.

    Raises InvalidRequestError (400) naming the model's inputs when there is no such
    input, several and the manifest does not say which (:func:`image_note`), or other
    inputs an image cannot fill.
    """
    m = served.manifest
    spec = m.image_input
    if spec is None:
        several = len(image_candidates(m.inputs)) > 1
        raise InvalidRequestError(image_note(served) + (
            "; send :predict with every input by name" if several else ""))
    if len(m.inputs) > 1:
        described = ", ".join(f"{s.name} {list(s.shape)}" for s in m.inputs)
        raise InvalidRequestError(
            f"{served.name} takes {len(m.inputs)} inputs ({described}); an image feeds only "
            f"{spec.name!r}: send :predict with every input by name")
    return spec


def image_batch(served: ServedModel, images: Sequence[bytes], max_pixels: int, *,
                budget: DecodeBudget | None = None, spec: TensorSpec | None = None
                ) -> np.ndarray:
    """Encoded images → the input batch by the bundle's preprocessing, memory-bounded, for
    the input ``spec`` (default: the request is only images, for :func:`image_target`):
    in the tensor's dtype for a quantized input (what quantizing the float batch gives,
    without the floats: :func:`~edge_agent.runtime.preprocess.image_to_input`), else
    float model units.

    Raises InvalidRequestError (400), ImageTooLarge (413), Overloaded (503).
    """
    spec = spec or image_target(served)
    shape = spec.shape
    pre = served.manifest.preprocessing
    h, w = pre.resize or (int(shape[1]), int(shape[2]))
    budget = budget or _PROCESS_BUDGET
    with ExitStack() as stack:
        opened = []
        for i, data in enumerate(images):
            where = f"image {i}" if len(images) > 1 else "image"
            img, header = open_header(data, where, (w, h), max_pixels, budget.max_image_factor)
            stack.callback(img.close)
            opened.append((img, header))
        cost = sum(hd.decode_bytes for _, hd in opened)
        stack.enter_context(budget.reserve(cost))
        try:
            arrs = [image_to_input(img, pre, (int(shape[1]), int(shape[2])), spec)
                    for img, _ in opened]
        except EdgeError:
            raise
        except Exception as e:  # a truncated or corrupt file that only fails while decoding
            raise InvalidRequestError(f"not a decodable image ({type(e).__name__}: {e})") from e
    batch = np.stack(arrs)
    if batch.shape[-1] != shape[3]:
        raise InvalidRequestError(f"image has {batch.shape[-1]} channels, model takes "
                                  f"{shape[3]}")
    return batch
