"""``edge-convert bundle … --variant NAME=BUNDLE[,delegate=D][,min_runtime=V]``: put the
model of another bundle of the same model (another quantization, an Edge TPU compile) into
a bundle as a variant, with that bundle's tensors and golden vectors (docs/bundle.md,
*Variants*). Pure but for reading the variant bundles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle import Bundle, read_bundle
from edge_agent.errors import InvalidRequestError
from edge_agent.manifest import Requires, Variant, parse_manifest

__all__ = ["VariantSpec", "add_variants", "parse_variant_spec", "wrap_with_variants"]

if TYPE_CHECKING:
    from converter.wrap import WrapOptions

VariantSpec = tuple[str, Path, Requires]


def parse_variant_spec(text: str) -> VariantSpec:
    """``NAME=BUNDLE[,delegate=D][,min_runtime=V]`` → (name, path, requirements).
    Raises InvalidRequestError naming what is wrong."""
    name, eq, rest = text.partition("=")
    path, *opts = rest.split(",")
    if not eq or not name or not path:
        raise InvalidRequestError(f"--variant {text!r}: expected NAME=BUNDLE[,delegate=D]"
                                  "[,min_runtime=V]")
    req: dict[str, str] = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k not in ("delegate", "min_runtime") or k in req:
            raise InvalidRequestError(f"--variant {text!r}: unknown or repeated option {o!r} "
                                      "(delegate=, min_runtime=)")
        req[k] = v
    return name, Path(path), Requires(delegate=req.get("delegate"),
                                      min_runtime=req.get("min_runtime"))


def add_variants(base: Bundle, specs: list[VariantSpec]) -> Bundle:
    """``base`` with each spec's bundle model appended to its variants, in order; the
    result is checked by the manifest's own rules (names, tensors, delegates).
    Raises BundleError / ManifestError."""
    variants = list(base.manifest.variants)
    models = dict(base.variant_bytes)
    for name, path, req in specs:
        vb = read_bundle(path)
        m = vb.manifest
        variants.append(Variant(name=name, sha256=m.model_sha256, size_bytes=m.model_size,
                                quantization_mode=m.quantization_mode, inputs=m.inputs,
                                outputs=m.outputs, golden=m.golden,
                                # and what BUNDLE's model needs (int4 weights: its runtimes)
                                requires=replace(req, runtimes=m.requires.runtimes)))
        models[name] = vb.model_bytes
    manifest = replace(base.manifest, variants=tuple(variants))
    checked = parse_manifest(json.loads(manifest.to_json()), base.source)  # the reader's rules
    return replace(base, manifest=checked, variant_bytes=models)


def wrap_with_variants(opts: WrapOptions, variants: list[str]) -> dict[str, Any]:
    """``edge-convert bundle`` with ``--variant``: the specs parsed first, the model wrapped
    in memory, the variants added, then the whole bundle written to ``opts.output``
    atomically (a failure leaves nothing there). Returns the wrap report."""
    from converter.build import write_output
    from converter.wrap import build_wrapped

    specs = [parse_variant_spec(v) for v in variants]
    bundle, report = build_wrapped(opts)
    write_output(add_variants(bundle, specs), opts.output)
    return report
