"""tradeoff.png (issue 14 part 7) and ``-o OUT.tar.zst`` (part 5) from the converter side.

The drawing helpers are tested as pure functions; the ``.tar.zst`` output through the
real CLI, real TF and LiteRT on the sensitive model (small: 6 dense layers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import run_cli

from converter import tradeoff
from edge_agent import bundle_zstd
from edge_agent.bundle import read_bundle, tar_bytes

PNG = b"\x89PNG\r\n\x1a\n"
MODES = ("float", "dynamic", "int16x8", "int8", "mixed (2 float)", "int4-weights",
         "pruned+int8")


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from sensitive_model import build

    return build(tmp_path_factory.mktemp("sensitive-zst"))


def test_every_mode_family_has_its_own_legend_colour() -> None:
    fams = [tradeoff.family(m) for m in MODES]
    assert len({name for name, _ in fams}) == len(MODES)
    assert len({c for _, c in fams}) == len(MODES)
    # int8 with ops kept float is one family, whatever the label says
    assert tradeoff.family("int8-fallback")[1] == tradeoff.family("mixed (3 float)")[1]


def test_labels_at_the_same_spot_are_nudged_apart() -> None:
    boxes: list[tuple[float, float, float, float]] = []
    offsets = [tradeoff._place(boxes, 100.0, 100.0, 120.0, 10.0, 5.0) for _ in range(4)]
    assert len(set(offsets)) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert all(abs(dx) >= 5.0 for dx, _ in offsets)  # clear of the marker


def test_write_draws_every_mode_and_names_a_missing_score(tmp_path: Path) -> None:
    pts = [{"label": m, "size_bytes": 1000 * (i + 1) ** 2, "accuracy": 0.9 + i / 100,
            "latency_ms": 0.1 * (i + 1), "chosen": m.startswith("mixed")}
           for i, m in enumerate(MODES)]
    assert tradeoff.write(pts, tmp_path / "t.png", "all modes") is None
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG
    note = tradeoff.write([{"label": "int8", "size_bytes": 1, "accuracy": None}],
                          tmp_path / "none.png", "x")
    assert note is not None and "--eval" in note and not (tmp_path / "none.png").exists()


def test_tar_zst_output_has_both_sizes_tradeoff_beside_it_and_verifies(
        sensitive: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, calib, ev = sensitive
    out = tmp_path / "sens.tar.zst"
    r = run_cli("convert", model, "--representative", calib, "--eval", ev, "--profile", "rpi4",
                "--latency-runs", 3, "-o", out)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert bundle_zstd.is_zstd(data[:4])
    b = read_bundle(out)
    assert len(data) < len(tar_bytes(b))
    rep = b.report
    assert 0 < rep["size"]["quant_zstd_bytes"] < rep["size"]["quant_bytes"]
    assert rep["size"]["quant_zstd_bytes"] == len(bundle_zstd.compress(b.model_bytes))
    assert "zstd" in next(ln for ln in r.stdout.splitlines() if ln.startswith("│ size"))
    assert tradeoff.path_for(out) == tmp_path / "sens.tar.zst.tradeoff.png"
    assert tradeoff.path_for(out).read_bytes()[:8] == PNG
    v = run_cli("verify", out, "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert all(x["ok"] for x in json.loads(v.stdout)["results"])
