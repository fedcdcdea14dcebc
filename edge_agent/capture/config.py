"""``[capture]``: what to keep of the inputs worth labelling, and how much (docs/capture.md).

Off by default. Sizes in bytes, rates per second; validated once at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_agent.config_reader import Table

MODES = ("input", "thumbnail", "features")


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool = False
    models: tuple[str, ...] = ()  # the per-model switch: only these models (empty: none)
    mode: str = "thumbnail"  # input (the tensor as served) | thumbnail | features
    confidence_below: float = 0.5  # top-1 confidence under this → capture (0: never)
    on_drift: bool = True  # predictions in a drifting model's over-represented class bins
    on_feedback: bool = True  # predictions label feedback says were wrong
    feedback_memory_bytes: int = 4 * 1024 * 1024  # inputs held in RAM awaiting feedback
    thumbnail_px: int = 32  # longest side of a thumbnail
    dir: Path | None = None  # default <store_dir>/capture
    max_bytes: int = 64 * 1024 * 1024  # the store's cap (oldest out first)
    max_files: int = 2000
    max_item_bytes: int = 1024 * 1024  # one item bigger than this is not captured
    min_free_bytes: int = 256 * 1024 * 1024  # never write when the disk has less free
    max_per_s: float = 10.0  # items written per second at most (a flood costs nothing)
    queue: int = 64  # items waiting for the writer thread; more are dropped, never waited on
    chunk_bytes: int = 32 * 1024  # per MQTT capture_get reply (edge-fleet capture pull)

    @classmethod
    def parse(cls, t: Table) -> CaptureConfig:
        """Validate ``[capture]``. Raises ConfigError naming the key."""
        d = cls
        cfg = cls(
            enabled=t.flag("enabled", d.enabled),
            models=t.texts("models", d.models, what="model names"),
            mode=t.text("mode", d.mode, choices=MODES),
            confidence_below=t.number("confidence_below", d.confidence_below, 0.0, 1.0,
                                      exclusive=False),
            on_drift=t.flag("on_drift", d.on_drift),
            on_feedback=t.flag("on_feedback", d.on_feedback),
            feedback_memory_bytes=t.integer("feedback_memory_bytes", d.feedback_memory_bytes,
                                            0),
            thumbnail_px=t.integer("thumbnail_px", d.thumbnail_px, 4, 512),
            dir=t.path("dir"),
            max_bytes=t.integer("max_bytes", d.max_bytes, 4096),
            max_files=t.integer("max_files", d.max_files, 1),
            max_item_bytes=t.integer("max_item_bytes", d.max_item_bytes, 256),
            min_free_bytes=t.integer("min_free_bytes", d.min_free_bytes, 0),
            max_per_s=t.number("max_per_s", d.max_per_s, 0.0, exclusive=True),
            queue=t.integer("queue", d.queue, 1, 10_000),
            chunk_bytes=t.integer("chunk_bytes", d.chunk_bytes, 1024, 256 * 1024),
        )
        t.finish()
        if cfg.enabled and not cfg.models:
            raise t.err("models", "capture is enabled but no model is switched on: list the "
                                  "models whose inputs may be kept, e.g. models = [\"digits\"]")
        return cfg
