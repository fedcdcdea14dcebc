"""The crash-safe probe per variant (issue 15 part 2): with ``probe_runtime`` on, a real
``edge-agent run`` probes each variant of a bundle it would serve in a child process, with
that variant's golden vectors, before loading it; a variant whose probe dies of a real
SIGSEGV (``EDGE_AGENT_PROBE_FAULT=segv:variant=fast``) is skipped with the reason and the
other variant serves, in the same agent process; the verdicts are cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from model_fixtures import TwoHeads
from variant_helpers import serving
from variant_helpers import variant_bundle as variant_bundle

from edge_agent.bundle import read_bundle


def test_a_variant_that_crashes_its_probe_is_skipped_and_the_other_serves(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT__AGENT__PROBE_RUNTIME", "true")
    monkeypatch.setenv("EDGE_AGENT_PROBE_FAULT", "segv:variant=fast")
    with agent_process(tmp_path, variant_bundle, timeout_s=180) as proc:
        c = Client(proc.host, proc.port)
        v = serving(c)
        assert v["variant"] == "default" and v["variants"] == ["default"], v
        why = v["variants_skipped"]["fast"]
        assert why.startswith("probe crashed") and "SIGSEGV" in why, why
        r = c.post("/v1/models/two:predict", {"instances": two_heads.x[:1].tolist()})
        assert r.status == 200 and set(r.json()["predictions"][0]) == {"class", "score"}
        c.close()
    cache = json.loads((tmp_path / "store" / "state" / "variant-probes.json").read_text())
    b = read_bundle(variant_bundle)
    by_sha = {k.rsplit("|", 1)[1]: e["outcome"] for k, e in cache.items()}
    assert by_sha == {b.manifest.variants[0].sha256: "crashed",
                      b.manifest.model_sha256: "ok"}, cache


def test_without_a_fault_every_variant_passes_its_probe_and_the_best_serves(
        variant_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT__AGENT__PROBE_RUNTIME", "true")
    with agent_process(tmp_path, variant_bundle, timeout_s=180) as proc:
        c = Client(proc.host, proc.port)
        v = serving(c)
        assert v["variant"] == "fast" and v["variants"] == ["fast", "default"], v
        assert "variants_skipped" not in v
        c.close()
