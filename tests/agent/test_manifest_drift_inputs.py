"""Schema 2's per-input drift statistics (``drift_reference.inputs``): written for every
input by name, read back, and parsed strictly with errors naming the field; schema 1
bundles (no such key) and older schema-2 bundles (without it) still read."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from edge_agent.errors import ManifestError
from edge_agent.manifest import (
    DriftReference,
    EncodedArray,
    GoldenVector,
    InputStats,
    Manifest,
    Preprocessing,
    TensorSpec,
    parse_manifest,
)

IMAGE = TensorSpec("image", (1, 8, 8, 1), "int8", 0.004, -128)
META = TensorSpec("meta", (1, 3), "int8", 0.02, 3)
CLASS = TensorSpec("class", (1, 3), "int8", 1 / 256, -128)


def _manifest(inputs: tuple[TensorSpec, ...], per: dict[str, InputStats],
              schema: int) -> Manifest:
    golden = GoldenVector({s.name: EncodedArray.encode(np.zeros(s.shape, np.int8))
                           for s in inputs},
                          {"class": EncodedArray.encode(np.zeros((1, 3), np.int8))}, {"class": 2.0})
    first = per[inputs[0].name]
    drift = DriftReference(10, (0.5, 0.3, 0.2), (0.0, 0.5, 1.0), (0.4, 0.6), first.mean,
                           first.std, per if schema == 2 else {})
    return Manifest("m", 1, "2026-01-01T00:00:00+00:00", "0" * 64, 100, inputs, (CLASS,),
                    Preprocessing(), "int8", golden=(golden,), drift_reference=drift,
                    schema_version=schema, heads={"class": "class"} if schema == 2 else {})


STATS = {"meta": InputStats((0.1, 0.0, -0.1), (1.0, 1.0, 1.0)),
         "image": InputStats((0.5,), (0.3,))}


@pytest.fixture
def two() -> dict[str, Any]:
    return json.loads(_manifest((META, IMAGE), STATS, 2).to_json())


def test_every_inputs_statistics_round_trip_by_name(two: dict[str, Any]) -> None:
    assert two["drift_reference"]["inputs"]["image"] == {"mean": [0.5], "std": [0.3]}
    m = parse_manifest(two)
    assert m.drift_reference is not None and m.drift_reference.inputs == STATS
    assert m.drift_reference.input_mean == STATS["meta"].mean  # inputs[0]'s


def test_schema_1_writes_no_per_input_key_and_reads_back() -> None:
    d = json.loads(_manifest((IMAGE,), {"image": STATS["image"]}, 1).to_json())
    assert "inputs" not in d["drift_reference"]
    ref = parse_manifest(d).drift_reference
    assert ref is not None and ref.inputs == {} and ref.input_mean == (0.5,)


def test_schema_2_without_per_input_statistics_still_reads(two: dict[str, Any]) -> None:
    del two["drift_reference"]["inputs"]
    ref = parse_manifest(two).drift_reference
    assert ref is not None and ref.inputs == {}


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda d: d["drift_reference"]["inputs"].pop("image"), "manifest.drift_reference.inputs",
     ("one entry per input", "meta, image")),
    (lambda d: d["drift_reference"]["inputs"].update(extra={"mean": [0], "std": [1]}),
     "manifest.drift_reference.inputs", ("one entry per input", "extra")),
    (lambda d: d["drift_reference"]["inputs"]["meta"].update(mean=[0.0]),
     "manifest.drift_reference.inputs.meta.mean", ("a list of 3",)),
    (lambda d: d["drift_reference"]["inputs"]["image"].update(std=[-1.0]),
     "manifest.drift_reference.inputs.image.std[0]", (">= 0",)),
    (lambda d: d["drift_reference"]["inputs"]["image"].update(mean=[float("nan")]),
     "manifest.drift_reference.inputs.image.mean[0]", ("NaN",)),
])
def test_bad_per_input_statistics_are_refused_naming_the_field(
        two: dict[str, Any], mutate: Any, field: str, words: tuple[str, ...]) -> None:
    bad = copy.deepcopy(two)
    mutate(bad)
    with pytest.raises(ManifestError) as e:
        parse_manifest(bad)
    assert e.value.field == field
    for w in words:
        assert w in str(e.value)
