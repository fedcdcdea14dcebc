"""Which input images feed, and how pixels become its values: the bundle's preprocessing.

One rule for both producers of bundles (``edge-convert convert`` and ``edge-convert
bundle``) and the agent (:func:`edge_agent.manifest.image_input_of`): the image input is
the one ``--image-input`` names, else the model's only NHWC input of 1 or 3 channels. Its
height and width are the resize target, its channels the colour (``--color`` must agree)
and the count ``--mean``/``--std`` may have (1, or one per channel). A model with several
inputs records the name (``preprocessing.image_input``, schema 2) so that the agent never
guesses; one with none takes no images (``--mean``/``--std`` then only scale ``uint8``
data arrays, as for any float input).

Pure: no files, no TensorFlow. Raises OptionError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from converter.errors import OptionError
from edge_agent.manifest import Preprocessing, TensorSpec, image_candidates, image_input_of


def check_normalisation(pre: Preprocessing) -> None:
    """``--mean``/``--std`` as numbers the manifest can hold: finite, std never 0."""
    for key, vals in (("mean", pre.mean), ("std", pre.std)):
        if not vals or not all(math.isfinite(v) for v in vals):
            raise OptionError(f"--{key} must be finite numbers, got {list(vals)}")
    if any(s == 0 for s in pre.std):
        raise OptionError(f"--std must not contain 0, got {list(pre.std)}")


def image_preprocessing(inputs: Sequence[TensorSpec], pre: Preprocessing, *,
                        color: str | None = None, image_input: str | None = None
                        ) -> Preprocessing:
    """``pre`` completed for the model's image input (``inputs`` batch-first). Raises
    OptionError naming the option and the model's inputs."""
    specs = tuple(inputs)
    described = ", ".join(f"{s.name} {list(s.shape)}" for s in specs)
    cands = image_candidates(specs)
    if image_input:
        if image_input not in {s.name for s in specs}:
            raise OptionError(f"--image-input {image_input!r} is not an input of the model "
                              f"(inputs: {described})")
        if image_input not in {s.name for s in cands}:
            raise OptionError(f"--image-input {image_input!r} is not an image input (NHWC "
                              f"with 1 or 3 channels; inputs: {described})")
    target = image_input_of(specs, image_input or "")
    if target is None:
        if color and len(cands) > 1:
            raise OptionError(f"the model has several image inputs "
                              f"({', '.join(repr(s.name) for s in cands)}); pass "
                              "--image-input NAME to say which one --color describes")
        if color:
            raise OptionError(f"--color describes an image input; the model has none "
                              f"(inputs: {described})")
        return pre
    h, w, channels = (int(d) for d in target.shape[1:])
    chosen = color or ("grayscale" if channels == 1 else "rgb")
    if (chosen == "grayscale") != (channels == 1):
        raise OptionError(f"--color {chosen} does not match the image input {target.name!r}'s "
                          f"{channels} channel(s)")
    for key, vals in (("mean", pre.mean), ("std", pre.std)):
        if len(vals) not in (1, channels):
            want = "1 value" if channels == 1 else f"1 or {channels} values"
            raise OptionError(f"--{key} needs {want} (the image input {target.name!r} has "
                              f"{channels} channel{'s' if channels > 1 else ''}), got "
                              f"{len(vals)}")
    return replace(pre, color=chosen, resize=pre.resize or (h, w),
                   image_input=target.name if len(specs) > 1 else "")
