"""``edge-agent bench --sweep`` (issue 17 part 5, docs/agent.md#tuning) and the profiles'
``default_workers``.

The sweep runs for real: ``edge-agent bench --sweep`` as a subprocess starts one real
``edge-agent run`` per split on the digits bundle and drives it with raw-tensor requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli_bench import (
    Row,
    best_split,
    medians,
    profile_override,
    score,
    splits,
)
from edge_agent.errors import ProfileError
from edge_agent.profiles import default_split, load_profile, load_profile_file

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "device_profiles"


def _row(w: int, t: int, c: int, rps: float, p99: float = 1.0) -> Row:
    return Row(w, t, c, int(rps), 0, rps, 0.5, p99, 0.3)


def test_splits_are_every_workers_by_threads_within_the_cores() -> None:
    assert splits(1) == [(1, 1)]
    assert splits(2) == [(1, 1), (1, 2), (2, 1)]
    four = splits(4)
    assert len(four) == len(set(four)) == 8 and all(w * t <= 4 for w, t in four)
    assert (2, 2) in four and (1, 4) in four and (4, 1) in four and (3, 1) in four


def test_best_split_is_the_highest_geometric_mean_over_concurrencies() -> None:
    rows = [_row(1, 2, 1, 100), _row(1, 2, 4, 100),   # steady: 100
            _row(2, 1, 1, 50), _row(2, 1, 4, 190),    # sqrt(50 * 190) = 97.5
            _row(1, 1, 1, 90), _row(1, 1, 4, 90)]
    assert round(score(rows[2:4]), 1) == 97.5
    assert best_split(rows) == (1, 2)
    assert best_split([*rows, _row(2, 1, 8, 400)]) == (2, 1)  # (50·190·400)^(1/3) = 156


def test_a_split_with_a_failed_concurrency_never_wins() -> None:
    rows = [_row(2, 1, 1, 1000), _row(2, 1, 4, 0), _row(1, 1, 1, 10), _row(1, 1, 4, 10)]
    assert best_split(rows) == (1, 1)


def test_medians_take_each_figure_over_the_rounds() -> None:
    got = medians([_row(1, 1, 1, 10, p99=5), _row(1, 1, 1, 30, p99=1),
                   _row(1, 1, 1, 20, p99=9), _row(1, 2, 1, 7)])
    one = next(r for r in got if (r.workers, r.threads) == (1, 1))
    assert (one.req_per_s, one.p99_ms, one.requests) == (20, 5, 60)
    assert len(got) == 2


def test_profile_override_sets_both_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    src = (PROFILES / "rpi4.toml").read_text()
    out = tmp_path / "rpi4.toml"
    out.write_text(profile_override(src, 2, 2, "swept\nrow 1"))
    p, orig = load_profile_file(out), load_profile("rpi4")
    assert (p.default_workers, p.default_threads) == (2, 2)
    assert (p.name, p.cores, p.runtimes, p.thermal_paths) == (
        orig.name, orig.cores, orig.runtimes, orig.thermal_paths)
    assert out.read_text().startswith("# swept\n# row 1\n")


def test_a_profile_whose_workers_times_threads_exceed_its_cores_is_refused(
        tmp_path: Path) -> None:
    p = tmp_path / "rpi4.toml"
    p.write_text(profile_override((PROFILES / "rpi4.toml").read_text(), 2, 4, "too many"))
    with pytest.raises(ProfileError) as e:
        load_profile_file(p)
    assert str(p) in str(e.value) and "default_workers" in str(e.value)
    assert "2 x 4" in str(e.value)


def test_every_shipped_profile_fits_its_workers_and_threads_in_its_cores() -> None:
    for f in sorted(PROFILES.glob("*.toml")):
        p = load_profile_file(f)
        assert p.default_workers * p.default_threads <= p.cores, f.name


def test_the_default_split_is_the_profiles_with_threads_capped_at_the_cpus() -> None:
    p = load_profile("rpi4")  # 1 worker x 4 threads
    assert default_split(p, 4) == (p.default_workers, 4)
    assert default_split(p, 2) == (p.default_workers, 2)  # never more threads than CPUs
    assert default_split(p, None) == (p.default_workers, 1)  # cpu_count() unknown


def test_an_agent_without_workers_uses_the_profiles_default_workers(
        tmp_path: Path, digits: Any, start_agent: Any) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    src = (PROFILES / "generic-x86_64.toml").read_text()
    (d / "generic-x86_64.toml").write_text(profile_override(src, 2, 1, "two workers"))
    agent = start_agent(digits.bundle, **{"agent.profile": str(d / "generic-x86_64.toml")})
    assert agent.registry.workers == 2 and agent.admission.workers == 2
    pinned = start_agent(digits.bundle, store=tmp_path / "s2", **{
        "agent.profile": str(d / "generic-x86_64.toml"), "agent.workers": 1})
    assert pinned.registry.workers == 1


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "bench", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def test_sweep_measures_every_split_through_a_real_agent_and_writes_the_best(
        tmp_path: Path, digits: Any) -> None:
    out = tmp_path / "override"
    r = _bench("--sweep", "--model", str(digits.bundle), "--seconds", "0.5",
               "--concurrency", "1,2", "--profile", "generic-x86_64",
               "--write-profile", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    cores = min(load_profile("generic-x86_64").cores, os.cpu_count() or 1)
    seen = {(x["workers"], x["threads"], x["concurrency"]) for x in doc["rows"]}
    assert seen == {(w, t, c) for w, t in splits(cores) for c in (1, 2)}
    for x in doc["rows"]:
        assert x["requests"] > 0 and x["errors"] == 0 and x["req_per_s"] > 0, x
        assert 0 < x["p50_ms"] <= x["p99_ms"] and x["cpu_ms_per_req"] > 0, x
    best = doc["best"]
    assert (best["workers"], best["threads"]) in splits(cores)
    written = load_profile_file(out / "generic-x86_64.toml")
    assert (written.default_workers, written.default_threads) == (
        best["workers"], best["threads"])
    assert doc["wrote"] == str(out / "generic-x86_64.toml")


@pytest.mark.parametrize(("args", "says"), [
    (["--sweep"], "bench --sweep needs a bundle: --model BUNDLE"),
    (["--sweep", "--model", "{bundle}", "--concurrency", "one"], "--concurrency: expected"),
    (["--sweep", "--model", "{bundle}", "--concurrency", "0"], "--concurrency: expected 1..256"),
    (["--sweep", "--model", "{bundle}", "--seconds", "0"], "--seconds: expected"),
    (["--sweep", "--model", "{bundle}", "--rounds", "0"], "--rounds: expected 1..100"),
    ([], "bench needs a BUNDLE"),
    (["--sweep", "--model", "/nonexistent-bundle"], "/nonexistent-bundle: no such bundle"),
])
def test_bad_sweep_arguments_are_one_line_errors(digits: Any, args: list[str],
                                                 says: str) -> None:
    r = _bench(*[a.replace("{bundle}", str(digits.bundle)) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
