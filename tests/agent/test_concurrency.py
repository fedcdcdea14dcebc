"""Many clients at once get their own, correct answers (no crossed replies, no errors)."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
from agent_helpers import Client, DigitsEval, b64

from edge_agent.bundle import read_bundle
from edge_agent.hooks import Hooks
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime


def _reference(bundle: Path, x: np.ndarray) -> np.ndarray:
    """Top-1 per sample from a separate, single-threaded registry (the expected answers)."""
    reg = ModelRegistry(select_runtime(), Hooks(), workers=1, num_threads=1)
    pred = reg.load(read_bundle(bundle)).predict(x)
    assert pred.top1 is not None
    return pred.top1


def test_concurrent_clients_get_correct_answers(start_agent: Any, digits: Any,
                                                digits_float: Path,
                                                digits_eval: DigitsEval) -> None:
    agent = start_agent(digits.bundle, digits.bundle_v2, digits_float,
                        **{"agent.workers": 2, "http.queue_size": 64})
    x, y = digits_eval.x[:120], digits_eval.y[:120]
    want = {"digits": _reference(digits.bundle_v2, x),
            "digits-float": _reference(digits_float, x)}
    assert np.mean(want["digits"] == y) > 0.95  # the expectations are themselves right
    pngs = [digits_eval.png(i) for i in range(len(x))]
    host, port = agent.http.address
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        c = Client(host, port)
        try:
            for _ in range(30):
                model = rnd.choice(["digits", "digits-float"])
                idx = rnd.sample(range(len(x)), rnd.randint(1, 4))
                kind = rnd.choice(["instances", "inputs", "b64", "classify"])
                rid = f"c{seed}-{rnd.random()}"
                if kind == "classify":
                    i = idx[0]
                    idx = [i]
                    r = c.post(f"/v1/models/{model}:classify", body=pngs[i],
                               content_type="image/png", headers={"X-Request-Id": rid})
                    got = [int(r.json()["results"][0][0][0])] if r.status == 200 else []
                else:
                    if kind == "b64":
                        doc: dict[str, Any] = {"instances": [b64(pngs[i]) for i in idx]}
                    else:
                        doc = {kind: x[idx].tolist()}
                    r = c.post(f"/v1/models/{model}:predict", doc,
                               headers={"X-Request-Id": rid})
                    key = "predictions" if kind != "inputs" else "outputs"
                    got = (list(np.argmax(r.json()[key], axis=1)) if r.status == 200 else [])
                if r.status != 200 or r.headers["x-request-id"] != rid:
                    errors.append(f"{model} {kind}: {r.status} {r.body[:200]!r}")
                elif got != [int(want[model][i]) for i in idx]:
                    errors.append(f"{model} {kind} {idx}: got {got}, want "
                                  f"{[int(want[model][i]) for i in idx]}")
                with lock:
                    done[0] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert done[0] == 8 * 30
