"""The bundle manifest: its typed dataclasses, and the strict parser of ``manifest.json``.

Pure: no files, no runtime. :func:`parse_manifest` turns a decoded JSON value into a
:class:`Manifest` or raises :class:`~edge_agent.errors.ManifestError` naming the path of
the offending value, what was expected and what was got::

    models/digits/digits-3.tar: manifest.golden[2].atol: expected a finite number >= 0
    and <= 16 (tensor steps of an int8 output), got NaN

Why strict: the manifest is what a device checks a model against, so a value that only
*looks* fine turns a check off or fails later, deep in the runtime. ``atol: NaN`` made
every golden comparison pass; a negative dimension, a NaN scale or golden data that did
not decode surfaced as an internal error with a traceback. Every value is checked here,
once, against what the runtime does with it (the rules are listed in docs/bundle.md):
finite numbers only; dimensions >= 1 (the runtime reads ``shape[0]`` as the batch);
dtypes from a fixed set; integer IO tensors quantized (scale > 0, zero point in the
dtype's range), float ones not; golden vectors of the declared dtype and of shapes that
match the tensors, decodable, with a tolerance that cannot switch the check off; labels
one per output value; a drift reference of shares in ``[0, 1]``; every count and string
bounded. The reading helper is :class:`_Field`, a value and its path.

Raises ManifestError (and nothing else) for a malformed manifest.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from edge_agent import detection
from edge_agent.errors import ManifestError
from edge_agent.protocol.kinds import RUNTIME_NAMES

SCHEMA_VERSION = 2  # what this agent writes for several tensors or heads
SCHEMA_VERSIONS = (1, 2)  # what it reads: 1 = one input, one output (docs/bundle.md)
MODEL_FILE = "model.tflite"
VARIANTS_DIR = "variants"  # a variant NAME's model is the member ``variants/NAME.tflite``
VARIANT_DELEGATES = ("edgetpu", "gpu", "xnnpack")  # profiles.DELEGATES but "none"
MAX_VARIANTS = 8
VERSION_RE = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$")  # a runtime version floor
DTYPES = ("int8", "uint8", "int16", "int32", "float32", "float16")
QUANTIZED_DTYPES = ("int8", "uint8", "int16")  # the IO dtypes runtime.quant (de)quantizes
# converter.modes.MODES; float32: a float model wrapped by ``edge-convert bundle``
QUANTIZATION_MODES = ("int8", "int8-fallback", "int16x8", "float16", "dynamic",
                      "int4-weights", "int8-weights", "float32")
TASKS = ("classification", "regression", "multi_output", "detection", "raw")
# what an output is: per-head metrics, drift, :classify; detection roles: edge_agent.detection
HEADS = ("class", "regression", "raw", *detection.ROLES)
COLORS = ("rgb", "grayscale")
CHANNEL_ORDERS = ("rgb", "bgr")
LAYOUTS = ("nhwc",)
RESAMPLES = ("bilinear", "nearest", "bicubic")  # runtime.preprocess
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a path component in the store
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# bounds (counts, lengths, magnitudes): far above anything the converter writes
MAX_VERSION = (1 << 53) - 1  # exact in every JSON reader
MAX_MODEL_BYTES = 1 << 40
MAX_RANK = 8
MAX_DIM = 1 << 24
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_OUTPUTS = 64
MAX_INPUTS = 64
MAX_TEXT = 256  # characters: names, labels, profile names, producer versions
MAX_TENSOR_NAME = 1024  # TFLite tensor names can be long fused-op names
MAX_LABELS = 1 << 17
MAX_PROFILES = 64
MAX_GOLDEN = 64  # vectors (the converter writes 4)
MAX_GOLDEN_BATCH = 64
MAX_GOLDEN_BYTES = 16 << 20  # one decoded golden array
MAX_ATOL_STEPS = 16.0  # integer outputs, in tensor steps (the converter writes 2)
MAX_ATOL_RELATIVE = 0.01  # float outputs, of max(1, max |output|) (the converter: 1e-4)
MAX_PIXEL_STAT = 1e6  # |mean|, |std| of preprocessing, in pixel units (0-255)
MAX_CHANNELS = 1 << 16
MAX_SAMPLES = 1 << 40
MAX_BINS = 1000
SHARE_SUM_SLACK = 0.01  # a histogram's shares (rounded to 6 digits) sum to at most 1 + this
_INT_RANGE = {d: (int(np.iinfo(d).min), int(np.iinfo(d).max)) for d in QUANTIZED_DTYPES}

T = TypeVar("T")


@dataclass(frozen=True)
class EncodedArray:
    """A numpy array stored in JSON as dtype + shape + base64 of its C-order bytes."""

    dtype: str
    shape: tuple[int, ...]
    b64: str

    @classmethod
    def encode(cls, arr: np.ndarray) -> EncodedArray:
        arr = np.ascontiguousarray(arr)
        return cls(str(arr.dtype), tuple(int(d) for d in arr.shape),
                   base64.b64encode(arr.tobytes()).decode("ascii"))

    def decode(self) -> np.ndarray:
        raw = base64.b64decode(self.b64)
        arr = np.frombuffer(raw, dtype=np.dtype(self.dtype))
        return arr.reshape(self.shape).copy()


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: what the interpreter's tensor looks like."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0  # 0.0 means not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in QUANTIZED_DTYPES


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become the model's float input: ``(pixel - mean) / std``."""

    resize: tuple[int, int] | None = None  # (height, width)
    color: str = "rgb"  # rgb | grayscale
    channel_order: str = "rgb"  # rgb | bgr
    layout: str = "nhwc"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    resample: str = "bilinear"
    # the input images feed, by name; "" means the model's one image-shaped input
    # (:func:`image_input_of`). Written when a model has several inputs (schema 2).
    image_input: str = ""


