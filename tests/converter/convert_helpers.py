"""Helpers for converter tests: run the real ``edge-convert`` CLI and check what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROG = "edge-convert"
NOISE = ("fully_quantize", "XNNPACK", "Warning", "WARNING", "I0000", "W0000", "Traceback",
         "oneDNN", "Saved artifact", "absl::InitializeLog")


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / PROG
    return [str(script)] if script.exists() else [sys.executable, "-m", "converter.cli"]


def run_cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``edge-convert ARGS`` exactly as a user would, capturing both streams."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*_cli_command(), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess[str], *words: str,
                          code: int | None = None) -> str:
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert r.returncode != 0, f"expected failure, got 0; stdout={r.stdout!r}"
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.stderr}"
    line = lines[0]
    assert line.startswith(f"{PROG}: error: "), line
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in {line!r}"
    return line


def assert_nothing_written(out: Path) -> None:
    """No bundle, and no half-written temp sibling, at the output path."""
    assert not out.exists(), f"{out} exists after a failed conversion"
    if out.parent.is_dir():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not leftovers, leftovers


def assert_quiet(text: str) -> None:
    for n in NOISE:
        assert n not in text, f"native noise {n!r} reached the terminal:\n{text[-2000:]}"


def convert_args(model: Path, rep: Path, out: Path, *extra: object,
                 profile: str = "generic-x86_64") -> Sequence[object]:
    """The usual quick conversion flags (few latency runs keep tests in seconds)."""
    return ("convert", model, "--representative", rep, "--profile", profile,
            "--latency-runs", 2, "-o", out, *extra)
