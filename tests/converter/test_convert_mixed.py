"""Issue 14 parts 1, 2, 7: per-op sensitivity, the accuracy budget, tradeoff.png.

Real TF conversion, real LiteRT, the real CLI. The sensitive model (sensitive_model.py)
loses > 2 points under full int8 because one op's output spans [-1e4, 10].
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, run_cli

from converter.mixed import Candidate, Score, search


@pytest.fixture(scope="session")
def sensitive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from sensitive_model import build

    return build(tmp_path_factory.mktemp("sensitive"))


def _args(sensitive: tuple[Path, Path, Path], out: Path, *extra: object) -> list[object]:
    model, calib, ev = sensitive
    return ["convert", model, "--representative", calib, "--eval", ev, "--profile", "rpi4",
            "--latency-runs", 3, "-o", out, *extra]


def test_max_drop_met_through_mixed_precision(sensitive: tuple[Path, Path, Path],
                                              tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = run_cli(*_args(sensitive, out, "--max-drop", 0.5, "--json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    mixed = rep["mixed"]
    first, chosen = mixed["candidates"][0], mixed["chosen"]
    assert first["float_ops"] == [] and first["drop_points"] > 2  # full int8 misses
    assert chosen["meets"] and chosen["drop_points"] <= 0.5
    assert 1 <= len(chosen["float_ops"]) <= 0.2 * mixed["quantized_ops"]
    assert mixed["candidates"][-1] == chosen and len(mixed["candidates"]) >= 2
    assert all({"float_ops", "size_bytes", "accuracy", "latency_ms"} <= set(c)
               for c in mixed["candidates"])
    assert rep["mode"] == "int8-fallback"
    assert rep["evaluation"]["quant_top1"] >= rep["evaluation"]["float_top1"] - 0.005
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = {p["label"] for p in rep["tradeoff"]}
    assert {"float", "int8"} <= labels and sum(bool(p.get("chosen")) for p in rep["tradeoff"]) == 1
    v = run_cli("verify", out, "--json")  # golden vectors of the chosen model, on LiteRT
    assert v.returncode == 0, v.stdout + v.stderr
    assert any(x["ok"] and "litert" in x["runtime"] for x in json.loads(v.stdout)["results"])


def test_max_drop_without_eval_is_one_line_error(sensitive: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    model, calib, _ = sensitive
    out = tmp_path / "b"
    r = run_cli("convert", model, "--representative", calib, "--profile", "rpi4",
                "--max-drop", 0.5, "-o", out)
    assert_one_line_error(r, "--max-drop", "--eval", code=2)
    assert_nothing_written(out)


def test_impossible_budget_exits_3_with_best_candidate(sensitive: tuple[Path, Path, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = run_cli(*_args(sensitive, out, "--max-error", 0))
    line = assert_one_line_error(r, "no candidate meets --max-error 0", "misses by", code=3)
    assert "best keeps" in line
    assert_nothing_written(out)


def test_analyze_ranks_the_wide_range_op_first(sensitive: tuple[Path, Path, Path],
                                               tmp_path: Path) -> None:
    model, calib, ev = sensitive
    r = run_cli("analyze", model, "--representative", calib, "--eval", ev, "--profile", "rpi4",
                "--json", "-o", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["int8"]["drop_points"] > 2
    top, rest = rep["ops"][0], rep["ops"][1:]
    assert top["alone"]["drop_points"] <= 0.5  # keeping it float alone recovers accuracy
    assert all(o["alone"]["drop_points"] > 2 for o in rest)
    assert (tmp_path / "a" / "tradeoff.png").is_file()
    table = run_cli("analyze", model, "--representative", calib, "--eval", ev,
                    "--profile", "rpi4")
    assert table.returncode == 0 and top["op"] in table.stdout.splitlines()[2]


def _cand(nodes: tuple[str, ...], need: set[str]) -> Candidate:
    ok = need <= set(nodes)
    return Candidate(nodes, 100 + len(nodes), Score(None, None, 0.0 if ok else 1.0),
                     -1.0 if ok else 1.0)


def test_search_adds_by_rank_then_drops_unneeded_ops() -> None:
    tried = search(["a", "b", "c", "d"], lambda n: _cand(n, {"b", "c"}), max_float=4)
    assert [c.float_nodes for c in tried][:4] == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    assert tried[-1].float_nodes == ("b", "c") and tried[-1].meets


def test_search_stops_at_max_float_when_budget_cannot_be_met() -> None:
    tried = search(["a", "b", "c", "d"], lambda n: _cand(n, {"d"}), max_float=2)
    assert [c.float_nodes for c in tried] == [(), ("a",), ("a", "b")]
    assert not any(c.meets for c in tried)
