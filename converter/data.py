"""Datasets for calibration and evaluation: image folders, ``.npz`` and ``.npy``.

Image folders hold one subfolder per class (labels are the folder names, sorted);
images are decoded with Pillow by the same code the agent serves with
(:mod:`edge_agent.runtime.preprocess`). ``.npz`` holds ``x`` (and ``y``, optionally
``labels``); ``.npy`` holds ``x`` only. Float arrays are taken as model-input units;
``uint8`` arrays as pixels, normalized with the bundle's preprocessing.
Sampling is deterministic (a fixed-seed permutation).

Raises :class:`~converter.errors.DatasetError`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from converter.errors import DatasetError
from edge_agent.bundle import Preprocessing
from edge_agent.runtime.preprocess import MAX_IMAGE_PIXELS, image_to_array

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SEED = 20261125


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, (N, *input_shape) in model units
    y: np.ndarray | None  # int64 class indices, or None
    labels: tuple[str, ...]
    source: str
    kind: str = "npz"  # npz | npy | folder (folder: y indexes the sorted folder names)


def _sample(n: int, samples: int | None) -> np.ndarray:
    idx = np.random.default_rng(SEED).permutation(n)
    return np.sort(idx[:samples]) if samples else np.arange(n)


def _normalize(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    if x.dtype == np.uint8:
        return ((x.astype(np.float32) - np.asarray(pre.mean, np.float32))
                / np.asarray(pre.std, np.float32))
    if x.dtype.kind not in "fiu":
        raise DatasetError(f"expected a numeric array, got dtype {x.dtype}")
    return x.astype(np.float32)


def _check_shape(x: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    want = tuple(input_shape)
    if tuple(x.shape[1:]) != want:
        if x.ndim == len(want) and (*x.shape[1:], 1) == want:
            return x[..., None]  # (N, H, W) grayscale → (N, H, W, 1)
        raise DatasetError(f"{source}: samples have shape {list(x.shape[1:])}, the model input "
                           f"expects {list(want)}")
    return x


def check_data_path(path: Path, need_labels: bool = False) -> None:
    """Cheap checks before any model is loaded (no decoding, no array reads).

    The path exists and is a known kind; a folder has class subfolders with image files;
    a .npz has an ``x`` (and a ``y`` when labels are needed).
    """
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_dir():
        _list_folder(path)
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{path}: not a readable .npz file ({e})") from e
        if "x" not in keys:
            raise DatasetError(f"{path}: .npz has no 'x' array (has: {', '.join(sorted(keys))})")
        if need_labels and "y" not in keys:
            raise DatasetError(f"{path}: evaluation data needs labels ('y' in the .npz)")
    elif path.suffix == ".npy":
        if need_labels:
            raise DatasetError(f"{path}: evaluation data needs labels; a .npy holds x only "
                               "(use a .npz with x and y, or class subfolders)")
    else:
        raise DatasetError(f"{path}: expected a folder of class subfolders, a .npz or a .npy")


def load_dataset(path: str | Path, input_shape: tuple[int, ...], pre: Preprocessing,
                 samples: int | None = None, need_labels: bool = False) -> Dataset:
    """Load ``path`` as model-ready float32 samples of ``input_shape`` (no batch dim)."""
    p = Path(path)
    check_data_path(p, need_labels)
    if p.is_dir():
        ds = _load_folder(p, input_shape, pre, samples)
    elif p.suffix == ".npz":
        ds = _load_npz(p, input_shape, pre, samples)
    elif p.suffix == ".npy":
        try:
            x = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: not a readable .npy file ({e})") from e
        if x.ndim < 2 or len(x) == 0:
            raise DatasetError(f"{p}: expected an array of samples, got shape {list(x.shape)}")
        idx = _sample(len(x), samples)
        ds = Dataset(_check_shape(_normalize(x[idx], pre), input_shape, str(p)), None, (), str(p),
                     "npy")
    else:
        raise DatasetError(f"{p}: expected a folder of class subfolders, a .npz or a .npy")
    if len(ds.x) == 0:
        raise DatasetError(f"{p}: holds no samples")
    if need_labels and ds.y is None:
        raise DatasetError(f"{p}: evaluation data needs labels (class subfolders, or 'y' in .npz)")
    if not np.all(np.isfinite(ds.x)):
        raise DatasetError(f"{p}: data contains NaN or infinity")
    return ds


def _load_npz(p: Path, input_shape: tuple[int, ...], pre: Preprocessing,
              samples: int | None) -> Dataset:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DatasetError(f"{p}: .npz has no 'x' array (has: {', '.join(z.files)})")
            x = z["x"]
            y = z["y"] if "y" in z.files else None
            labels = tuple(str(s) for s in z["labels"]) if "labels" in z.files else ()
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{p}: not a readable .npz file ({e})") from e
    if x.ndim < 2 or len(x) == 0:
        raise DatasetError(f"{p}: 'x' must hold samples, got shape {list(x.shape)}")
    if y is not None:
        y = _class_indices(y, len(x), p)
    idx = _sample(len(x), samples)
    xs = _check_shape(_normalize(x[idx], pre), input_shape, str(p))
    return Dataset(xs, None if y is None else y[idx], labels, str(p), "npz")


def _class_indices(y: np.ndarray, n: int, p: Path) -> np.ndarray:
    """``y`` as int64 class indices: integer labels, or one-hot / probability rows."""
    if len(y) != n:
        raise DatasetError(f"{p}: 'x' has {n} samples but 'y' has {len(y)}")
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{p}: 'y' must hold class indices or one-hot rows, got shape "
                           f"{list(y.shape)}")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise DatasetError(f"{p}: 'y' must hold integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DatasetError(f"{p}: 'y' holds a negative class index ({int(y.min())})")
    return y.astype(np.int64)


def _list_folder(p: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    try:
        classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        files: list[tuple[Path, int]] = []
        for ci, c in enumerate(classes):
            files += [(f, ci) for f in sorted((p / c).iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    except OSError as e:
        where = e.filename or p
        raise DatasetError(f"{where}: cannot list data folder ({e.strerror})") from e
    if not classes:
        raise DatasetError(f"{p}: no class subfolders (expected {p}/<label>/<image files>)")
    if not files:
        raise DatasetError(f"{p}: class folders hold no image files "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes, files


def _read_image(f: Path, pre: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    try:
        data = f.read_bytes()
    except OSError as e:
        raise DatasetError(f"{f}: cannot read image ({e.strerror})") from e
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DatasetError(f"{f}: image is {img.width}x{img.height}, over "
                                   f"{MAX_IMAGE_PIXELS} pixels")
            img.load()
            return image_to_array(img, pre, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        what = "not a recognised image format" if isinstance(e, UnidentifiedImageError) else (
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated'}")
        raise DatasetError(f"{f}: cannot decode image ({what})") from e


def _load_folder(p: Path, input_shape: tuple[int, ...], pre: Preprocessing,
                 samples: int | None) -> Dataset:
    classes, files = _list_folder(p)
    if len(input_shape) != 3:
        raise DatasetError(f"{p}: image folders need an image model input (H, W, C), "
                           f"this model takes {list(input_shape)}")
    h, w, c = input_shape
    if c not in (1, 3):
        raise DatasetError(f"{p}: image folders need 1 or 3 input channels, the model has {c}")
    idx = _sample(len(files), samples)
    xs, ys = [], []
    for i in idx:
        f, ci = files[i]
        xs.append(_read_image(f, pre, (h, w)))
        ys.append(ci)
    x = _check_shape(np.stack(xs), input_shape, str(p))
    return Dataset(x, np.asarray(ys, dtype=np.int64), tuple(classes), str(p), "folder")
