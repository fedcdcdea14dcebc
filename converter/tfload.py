"""Import TensorFlow quietly, open Keras / SavedModel sources, export a fixed-batch graph.

Every source is re-exported as a SavedModel whose one signature takes a batch of
exactly one sample of every input, each under the source's own name, and returns every
output of the source under its own name. A
SavedModel is read through its ``serving_default`` signature only (never its Python
object graph), so leftover optimizer state and custom training objects do not matter.

Why batch 1: a dynamic batch dimension makes TFLite emit ``SHAPE`` / ``STRIDED_SLICE`` /
``PACK`` ops in int32 around every ``RESHAPE``: they are not quantized, the Edge TPU
compiler refuses dynamic shapes, and an edge device runs one frame at a time anyway.
The agent batches by looping (``LoadedModel.invoke_raw``).

Raises :class:`~converter.errors.ModelSourceError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import ConverterEnvironmentError, ModelSourceError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SIGNATURE = "serving_default"
SERVE_TAG = "serve"
MAX_SAVED_MODEL_PB_BYTES = 2**31 - 1  # protobuf cannot parse a larger message


def import_tf() -> Any:
    """Import TensorFlow with its C++ and Python logging turned down.

    Raises ConverterEnvironmentError when TensorFlow is not installed (agent-only install).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ConverterEnvironmentError(
            f"TensorFlow is not importable here ({e}); the converter needs it: "
            "pip install 'edge-inference[converter]'") from e

    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow the chatter TF/Keras print through Python's stdout (see also converter.quiet)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass(frozen=True)
class SourceInput:
    """One input of the source model: its signature name, per-sample shape and dtype."""

    name: str  # the model's own name (the signature key clients and .npz arrays use)
    shape: tuple[int, ...]  # without batch
    dtype: str  # numpy dtype name: float32, int32, ...


@dataclass
class SourceModel:
    """A float model ready for export: its kind, path and inputs (in the model's order)."""

    kind: str  # keras | saved_model
    path: Path
    inputs: tuple[SourceInput, ...]
    _export: Any  # (directory: str) -> None, writes the fixed-batch SavedModel

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's per-sample shape."""
        return self.inputs[0].shape

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    def export(self, directory: Path) -> Path:
        """Write a SavedModel with one ``serving_default`` signature of batch 1.

        Raises ModelSourceError when TensorFlow cannot trace the model.
        """
        out = Path(directory) / "fixed-batch"
        try:
            with quiet():
                self._export(str(out))
        except ModelSourceError:
            raise
        except Exception as e:
            raise ModelSourceError(f"{self.path}: cannot trace the model for export "
                                   f"({short_error(e)})") from e
        return out


def check_model_path(path: Path) -> None:
    """Cheap checks before TensorFlow is imported: exists, right kind of file/folder."""
    if not path.exists():
        raise ModelSourceError(f"{path}: no such model file or directory")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise ModelSourceError(f"{path}: directory is not a SavedModel (no saved_model.pb)")
        return
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelSourceError(f"{path}: expected a .keras or .h5 file, or a SavedModel directory")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelSourceError(f"{path}: cannot read model file ({e.strerror})") from e
    if path.suffix.lower() == ".keras" and not head.startswith(b"PK"):
        raise ModelSourceError(f"{path}: corrupt .keras file (not a zip archive)")
    if path.suffix.lower() in (".h5", ".hdf5") and not head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelSourceError(f"{path}: corrupt .h5 file (no HDF5 signature)")


def load_source(path: str | Path, *, trust: bool = False) -> SourceModel:
    """Open a ``.keras`` / ``.h5`` file or a SavedModel directory.

    ``trust`` lets Keras deserialize Python lambdas (``safe_mode=False``): that executes
    code stored in the file, so it is only for files the user vouches for.
    """
    p = Path(path)
    check_model_path(p)
    tf = import_tf()
    if p.is_dir():
        return _load_saved_model(tf, p)
    try:
        with quiet():
            model = tf.keras.models.load_model(str(p), compile=False, safe_mode=not trust)
        inputs = list(model.inputs)
    except Exception as e:
        if "safe_mode" in str(e):
            raise ModelSourceError(
                f"{p}: the model holds a Python lambda, which Keras loads only in unsafe mode; "
                "if you trust this file pass --trust-model") from e
        raise ModelSourceError(f"{p}: cannot load Keras model ({short_error(e)})") from e
    _some_inputs(p, "the model", len(inputs))
    names = _unique_names([signature_name(str(getattr(t, "name", "") or "input"), f"input_{i}")
                           for i, t in enumerate(inputs)])
    ins = tuple(SourceInput(n, _static_shape(p, t.shape[1:], n), tf.dtypes.as_dtype(t.dtype).name)
                for n, t in zip(names, inputs, strict=True))
    structure = getattr(model, "input", None)
    out_names = [signature_name(str(n), f"output_{i}")
                 for i, n in enumerate(getattr(model, "output_names", None) or
                                       [f"output_{i}" for i in range(len(model.outputs))])]
    out_names = _unique_names(out_names)

    def serve(*xs: Any) -> dict[str, Any]:
        """Every output under the model's own name: two outputs never share a key (the
        TFLite signature carries these names; its tensors are all StatefulPartitionedCall).
        Several inputs reach the model in the structure it was built with (list or dict)."""
        import keras

        feed = xs[0] if len(xs) == 1 else keras.tree.pack_sequence_as(structure, list(xs))
        y = model(feed, training=False)
        if isinstance(y, dict):
            return {signature_name(str(k), "output"): v for k, v in y.items()}
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        return dict(zip(out_names, ys, strict=True))

    def export(out: str) -> None:
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=_specs(tf, ins))
        archive.write_out(out, verbose=False)

    return SourceModel("keras", p, ins, export)


