"""Discover and pick a LiteRT runtime: ai-edge-litert, then tflite-runtime, then tf.lite.

The agent never imports TensorFlow unless ``tensorflow`` is explicitly the chosen
candidate (and then only its ``tf.lite`` interpreter, lazily).

Raises :class:`~edge_agent.errors.RuntimeUnavailableError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import ModelLoadError, RuntimeUnavailableError
from edge_agent.protocol.kinds import RUNTIME_NAMES, RuntimeName

DEFAULT_ORDER = RUNTIME_NAMES  # preference order: edge_agent.protocol.RuntimeName
_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    RuntimeName.AI_EDGE_LITERT: ("ai_edge_litert.interpreter",
                                 ("ai-edge-litert", "ai-edge-litert-nightly")),
    RuntimeName.TFLITE_RUNTIME: ("tflite_runtime.interpreter",
                                 ("tflite-runtime", "tflite_runtime")),
    RuntimeName.TENSORFLOW: ("tensorflow.lite", ("tensorflow-cpu", "tensorflow")),
}


def _dist_version(dists: Sequence[str]) -> str | None:
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def parse_version(v: str) -> tuple[int, ...]:
    """``'2.14.0rc1'`` → ``(2, 14, 0)``; enough for minimum-version checks."""
    m = re.match(r"\d+(?:\.\d+)*", v)
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


@dataclass(frozen=True)
class Runtime:
    """An importable runtime: ``make_interpreter`` is the only door to a native interpreter."""

    name: str
    version: str
    module: Any

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def interpreter_cls(self) -> Any:
        return self.module.Interpreter

    def load_delegate(self, library: str, options: dict[str, Any] | None = None) -> Any:
        """Load an external delegate such as ``libedgetpu.so.1``.

        Raises RuntimeUnavailableError naming the library when it is not installed.
        """
        loader = getattr(self.module, "load_delegate", None)
        if loader is None and self.name == "tensorflow":
            loader = self.module.experimental.load_delegate
        if loader is None:
            raise RuntimeUnavailableError(f"{self}: cannot load external delegates")
        try:
            return loader(library, options or {})
        except (ValueError, OSError, RuntimeError) as e:
            raise RuntimeUnavailableError(
                f"delegate {library!r} could not be loaded with {self} ({e}); for a Coral Edge "
                "TPU install libedgetpu1-std (https://coral.ai/software/) and plug the device in"
            ) from e

    def make_interpreter(self, model_content: bytes, num_threads: int | None = None,
                         delegates: Sequence[Any] = ()) -> Any:
        """A new interpreter with tensors allocated. Raises ModelLoadError."""
        kwargs: dict[str, Any] = {"model_content": model_content}
        if num_threads:
            kwargs["num_threads"] = int(num_threads)
        if delegates:
            kwargs["experimental_delegates"] = list(delegates)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite's deprecation notice
                interp = self.interpreter_cls(**kwargs)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()
            short = "; ".join(m for m in msg if m)[:400]
            raise ModelLoadError(f"{self} could not load the model: {short}") from e
        return interp


def _import(name: str) -> Runtime | None:
    modname, dists = _MODULES[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(modname)
            if name == "tensorflow":
                # ``import tensorflow.lite`` yields the source package, which has no
                # Interpreter; the public API is the ``lite`` attribute of tensorflow.
                mod = importlib.import_module("tensorflow").lite
    except Exception:
        return None
    if name == "tensorflow":
        import sys
        version = getattr(sys.modules.get("tensorflow"), "__version__", None)
    else:
        version = None
    version = version or _dist_version(dists) or "unknown"
    return Runtime(name, version, mod)


_CACHE: dict[str, Runtime | None] = {}


def get_runtime(name: str) -> Runtime | None:
    """Import one runtime by name; ``None`` if it is not installed or fails to import."""
    if name not in _MODULES:
        raise RuntimeUnavailableError(
            f"unknown runtime {name!r} (expected one of {', '.join(DEFAULT_ORDER)})")
    if name not in _CACHE:
        _CACHE[name] = _import(name)
    return _CACHE[name]


def available_runtimes(include_tensorflow: bool = False) -> list[Runtime]:
    """Every importable runtime, in preference order. TF only when asked (slow, heavy)."""
    names = DEFAULT_ORDER if include_tensorflow else DEFAULT_ORDER[:2]
    return [rt for n in names if (rt := get_runtime(n)) is not None]


def select_runtime(candidates: Sequence[str] | None = None,
                   min_versions: dict[str, str] | None = None) -> Runtime:
    """First importable runtime of ``candidates`` (default order) meeting its minimum version.

    Raises RuntimeUnavailableError listing what was tried and why each was skipped.
    """
    tried = []
    for name in candidates or DEFAULT_ORDER:
        rt = get_runtime(name)
        if rt is None:
            tried.append(f"{name}: not installed")
            continue
        need = (min_versions or {}).get(name)
        if need and rt.version != "unknown" and parse_version(rt.version) < parse_version(need):
            tried.append(f"{name}: {rt.version} < required {need}")
            continue
        return rt
    raise RuntimeUnavailableError(
        "no usable LiteRT runtime (" + "; ".join(tried) + "); install ai-edge-litert "
        "(pip install ai-edge-litert) or tflite-runtime")
