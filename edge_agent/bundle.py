"""The model bundle: ``model.tflite`` + ``manifest.json`` + ``report.json``.

A bundle is a directory or an uncompressed ``.tar`` of the same three files (see
``docs/bundle.md``). This module is pure data + file IO; it never imports a runtime.

Raises :class:`~edge_agent.errors.BundleError` for anything malformed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import BundleError
from edge_agent.fsutil import atomic_write_bytes, staged_dir

SCHEMA_VERSION = 1
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
BUNDLE_FILES = (MODEL_FILE, MANIFEST_FILE, REPORT_FILE)
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # bytes; a tar member larger than this is refused
DTYPES = ("int8", "uint8", "int16", "int32", "float32", "float16")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        return self.scale != 0.0 and self.dtype in ("int8", "uint8", "int16")


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


@dataclass(frozen=True)
class GoldenVector:
    """An input tensor and the output tensor this model must give for it (raw tensor units)."""

    input: EncodedArray
    output: EncodedArray
    atol: float  # in output tensor units (quantized steps for int8 outputs)


@dataclass(frozen=True)
class DriftReference:
    """Calibration-time statistics the agent compares live traffic against (PSI)."""

    samples: int
    class_hist: tuple[float, ...]  # share of predictions per class, sums to 1
    confidence_edges: tuple[float, ...]  # histogram bin edges of top-1 probability
    confidence_hist: tuple[float, ...]  # share per bin, sums to 1
    input_mean: tuple[float, ...]  # per channel, model-input (normalized) units
    input_std: tuple[float, ...]


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
    task: str = "classification"  # classification | raw
    output_is_probability: bool = True
    labels: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()
    golden: tuple[GoldenVector, ...] = ()
    drift_reference: DriftReference | None = None
    converter_version: str = ""
    tensorflow_version: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = {"file": MODEL_FILE, "sha256": d.pop("model_sha256"),
                      "size_bytes": d.pop("model_size")}
        d["producer"] = {"converter": d.pop("converter_version"),
                         "tensorflow": d.pop("tensorflow_version")}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest.json") -> Manifest:
        try:
            return _manifest_from_dict(d)
        except BundleError as e:
            raise BundleError(f"{source}: {e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from e


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if not isinstance(d, dict):
        raise BundleError(f"expected an object holding {key!r}, got {type(d).__name__}")
    if key not in d:
        raise BundleError(f"missing key {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ in (int, float, (int, float))):
        raise BundleError(f"key {key!r}: expected {typ}, got {type(v).__name__}")
    return v


def _tensor(d: dict[str, Any]) -> TensorSpec:
    dtype = _get(d, "dtype", str)
    if dtype not in DTYPES:
        raise BundleError(f"tensor dtype {dtype!r} not one of {DTYPES}")
    return TensorSpec(
        name=_get(d, "name", str), shape=tuple(int(x) for x in _get(d, "shape", list)),
        dtype=dtype, scale=float(_get(d, "scale", (int, float))),
        zero_point=int(_get(d, "zero_point", int)),
    )


def _arr(d: dict[str, Any]) -> EncodedArray:
    return EncodedArray(_get(d, "dtype", str), tuple(int(x) for x in _get(d, "shape", list)),
                        _get(d, "b64", str))


def _manifest_from_dict(d: dict[str, Any]) -> Manifest:
    sv = _get(d, "schema_version", int)
    if sv != SCHEMA_VERSION:
        raise BundleError(f"schema_version {sv} not supported (this agent reads {SCHEMA_VERSION})")
    model = _get(d, "model", dict)
    prod = d.get("producer", {})
    pre = _get(d, "preprocessing", dict)
    resize = pre.get("resize")
    drift = d.get("drift_reference")
    version = _get(d, "version", int)
    if version < 1:
        raise BundleError(f"version must be a positive integer, got {version}")
    return Manifest(
        name=_get(d, "name", str),
        version=version,
        created_at=_get(d, "created_at", str),
        model_sha256=_get(model, "sha256", str),
        model_size=_get(model, "size_bytes", int),
        inputs=tuple(_tensor(t) for t in _get(d, "inputs", list)),
        outputs=tuple(_tensor(t) for t in _get(d, "outputs", list)),
        preprocessing=Preprocessing(
            resize=(int(resize[0]), int(resize[1])) if resize else None,
            color=pre.get("color", "rgb"), channel_order=pre.get("channel_order", "rgb"),
            layout=pre.get("layout", "nhwc"),
            mean=tuple(float(x) for x in pre.get("mean", (0.0,))),
            std=tuple(float(x) for x in pre.get("std", (255.0,))),
            resample=pre.get("resample", "bilinear"),
        ),
        quantization_mode=_get(d, "quantization_mode", str),
        task=d.get("task", "classification"),
        output_is_probability=bool(d.get("output_is_probability", True)),
        labels=tuple(str(x) for x in d.get("labels", ())),
        target_profiles=tuple(str(x) for x in d.get("target_profiles", ())),
        golden=tuple(
            GoldenVector(_arr(g["input"]), _arr(g["output"]), float(g["atol"]))
            for g in d.get("golden", ())
        ),
        drift_reference=DriftReference(
            samples=int(drift["samples"]),
            class_hist=tuple(drift["class_hist"]),
            confidence_edges=tuple(drift["confidence_edges"]),
            confidence_hist=tuple(drift["confidence_hist"]),
            input_mean=tuple(drift["input_mean"]),
            input_std=tuple(drift["input_std"]),
        ) if drift else None,
        converter_version=str(prod.get("converter", "")),
        tensorflow_version=str(prod.get("tensorflow", "")),
        schema_version=sv,
        extra=dict(d.get("extra", {})),
    )


@dataclass(frozen=True)
class Bundle:
    """A bundle opened from disk: its manifest, model bytes and report."""

    manifest: Manifest
    model_bytes: bytes
    report: dict[str, Any]
    source: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def files(self) -> dict[str, bytes]:
        return {
            MODEL_FILE: self.model_bytes,
            MANIFEST_FILE: self.manifest.to_json().encode(),
            REPORT_FILE: (json.dumps(self.report, indent=1, sort_keys=True) + "\n").encode(),
        }


def _parse_files(files: dict[str, bytes], source: str, verify_hash: bool) -> Bundle:
    for f in (MODEL_FILE, MANIFEST_FILE):
        if f not in files:
            raise BundleError(f"{source}: missing {f}")
    try:
        mdict = json.loads(files[MANIFEST_FILE])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{source}: manifest.json is not valid JSON ({e})") from e
    if not isinstance(mdict, dict):
        raise BundleError(f"{source}: manifest.json must hold an object")
    manifest = Manifest.from_dict(mdict, f"{source}/manifest.json")
    model = files[MODEL_FILE]
    if verify_hash:
        if len(model) != manifest.model_size:
            raise BundleError(f"{source}: model.tflite is {len(model)} bytes, manifest says "
                              f"{manifest.model_size}")
        got = sha256_bytes(model)
        if got != manifest.model_sha256:
            raise BundleError(f"{source}: model.tflite sha256 {got[:16]}… does not match "
                              f"manifest {manifest.model_sha256[:16]}…")
    report: dict[str, Any] = {}
    if REPORT_FILE in files:
        try:
            report = json.loads(files[REPORT_FILE])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{source}: report.json is not valid JSON ({e})") from e
    return Bundle(manifest, model, report, source)


def read_tar_bytes(data: bytes, source: str = "<bytes>", verify_hash: bool = True) -> Bundle:
    """Open a bundle ``.tar`` held in memory; only the known member names are read."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf.getmembers():
                if m.name.lstrip("./") not in BUNDLE_FILES or not m.isfile():
                    continue  # never extract unknown paths (no traversal possible)
                if m.size > MAX_MEMBER_BYTES:
                    raise BundleError(f"{source}: {m.name} is {m.size} bytes, over the cap")
                f = tf.extractfile(m)
                assert f is not None
                files[m.name.lstrip("./")] = f.read()
    except (tarfile.TarError, EOFError) as e:
        raise BundleError(f"{source}: not a valid bundle tar ({e})") from e
    return _parse_files(files, source, verify_hash)