@dataclass(frozen=True)
class GoldenVector:
    """Input tensors by name and the output tensors this model must give for them (raw
    tensor units), each output with its tolerance (quantized steps for integer outputs)."""

    inputs: dict[str, EncodedArray]
    outputs: dict[str, EncodedArray]
    atols: dict[str, float]  # per output name, in that output's tensor units

    @classmethod
    def single(cls, input_name: str, x: EncodedArray, output_name: str, y: EncodedArray,
               atol: float) -> GoldenVector:
        return cls({input_name: x}, {output_name: y}, {output_name: atol})

    @property
    def input(self) -> EncodedArray:
        """The first input (the only one of a schema-1 bundle)."""
        return next(iter(self.inputs.values()))

    @property
    def output(self) -> EncodedArray:
        """The first output (the only one of a schema-1 bundle)."""
        return next(iter(self.outputs.values()))

    @property
    def atol(self) -> float:
        return next(iter(self.atols.values()))

    def with_output(self, y: EncodedArray, atol: float | None = None) -> GoldenVector:
        """This vector with its first output (and tolerance) replaced (tests, forgeries)."""
        name = next(iter(self.outputs))
        return GoldenVector(dict(self.inputs), {**self.outputs, name: y},
                            {**self.atols, name: self.atol if atol is None else atol})


