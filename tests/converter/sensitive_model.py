"""A model that full int8 ruins and one float op rescues (issue 14's sensitive model).

Six dense layers trained on 10 Gaussian clusters; the last one gets an 11th logit with a
bias of -1e4 that never wins. Its output tensor then spans [-1e4, ~10]: per-tensor int8
steps of ~40, so every real logit lands on the same step and top-1 collapses. Kept float,
that one op (1 of 6) restores float accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build(d: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """``(model.keras, calib.npz, eval.npz)`` under ``d``."""
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    centres = rng.normal(0, 3, (10, 16)).astype(np.float32)

    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        return (centres[y] + rng.normal(0, 1, (n, 16))).astype(np.float32), y

    x, y = data(2000)
    inp = keras.Input((16,), name="features")
    h = inp
    for i in range(5):
        h = keras.layers.Dense(32, activation="relu", name=f"d{i}")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    m = keras.Model(inp, out)
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=8, batch_size=64, verbose=0)
    wide = keras.layers.Dense(11, name="logits")
    out2 = wide(m.get_layer("d4").output)
    m2 = keras.Model(inp, out2)
    w, b = m.get_layer("logits").get_weights()
    wide.set_weights([np.concatenate([w, np.zeros((32, 1), np.float32)], 1),
                      np.concatenate([b, np.asarray([-1e4], np.float32)])])
    m2.save(d / "sensitive.keras")
    xc, _ = data(200)
    np.savez(d / "calib.npz", x=xc)
    xe, ye = data(500)
    np.savez(d / "eval.npz", x=xe, y=ye)
    return d / "sensitive.keras", d / "calib.npz", d / "eval.npz"
