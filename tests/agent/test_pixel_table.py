"""Images into a quantized input by lookup (issue 17): the same tensor values as the float route.

:func:`~edge_agent.runtime.preprocess.image_to_input` looks every pixel up in a table of
``quantize((level - mean) / std)`` for the 256 levels instead of running the float32
operations on every pixel. The promise is equality, bit for bit, with quantizing
:func:`~edge_agent.runtime.preprocess.image_to_array` (what a float request of the same
image gives), for any ``mean``/``std``, scale and zero point, shared or per channel, in
RGB, BGR and grayscale, at odd and even sizes (the pair table and the one-byte one); and,
through a real served model on LiteRT, the same answer as the float batch.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_agent.bundle import Preprocessing, TensorSpec, read_bundle
from edge_agent.hooks import Hooks
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.preprocess import image_to_array, image_to_input, pixel_table
from edge_agent.runtime.quant import TensorCodec
from edge_agent.serving.images import image_batch

MNV2_PRE = Preprocessing(resize=(224, 224), mean=(127.5,) * 3, std=(127.5,) * 3)
MNV2_IN = TensorSpec("input", (1, 224, 224, 3), "int8", 0.007843137718737125, -1)


def photo(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth image with every level present (noise upscaled, plus a full ramp row)."""
    rng = np.random.default_rng(seed)
    bands = 1 if mode == "L" else 3
    small = rng.integers(0, 256, (5, 5, bands), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small.squeeze(-1) if bands == 1 else small)
                     .resize((w, h), Image.Resampling.BICUBIC)).copy()
    big.reshape(h, w, -1)[0, : min(w, 256)] = np.arange(min(w, 256))[:, None]
    return Image.fromarray(big)


def float_route(img: Image.Image, pre: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """What a float request of the image becomes: normalized floats, then quantized."""
    size = (int(spec.shape[1]), int(spec.shape[2]))
    return TensorCodec(spec).coerce(image_to_array(img, pre, size)[None])[0]


def test_mobilenet_v2_jpeg_equals_float_route_bit_for_bit() -> None:
    buf = io.BytesIO()
    photo(300, 260).save(buf, format="JPEG", quality=90)
    img = Image.open(io.BytesIO(buf.getvalue()))
    got = image_to_input(img, MNV2_PRE, (224, 224), MNV2_IN)
    want = float_route(Image.open(io.BytesIO(buf.getvalue())), MNV2_PRE, MNV2_IN)
    assert got.dtype == np.int8 and got.shape == (224, 224, 3)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(mean=st.lists(st.floats(-300, 300), min_size=1, max_size=3),
       std=st.lists(st.floats(0.01, 300), min_size=1, max_size=3),
       scale=st.floats(1e-4, 2.0), zero=st.integers(-128, 127),
       dtype=st.sampled_from(["int8", "uint8", "int16"]), gray=st.booleans(),
       bgr=st.booleans(), w=st.integers(3, 40), h=st.integers(3, 40))
def test_any_preprocessing_equals_float_route(mean: list[float], std: list[float],
                                              scale: float, zero: int, dtype: str,
                                              gray: bool, bgr: bool, w: int, h: int) -> None:
    channels = 1 if gray else 3
    mean, std = mean[:1] if len(mean) != channels else mean, std[:1] if len(std) != channels \
        else std
    if dtype == "uint8":
        zero = abs(zero)
    pre = Preprocessing(color="grayscale" if gray else "rgb",
                        channel_order="bgr" if bgr else "rgb", mean=tuple(mean),
                        std=tuple(std))
    spec = TensorSpec("x", (1, h, w, channels), dtype, scale, zero)
    img = photo(w + 7, h + 3, "L" if gray else "RGB")
    got = image_to_input(img, pre, (h, w), spec)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, float_route(img, pre, spec))


def test_per_channel_stats_use_one_row_per_channel() -> None:
    pre = Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    table = pixel_table(pre, MNV2_IN, 3)
    assert table is not None and table.rows.shape == (3, 256)
    img = photo(224, 224)
    np.testing.assert_array_equal(image_to_input(img, pre, (224, 224), MNV2_IN),
                                  float_route(img, pre, MNV2_IN))


def test_float_input_keeps_float_model_units() -> None:
    spec = TensorSpec("x", (1, 224, 224, 3), "float32")
    img = photo(224, 224)
    got = image_to_input(img, MNV2_PRE, (224, 224), spec)
    assert pixel_table(MNV2_PRE, spec, 3) is None
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, image_to_array(img, MNV2_PRE, (224, 224)))


def test_no_table_when_a_normalized_level_is_not_finite() -> None:
    # std so small that (255 - 0) / std overflows float32: the float route (which
    # refuses NaN/infinity in predict) is kept, not a table of clipped values
    pre = Preprocessing(mean=(0.0,), std=(1e-38,))
    assert pixel_table(pre, MNV2_IN, 3) is None
    assert image_to_input(photo(8, 8), pre, (8, 8), MNV2_IN).dtype == np.float32


def test_tables_are_read_only() -> None:
    table = pixel_table(MNV2_PRE, MNV2_IN, 3)
    assert table is not None
    with pytest.raises(ValueError):
        table.rows[0, 0] = 1


def test_served_digits_answer_as_the_float_batch(digits: Any, digits_eval: Any) -> None:
    """A real int8 bundle on LiteRT: image_batch gives the tensor's own dtype, and the
    prediction equals the one of the float batch the old route made."""
    served = ModelRegistry(select_runtime(), Hooks(), num_threads=1).load(
        read_bundle(digits.bundle))
    spec = served.input_spec
    assert spec.quantized
    pngs = [digits_eval.png(i) for i in range(4)]
    batch = image_batch(served, pngs, 1_000_000)
    assert batch.dtype == np.dtype(spec.dtype)
    pre = served.manifest.preprocessing
    floats = np.stack([image_to_array(Image.open(io.BytesIO(p)), pre,
                                      (int(spec.shape[1]), int(spec.shape[2])))
                       for p in pngs])
    np.testing.assert_array_equal(batch, TensorCodec(spec).coerce(floats))
    got, want = served.predict(batch), served.predict(floats)
    for a, b in zip(got.outputs, want.outputs, strict=True):
        np.testing.assert_array_equal(a, b)
