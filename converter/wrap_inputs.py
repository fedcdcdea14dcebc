"""Inputs for wrapping a ``.tflite``: representative ``.npz``/``.npy`` data, or generated.

Representative data names one array per model input (``.npz``: the input's name, or
``x`` for a one-input model; ``.npy``: one-input models only), each of shape
``[N, *input_shape[1:]]``, float in model units or integers already in the tensor's
dtype. Generated inputs are deterministic (a fixed seed) and stay inside what the
tensor can hold: integer tensors over their dtype's range (quantized ones: the raw
steps), float tensors in ``[-1, 1]`` (what normalized image, audio and feature inputs
are), index-like ``int32``/``int64`` tensors in ``{0, 1}`` (token ids, lengths: any
larger value may be out of a lookup's range).

Pure except for reading the data file (bounded). Raises DatasetError.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from converter.errors import DatasetError
from edge_agent.manifest import TensorSpec
from edge_agent.runtime.model import _key  # TF Serving's key of a tensor name

SEED = 20261202
MAX_DATA_BYTES = 2 << 30  # a representative file read into memory
NPZ_EXTRA = ("y", "labels")  # keys a converter .npz may also hold (ignored here)

Feed = dict[str, np.ndarray]  # arrays by input name, each [N, ...] in the tensor's dtype


def generated(specs: Sequence[TensorSpec], n: int, seed: int = SEED) -> Feed:
    """``n`` deterministic samples per input, in each tensor's dtype and range."""
    rng = np.random.default_rng(seed)
    out: Feed = {}
    for s in specs:
        shape = (n, *s.shape[1:])
        dt = np.dtype(s.dtype)
        if s.dtype in ("int8", "uint8", "int16"):
            info = np.iinfo(dt)
            out[s.name] = rng.integers(info.min, int(info.max) + 1, shape).astype(dt)
        elif dt.kind in "iu":
            out[s.name] = rng.integers(0, 2, shape).astype(dt)
        else:
            out[s.name] = rng.uniform(-1.0, 1.0, shape).astype(dt)
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DatasetError(f"{path}: cannot read data ({e.strerror or e})") from e
    if size > MAX_DATA_BYTES:
        raise DatasetError(f"{path}: {size} bytes, over the {MAX_DATA_BYTES} byte limit")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files if k not in NPZ_EXTRA}
        if path.suffix == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: not a readable {path.suffix} file ({e})") from e
    raise DatasetError(f"{path}: expected a .npz (one array per input name) or a .npy")


def load_feed(path: Path, specs: Sequence[TensorSpec], samples: int) -> Feed:
    """At most ``samples`` samples (the first ones) per input of ``specs``, by input name.

    Raises DatasetError naming the expected and the given names, a wrong shape or dtype,
    differing sample counts, NaN/infinity, or no samples.
    """
    arrays = _arrays(path)
    names = [s.name for s in specs]
    if len(specs) == 1 and set(arrays) == {"x"}:
        arrays = {names[0]: arrays["x"]}
    by_key = {_key(k): v for k, v in arrays.items()}
    if sorted(by_key) != sorted(_key(n) for n in names):
        raise DatasetError(f"{path}: arrays {', '.join(sorted(arrays)) or 'none'} do not match "
                           f"the model's inputs {', '.join(names)} (one array per input name"
                           f"{', or x' if len(names) == 1 else ''})")
    feed: Feed = {}
    counts = set()
    for s in specs:
        x = by_key[_key(s.name)]
        want = tuple(s.shape[1:])
        if x.ndim != len(s.shape) or tuple(x.shape[1:]) != want or len(x) == 0:
            raise DatasetError(f"{path}: {s.name!r} has shape {list(x.shape)}, the model input "
                               f"expects [N, {', '.join(map(str, want))}]")
        if x.dtype.kind not in "fiu" or (x.dtype.kind in "iu" and x.dtype != np.dtype(s.dtype)):
            raise DatasetError(f"{path}: {s.name!r} has dtype {x.dtype}; expected float (model "
                               f"units) or {s.dtype} (the tensor's own)")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DatasetError(f"{path}: {s.name!r} contains NaN or infinity")
        counts.add(len(x))
        feed[s.name] = x[:samples]
    if len(counts) != 1:
        raise DatasetError(f"{path}: inputs hold different sample counts "
                           f"({', '.join(f'{k}: {len(v)}' for k, v in by_key.items())})")
    return feed


def rows(feed: Feed, idx: Sequence[int]) -> list[Feed]:
    """One single-sample feed (batch 1) per index."""
    return [{k: v[i:i + 1] for k, v in feed.items()} for i in idx]
