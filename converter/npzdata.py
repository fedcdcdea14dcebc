"""Arrays by input name from an ``.npz`` file or a directory of ``.npz`` shards.

A model with several inputs takes one array per input, named after the input (the
model's own name: ``image``, ``meta``), plus optionally ``y`` (class indices, one-hot
rows or regression targets) and ``labels``. A one-input model also takes the array
``x`` (the historical format). Shards are concatenated in file-name order; every shard
must name the same arrays.

Bounded before anything is decompressed: at most :data:`MAX_SHARDS` shards and
:data:`MAX_DATA_BYTES` of arrays in total, counted from the archives' own (uncompressed)
member sizes, so a small compressed file cannot expand past the limit.

Raises :class:`~converter.errors.DatasetError`, naming the file, the input and what was
expected and got.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import DatasetError
from converter.tfload import SourceInput

MAX_SHARDS = 1024
MAX_DATA_BYTES = 4 << 30  # uncompressed, all arrays of all shards together
RESERVED = ("y", "labels")  # arrays that are not model inputs
LEGACY = "x"  # a one-input model's input, whatever its name


@dataclass(frozen=True)
class Arrays:
    """What the ``.npz`` source holds, by input name (model order), all shards joined."""

    xs: dict[str, np.ndarray]
    y: np.ndarray | None
    labels: tuple[str, ...]


def members(p: Path) -> dict[str, int]:
    """Array name → uncompressed bytes, from the zip directory alone (nothing decoded)."""
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{p}: not a readable .npz file ({e})") from e
    return {i.filename.removesuffix(".npy"): i.file_size for i in infos}


def shards(d: Path) -> list[Path]:
    """The ``.npz`` files of a shard directory, sorted, at most MAX_SHARDS."""
    try:
        found = sorted(f for f in d.iterdir() if f.suffix == ".npz" and f.is_file())
    except OSError as e:
        raise DatasetError(f"{d}: cannot list data folder ({e.strerror})") from e
    if not found:
        raise DatasetError(f"{d}: holds no .npz shards")
    if len(found) > MAX_SHARDS:
        raise DatasetError(f"{d}: {len(found)} .npz shards, more than {MAX_SHARDS}")
    return found


def is_shard_dir(d: Path) -> bool:
    """A directory of ``.npz`` files and no subfolders (an image folder has class folders)."""
    try:
        entries = list(d.iterdir())
    except OSError:
        return False
    return (not any(e.is_dir() and not e.name.startswith(".") for e in entries)
            and any(e.suffix == ".npz" for e in entries))


def check(paths: Sequence[Path], need_labels: bool) -> None:
    """Cheap checks before a model is loaded: readable archives within the byte limit,
    each with some input array (and ``y`` when labels are needed)."""
    total = 0
    for p in paths:
        arrays = members(p)
        total += sum(arrays.values())
        if total > MAX_DATA_BYTES:
            raise DatasetError(f"{p}: data holds more than {MAX_DATA_BYTES} bytes of arrays "
                               "(uncompressed); use fewer samples")
        if not set(arrays) - set(RESERVED):
            raise DatasetError(f"{p}: .npz has no input array (has: "
                               f"{', '.join(sorted(arrays)) or 'none'})")
        if need_labels and "y" not in arrays:
            raise DatasetError(f"{p}: evaluation data needs labels ('y' in the .npz)")


def _mapping(p: Path, have: set[str], inputs: Sequence[SourceInput]) -> dict[str, str]:
    """Input name → array name in this archive; refuses arrays that are not the inputs."""
    names = [i.name for i in inputs]
    arrays = have - set(RESERVED)
    if len(inputs) == 1:
        if names[0] in arrays:
            return {names[0]: names[0]}
        if LEGACY in arrays:
            return {names[0]: LEGACY}
        raise DatasetError(f"{p}: .npz has no 'x' array nor one named after the model's input "
                           f"{names[0]!r} (has: {', '.join(sorted(have)) or 'none'})")
    if arrays != set(names):
        raise DatasetError(f"{p}: .npz arrays do not match the model's inputs (expected "
                           f"{', '.join(names)}; got {', '.join(sorted(arrays)) or 'none'})")
    return {n: n for n in names}


def read(paths: Sequence[Path], inputs: Sequence[SourceInput]) -> Arrays:
    """Every shard's arrays by input name, joined. Sample counts must agree within a shard."""
    check(paths, need_labels=False)
    parts: dict[str, list[np.ndarray]] = {i.name: [] for i in inputs}
    ys: list[np.ndarray] = []
    labels: tuple[str, ...] = ()
    for k, p in enumerate(paths):
        mapping = _mapping(p, set(members(p)), inputs)
        try:
            with np.load(p, allow_pickle=False) as z:
                got = {name: z[key] for name, key in mapping.items()}
                y = z["y"] if "y" in z.files else None
                if "labels" in z.files and not labels:
                    labels = tuple(str(s) for s in z["labels"])
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{p}: not a readable .npz file ({e})") from e
        first = inputs[0].name
        n = len(got[first]) if got[first].ndim else 0
        for name, a in got.items():
            shown = mapping[name]
            if a.ndim < 1 or len(a) == 0:
                raise DatasetError(f"{p}: {shown!r} must hold samples, got shape {list(a.shape)}")
            if len(a) != n:
                raise DatasetError(f"{p}: {shown!r} has {len(a)} samples but "
                                   f"{mapping[first]!r} has {n}")
            parts[name].append(a)
        if k and (y is None) != (not ys):
            raise DatasetError(f"{p}: {'no' if y is None else 'a'} 'y' array, unlike the "
                               "shards before it (every shard has 'y' or none has)")
        if y is not None:
            if y.ndim < 1 or len(y) != n:
                raise DatasetError(f"{p}: {mapping[first]!r} has {n} samples but 'y' has "
                                   f"{len(y) if y.ndim else 0}")
            if y.dtype.kind not in "iuf":
                raise DatasetError(f"{p}: 'y' must hold numbers, got dtype {y.dtype}")
            if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
                raise DatasetError(f"{p}: 'y' contains NaN or infinity")
            ys.append(y)
    try:
        xs = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
        yy = None if not ys else ys[0] if len(ys) == 1 else np.concatenate(ys)
    except ValueError as e:  # shards whose per-sample shapes or y shapes differ
        raise DatasetError(f"{paths[0].parent}: shards do not agree in shape ({e})") from e
    return Arrays(xs, yy, labels)
