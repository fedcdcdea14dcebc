"""Detection models for ``--task detection`` (issue 12 part 4), built here, nothing fetched.

* :func:`square_detector` — a small Keras model trained on synthetic images (a bright
  square on noise) with two SSD-style heads: ``boxes`` [16, 4] (the square's box,
  ``[ymin, xmin, ymax, xmax]`` in image fractions, from each of 4x4 cells) and
  ``scores`` [16, 1] (the cell holding the square's centre). Converted by
  ``edge-convert convert --task detection``.
* :func:`postprocess_tflite` — a float ``.tflite`` whose last op is TFLite's detection
  post-processing custom op (``TFLite_Detection_PostProcess``: boxes [10, 4], classes
  [10], scores [10], count), written by TF's own converter from a ``tf.function`` that
  declares ``experimental_implements`` (how TF's object detection API exports it).
  Wrapped by ``edge-convert bundle --task detection``; its SavedModel converts with
  ``edge-convert convert --task detection --allow-float-ops`` (int8 around the float op).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from build_lock import cached_build
from model_fixtures import convert_cli

SIZE, GRID = 32, 4  # image side, cells per side
CELLS = GRID * GRID


@dataclass(frozen=True)
class Detector:
    model: Path  # .keras, or .tflite
    calib: Path  # .npz by input name
    held: np.ndarray  # held-out images, the model's input
    want: dict[str, np.ndarray]  # the float model's outputs on ``held``, by name
    truth: np.ndarray  # held-out ground-truth boxes [n, 4] (square_detector)
    saved_model: Path | None = None  # postprocess_tflite: the SavedModel it came from


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images [n, 32, 32, 1] (noise in [0, 0.3], a 1.0 square of side 6-12), their boxes
    [n, 4] and the index of the cell holding each square's centre."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    boxes = np.zeros((n, 4), np.float32)
    cells = np.zeros(n, np.int64)
    for i in range(n):
        s = int(rng.integers(6, 13))
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - s + 1, 2))
        x[i, y0:y0 + s, x0:x0 + s, 0] = 1.0
        boxes[i] = (y0 / SIZE, x0 / SIZE, (y0 + s) / SIZE, (x0 + s) / SIZE)
        cy, cx = y0 + s // 2, x0 + s // 2
        cells[i] = (cy * GRID // SIZE) * GRID + cx * GRID // SIZE
    return x, boxes, cells


def square_detector(d: Path, n: int = 768, held: int = 16) -> Detector:
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(3)
    x, boxes, cells = squares(n + held, seed=7)
    L = tf.keras.layers
    inp = tf.keras.Input((SIZE, SIZE, 1), name="image")
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)  # 4x4 cells
    scores = L.Reshape((CELLS, 1), name="scores")(L.Conv2D(1, 1, activation="sigmoid")(h))
    f = L.Dense(64, activation="relu")(L.Flatten()(h))
    out_boxes = L.Reshape((CELLS, 4), name="boxes")(L.Dense(CELLS * 4, activation="sigmoid")(f))
    model = tf.keras.Model(inp, {"boxes": out_boxes, "scores": scores})
    want_scores = np.zeros((n + held, CELLS, 1), np.float32)
    want_scores[np.arange(n + held), cells] = 1.0
    want_boxes = np.repeat(boxes[:, None, :], CELLS, axis=1)
    model.compile(tf.keras.optimizers.Adam(0.005),
                  {"boxes": "mse", "scores": "binary_crossentropy"})
    model.fit(x[:n], {"boxes": want_boxes[:n], "scores": want_scores[:n]}, epochs=60,
              batch_size=32, verbose=0)
    model.save(d / "squares.keras")
    np.savez(d / "calib.npz", image=x[:n])
    out = model.predict(x[n:], verbose=0)
    return Detector(d / "squares.keras", d / "calib.npz", x[n:],
                    {k: np.asarray(out[k]) for k in ("boxes", "scores")}, boxes[n:])


MAX_DETECTIONS, CLASSES, ANCHORS = 10, 3, 64


def _implements() -> str:
    """The op and its attributes, as TF's object detection API declares them."""
    attrs = {"max_detections": f"i: {MAX_DETECTIONS}", "max_classes_per_detection": "i: 1",
             "use_regular_nms": "b: false", "nms_score_threshold": "f: 0.000001",
             "nms_iou_threshold": "f: 0.6", "y_scale": "f: 10.0", "x_scale": "f: 10.0",
             "h_scale": "f: 5.0", "w_scale": "f: 5.0", "num_classes": f"i: {CLASSES}"}
    return " ".join(['name: "TFLite_Detection_PostProcess"'] + [
        f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs.items()])