def read_bundle(path: str | Path, verify_hash: bool = True) -> Bundle:
    """Open a bundle directory or ``.tar``; verifies model size and sha256 by default."""
    p = Path(path)
    if p.is_dir():
        files = {}
        for f in BUNDLE_FILES:
            fp = p / f
            if fp.is_file():
                try:
                    files[f] = fp.read_bytes()
                except OSError as e:
                    raise BundleError(f"{p}: cannot read {f}: {e.strerror}") from e
        return _parse_files(files, str(p), verify_hash)
    if p.is_file():
        try:
            data = p.read_bytes()
        except OSError as e:
            raise BundleError(f"{p}: cannot read: {e.strerror}") from e
        return read_tar_bytes(data, str(p), verify_hash)
    raise BundleError(f"{p}: no such bundle (expected a directory or a .tar)")


def tar_bytes(bundle: Bundle) -> bytes:
    """Deterministic tar of the bundle (fixed order, mtime 0, no owner names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name, data in bundle.files().items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write_bundle(bundle: Bundle, out: str | Path) -> Path:
    """Write a bundle atomically: ``out`` ending in ``.tar`` gives a tar, else a directory.

    Nothing half-written is ever left at ``out``. Raises ``OSError`` if unwritable.
    """
    out = Path(out)
    if out.suffix == ".tar":
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, tar_bytes(bundle))
        return out
    with staged_dir(out) as tmp:
        for name, data in bundle.files().items():
            (tmp / name).write_bytes(data)
    return out
