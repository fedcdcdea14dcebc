"""Keep TensorFlow's and LiteRT's native chatter off the user's terminal.

TF's MLIR converter prints ``fully_quantize: 0, inference_type: 6 …`` from C++ straight to
file descriptor 2, LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU``
when an interpreter is built, Keras prints export summaries on fd 1, and TF raises Python
``UserWarning``\\s. None of that goes through :mod:`sys.stderr`, so the only reliable
filter is at the OS level: point fds 1 and 2 at a temp file while the noisy work runs,
then put them back (:func:`captured_output`).

Real errors are not lost: exceptions propagate unchanged (their messages carry the
converter's diagnostics), the captured text is kept on the :class:`Capture` for
``--verbose`` or a crash report, and lines that look like errors are returned by
:meth:`Capture.error_lines` so the CLI can still show them after a successful run.

:func:`terminal` hands out a handle on the *original* stderr, taken before the
redirect, so a progress bar can keep drawing while everything else is captured.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

# Lines that are known, harmless chatter: dropped even from error_lines().
NOISE = re.compile(
    r"fully_quantize:|Created TensorFlow Lite XNNPACK delegate|Estimated count of arithmetic"
    r"|Saved artifact at|oneDNN custom operations|TF-TRT Warning|cuda drivers|"
    r"All log messages before absl::InitializeLog|WARNING: All log messages"
)
ERROR_LINE = re.compile(r"\b(error|fatal|abort(ed)?|segmentation fault)\b", re.IGNORECASE)


@dataclass
class Capture:
    """What the wrapped block printed natively, and the Python warnings it raised."""

    text: str = ""
    warnings: list[str] = field(default_factory=list)

    def error_lines(self) -> list[str]:
        """Captured lines that look like real errors (not known TF/LiteRT chatter)."""
        return [ln.strip() for ln in self.text.splitlines()
                if ERROR_LINE.search(ln) and not NOISE.search(ln)]


@contextlib.contextmanager
def captured_output(enabled: bool = True) -> Iterator[Capture]:
    """Redirect fds 1 and 2 (and Python warnings) into a :class:`Capture` for the block.

    With ``enabled=False`` nothing is redirected (``--verbose``). The original fds are
    restored even when the block raises; the exception propagates unchanged.
    """
    cap = Capture()
    if not enabled:
        yield cap
        return
    _flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            _flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", errors="replace")
            cap.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]


@contextlib.contextmanager
def terminal() -> Iterator[TextIO]:
    """A writable handle on the current stderr that survives :func:`captured_output`."""
    _flush()
    f = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield f
    finally:
        f.close()


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
