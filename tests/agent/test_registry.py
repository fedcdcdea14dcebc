"""Registry and store: real bundles, real LiteRT interpreters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import read_bundle
from edge_agent.errors import InvalidRequestError, NotFoundError
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime
from edge_agent.store import ModelStore


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry(select_runtime(), Hooks(), workers=2, num_threads=1)


def test_predicts_held_out_digits_correctly(digits, registry: ModelRegistry) -> None:
    registry.load(read_bundle(digits.bundle))
    ev = np.load(digits.eval_npz)
    pred = registry.get("digits").predict(ev["x"][:200], source="test")
    assert pred.top1 is not None
    assert np.mean(pred.top1 == ev["y"][:200]) > 0.95


def test_prediction_hooks_see_ok_and_failed_requests(digits, registry: ModelRegistry) -> None:
    seen: list[PredictionRecord] = []
    registry.hooks.on_prediction(seen.append)
    sm = registry.load(read_bundle(digits.bundle))
    sm.predict(np.zeros((3, 8, 8, 1), np.float32), request_id="r1")
    with pytest.raises(InvalidRequestError, match="expected shape"):
        sm.predict(np.zeros((1, 9, 9, 1), np.float32))
    assert [r.ok for r in seen] == [True, False]
    assert seen[0].batch == 3 and seen[0].request_id == "r1" and seen[0].top1 is not None


def test_swap_while_serving_fails_no_request(digits, registry: ModelRegistry) -> None:
    registry.load(read_bundle(digits.bundle))
    v2 = read_bundle(digits.bundle_v2)
    x = np.load(digits.eval_npz)["x"][:8]
    errors: list[BaseException] = []
    versions: set[int] = set()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                versions.add(registry.get("digits").predict(x).version)
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for step in (lambda: registry.load(v2), lambda: registry.activate("digits", 1),
                 lambda: registry.activate("digits", 2)):
        before = len(versions)
        step()
        time.sleep(0.2)  # let the clients run on each version
        assert len(versions) >= before
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and versions == {1, 2}


def test_unknown_model_and_version(digits, registry: ModelRegistry) -> None:
    registry.load(read_bundle(digits.bundle))
    with pytest.raises(NotFoundError, match="'nope' not found"):
        registry.get("nope")
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.get("digits", 7)


def test_store_install_activate_prune(digits, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    b1, b2 = read_bundle(digits.bundle), read_bundle(digits.bundle_v2)
    store.install(b1)
    store.install(b2)
    assert store.versions("digits") == [1, 2] and store.serving_version("digits") == 2
    store.set_active("digits", 1)
    assert store.serving_version("digits") == 1
    store.set_active("digits", 2)
    assert store.previous_version("digits") == 1
    assert store.load("digits", 2).manifest.model_sha256 == b2.manifest.model_sha256
    assert store.prune("digits", keep=1) == []  # 1 is protected as previous
