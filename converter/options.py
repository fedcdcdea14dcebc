"""The options of the two commands that produce bundles: ``edge-convert convert``
(:class:`converter.build.ConvertOptions`) and ``edge-convert bundle``
(:class:`converter.wrap.WrapOptions`). What they share, and mean the same by, lives in
:class:`BundleOptions`; each command's own options extend it. Keyword-only, frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.manifest import Preprocessing


@dataclass(frozen=True, kw_only=True)
class BundleOptions:
    model: Path
    output: Path  # bundle directory, or a path ending in .tar
    labels_file: Path | None = None
    task: str | None = None  # manifest TASKS; default: from the outputs
    heads: dict[str, str] = field(default_factory=dict)  # --heads NAME=ROLE (detection)
    samples: int = 200  # representative samples read
    latency_runs: int = 50
    golden_atol: float = 2.0  # integer outputs, in tensor steps: runtimes may round by one
    # how images become the image input's values (--mean/--std), and for a float input
    # fed uint8 data arrays; resize and colour are completed from the image input
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    color: str | None = None  # rgb | grayscale; default: from the image input's channels
    image_input: str | None = None  # default: the model's one NHWC 1/3-channel input
