"""Fixtures for the runtime matrix: bundles converted by the main venv's TensorFlow.

``scripts/runtime_matrix.sh`` converts the bundles once in the main venv and passes their
paths to every runtime venv in ``EDGE_MATRIX_BUNDLES`` (a ``bundles.json`` path or inline
JSON). Run without it, in a venv that has TensorFlow, the bundles are built here (cached).

``EDGE_MATRIX_EXPECT`` ("tflite-runtime 2.14.0") is the runtime this venv was built for;
the first test fails when another runtime answers. ``EDGE_MATRIX_INSTALLED=1`` asserts the
agent under test is the installed wheel, not the source tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.bundle import Bundle, read_bundle
from edge_agent.runtime.backends import Runtime, select_runtime

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("digits", "mobilenet_v2", "log_int8", "sqrt_int8")

def _load_paths() -> dict[str, Path]:
    spec = os.environ.get("EDGE_MATRIX_BUNDLES", "").strip()
    if spec:
        text = Path(spec).read_text() if not spec.startswith("{") else spec
        return {k: Path(v) for k, v in json.loads(text).items()}
    if importlib.util.find_spec("tensorflow") is None:
        pytest.fail("EDGE_MATRIX_BUNDLES is not set and TensorFlow is not installed here: run "
                    "scripts/runtime_matrix.sh (it converts the bundles in the main venv)")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_bundles.py")],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    if r.returncode != 0:
        pytest.fail(f"scripts/make_bundles.py failed:\n{r.stderr[-3000:]}")
    return {k: Path(v) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="session")
def bundle_paths() -> dict[str, Path]:
    paths = _load_paths()
    missing = [n for n in NAMES if n not in paths or not (paths[n] / "manifest.json").exists()]
    if missing:
        pytest.fail(f"matrix bundles missing: {', '.join(missing)} (in {paths})")
    return paths


@pytest.fixture(scope="session")
def bundles(bundle_paths: dict[str, Path]) -> dict[str, Bundle]:
    return {n: read_bundle(p) for n, p in bundle_paths.items()}


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """The runtime this venv's agent picks by default (the matrix cell under test)."""
    return select_runtime()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "state"
    d.mkdir()
    yield d