@dataclass(frozen=True)
class InputStats:
    """One input's calibration-time statistics, per channel (the last axis), in model
    (normalized) units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class OutputReference:
    """Calibration-time statistics of one regression or raw head: the mean and standard
    deviation of its per-sample value (the mean over the sample's values)."""

    mean: float
    std: float


@dataclass(frozen=True)
class DriftReference:
    """Calibration-time statistics the agent compares live traffic against (PSI)."""

    samples: int
    class_hist: tuple[float, ...]  # share of predictions per class, sums to 1
    confidence_edges: tuple[float, ...]  # histogram bin edges of top-1 probability
    confidence_hist: tuple[float, ...]  # share per bin, sums to 1
    input_mean: tuple[float, ...]  # per channel, model-input (normalized) units
    input_std: tuple[float, ...]  # (both of the first input: what schema 1 holds)
    # schema 2: every input's statistics by name (empty: only the first input's, above)
    inputs: dict[str, InputStats] = field(default_factory=dict)
    # per regression/raw head by output name (optional): the live value's shift is
    # reported in these standard deviations (edge_agent.monitor.outputs)
    outputs: dict[str, OutputReference] = field(default_factory=dict)


@dataclass(frozen=True)
class Requires:
    """What a device needs to run a model (all optional): a delegate by profile name
    (``edgetpu``, ``gpu``, ``xnnpack``), a minimum runtime version, and ``runtimes``: the
    runtimes that can run it at all, each with its version floor (empty: any runtime).
    ``model.tflite``'s are the manifest's top-level ``requires``, a variant's its own."""

    delegate: str | None = None
    min_runtime: str | None = None
    # e.g. int4 weights: {"ai-edge-litert": "1.4.0", "tensorflow": "2.21.0"}: tflite-runtime
    # cannot (converter.lowbit); keys from edge_agent.protocol.RUNTIME_NAMES
    runtimes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The manifest's ``requires`` object: only what is set (empty: no requirement)."""
        return {k: v for k, v in asdict(self).items() if v}


@dataclass(frozen=True)
class Variant:
    """Another model of the same version (``variants/NAME.tflite``), preferred in the
    manifest's order before ``model.tflite``: same tensor names and shapes as the bundle's,
    its own dtypes, quantization and golden vectors (docs/bundle.md, *Variants*)."""

    name: str
    sha256: str
    size_bytes: int
    quantization_mode: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden: tuple[GoldenVector, ...] = ()
    requires: Requires = field(default_factory=Requires)

    @property
    def file(self) -> str:
        return variant_file(self.name)


def variant_file(name: str) -> str:
    """The bundle member holding variant ``name``'s model."""
    return f"{VARIANTS_DIR}/{name}.tflite"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    created_at: str
    model_sha256: str
    model_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    quantization_mode: str
    task: str = "classification"  # TASKS
    output_is_probability: bool = True
    labels: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()
    golden: tuple[GoldenVector, ...] = ()
    drift_reference: DriftReference | None = None
    converter_version: str = ""
    tensorflow_version: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # what each output is, by name (HEADS); empty: from the task (schema 1's rule)
    heads: dict[str, str] = field(default_factory=dict)
    # other models of this version, most preferred first, all before model.tflite
    variants: tuple[Variant, ...] = ()
    # what model.tflite needs of the device (absent when nothing: older bundles' bytes)
    requires: Requires = field(default_factory=Requires)

    def head(self, output: str) -> str:
        """What the output ``output`` is (HEADS): ``class``, ``regression``, ``raw``, or a
        detection role (``boxes``, ``scores``, ``classes``, ``count``)."""
        return head_of(output, self.outputs, self.task, self.heads)

    @property
    def image_input(self) -> TensorSpec | None:
        """The input encoded images feed (:func:`image_input_of`), if there is one."""
        return image_input_of(self.inputs, self.preprocessing.image_input)

    @property
    def class_head(self) -> TensorSpec | None:
        """The output that scores classes (labels, top-k, class drift), if there is one."""
        return class_head_of(self.outputs, self.task, self.heads)

    def to_dict(self) -> dict[str, Any]:
        """The ``manifest.json`` value of :attr:`schema_version` (1 only for what it can
        say: one input, one output, no per-head table)."""
        d = asdict(self)
        d.pop("heads")
        d.pop("variants")  # absent when empty: a single-model bundle keeps its bytes
        d.pop("requires")
        if self.requires.as_dict():
            d["requires"] = self.requires.as_dict()
        if self.variants:
            d["variants"] = [_variant_dict(v, self.schema_version) for v in self.variants]
        if not self.preprocessing.image_input:  # optional: absent when inferred
            d["preprocessing"].pop("image_input")
        if d["drift_reference"] is not None:  # optional parts: absent when empty
            for part in ("inputs", "outputs"):
                if not d["drift_reference"][part]:
                    d["drift_reference"].pop(part)
        if self.schema_version == 1:
            if len(self.inputs) != 1 or len(self.outputs) != 1 or self.task not in (
                    "classification", "raw"):
                raise ValueError("schema 1 holds one input, one output and task "
                                 "classification or raw; write schema 2")
            d["golden"] = _golden_dicts(self.golden, 1)
            if d["drift_reference"] is not None:
                d["drift_reference"].pop("inputs", None)
        else:
            d["heads"] = {o.name: self.head(o.name) for o in self.outputs}
            d["golden"] = _golden_dicts(self.golden, 2)
        d["model"] = {"file": MODEL_FILE, "sha256": d.pop("model_sha256"),
                      "size_bytes": d.pop("model_size")}
        d["producer"] = {"converter": d.pop("converter_version"),
                         "tensorflow": d.pop("tensorflow_version")}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest.json") -> Manifest:
        """Strictly parsed (:func:`parse_manifest`). Raises ManifestError naming the field."""
        return parse_manifest(d, source)


def _golden_dicts(golden: tuple[GoldenVector, ...], schema: int) -> list[dict[str, Any]]:
    if schema == 1:
        return [{"input": asdict(g.input), "output": asdict(g.output), "atol": g.atol}
                for g in golden]
    return [{"inputs": {k: asdict(v) for k, v in g.inputs.items()},
             "outputs": {k: asdict(v) for k, v in g.outputs.items()},
             "atol": dict(g.atols)} for g in golden]


def _variant_dict(v: Variant, schema: int) -> dict[str, Any]:
    return {"name": v.name, "file": v.file, "sha256": v.sha256, "size_bytes": v.size_bytes,
            "quantization_mode": v.quantization_mode, "requires": v.requires.as_dict(),
            "inputs": [asdict(t) for t in v.inputs], "outputs": [asdict(t) for t in v.outputs],
            "golden": _golden_dicts(v.golden, schema)}


def head_of(output: str, outputs: tuple[TensorSpec, ...], task: str,
            heads: dict[str, str]) -> str:
    """What ``output`` is: from ``heads`` (schema 2), else schema 1's rule (the one output
    of a classification model is its class head)."""
    if heads:
        return heads.get(output, "raw")
    first = outputs[0].name if outputs else ""
    return "class" if task == "classification" and output == first else "raw"


def image_candidates(inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Inputs an encoded image can feed: NHWC with 1 (grayscale) or 3 (RGB) channels."""
    return tuple(s for s in inputs if len(s.shape) == 4 and s.shape[3] in (1, 3))


def image_input_of(inputs: tuple[TensorSpec, ...], named: str) -> TensorSpec | None:
    """The input images feed: the one ``named`` (the manifest's
    ``preprocessing.image_input``), else the model's only image-shaped input; None when
    there is none, or several and no name says which."""
    cands = image_candidates(inputs)
    if named:
        return next((s for s in cands if s.name == named), None)
    return cands[0] if len(cands) == 1 else None


def class_head_of(outputs: tuple[TensorSpec, ...], task: str, heads: dict[str, str]
                  ) -> TensorSpec | None:
    return next((o for o in outputs if head_of(o.name, outputs, task, heads) == "class"), None)


def oldest_schema(m: Manifest) -> int:
    """The oldest schema that says all of ``m`` (1 for one input, one output and a task
    schema 1 knows), so agents that read only schema 1 still take single-tensor bundles."""
    if len(m.inputs) == 1 and len(m.outputs) == 1 and m.task in ("classification", "raw") \
            and m.head(m.outputs[0].name) == ("class" if m.task == "classification" else "raw") \
            and not (m.drift_reference and m.drift_reference.outputs):
        return 1
    return SCHEMA_VERSION


# ----------------------------------------------------------------------------- reading


def _show(v: Any) -> str:
    """A JSON value as the error shows it (JSON spelling, bounded)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (int, float)):
        text = repr(v)
        return text if len(text) <= 40 else f"a {len(text)}-digit number"
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else f"{v[:37]!r}… ({len(v)} characters)"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    return "an object" if isinstance(v, dict) else type(v).__name__


def _bounds(lo: float, hi: float, above: bool = False) -> str:
    def fmt(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = ([f"{'>' if above else '>='} {fmt(lo)}"] if lo != -math.inf else []) + (
        [f"<= {fmt(hi)}"] if hi != math.inf else [])
    return "".join(f" {p}" if i == 0 else f" and {p}" for i, p in enumerate(parts))


def _why(expected: str, why: str) -> str:
    return f"{expected} ({why})" if why else expected


class _Field:
    """One value of the manifest and its path (``manifest.golden[2].atol``): typed reads
    that raise ManifestError naming the path. A read with ``default`` accepts an absent
    (or null) value; without one the value is required."""

    def __init__(self, value: Any, source: str, path: str = "manifest") -> None:
        self.value, self.source, self.path = value, source, path

    def fail(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: {self.path}: {problem}", field=self.path)

    @property
    def present(self) -> bool:
        return self.value is not None

    def _check(self, ok: bool, expected: str) -> None:
        if not ok:
            got = "missing" if self.value is None else f"got {_show(self.value)}"
            raise self.fail(f"expected {expected}, {got}")

    def _default(self, default: T | None, expected: str) -> T | None:
        if self.value is None and default is None:
            self._check(False, expected)
        return default if self.value is None else None

    def __getitem__(self, key: str) -> _Field:
        """The member ``key`` of this object (absent: a field whose value is None)."""
        self._check(isinstance(self.value, dict), "a JSON object")
        return _Field(self.value.get(key), self.source, f"{self.path}.{key}")

    def obj(self, default: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self._default(default, "a JSON object")
        if d is not None:
            return d
        self._check(isinstance(self.value, dict), "a JSON object")
        return dict(self.value)

    def items(self, lo: int, hi: int, *, default: list[Any] | None = None) -> list[_Field]:
        """The elements of a list of ``lo``..``hi`` entries."""
        want = f"a list of {lo}..{hi} entries" if lo != hi else f"a list of {lo}"
        v = self._default(default, want)
        v = self.value if v is None else v
        self._check(isinstance(v, list) and lo <= len(v) <= hi, want)
        return [_Field(x, self.source, f"{self.path}[{i}]") for i, x in enumerate(v)]

    def integer(self, lo: int, hi: int, *, why: str = "", default: int | None = None) -> int:
        want = _why(f"an integer{_bounds(lo, hi)}" if lo != hi else f"{lo}", why)
        d = self._default(default, want)
        if d is not None:
            return d
        v = self.value
        self._check(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, want)
        return int(v)

    def number(self, lo: float, hi: float, *, above: bool = False, why: str = "",
               default: float | None = None) -> float:
        """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``above``); never NaN/inf."""
        want = _why(f"a finite number{_bounds(lo, hi, above)}" if lo != hi else f"{lo:g}", why)
        d = self._default(default, want)
        if d is not None:
            return d
        v = self.value
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        try:
            x = float(v) if ok else math.nan
        except OverflowError:  # an integer literal beyond float range
            x = math.nan
        self._check(math.isfinite(x) and (x > lo if above else x >= lo) and x <= hi, want)
        return x

    def numbers(self, lo_count: int, hi_count: int, check: Callable[[_Field], float], *,
                default: tuple[float, ...] | None = None) -> tuple[float, ...]:
        if self.value is None and default is not None:
            return default
        return tuple(check(f) for f in self.items(lo_count, hi_count))

    def text(self, *, max_len: int = MAX_TEXT, choices: tuple[str, ...] = (),
             pattern: re.Pattern[str] | None = None, why: str = "",
             default: str | None = None) -> str:
        want = _why(f"{'one of ' if len(choices) > 1 else ''}"
                    f"{', '.join(repr(c) for c in choices)}" if choices else
                    f"a string matching {pattern.pattern}" if pattern else
                    f"a string of at most {max_len} characters", why)
        d = self._default(default, want)
        if d is not None:
            return d
        v = self.value
        self._check(isinstance(v, str) and len(v) <= max_len
                    and (not choices or v in choices)
                    and (pattern is None or pattern.fullmatch(v) is not None), want)
        return str(v)

    def flag(self, *, default: bool | None = None) -> bool:
        if self.value is None and default is not None:
            return default
        self._check(isinstance(self.value, bool), "true or false")
        return bool(self.value)


# ----------------------------------------------------------------------------- the rules


def parse_manifest(d: Any, source: str = "manifest.json") -> Manifest:
    """A decoded ``manifest.json`` → Manifest, every rule checked (module docstring).

    ``source`` (the bundle) prefixes every message. Raises ManifestError.
    """
    m = _Field(d, source)
    sv = m["schema_version"].integer(0, MAX_VERSION)
    if sv not in SCHEMA_VERSIONS:
        raise m["schema_version"].fail(f"schema_version {sv} not supported (this agent "
                                       f"reads {', '.join(map(str, SCHEMA_VERSIONS))})")
    model, producer = m["model"], m["producer"]
    model["file"].text(choices=(MODEL_FILE,), default=MODEL_FILE)
    one = sv == 1  # schema 1: one input, one output's golden data, no heads table
    inputs = _tensors(m["inputs"], 1 if one else MAX_INPUTS)
    outputs = _tensors(m["outputs"], MAX_OUTPUTS)
    task = m["task"].text(choices=TASKS[:1] + TASKS[-1:] if one else TASKS,
                          default="classification")
    heads = {} if one else _heads(m["heads"], outputs, task)
    head = class_head_of(outputs, task, heads)
    if one and head is None:  # schema 1: labels name outputs[0]'s values whatever the task
        head = outputs[0]
    classes = math.prod(head.shape[1:]) if head is not None else 0
    labels = tuple(f.text() for f in m["labels"].items(0, MAX_LABELS, default=[]))
    if labels and head is None:
        raise m["labels"].fail(f"expected no labels (no output is a class head), "
                               f"got {len(labels)}")
    if labels and len(labels) != classes:
        assert head is not None
        raise m["labels"].fail(f"expected no labels or {classes} (one per value of the "
                               f"class head {head.name!r}, shape {list(head.shape)}), "
                               f"got {len(labels)}")
    drift = m["drift_reference"]
    return Manifest(
        name=m["name"].text(pattern=NAME_RE),
        version=m["version"].integer(1, MAX_VERSION),
        created_at=m["created_at"].text(max_len=64),
        model_sha256=model["sha256"].text(pattern=SHA256_RE),
        model_size=model["size_bytes"].integer(1, MAX_MODEL_BYTES),
        inputs=inputs,
        outputs=outputs,
        preprocessing=_preprocessing(m["preprocessing"], inputs),
        quantization_mode=m["quantization_mode"].text(choices=QUANTIZATION_MODES),
        task=task,
        output_is_probability=m["output_is_probability"].flag(default=True),
        labels=labels,
        target_profiles=tuple(f.text(pattern=NAME_RE) for f in
                              m["target_profiles"].items(0, MAX_PROFILES, default=[])),
        golden=tuple(_golden(g, inputs, outputs, one)
                     for g in m["golden"].items(0, MAX_GOLDEN, default=[])),
        drift_reference=_drift(drift, inputs, classes if task == "classification" or
                               not one else 0, outputs, one,
                               {o.name for o in outputs if o is not head})
        if drift.present else None,
        converter_version=producer["converter"].text(default="") if producer.present else "",
        tensorflow_version=producer["tensorflow"].text(default="") if producer.present else "",
        schema_version=sv,
        extra=m["extra"].obj(default={}),
        heads=heads,
        variants=_variants(m["variants"], inputs, outputs, one),
        requires=_requires(m["requires"]),
    )


def _variants(f: _Field, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
              one: bool) -> tuple[Variant, ...]:
    """The ``variants`` list: unique names, each the member ``variants/NAME.tflite``, the
    bundle's tensor names and shapes (dtypes may differ), known delegates."""
    out: list[Variant] = []
    for v in f.items(0, MAX_VARIANTS, default=[]):
        name = v["name"].text(pattern=NAME_RE)
        if name in {o.name for o in out} or name == "default":
            raise v["name"].fail(f"variant name {name!r} used twice (\"default\" is "
                                 "model.tflite's)")
        v["file"].text(choices=(variant_file(name),), why="the variant's member")
        vin, vout = _tensors(v["inputs"], len(inputs)), _tensors(v["outputs"], len(outputs))
        for got, want, fv in ((vin, inputs, v["inputs"]), (vout, outputs, v["outputs"])):
            if [(t.name, t.shape) for t in got] != [(t.name, t.shape) for t in want]:
                raise fv.fail("expected the bundle's tensor names and shapes "
                              f"({', '.join(f'{t.name}{list(t.shape)}' for t in want)})")
        req = _requires(v["requires"])
        out.append(Variant(
            name=name, sha256=v["sha256"].text(pattern=SHA256_RE),
            size_bytes=v["size_bytes"].integer(1, MAX_MODEL_BYTES),
            quantization_mode=v["quantization_mode"].text(choices=QUANTIZATION_MODES),
            inputs=vin, outputs=vout,
            golden=tuple(_golden(g, vin, vout, one)
                         for g in v["golden"].items(0, MAX_GOLDEN, default=[])),
            requires=req))
    return tuple(out)


def _requires(r: _Field) -> Requires:
    """A ``requires`` object (absent: none): a known delegate, version floors, and runtimes
    by their names (``RUNTIME_NAMES``), each to a version floor."""
    if not r.present:
        return Requires()
    rts = r["runtimes"]
    runtimes = {}
    for name in rts.obj(default={}):
        if name not in RUNTIME_NAMES:
            raise rts.fail(f"expected runtime names from {', '.join(RUNTIME_NAMES)}, got "
                           f"{_show(name)}")
        runtimes[name] = rts[name].text(pattern=VERSION_RE)
    return Requires(
        delegate=r["delegate"].text(choices=VARIANT_DELEGATES, default="") or None,
        min_runtime=r["min_runtime"].text(pattern=VERSION_RE, default="") or None,
        runtimes=runtimes)


def _tensors(f: _Field, most: int) -> tuple[TensorSpec, ...]:
    """The specs of a list of tensors; their names unique (requests and golden vectors
    name them)."""
    specs = tuple(_tensor(t) for t in f.items(1, most))
    seen: set[str] = set()
    for i, s in enumerate(specs):
        if s.name in seen:
            raise f.items(1, most)[i]["name"].fail(f"expected a name no other tensor has, "
                                                   f"got {_show(s.name)} again")
        seen.add(s.name)
    return specs


def _heads(f: _Field, outputs: tuple[TensorSpec, ...], task: str) -> dict[str, str]:
    """Schema 2's ``heads``: every output's kind (HEADS) by name, at most one class head,
    consistent with the task."""
    obj = f.obj()
    names = [o.name for o in outputs]
    if sorted(obj) != sorted(names):
        raise f.fail(f"expected one entry per output ({', '.join(names)}), got "
                     f"{', '.join(sorted(obj)[:8]) or 'none'}")
    heads = {n: f[n].text(choices=HEADS) for n in names}
    classes = [n for n, h in heads.items() if h == "class"]
    if len(classes) > 1:
        raise f.fail(f"expected at most one class head, got {', '.join(classes)}")
    roles = sorted({h for h in heads.values() if h in detection.ROLES})
    if task == "detection":
        why = detection.heads_problem(outputs, heads)
        if why:
            raise f.fail(why)
    elif roles:
        raise f.fail(f"expected no detection heads ({', '.join(roles)}) for task {task!r}")
    rule = {"classification": (bool(classes), "a class head"),
            "regression": (not classes and "regression" in heads.values(),
                           "regression heads and no class head"),
            "multi_output": (len(names) >= 2, "at least two outputs")}.get(task)
    if rule is not None and not rule[0]:
        raise f.fail(f"expected {rule[1]} for task {task!r}, got "
                     f"{', '.join(f'{n}: {h}' for n, h in heads.items())}")
    return heads


def _tensor(t: _Field) -> TensorSpec:
    dtype = t["dtype"].text(choices=DTYPES)
    if dtype in QUANTIZED_DTYPES:  # v = (q - zero_point) * scale; scale 0: raw integers
        lo, hi = _INT_RANGE[dtype]
        scale = t["scale"].number(0.0, math.inf,
                                  why=f"{dtype} tensors are quantized, or raw with scale 0")
        zero_point = t["zero_point"].integer(lo, hi) if scale > 0 else t["zero_point"].integer(
            0, 0, why=f"a raw {dtype} tensor (scale 0) has no zero point")
    else:
        scale = t["scale"].number(0.0, 0.0, why=f"{dtype} tensors are not quantized")
        zero_point = t["zero_point"].integer(0, 0, why=f"{dtype} tensors are not quantized")
    return TensorSpec(name=t["name"].text(max_len=MAX_TENSOR_NAME), shape=_shape(t["shape"]),
                      dtype=dtype, scale=scale, zero_point=zero_point)


def _shape(f: _Field) -> tuple[int, ...]:
    """Full shape, batch first: every dimension >= 1 (the runtime reads shape[0] as the
    model's fixed batch and runs larger batches in slices of it)."""
    dims = tuple(d.integer(1, MAX_DIM) for d in f.items(1, MAX_RANK))
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise f.fail(f"expected at most {MAX_TENSOR_ELEMENTS} elements, got {list(dims)}")
    return dims


def _preprocessing(p: _Field, inputs: tuple[TensorSpec, ...]) -> Preprocessing:
    """The image rules apply to the input images feed (``image_input``, or the one
    image-shaped input); a model with none (or several, unnamed) takes no images."""
    named = p["image_input"].text(max_len=MAX_TENSOR_NAME, default="")
    cands = image_candidates(inputs)
    if named and named not in {s.name for s in cands}:
        raise p["image_input"].fail(
            "expected the name of an NHWC input of 1 or 3 channels ("
            f"{', '.join(repr(s.name) for s in cands) or 'the model has none'}), "
            f"got {_show(named)}")
    target = image_input_of(inputs, named)
    image = target is not None
    inp = target or inputs[0]
    resize = None
    if p["resize"].present:
        h, w = (d.integer(1, MAX_DIM) for d in p["resize"].items(2, 2))
        resize = (h, w)
        if image and resize != inp.shape[1:3]:
            raise p["resize"].fail(f"expected the input's [height, width] "
                                   f"{list(inp.shape[1:3])}, got {[h, w]}")
    counts = (1, inp.shape[3]) if image else (1, MAX_CHANNELS)

    def stats(key: str, default: tuple[float, ...], nonzero: bool) -> tuple[float, ...]:
        f = p[key]
        vals = f.numbers(1, max(counts), lambda x: x.number(-MAX_PIXEL_STAT, MAX_PIXEL_STAT),
                         default=default)
        if image and len(vals) not in counts:
            raise f.fail(f"expected 1 or {inp.shape[3]} values (the input's channels), "
                         f"got {len(vals)}")
        if nonzero and 0.0 in vals:
            raise f.fail(f"expected no 0 (pixels are divided by it), got {list(vals)}")
        return vals

    return Preprocessing(
        resize=resize,
        color=p["color"].text(choices=COLORS, default="rgb"),
        channel_order=p["channel_order"].text(choices=CHANNEL_ORDERS, default="rgb"),
        layout=p["layout"].text(choices=LAYOUTS, default="nhwc"),
        mean=stats("mean", (0.0,), nonzero=False),
        std=stats("std", (255.0,), nonzero=True),
        resample=p["resample"].text(choices=RESAMPLES, default="bilinear"),
        image_input=named,
    )


def _golden(g: _Field, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
            one: bool) -> GoldenVector:
    """Inputs of the input tensors' dtypes and shapes (any batch, the same for all),
    outputs of the outputs' dtypes and shapes with that batch — what ``verify_golden``
    feeds and compares. Schema 1: ``input``/``output``/``atol``; schema 2: ``inputs`` and
    ``outputs`` objects by tensor name (every input, every output) and ``atol`` by output."""
    if one:
        x, _ = _array(g["input"], inputs[0], batch=None)
        y, atol = _golden_output(g["output"], g["atol"], outputs[0], x.shape[0])
        return GoldenVector.single(inputs[0].name, x, outputs[0].name, y, atol)
    fi, fo, fa = g["inputs"], g["outputs"], g["atol"]
    given = sorted(fi.obj())
    if given != sorted(s.name for s in inputs):
        raise fi.fail(f"expected every input by name ({', '.join(s.name for s in inputs)}), "
                      f"got {', '.join(given[:8]) or 'none'}")
    batch: int | None = None
    xs: dict[str, EncodedArray] = {}
    for s in inputs:
        xs[s.name], _ = _array(fi[s.name], s, batch=batch)
        batch = xs[s.name].shape[0]
    names = set(fo.obj())
    want = {s.name for s in outputs}
    if names != want:  # a head without golden data would never be checked
        why = [f"{k} {', '.join(sorted(v)[:8])}" for k, v in
               (("missing", want - names), ("unknown", names - want)) if v]
        raise fo.fail(f"expected every output by name ({', '.join(s.name for s in outputs)})"
                      f", got {', '.join(sorted(names)[:8]) or 'none'} ({'; '.join(why)})")
    if sorted(fa.obj()) != sorted(names):
        raise fa.fail(f"expected one tolerance per golden output ({', '.join(sorted(names))})"
                      f", got {', '.join(sorted(fa.obj())[:8]) or 'none'}")
    ys, atols = {}, {}
    for s in outputs:
        if s.name in names:
            ys[s.name], atols[s.name] = _golden_output(fo[s.name], fa[s.name], s, batch)
    return GoldenVector(xs, ys, atols)


def _golden_output(f: _Field, af: _Field, out: TensorSpec, batch: int | None
                   ) -> tuple[EncodedArray, float]:
    y, want = _array(f, out, batch=batch)
    if out.dtype in QUANTIZED_DTYPES or out.dtype == "int32":
        hi, why = MAX_ATOL_STEPS, f"tensor steps of an {out.dtype} output"
    else:
        peak = float(np.max(np.abs(want.astype(np.float64)))) if want.size else 0.0
        hi = MAX_ATOL_RELATIVE * max(1.0, peak)
        why = f"at most {MAX_ATOL_RELATIVE:g} x max(1, max |output|) for a float output"
    return y, af.number(0.0, hi, why=why)


def _array(f: _Field, spec: TensorSpec, *, batch: int | None) -> tuple[EncodedArray, np.ndarray]:
    dtype = f["dtype"].text(choices=(spec.dtype,), why="the tensor's dtype")
    sf = f["shape"]
    shape = tuple(d.integer(1, MAX_DIM) for d in sf.items(1, MAX_RANK))
    want = f"[{batch if batch is not None else 'n'}, {', '.join(map(str, spec.shape[1:]))}]"
    if (len(shape) != len(spec.shape) or shape[1:] != spec.shape[1:]
            or shape[0] > MAX_GOLDEN_BATCH or (batch is not None and shape[0] != batch)):
        raise sf.fail(f"expected {want} (the tensor's shape, batch 1..{MAX_GOLDEN_BATCH}"
                      f"{' as the input' if batch is not None else ''}), got {list(shape)}")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > MAX_GOLDEN_BYTES:
        raise sf.fail(f"expected at most {MAX_GOLDEN_BYTES} bytes of data, got {nbytes}")
    bf = f["b64"]
    text = bf.text(max_len=4 * -(-nbytes // 3))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bf.fail(f"not base64 ({e})") from e
    if len(raw) != nbytes:
        raise bf.fail(f"expected {nbytes} bytes ({dtype} {list(shape)}), got {len(raw)}")
    arr = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise bf.fail("expected finite values, got NaN or infinity")
    return EncodedArray(dtype, shape, text), arr


def _channels(inp: TensorSpec) -> tuple[int, int]:
    """How many per-channel statistics ``inp`` has: its last dimension (any for a
    tensor of one dimension)."""
    channels = inp.shape[-1] if len(inp.shape) >= 2 else 0
    return (channels, channels) if channels else (1, MAX_CHANNELS)


def _stats(mean: _Field, std: _Field, inp: TensorSpec) -> InputStats:
    n = _channels(inp)
    return InputStats(mean.numbers(*n, lambda x: x.number(-math.inf, math.inf)),
                      std.numbers(*n, lambda x: x.number(0.0, math.inf)))


def _drift(f: _Field, inputs: tuple[TensorSpec, ...], classes: int,
           outputs: tuple[TensorSpec, ...], one: bool, watched: set[str]) -> DriftReference:
    """``classes`` > 0: class_hist has one share per class (classification).
    ``input_mean``/``input_std`` are the first input's; schema 2's optional ``inputs``
    holds every input's, by name, each with that input's channel count; its optional
    ``outputs``, statistics per head in ``watched`` (the outputs that are not the class
    head), by name."""

    def shares(key: str, count: int) -> tuple[float, ...]:
        sf = f[key]
        n = (count, count) if count else (1, MAX_LABELS)
        vals = tuple(x.number(0.0, 1.0) for x in sf.items(*n))
        if sum(vals) > 1.0 + SHARE_SUM_SLACK:
            raise sf.fail(f"expected shares summing to at most 1, got {sum(vals):g}")
        return vals

    ef = f["confidence_edges"]
    edges = tuple(x.number(0.0, 1.0) for x in ef.items(2, MAX_BINS + 1))
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ef.fail(f"expected strictly increasing bin edges, got {list(edges)[:12]}")
    first = _stats(f["input_mean"], f["input_std"], inputs[0])
    per: dict[str, InputStats] = {}
    pf = f["inputs"]
    if not one and pf.present:
        names = [s.name for s in inputs]
        if sorted(pf.obj()) != sorted(names):
            raise pf.fail(f"expected one entry per input ({', '.join(names)}), got "
                          f"{', '.join(sorted(pf.obj())[:8]) or 'none'}")
        per = {s.name: _stats(pf[s.name]["mean"], pf[s.name]["std"], s) for s in inputs}
    return DriftReference(
        samples=f["samples"].integer(1, MAX_SAMPLES),
        class_hist=shares("class_hist", classes),
        confidence_edges=edges,
        confidence_hist=shares("confidence_hist", len(edges) - 1),
        input_mean=first.mean,
        input_std=first.std,
        inputs=per,
        outputs=_output_references(f["outputs"], outputs, one, watched),
    )


def _output_references(f: _Field, outputs: tuple[TensorSpec, ...], one: bool,
                       watched: set[str]) -> dict[str, OutputReference]:
    if not f.present:
        return {}
    if one:
        raise f.fail("expected no output statistics in schema 1 (schema 2 carries them)")
    obj = f.obj()
    names = [o.name for o in outputs]
    for n in sorted(obj)[:MAX_OUTPUTS + 1]:
        if n not in watched:
            why = "the class head" if n in names else "not an output"
            raise f.fail(f"expected statistics of regression or raw heads "
                         f"({', '.join(sorted(watched)) or 'none'}), got {_show(n)} ({why})")
    return {n: OutputReference(mean=f[n]["mean"].number(-math.inf, math.inf),
                               std=f[n]["std"].number(0.0, math.inf))
            for n in names if n in obj}
