"""Tiny real Keras models for issue 12's non-image / multi-input cases, with their data.

* :func:`two_input` — inputs ``image`` [8, 8, 1] and ``meta`` [3]; outputs ``class``
  (softmax over 3) and ``score`` (1 value). Data: an ``.npz`` per input name plus ``y``.
* :func:`tabular_regression` — 6 features → 1 value, trained on ``y = x·w + b + noise``.
* :func:`keyword_spotter` — a 1-D audio classifier: input ``audio`` [1600] (0.2 s at
  8 kHz), Conv1D layers, output ``keyword`` (softmax over 3 tones: ``low``, ``mid``,
  ``high``), trained on synthetic sine tones plus noise. Data: ``audio`` plus ``y``.

Each writes the ``.keras`` file and its data under ``d`` and returns the float Keras
model's outputs on held-out samples (what the served bundle must be close to).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = 6
AUDIO_SAMPLES = 1600  # 0.2 s at 8 kHz
AUDIO_RATE_HZ = 8000
TONES_HZ = (300.0, 800.0, 1800.0)
KEYWORDS = ("low", "mid", "high")


@dataclass(frozen=True)
class Built:
    keras: Path
    calib: Path  # .npz: one array per input name, plus y
    held: dict[str, np.ndarray]  # held-out inputs by name
    want: dict[str, np.ndarray]  # the float Keras model's outputs on ``held``, by name
    held_y: np.ndarray


def two_input(d: Path, n: int = 192, held: int = 16) -> Built:
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(11)  # the same weights every run: no flaky int8 tails
    rng = np.random.default_rng(11)
    img = rng.uniform(0, 1, (n + held, 8, 8, 1)).astype(np.float32)
    meta = rng.normal(size=(n + held, 3)).astype(np.float32)
    y = ((img.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64) + (meta[:, 0] > 0.5))
    i1 = tf.keras.Input((8, 8, 1), name="image")
    i2 = tf.keras.Input((3,), name="meta")
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(i1), i2])
    h = tf.keras.layers.Dense(16, activation="relu")(h)
    model = tf.keras.Model([i1, i2], {
        "class": tf.keras.layers.Dense(3, activation="softmax", name="class")(h),
        "score": tf.keras.layers.Dense(1, name="score")(h)})
    model.compile("adam", {"class": "sparse_categorical_crossentropy", "score": "mse"})
    model.fit([img[:n], meta[:n]], {"class": y[:n], "score": meta[:n, :1] * 2.0}, epochs=8,
              verbose=0)
    model.save(d / "two_in.keras")
    np.savez(d / "calib.npz", image=img[:n], meta=meta[:n], y=y[:n])
    out = model.predict([img[n:], meta[n:]], verbose=0)
    return Built(d / "two_in.keras", d / "calib.npz", {"image": img[n:], "meta": meta[n:]},
                 {k: np.asarray(out[k]) for k in ("class", "score")}, y[n:])


def tabular_regression(d: Path, n: int = 320, held: int = 64) -> Built:
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n + held, FEATURES)).astype(np.float32)
    # held-out features inside the calibration data's range: an int8 output saturates at
    # the largest value calibration saw (what int8 costs, not what is tested here)
    x[n:] = np.clip(x[n:], -1.5, 1.5)
    w = np.asarray([1.5, -2.0, 0.5, 0.0, 3.0, -1.0], np.float32)
    y = (x @ w + 0.7 + rng.normal(scale=0.1, size=n + held)).astype(np.float32)
    inp = tf.keras.Input((FEATURES,), name="features")
    h = tf.keras.layers.Dense(16, activation="relu")(inp)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(1, name="value")(
        tf.keras.layers.Concatenate()([h, inp])))
    model.compile(tf.keras.optimizers.Adam(0.02), "mse")
    model.fit(x[:n], y[:n], epochs=40, verbose=0)
    model.save(d / "reg.keras")
    np.savez(d / "calib.npz", features=x[:n], y=y[:n])
    np.savez(d / "eval.npz", features=x[n:], y=y[n:])
    out = model.predict(x[n:], verbose=0)
    return Built(d / "reg.keras", d / "calib.npz", {"features": x[n:]},
                 {"value": np.asarray(out)}, y[n:])


def tones(rng: np.random.Generator, y: np.ndarray, noise: float = 0.1) -> np.ndarray:
    """One synthetic clip per class index in ``y``: a sine at ``TONES_HZ[y]`` with random
    phase and amplitude (0.3..0.9) plus Gaussian noise, float32 in model units."""
    t = np.arange(AUDIO_SAMPLES, dtype=np.float64) / AUDIO_RATE_HZ
    f = np.asarray(TONES_HZ)[y][:, None]
    phase = rng.uniform(0, 2 * np.pi, (len(y), 1))
    amp = rng.uniform(0.3, 0.9, (len(y), 1))
    x = amp * np.sin(2 * np.pi * f * t + phase) + rng.normal(scale=noise, size=(len(y), len(t)))
    return x.astype(np.float32)


def keyword_spotter(d: Path, n: int = 240, held: int = 24) -> Built:
    """Trains in a few seconds on 2 cores; writes ``kws.keras``, ``calib.npz`` (``audio``,
    ``y``) and ``labels.txt``."""
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    y = np.arange(n + held) % len(TONES_HZ)
    x = tones(rng, y)
    inp = tf.keras.Input((AUDIO_SAMPLES,), name="audio")
    h = tf.keras.layers.Reshape((AUDIO_SAMPLES, 1))(inp)
    h = tf.keras.layers.Conv1D(8, 9, strides=4, activation="relu")(h)
    h = tf.keras.layers.MaxPooling1D(4)(h)
    h = tf.keras.layers.Conv1D(16, 5, activation="relu")(h)
    h = tf.keras.layers.GlobalAveragePooling1D()(h)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(len(TONES_HZ), activation="softmax",
                                                      name="keyword")(h))
    model.compile(tf.keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x[:n], y[:n], epochs=12, batch_size=32, verbose=0)
    model.save(d / "kws.keras")
    np.savez(d / "calib.npz", audio=x[:n], y=y[:n])
    (d / "labels.txt").write_text("\n".join(KEYWORDS) + "\n")
    out = model.predict(x[n:], verbose=0)
    return Built(d / "kws.keras", d / "calib.npz", {"audio": x[n:]}, {"keyword": np.asarray(out)},
                 y[n:])
