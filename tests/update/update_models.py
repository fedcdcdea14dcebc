"""Build the extra real models the update tests and bench need (TensorFlow, own process).

``python tests/update/update_models.py wide OUT``: digits upsampled to 16x16 input —
a model that loads and passes its golden vectors but rejects every request shaped for
the 8x8 model it replaces (the classic incompatible update).
``python tests/update/update_models.py big OUT --version N``: a ~4 MB int8 digits model
(dense layers) for bench/update.py.
``python tests/update/update_models.py while OUT.tflite``: a real TFLite model (digits' int8
IO) whose WHILE loop never terminates unless the input sums to zero — on every digits
golden input it runs forever. Only the ``.tflite``: the converter would itself hang
computing its golden outputs, so the test patches it into a bundle.

Run in a child process so the pytest process never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _convert(keras_path: Path, calib: Path, ev: Path, out: Path, version: int) -> None:
    from converter.build import ConvertOptions, convert_to_bundle

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    convert_to_bundle(ConvertOptions(model=keras_path, representative=calib, eval_data=ev,
                                     profile="generic-x86_64", name="digits", version=version,
                                     output=tmp, latency_runs=5))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def build(kind: str, out: Path, version: int) -> None:
    from converter.digits import load_split
    from converter.tfload import import_tf, quiet

    tf = import_tf()
    tf.keras.utils.set_random_seed(7)
    split = load_split()
    xtr, xte = split.x_train, split.x_test
    L = tf.keras.layers
    if kind == "wide":
        xtr, xte = (np.repeat(np.repeat(a, 2, axis=1), 2, axis=2) for a in (xtr, xte))
        model = tf.keras.Sequential([tf.keras.Input((16, 16, 1)),
                                     L.Conv2D(8, 3, padding="same", activation="relu"),
                                     L.MaxPooling2D(), L.Flatten(),
                                     L.Dense(10, activation="softmax")])
        epochs = 3
    else:
        model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), L.Flatten(),
                                     L.Dense(4096, activation="relu"),
                                     L.Dense(960, activation="relu"),
                                     L.Dense(10, activation="softmax")])
        epochs = 1
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with quiet():
        model.fit(xtr, split.y_train, epochs=epochs, batch_size=64, verbose=0)
    work = out.parent / f"{out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    kpath = work / "model.keras"
    model.save(kpath)
    np.savez(work / "calib.npz", x=xtr[:200])
    np.savez(work / "eval.npz", x=xte[:200], y=split.y_test[:200],
             labels=np.asarray([str(i) for i in range(10)]))
    _convert(kpath, work / "calib.npz", work / "eval.npz", out, version)
    shutil.rmtree(work, ignore_errors=True)


def build_while(out: Path) -> None:
    from converter.tfload import import_tf, quiet

    tf = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.int8)])
    def never_ends(x: object) -> object:
        s = tf.reduce_sum(tf.cast(x, tf.float32))
        i, s = tf.while_loop(lambda i, s: tf.not_equal(s, 0.0),  # s never changes
                             lambda i, s: (i + 1.0, s), [tf.constant(0.0), s])
        return tf.cast(tf.zeros([1, 10]) + tf.minimum(i, 0.0), tf.int8)

    with quiet():
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [never_ends.get_concrete_function()], never_ends)
        data = conv.convert()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("wide", "big", "while"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--version", type=int, default=3)
    a = ap.parse_args()
    if a.kind == "while":
        build_while(a.out)
    else:
        build(a.kind, a.out, a.version)