def postprocess_tflite(d: Path, held: int = 8) -> Detector:
    """The float ``.tflite`` (module docstring) and its input ``image`` [16, 16, 1]; the
    raw box encodings and class scores come from a fixed random projection of the image,
    so different images give different detections."""
    from converter.tfload import import_tf

    tf = import_tf()
    g = np.linspace(1 / 16, 15 / 16, 8)
    centers = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    anchors = np.concatenate([centers, np.full((ANCHORS, 2), 0.25)], 1).astype(np.float32)
    w = np.random.default_rng(0).normal(0, 0.1, (256, ANCHORS * (4 + CLASSES + 1)))
    implements = _implements()

    class Model(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(w.astype(np.float32))

        @tf.function(experimental_implements=implements)  # type: ignore[misc]
        def post(self, box: object, cls: object, anc: object) -> tuple[object, ...]:
            # replaced by the custom op on conversion; TF never runs this body
            return tuple(tf.constant(0.0, name=n) for n in
                         ("boxes", "classes", "scores", "num_detections"))

        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 1], tf.float32,
                                                    name="image")])  # type: ignore[misc]
        def __call__(self, x: object) -> dict[str, object]:
            h = tf.matmul(tf.reshape(x, [1, -1]), self.w)
            box = tf.reshape(h[:, :ANCHORS * 4], [1, ANCHORS, 4])
            cls = tf.sigmoid(tf.reshape(h[:, ANCHORS * 4:], [1, ANCHORS, CLASSES + 1]))
            b, c, s, n = self.post(box, cls, tf.constant(anchors))
            return {"boxes": b, "classes": c, "scores": s, "count": n}

    m = Model()
    tf.saved_model.save(m, str(d / "pp_sm"), signatures={"serving_default": m.__call__})
    conv = tf.lite.TFLiteConverter.from_saved_model(str(d / "pp_sm"))
    conv.allow_custom_ops = True  # the op is custom to TF, built into LiteRT's resolver
    content = conv.convert()
    (d / "postprocess.tflite").write_bytes(content)
    x = np.random.default_rng(1).uniform(0, 1, (64 + held, 16, 16, 1)).astype(np.float32)
    np.savez(d / "pp_calib.npz", image=x[:64])
    from third_party import run_direct

    outs = [run_direct(content, {"image": x[i:i + 1]}) for i in range(64, 64 + held)]
    want = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return Detector(d / "postprocess.tflite", d / "pp_calib.npz", x[64:], want,
                    np.zeros((0, 4), np.float32), d / "pp_sm")


@dataclass(frozen=True)
class SquareBundle:
    bundle: Path  # ``squares`` v1, int8, --task detection
    keras: Path
    held: np.ndarray
    want: dict[str, np.ndarray]  # the float Keras model's outputs on ``held``
    truth: np.ndarray
    report: dict[str, Any]


def square_bundle_at(out: Path) -> SquareBundle:
    """:func:`square_detector` trained and converted by the real CLI (``edge-convert
    convert --task detection``) into ``out``, unless a complete build is already there
    (built in a sibling and renamed: never half a cache)."""
    def build(tmp: Path) -> None:
        det = square_detector(tmp)
        r = convert_cli("convert", det.model, "--representative", det.calib, "--profile",
                        "generic-x86_64", "--task", "detection", "--latency-runs", 2, "--json",
                        "--name", "squares", "-o", tmp / "squares-v1")
        assert r.returncode == 0, r.stderr
        np.savez(tmp / "held.npz", x=det.held, truth=det.truth,
                 **{f"want_{k}": v for k, v in det.want.items()})
        (tmp / "report.json").write_text(r.stdout)

    cached_build(out, "report.json", build)
    held = np.load(out / "held.npz")
    return SquareBundle(out / "squares-v1", out / "squares.keras", held["x"],
                        {k: held[f"want_{k}"] for k in ("boxes", "scores")}, held["truth"],
                        json.loads((out / "report.json").read_text()))
