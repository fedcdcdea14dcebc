"""Issue 14 parts 1, 2, 7: per-op sensitivity, the accuracy budget (int8 + float ops, and
int16x8 where the profile runs it), tradeoff.png.

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
    # rpi4 runs int16x8: tried once full int8 missed, whole-graph (every op int16, none
    # float); it meets too but is larger than int8 + 1 float op, so it is not chosen
    i16 = [c for c in mixed["candidates"] if c["activations"] == "int16"]
    assert len(i16) == 1 and mixed["candidates"][1] == i16[0] and mixed["int16x8"] == "tried"
    assert i16[0]["label"] == "int16x8" and i16[0]["float_ops"] == []
    assert i16[0]["int16_ops"] == mixed["quantized_ops"] and i16[0]["meets"]
    assert chosen["int16_ops"] == 0 and chosen["size_bytes"] < i16[0]["size_bytes"]
    assert all(c["cpu_ops"] == [] for c in mixed["candidates"])  # no Edge TPU here
    assert rep["evaluation"]["quant_top1"] >= rep["evaluation"]["float_top1"] - 0.005
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = {p["label"] for p in rep["tradeoff"]}
    assert {"float", "int8", "int16x8", "mixed (1 float)"} <= labels
    assert sum(bool(p.get("chosen")) for p in rep["tradeoff"]) == 1
    v = run_cli("verify", out, "--json")  # golden vectors of the chosen model, on LiteRT
    assert v.returncode == 0, v.stdout + v.stderr
    assert any(x["ok"] and "litert" in x["runtime"] for x in json.loads(v.stdout)["results"])


def test_edgetpu_budget_says_what_runs_on_the_cpu_and_skips_int16(
        sensitive: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    model, calib, ev = sensitive
    r = run_cli("convert", model, "--representative", calib, "--eval", ev, "--profile",
                "coral-usb", "--latency-runs", 3, "-o", out, "--max-drop", 0.5)
    assert r.returncode == 0, r.stderr
    mixed = json.loads((out / "report.json").read_text())["mixed"]
    assert not any(c["activations"] == "int16" for c in mixed["candidates"])
    assert mixed["int16x8"].startswith("not tried: coral-usb (edgetpu)")
    full, chosen = mixed["candidates"][0], mixed["chosen"]
    assert full["float_ops"] == [] and full["cpu_ops"] == []  # full int8 maps entirely
    assert chosen["meets"] and len(chosen["float_ops"]) == 1
    assert "FULLY_CONNECTED" in chosen["cpu_ops"]  # the op kept float cannot go on the TPU
    text = r.stdout
    assert "mixed-precision candidates (--max-drop 0.5" in text and "CPU ops (Edge TPU)" in text
    assert "int16x8: not tried: coral-usb (edgetpu) runs 8-bit tensors only" in text
    assert (f"on coral-usb: {len(chosen['cpu_ops'])} of " in text
            and "float ops cannot go on the Edge TPU" in text)


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


def test_search_tries_alternatives_after_int8_misses_and_picks_the_smallest() -> None:
    alt = Candidate((), 101, Score(None, None, 0.0), -1.0, 0.5, int16=True)
    tried = search(["a", "b"], lambda n: _cand(n, {"a"}), max_float=2,
                   alternatives=(lambda: alt, lambda: None))  # None: not possible
    assert [c.label for c in tried] == ["int8", "mixed (1 float)", "int16x8"]
    assert tried[-1] is alt  # the same size as mixed (101 B): the faster one wins
    smaller = Candidate((), 100, Score(None, None, 0.0), -1.0, int16=True)
    tried = search(["a"], lambda n: _cand(n, {"a"}), max_float=1,
                   alternatives=(lambda: smaller,))
    assert tried[-1] is smaller


def test_a_smaller_candidate_more_than_twice_as_slow_as_the_fastest_is_not_chosen() -> None:
    # MobileNetV2 in bench/convert.py: int16x8 met the budget a little smaller than the
    # float-op candidate but 12x slower (LiteRT's int16 kernels); it must not be chosen.
    fast = Candidate(("a",), 120, Score(None, None, 0.0), -1.0, 30.0)
    slow = Candidate((), 100, Score(None, None, 0.0), -1.0, 360.0, int16=True)
    assert search(["a"], lambda n: fast if n else _cand(n, {"a"}), max_float=1,
                  alternatives=(lambda: slow,))[-1] is fast
    twice = Candidate((), 100, Score(None, None, 0.0), -1.0, 60.0, int16=True)
    assert search(["a"], lambda n: fast if n else _cand(n, {"a"}), max_float=1,
                  alternatives=(lambda: twice,))[-1] is twice  # within 2x: the smaller
    tiny = Candidate(("a",), 120, Score(None, None, 0.0), -1.0, 0.03)
    noisy = Candidate((), 100, Score(None, None, 0.0), -1.0, 1.1, int16=True)
    assert search(["a"], lambda n: tiny if n else _cand(n, {"a"}), max_float=1,
                  alternatives=(lambda: noisy,))[-1] is noisy  # 37x but 1 ms: noise, smaller


def test_search_skips_alternatives_when_full_int8_meets() -> None:
    def boom() -> Candidate:
        raise AssertionError("measured although full int8 met the budget")

    tried = search(["a"], lambda n: _cand(n, set()), max_float=1, alternatives=(boom,))
    assert [c.float_nodes for c in tried] == [()] and tried[-1].meets
