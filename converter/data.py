"""Datasets for calibration and evaluation: image folders, ``.npz`` (or a directory of
``.npz`` shards) and ``.npy``.

Image folders hold one subfolder per class (labels are the folder names, sorted);
images are decoded with Pillow by the same code the agent serves with
(:mod:`edge_agent.runtime.preprocess`). ``.npz`` holds one array per model input, named
after the input (a one-input model also takes ``x``), and optionally ``y`` and
``labels`` (:mod:`converter.npzdata`); ``.npy`` and image folders feed one-input models
only. Float arrays are taken as model-input units; ``uint8`` arrays as pixels,
normalized with the bundle's preprocessing; integer model inputs take integers.
``y`` is kept as given (class indices, one-hot rows or regression targets): what it
means depends on the head it is scored against (:func:`class_indices`).
Sampling is deterministic (a fixed-seed permutation).

Raises :class:`~converter.errors.DatasetError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from converter import npzdata
from converter.errors import DatasetError
from converter.tfload import SourceInput
from edge_agent.bundle import Preprocessing
from edge_agent.runtime.preprocess import MAX_IMAGE_PIXELS, image_to_array

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SEED = 20261125


@dataclass(frozen=True)
class Dataset:
    xs: dict[str, np.ndarray]  # by input name, model order: (N, *shape) in model units
    y: np.ndarray | None  # as given (class indices, one-hot, targets), or None
    labels: tuple[str, ...]
    source: str
    kind: str = "npz"  # npz | npy | folder (folder: y indexes the sorted folder names)

    @property
    def n(self) -> int:
        return len(next(iter(self.xs.values())))

    @property
    def x(self) -> np.ndarray:
        """The first input's samples."""
        return next(iter(self.xs.values()))

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` of every input, by name."""
        return {k: v[start:stop] for k, v in self.xs.items()}


def class_indices(ds: Dataset) -> np.ndarray | None:
    """``ds.y`` as int64 class indices (integer labels, or one-hot / probability rows), or
    None without labels. Raises DatasetError when ``y`` holds no class indices."""
    return None if ds.y is None else _class_indices(ds.y, ds.n, Path(ds.source))


def _sample(n: int, samples: int | None) -> np.ndarray:
    idx = np.random.default_rng(SEED).permutation(n)
    return np.sort(idx[:samples]) if samples else np.arange(n)


def _as_input(x: np.ndarray, inp: SourceInput, pre: Preprocessing, source: str) -> np.ndarray:
    """One input's samples in the model input's units and dtype (float: model units,
    ``uint8`` arrays as pixels; integer inputs: integers)."""
    want = np.dtype(inp.dtype)
    if x.dtype.kind not in "fiu":
        raise DatasetError(f"{source}: input {inp.name!r}: expected numbers, got dtype "
                           f"{x.dtype}")
    if want.kind in "iu":
        if x.dtype.kind == "f" and not np.all(x == np.round(x)):
            raise DatasetError(f"{source}: input {inp.name!r}: the model input is {want}, got "
                               f"{x.dtype} values that are not integers")
        return x.astype(want)
    if want.kind != "f":
        raise DatasetError(f"{source}: input {inp.name!r}: a {want} model input cannot be fed "
                           "from data files")
    if x.dtype == np.uint8:
        return ((x.astype(np.float32) - np.asarray(pre.mean, np.float32))
                / np.asarray(pre.std, np.float32))
    return x.astype(np.float32)


def _check_shape(x: np.ndarray, inp: SourceInput, source: str) -> np.ndarray:
    want = tuple(inp.shape)
    if tuple(x.shape[1:]) != want:
        if x.ndim == len(want) and (*x.shape[1:], 1) == want:
            return x[..., None]  # (N, H, W) grayscale → (N, H, W, 1)
        raise DatasetError(f"{source}: input {inp.name!r}: samples have shape "
                           f"{list(x.shape[1:])}, the model input expects {list(want)}")
    return x


def _one_input(p: Path, inputs: tuple[SourceInput, ...], what: str) -> SourceInput:
    if len(inputs) != 1:
        raise DatasetError(f"{p}: {what} feeds one-input models; this model takes "
                           f"{', '.join(i.name for i in inputs)}: use an .npz (or a folder of "
                           ".npz shards) with one array per input name")
    return inputs[0]


def check_data_path(path: Path, need_labels: bool = False) -> None:
    """Cheap checks before any model is loaded (no decoding, no array reads).

    The path exists and is a known kind; a folder has class subfolders with image files,
    or .npz shards; a .npz has some input array (and a ``y`` when labels are needed),
    within the size limits of :mod:`converter.npzdata`.
    """
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_dir():
        if npzdata.is_shard_dir(path):
            npzdata.check(npzdata.shards(path), need_labels)
        else:
            _list_folder(path)
    elif path.suffix == ".npz":
        npzdata.check([path], need_labels)
    elif path.suffix == ".npy":
        if need_labels:
            raise DatasetError(f"{path}: evaluation data needs labels; a .npy holds x only "
                               "(use a .npz with x and y, or class subfolders)")
    else:
        raise DatasetError(f"{path}: expected a folder of class subfolders or of .npz shards, "
                           "a .npz or a .npy")


def load_dataset(path: str | Path, inputs: tuple[SourceInput, ...], pre: Preprocessing,
                 samples: int | None = None, need_labels: bool = False) -> Dataset:
    """Load ``path`` as model-ready samples of every input (no batch dim), by name."""
    p = Path(path)
    check_data_path(p, need_labels)
    if p.is_dir() and not npzdata.is_shard_dir(p):
        ds = _load_folder(p, _one_input(p, inputs, "an image folder"), pre, samples)
    elif p.is_dir() or p.suffix == ".npz":
        ds = _load_npz(p, inputs, pre, samples)
    elif p.suffix == ".npy":
        inp = _one_input(p, inputs, "a .npy")
        try:
            x = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: not a readable .npy file ({e})") from e
        if x.ndim < 1 or len(x) == 0:
            raise DatasetError(f"{p}: expected an array of samples, got shape {list(x.shape)}")
        idx = _sample(len(x), samples)
        ds = Dataset({inp.name: _check_shape(_as_input(x[idx], inp, pre, str(p)), inp, str(p))},
                     None, (), str(p), "npy")
    else:
        raise DatasetError(f"{p}: expected a folder of class subfolders, a .npz or a .npy")
    if ds.n == 0:
        raise DatasetError(f"{p}: holds no samples")
    if need_labels and ds.y is None:
        raise DatasetError(f"{p}: evaluation data needs labels (class subfolders, or 'y' in .npz)")
    for name, x in ds.xs.items():
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DatasetError(f"{p}: data contains NaN or infinity (input {name!r})")
    return ds


def _load_npz(p: Path, inputs: tuple[SourceInput, ...], pre: Preprocessing,
              samples: int | None) -> Dataset:
    arrays = npzdata.read(npzdata.shards(p) if p.is_dir() else [p], inputs)
    n = len(arrays.xs[inputs[0].name])
    idx = _sample(n, samples)
    xs = {i.name: _check_shape(_as_input(arrays.xs[i.name][idx], i, pre, str(p)), i, str(p))
          for i in inputs}
    y = None if arrays.y is None else arrays.y[idx]
    return Dataset(xs, y, arrays.labels, str(p), "npz")


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


def _load_folder(p: Path, inp: SourceInput, pre: Preprocessing,
                 samples: int | None) -> Dataset:
    input_shape = inp.shape
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
    x = _check_shape(np.stack(xs), inp, str(p))
    return Dataset({inp.name: x}, np.asarray(ys, dtype=np.int64), tuple(classes), str(p),
                   "folder")


def read_labels(path: Path) -> tuple[str, ...]:
    """A labels file: one class name per non-empty line, unique (``--labels``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read labels ({e})") from e
    labels = tuple(ln.strip() for ln in text.splitlines() if ln.strip())
    if not labels:
        raise DatasetError(f"{path}: labels file is empty")
    if len(set(labels)) != len(labels):
        raise DatasetError(f"{path}: labels are not unique")
    return labels