def _specs(tf: Any, ins: tuple[SourceInput, ...]) -> list[Any]:
    """Batch-1 TensorSpecs named by the inputs' own names (the signature keys)."""
    return [tf.TensorSpec((1, *i.shape), i.dtype, name=i.name) for i in ins]


def _load_saved_model(tf: Any, p: Path) -> SourceModel:
    """Open a SavedModel through its ``serving_default`` signature alone.

    The object graph (Python objects to revive: Keras layers, optimizers, custom training
    objects) is never touched: a tf-keras SavedModel with Adam slot variables, or one whose
    classes are not importable here, revives as ``_UserObject`` objects and fails
    (``'_UserObject' object has no attribute 'add_slot'``). Like TensorFlow Serving, we
    read the MetaGraph tagged ``serve`` and its signature, restore the variables in a
    session and freeze them into constants (:func:`_freeze`).
    """
    meta = _serving_meta_graph(tf, p)
    sigs = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    if SIGNATURE not in sigs:
        have = ", ".join(sorted(sigs)) or "none"
        raise ModelSourceError(f"{p}: SavedModel has no {SIGNATURE!r} signature (has: {have})")
    sig = sigs[SIGNATURE]
    _some_inputs(p, f"the {SIGNATURE!r} signature", len(sig.inputs))
    if not sig.outputs:
        raise ModelSourceError(f"{p}: the {SIGNATURE!r} signature has no outputs")
    keys = sorted(sig.inputs)
    names = _unique_names([signature_name(str(k), f"input_{i}") for i, k in enumerate(keys)])
    ins = []
    for key, name in zip(keys, names, strict=True):
        info = sig.inputs[key]
        if info.tensor_shape.unknown_rank:
            raise ModelSourceError(f"{p}: the {SIGNATURE!r} input {key!r} has an unknown rank; "
                                   "export the model with a fixed input shape")
        dims = [d.size for d in info.tensor_shape.dim]
        ins.append(SourceInput(name, _static_shape(p, [None if d < 0 else d for d in dims[1:]],
                                                   name),
                               tf.dtypes.as_dtype(info.dtype).name))
    tensors = [sig.inputs[k].name for k in keys]
    outputs = {key: t.name for key, t in sorted(sig.outputs.items())}
    frozen = _freeze(tf, p, tuple(meta.meta_info_def.tags), list(outputs.values()))

    def export(out: str) -> None:
        def serve(*xs: Any) -> dict[str, Any]:
            got = tf.graph_util.import_graph_def(
                frozen, input_map=dict(zip(tensors, xs, strict=True)),
                return_elements=list(outputs.values()), name="saved_model")
            return dict(zip(outputs, got, strict=True))

        module = tf.Module()
        module.serve = tf.function(serve, input_signature=_specs(tf, tuple(ins)))
        tf.saved_model.save(module, out, signatures={SIGNATURE: module.serve})

    return SourceModel("saved_model", p, tuple(ins), export)


def _serving_meta_graph(tf: Any, p: Path) -> Any:
    """The MetaGraphDef tagged ``serve``, read from ``saved_model.pb`` without loading it.

    Raises ModelSourceError when the file does not parse or has no ``serve`` graph.
    """
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    pb, pbtxt = p / "saved_model.pb", p / "saved_model.pbtxt"
    src = pb if pb.is_file() else pbtxt
    try:
        size = src.stat().st_size
        if size > MAX_SAVED_MODEL_PB_BYTES:
            raise ModelSourceError(f"{p}: cannot load SavedModel ({src.name} is {size} bytes, "
                                   f"more than protobuf's {MAX_SAVED_MODEL_PB_BYTES})")
        data = src.read_bytes()
        proto = saved_model_pb2.SavedModel()
        if src is pb:
            proto.ParseFromString(data)
        else:
            text_format.Parse(data.decode("utf-8"), proto)
    except (OSError, UnicodeDecodeError, message.DecodeError, text_format.ParseError) as e:
        raise ModelSourceError(f"{p}: cannot load SavedModel ({src.name}: "
                               f"{short_error(e)})") from e
    for meta in proto.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    have = "; ".join(",".join(m.meta_info_def.tags) or "(no tags)" for m in proto.meta_graphs)
    raise ModelSourceError(f"{p}: cannot load SavedModel (no graph tagged {SERVE_TAG!r}; "
                           f"has: {have or 'no graphs'})")


