"""The lean predict path (issue 17 part 2), on a real LiteRT interpreter: no prediction
record is built without a listener, a listener's record (lazy) carries exactly what the
prediction answers, the lazy answer equals the eager computation, and the in-process
throughput is a loose multiple of the bare interpreter loop's (main: 0.16–0.19, this
code: 0.5–0.7 at the same load; the bound 0.4 leaves room for a shared machine)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pytest

from edge_agent import registry as registry_mod
from edge_agent.bundle import read_bundle
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.registry import ModelRegistry, ServedModel, softmax
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel


@pytest.fixture
def served(digits: Any) -> ServedModel:
    return ModelRegistry(select_runtime(), Hooks(), num_threads=1).load(
        read_bundle(digits.bundle))


def test_no_listener_no_record_and_a_listener_gets_what_the_prediction_answers(
        served: ServedModel, digits: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[PredictionRecord] = []

    def counting(*a: Any, **kw: Any) -> PredictionRecord:
        built.append(PredictionRecord(*a, **kw))
        return built[-1]

    monkeypatch.setattr(registry_mod, "PredictionRecord", counting)
    x = np.load(digits.eval_npz)["x"][:3].astype(np.float32)
    pred = served.predict(x)
    assert built == [] and not served.hooks.wants_predictions
    got: list[PredictionRecord] = []
    remove = served.hooks.on_prediction(got.append)
    again = served.predict(x, source="test", request_id="r1")
    remove()
    assert len(built) == 1 and got == built and not served.hooks.wants_predictions
    rec = got[0]
    assert rec.ok and rec.batch == 3 and rec.request_id == "r1" and rec.source == "test"
    assert rec.top1 is not None and rec.probabilities is not None and rec.outputs is not None
    assert np.array_equal(rec.top1, pred.top1) and np.array_equal(rec.top1, again.top1)
    assert np.array_equal(rec.probabilities, again.probabilities)
    assert all(np.array_equal(a, b) for a, b in zip(rec.outputs, again.outputs, strict=True))
    served.predict(x)
    assert len(built) == 1  # listener gone: no record again


def test_the_lazy_prediction_equals_the_eager_computation(served: ServedModel,
                                                          digits: Any) -> None:
    b = read_bundle(digits.bundle)
    eager = LoadedModel(select_runtime(), b.model_bytes, num_threads=1)
    x = np.load(digits.eval_npz)["x"][:40].astype(np.float32)
    pred = served.predict(x)
    want = eager.predict(x)
    assert all(np.array_equal(a, b) for a, b in zip(pred.outputs, want, strict=True))
    head = want[served.class_position or 0].reshape(len(x), -1)
    probs = head if served.manifest.output_is_probability else softmax(head)
    assert pred.probabilities is not None and np.array_equal(pred.probabilities, probs)
    assert np.array_equal(pred.top1, probs.argmax(axis=1))
    assert np.array_equal(pred.confidence, probs.max(axis=1))
    one = b.manifest.golden[0].input.decode()  # raw int8: the fast path, no copy of input
    raw = served.predict(one).raw
    g = b.manifest.golden[0].outputs
    assert all(np.array_equal(r, g[n].decode()) for r, n in zip(raw, served.output_names,
                                                                 strict=True))


@pytest.mark.serial
def test_in_process_predict_is_a_fair_share_of_the_bare_interpreter_loop(
        served: ServedModel, digits: Any) -> None:
    with served.borrow() as m:
        interp = m.interpreter
    ind = interp.get_input_details()[0]["index"]
    outs = [d["index"] for d in interp.get_output_details()]
    x = read_bundle(digits.bundle).manifest.golden[0].input.decode()
    n = 500

    def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            interp.set_tensor(ind, x)
            interp.invoke()
            for i in outs:
                interp.get_tensor(i)
        return time.perf_counter() - t0

    def pred() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            served.predict(x)
        return time.perf_counter() - t0

    bare(), pred()
    ratios = []
    for r in range(12):  # alternating rounds, order swapped each time: the same load
        if r % 2:
            p, q = pred(), bare()
        else:
            q, p = bare(), pred()
        ratios.append(q / p)
    assert statistics.median(ratios) >= 0.4, ratios
