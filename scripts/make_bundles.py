"""Convert the bundles the runtime matrix, the benchmark and the emulation check run on.

Runs in the main venv (it needs TensorFlow); every other venv only reads the results:

* ``digits``      — the digits CNN (sklearn's load_digits), full int8, exactly as the test
                    suite's ``digits`` fixture builds it (its cached build is reused when
                    present, read-only);
* ``mobilenet_v2`` — Keras MobileNetV2 (224×224×3, 1000 classes, seeded random weights: no
                    weights can be downloaded here), full int8, calibrated on 32 seeded
                    synthetic images;
* ``log_int8`` / ``sqrt_int8`` — tiny full-int8 models whose LOG / SQRT ops TensorFlow 2.21
                    emits at op version 2: tflite-runtime 2.14 lacks both, ai-edge-litert
                    1.4.0 lacks SQRT v2 (the "old runtime refuses a new model" case).

Outputs are cached under ``.cache/matrix-bundles/<key>`` (key: converter + bundle + this
script's sources and the TensorFlow version). Prints ``{"name": "/abs/path", ...}`` as JSON
and writes the same to ``<dir>/bundles.json``.

    .venv/bin/python scripts/make_bundles.py [--out DIR] [--only digits,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from converter.build import ConvertOptions, convert_to_bundle  # noqa: E402
from converter.tfload import import_tf  # noqa: E402

SEED = 8


def _source_key(*paths: str) -> str:
    h = hashlib.sha256()
    for d in paths:
        p = ROOT / d
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fixture_digits_dir() -> Path:
    """Where tests/conftest.py's ``digits`` fixture caches its build (read, never written)."""
    key = _source_key("converter", "edge_agent/bundle.py")
    return ROOT / ".cache" / "test-artifacts" / f"digits-{key}"


def digits_dir(out: Path) -> Path:
    """The fixture's digits build when present (same recipe, same converter), else ours."""
    shared = fixture_digits_dir()
    return shared if (shared / "digits-v2" / "manifest.json").exists() else out / "digits-src"


def build_digits(out: Path) -> Path:
    out = digits_dir(out)
    if (out / "digits-v2" / "manifest.json").exists():
        return out / "digits-v1"
    from converter.digits import load_split, train_cnn, write_npz

    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    split = load_split()
    train_cnn(split, tmp / "digits.keras")
    calib, ev = write_npz(split, tmp)
    for version in (1, 2):
        convert_to_bundle(ConvertOptions(
            model=tmp / "digits.keras", representative=calib, eval_data=ev,
            profile="generic-x86_64", name="digits", version=version,
            output=tmp / f"digits-v{version}"))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out / "digits-v1"


def build_mobilenet(work: Path) -> Path:
    tf = import_tf()
    tf.keras.utils.set_random_seed(SEED)
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3),
                                              classes=1000)
    src = work / "mobilenet_v2.keras"
    model.save(src)
    # Smooth synthetic "images" in MobileNetV2's [-1, 1] input range.
    rng = np.random.default_rng(SEED)
    low = rng.uniform(-1, 1, (32, 7, 7, 3)).astype(np.float32)
    x = np.array(tf.image.resize(low, (224, 224), method="bilinear"), dtype=np.float32)
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    calib = work / "mobilenet_calib.npz"
    np.savez(calib, x=np.clip(x, -1, 1))
    out = work / "mobilenet_v2"
    convert_to_bundle(ConvertOptions(model=src, representative=calib, profile="generic-x86_64",
                                     name="mobilenet_v2", version=1, samples=32,
                                     latency_runs=5, output=out))
    return out


def _tiny(work: Path, op: str, calib: Path) -> Path:
    """A 64→16→op→10 int8 classifier on 8×8×1 digits input, as a SavedModel → bundle."""
    tf = import_tf()
    rng = np.random.default_rng(SEED)
    w1 = tf.constant(rng.normal(0, 0.3, (64, 16)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 0.3, (16, 10)).astype(np.float32))
    fn = {"log": lambda h: tf.math.log(h + 1.0), "sqrt": lambda h: tf.sqrt(h + 1.0)}[op]

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            h = tf.nn.relu(tf.matmul(tf.reshape(x, [-1, 64]), w1))
            return {"probs": tf.nn.softmax(tf.matmul(fn(h), w2))}

    net = Net()
    sm = work / f"{op}_savedmodel"
    tf.saved_model.save(net, str(sm), signatures={"serving_default": net.serve})
    out = work / f"{op}_int8"
    convert_to_bundle(ConvertOptions(model=sm, representative=calib, profile="generic-x86_64",
                                     name=f"{op}_int8", version=1, samples=64, latency_runs=5,
                                     output=out))
    return out


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {  # (scratch dir, output dir) → bundle
    "digits": lambda w, out: build_digits(out),
    "mobilenet_v2": lambda w, out: build_mobilenet(w),
    "log_int8": lambda w, out: _tiny(w, "log", digits_dir(out) / "calib.npz"),
    "sqrt_int8": lambda w, out: _tiny(w, "sqrt", digits_dir(out) / "calib.npz"),
}


def ensure_bundles(out: Path | None = None, only: list[str] | None = None) -> dict[str, Path]:
    """Build what is missing (cached) and return name → bundle directory."""
    tf = import_tf()
    key = _source_key("converter", "edge_agent/bundle.py", "scripts/make_bundles.py")
    out = out or ROOT / ".cache" / "matrix-bundles" / f"{key}-tf{tf.__version__}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:  # one builder at a time (CI steps, parallel runs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(out, only or list(BUILDERS))


def _ensure_locked(out: Path, names: list[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name in names:
        done = out / f"{name}.path"
        if done.exists() and (Path(done.read_text()) / "manifest.json").exists():
            paths[name] = Path(done.read_text())
            continue
        if name in ("log_int8", "sqrt_int8"):
            build_digits(out)  # the tiny models calibrate on its data
        t0 = time.monotonic()
        work = out / f".{name}.work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        p = BUILDERS[name](work, out)
        if p.is_relative_to(work):  # move the finished bundle out of the scratch dir
            final = out / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(p, final)
            p = final
        shutil.rmtree(work, ignore_errors=True)
        done.write_text(str(p))
        print(f"make_bundles: {name} built in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        paths[name] = p
    (out / "bundles.json").write_text(json.dumps({k: str(v) for k, v in paths.items()},
                                                 indent=1) + "\n")
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output directory (default: cached under .cache/)")
    p.add_argument("--only", help="comma-separated subset of " + ", ".join(BUILDERS))
    a = p.parse_args()
    only = [s for s in a.only.split(",") if s] if a.only else None
    unknown = set(only or ()) - set(BUILDERS)
    if unknown:
        p.error(f"unknown bundle(s): {', '.join(sorted(unknown))}")
    paths = ensure_bundles(a.out, only)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
