"""The demo / test model: a small CNN trained on ``sklearn.datasets.load_digits``.

load_digits is a real labelled image dataset that ships inside scikit-learn (1,797
8×8 grayscale digits, values 0–16), so nothing is downloaded. Pixels are scaled to
model units as ``x / 16``, the same as image files written with ``pixel = x * 255/16``
and the bundle preprocessing ``(pixel - 0) / 255``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 7
LABELS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_split(test_fraction: float = 0.25, upsample: int = 1) -> DigitsSplit:
    """Deterministic split of load_digits in model units, (N, 8·upsample, 8·upsample, 1).

    ``upsample=2`` gives a 16x16-input variant: the same digits, a model that rejects
    requests shaped for the 8x8 one (the demo's incompatible update).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    if upsample > 1:
        x = np.repeat(np.repeat(x, upsample, axis=1), upsample, axis=2)
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(SEED).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    te, tr = idx[:n_test], idx[n_test:]
    return DigitsSplit(x[tr], y[tr], x[te], y[te])


def train_cnn(split: DigitsSplit, out: Path, epochs: int = 25) -> float:
    """Train the CNN, save it as ``.keras`` at ``out``, return held-out accuracy."""
    from converter.tfload import import_tf, quiet

    tf = import_tf()
    tf.keras.utils.set_random_seed(SEED)
    L = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(split.x_train.shape[1:]),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        L.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with quiet():
        model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0)
    _, acc = model.evaluate(split.x_test, split.y_test, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return float(acc)


def write_npz(split: DigitsSplit, out_dir: Path) -> tuple[Path, Path]:
    """``calib.npz`` (train x only, used as representative) and ``eval.npz`` (test x, y)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    calib, ev = out_dir / "calib.npz", out_dir / "eval.npz"
    np.savez(calib, x=split.x_train)
    np.savez(ev, x=split.x_test, y=split.y_test, labels=np.asarray(LABELS))
    return calib, ev


def write_image_folder(x: np.ndarray, y: np.ndarray, out_dir: Path, fmt: str = "png") -> Path:
    """Class-subfolder image tree (``out_dir/<digit>/<i>.png``), pixels ``x * 255``."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = out_dir / LABELS[int(label)]
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(np.round(img[..., 0] * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(px, mode="L").save(d / f"{i:04d}.{fmt}", quality=95)
    return out_dir


def image_bytes(img: np.ndarray, fmt: str = "PNG") -> bytes:
    """One digit (model units, (8, 8, 1)) as encoded image bytes."""
    import io

    from PIL import Image

    px = np.clip(np.round(img[..., 0] * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px, mode="L").save(buf, format=fmt)
    return buf.getvalue()


def main() -> None:
    """``python -m converter.digits OUT_DIR [--upsample 2]``: train, write model + data."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m converter.digits")
    ap.add_argument("out", type=Path, nargs="?", default=Path("demo-out"))
    ap.add_argument("--upsample", type=int, default=1, help="2: a 16x16-input variant")
    a = ap.parse_args()
    split = load_split(upsample=a.upsample)
    acc = train_cnn(split, a.out / "digits.keras")
    write_npz(split, a.out)
    if a.upsample == 1:
        write_image_folder(split.x_test, split.y_test, a.out / "eval-images")
    print(f"trained digits CNN ({split.x_train.shape[1]}x{split.x_train.shape[2]} input): "
          f"held-out accuracy {acc:.4f} -> {a.out / 'digits.keras'}")


if __name__ == "__main__":
    main()
