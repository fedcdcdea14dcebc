"""Shared by the variant tests: the two-variant bundle and how a test reads the serving
variant (``/v1/models``) and its gauges (``/metrics``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client
from model_fixtures import TwoHeads, convert_cli


@pytest.fixture(scope="session")
def variant_bundle(two_heads: TwoHeads, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``two`` v1: variant ``fast`` (the int8 bundle) preferred, ``model.tflite`` float16."""
    d = tmp_path_factory.mktemp("variants")
    src = two_heads.bundle.parent
    r = convert_cli("convert", src / "two.keras", "--mode", "float16", "--representative",
                    src / "calib.npz", "--profile", "generic-x86_64", "--latency-runs", 2,
                    "--name", "two", "-o", d / "two-f16")
    assert r.returncode == 0, r.stderr
    r = convert_cli("bundle", d / "two-f16" / "model.tflite", "--name", "two", "--version", 1,
                    "--latency-runs", 2, "--variant", f"fast={two_heads.bundle}",
                    "-o", d / "two-var")
    assert r.returncode == 0, r.stderr
    return d / "two-var"


def gauge(c: Client, name: str) -> float | None:
    text = c.get("/metrics").body.decode()
    m = re.search(rf'^{name}{{model="two",version="1"}} ([0-9.]+)$', text, re.M)
    return None if m is None else float(m.group(1))


def serving(c: Client) -> dict[str, Any]:
    (m,) = c.get("/v1/models").json()["models"]
    v: dict[str, Any] = m["versions"][0]
    return v


