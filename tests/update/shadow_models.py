"""Candidates for the shadow tests: :func:`fleet.update_demo.disagreeing` (the demo's too).

It raises the final dense layer's bias of one class in the real TFLite flatbuffer, so the
candidate answers that class for most inputs (a model that loads, passes its own golden
vectors, and disagrees with the active version on most requests).
"""

from __future__ import annotations

from fleet.update_demo import disagreeing

__all__ = ["disagreeing"]