def _freeze(tf: Any, p: Path, tags: tuple[str, ...], outputs: list[str]) -> Any:
    """The serving graph with its variables turned into constants (a ``GraphDef``).

    ``tf.compat.v1.saved_model.loader.load`` restores the variables from the checkpoint
    by the MetaGraph's saver, as TensorFlow Serving does; only the ops the outputs need
    are kept, so optimizer slots and training ops are dropped.
    """
    try:
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.saved_model.loader.load(sess, list(tags), str(p))
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), sorted({n.split(":")[0] for n in outputs}))
    except Exception as e:
        raise ModelSourceError(f"{p}: cannot load SavedModel ({short_error(e)})") from e
    _own_library(frozen)
    return frozen


def _own_library(graph_def: Any) -> None:
    """Keep only the library functions the graph calls, renamed apart from this process's.

    Freezing adds ``…_frozen_N`` copies of the functions that read variables but leaves
    the originals (and ``_traced_save``/``_traced_restore``) in the library, some calling
    functions it dropped; saving that library again would not load back. The functions it
    keeps unchanged carry the names they were traced under: in a process that traced the
    model itself (the Python API), importing them would clash with those definitions. A
    suffix from the library's own bytes makes the names unique and the output reproducible.
    """
    def called(nodes: Any) -> set[str]:
        names: set[str] = set()
        for node in nodes:
            for value in node.attr.values():
                if value.HasField("func"):
                    names.add(value.func.name)
                names.update(f.name for f in value.list.func)
        return names

    library = graph_def.library
    by_name = {f.signature.name: f for f in library.function}
    keep: set[str] = set()
    todo = called(graph_def.node)
    while todo:  # bounded: each function name is visited once
        name = todo.pop()
        if name in keep or name not in by_name:
            continue
        keep.add(name)
        todo |= called(by_name[name].node_def)
    functions = [f for f in library.function if f.signature.name in keep]
    gradients = [g for g in library.gradient if g.function_name in keep]
    del library.function[:], library.gradient[:]
    library.function.extend(functions)
    library.gradient.extend(gradients)

    suffix = hashlib.sha256(library.SerializeToString(deterministic=True)).hexdigest()[:12]
    new = {name: f"{name}_sm{suffix}" for name in keep}

    def rename(nodes: Any) -> None:
        for node in nodes:
            for value in node.attr.values():
                if value.HasField("func") and value.func.name in new:
                    value.func.name = new[value.func.name]
                for f in value.list.func:
                    f.name = new.get(f.name, f.name)

    rename(graph_def.node)
    for f in library.function:
        f.signature.name = new[f.signature.name]
        rename(f.node_def)
    for g in library.gradient:
        g.function_name = new[g.function_name]
        g.gradient_func = new.get(g.gradient_func, g.gradient_func)


def _some_inputs(p: Path, what: str, count: int) -> None:
    """A model with no input cannot be fed (nor calibrated)."""
    if count == 0:
        raise ModelSourceError(f"{p}: {what} takes no inputs")


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


def signature_name(name: str, default: str) -> str:
    """A model's tensor name as a signature key (what clients send and get): the name
    without its ``:0`` suffix, characters TF refuses in op names replaced by ``_``."""
    base = name.rsplit(":", 1)[0] if name.rpartition(":")[2].isdigit() else name
    base = _NAME_BAD.sub("_", base).lstrip("_.-")
    return base[:64] or default


def _unique_names(names: list[str]) -> list[str]:
    """Two heads with the same name both stay: the second becomes ``name_1`` and so on."""
    seen: set[str] = set()
    out = []
    for n in names:
        k, i = n, 0
        while k in seen:
            i += 1
            k = f"{n}_{i}"
        seen.add(k)
        out.append(k)
    return out


def _static_shape(p: Path, dims: Any, name: str) -> tuple[int, ...]:
    shape = tuple(dims)
    if any(d is None for d in shape):
        raise ModelSourceError(f"{p}: input {name!r} shape {list(shape)} has unknown dimensions "
                               "besides the batch; export the model with a fixed input size")
    return tuple(int(d) for d in shape)


def short_error(e: BaseException) -> str:
    """First meaningful line of an exception message, capped (TF messages run for pages)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("<unknown>", "Traceback"))] or lines
    return (lines[0] if lines else type(e).__name__)[:300]
