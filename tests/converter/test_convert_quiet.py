"""The terminal: native TF/LiteRT chatter is hidden (but exists), a progress bar on a TTY."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from convert_helpers import ROOT, assert_quiet, convert_args, run_cli
from convert_helpers import _cli_command as cli_command

from converter.quiet import captured_output


def test_captured_output_takes_fd_level_writes_and_warnings(capfd) -> None:
    with captured_output() as cap:
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
        os.write(1, b"Saved artifact at '/tmp/x'\n")
        os.write(2, b"tensorflow/lite/kernels/foo.cc:12 error: tensor too large\n")
        warnings.warn("Statistics for quantized inputs were expected", UserWarning,
                      stacklevel=1)
    os.write(2, b"after\n")
    seen = capfd.readouterr()
    assert "fully_quantize" not in seen.err and "Saved artifact" not in seen.out
    assert seen.err == "after\n"  # fds restored
    assert "fully_quantize" in cap.text and "Saved artifact" in cap.text
    assert cap.warnings == ["UserWarning: Statistics for quantized inputs were expected"]
    # Known chatter is dropped, a real error line is kept for the user.
    assert cap.error_lines() == ["tensorflow/lite/kernels/foo.cc:12 error: tensor too large"]


def test_captured_output_restores_fds_when_the_block_raises(capfd) -> None:
    with pytest.raises(ZeroDivisionError), captured_output() as cap:
        os.write(2, b"noise\n")
        _ = 1 / 0
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"
    assert cap.text == "noise\n"


def test_verbose_shows_the_native_logs_the_default_hides(digits, tmp_path: Path) -> None:
    """Proof that the quiet tests are not vacuous: TF and LiteRT really do print."""
    r = run_cli(*convert_args(digits.keras, digits.calib_npz, tmp_path / "b", "--verbose"))
    assert r.returncode == 0
    assert "fully_quantize" in r.stderr or "XNNPACK" in r.stderr, r.stderr[-2000:]


def _run_on_tty(args: list[str], timeout_s: float = 180) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal; return exit code and the screen."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", errors="replace")


def test_progress_bar_on_a_terminal_and_nothing_else(digits, tmp_path: Path) -> None:
    args = [*cli_command(), *map(str, convert_args(digits.keras, digits.calib_npz,
                                                   tmp_path / "b", "--eval", digits.eval_npz,
                                                   "--samples", 64))]
    rc, screen = _run_on_tty(args)
    assert rc == 0, screen[-3000:]
    for stage in ("loading model", "calibrating int8", "evaluating", "measuring latency"):
        assert stage in screen, stage
    assert "/64" in screen  # the calibration bar counts samples
    assert "━" in screen  # a drawn bar, not just log lines
    assert_quiet(screen)
    assert "top-1 accuracy" in screen and f"bundle written to {tmp_path / 'b'}" in screen
