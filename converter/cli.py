"""``edge-convert``: convert, inspect and verify model bundles; list device profiles.

Exit codes: 0 ok; 1 verification failed; 2 bad input (model, data, profile, output
path, bundle, flags); 3 the requested quantization is impossible (names the ops);
4 environment (no usable LiteRT runtime, model rejected by the runtime); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

from converter.errors import UnsupportedOpsError
from converter.modes import BUNDLE_MODES
from edge_agent.errors import BadInputError, EdgeError

EXIT_OK, EXIT_VERIFY, EXIT_BAD_INPUT, EXIT_IMPOSSIBLE, EXIT_ENV = 0, 1, 2, 3, 4
PROG = "edge-convert"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Convert Keras/SavedModel models into int8 TFLite "
                "bundles for edge boards; inspect and verify bundles.",
                epilog="exit codes: 0 ok, 1 verification failed, 2 bad input, 3 quantization "
                "impossible, 4 no usable runtime, 130 interrupted")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("convert", help="quantize a Keras/SavedModel model into a bundle")
    c.add_argument("model", type=Path, help=".keras, .h5 or SavedModel directory")
    c.add_argument("--representative", type=Path, required=True, metavar="DATA",
                   help="calibration data: image folder, .npz (one array per input name, "
                   "or x), folder of .npz shards, or .npy")
    c.add_argument("--profile", required=True, metavar="NAME",
                   help="device profile name (edge-convert profiles) or path to a profile .toml")
    c.add_argument("--eval", dest="eval_data", type=Path, metavar="DATA",
                   help="labelled evaluation data: image folder, or .npz (or shards) with "
                   "the inputs and y (class indices or regression targets)")
    c.add_argument("--labels", type=Path, metavar="FILE",
                   help="labels file, one class name per line")
    c.add_argument("--mode", default="int8", choices=list(BUNDLE_MODES),
                   help="quantization (default int8: every op int8)")
    c.add_argument("--task", choices=["classification", "regression", "multi_output",
                                      "detection", "raw"],
                   help="what the outputs are (default: inferred; one non-probability output "
                   "with float targets 'y' is regression)")
    _add_heads(c)
    c.add_argument("--allow-float-ops", action="store_true",
                   help="with --mode int8: ops without an int8 kernel stay float, the rest is "
                   "int8 (not for full-integer profiles such as Coral)")
    c.add_argument("--io-dtype", choices=["int8", "uint8", "float32"],
                   help="model input/output dtype (default: the profile's)")
    c.add_argument("--samples", type=int, default=200, metavar="N",
                   help="representative samples drawn, deterministically (default 200)")
    c.add_argument("--name", help="model name (default: the model file's stem)")
    c.add_argument("--version", type=int, default=1, metavar="V", help="positive integer version")
    _add_image_options(c)
    c.add_argument("--latency-runs", type=int, default=50, metavar="N",
                   help="timed invokes per model for the latency figures (0 skips)")
    c.add_argument("--trust-model", action="store_true",
                   help="let Keras load Python lambda layers (runs code from the model file)")
    c.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="bundle directory, or a path ending in .tar or .tar.zst (zstd-compressed)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="show TensorFlow/LiteRT native logs instead of hiding them")
    c.add_argument("--max-drop", type=float, metavar="PP",
                   help="accuracy budget in points below float top-1 on --eval: start from "
                   "full int8 and keep the fewest most sensitive ops float to meet it")
    c.add_argument("--max-error", type=float, metavar="REL",
                   help="like --max-drop for non-classification heads: relative output error "
                   "(mean |q - f| / mean |f|) on --eval")
    _add_bundle_parser(sub)
    from converter.analyzecli import add_analyze_parser

    add_analyze_parser(sub)
    from converter.prunecli import add_parsers  # prune, distill
    add_parsers(sub, COMMANDS)
    pr = sub.add_parser("profiles", help="list device profiles")
    pr.add_argument("--json", action="store_true")
    i = sub.add_parser("inspect", help="print a bundle's manifest")
    i.add_argument("bundle", type=Path)
    i.add_argument("--json", action="store_true", help="print manifest and report as JSON")
    v = sub.add_parser("verify", help="check golden vectors on every runtime available here")
    v.add_argument("bundle", type=Path)
    v.add_argument("--json", action="store_true")
    v.add_argument("-v", "--verbose", action="store_true")
    return p


def _add_image_options(p: argparse.ArgumentParser) -> None:
    """How images become the image input's values (convert and bundle alike)."""
    p.add_argument("--mean", type=_floats, default=(0.0,), metavar="M[,M,M]",
                   help="per-channel mean in pixels, model input = (pixel - mean) / std "
                   "(default 0)")
    p.add_argument("--std", type=_floats, default=(255.0,), metavar="S[,S,S]",
                   help="per-channel std in pixels (default 255: pixels to [0, 1])")
    p.add_argument("--color", choices=["rgb", "grayscale"],
                   help="default: from the image input's channels")
    p.add_argument("--image-input", metavar="NAME",
                   help="the input images feed (default: the model's one NHWC input of 1 or "
                   "3 channels; needed when it has several)")


def _add_bundle_parser(sub: Any) -> None:
    from edge_agent.manifest import TASKS

    b = sub.add_parser("bundle", help="wrap an existing .tflite into a bundle (no TensorFlow)")
    b.add_argument("model", type=Path, help="a .tflite flatbuffer (float, dynamic or int8)")
    b.add_argument("--name", required=True, help="model name")
    b.add_argument("--version", type=int, required=True, metavar="V",
                   help="positive integer version")
    b.add_argument("--labels", type=Path, metavar="FILE",
                   help="labels file, one class name per value of the class head")
    b.add_argument("--representative", type=Path, metavar="DATA",
                   help=".npz with one array per input name (or x), or .npy: golden inputs "
                   "and the drift reference (default: generated inputs, no drift reference)")
    b.add_argument("--profile", default="generic-x86_64", metavar="NAME",
                   help="device profile the op table is checked against (default generic-x86_64)")
    b.add_argument("--task", choices=list(TASKS), help="default: from the outputs")
    _add_heads(b)
    b.add_argument("--samples", type=int, default=200, metavar="N",
                   help="representative samples read (default 200)")
    _add_image_options(b)
    b.add_argument("--latency-runs", type=int, default=50, metavar="N",
                   help="timed invokes for the latency figures (0 skips)")
    b.add_argument("--variant", action="append", default=[], metavar="NAME=BUNDLE[,OPT]",
                   help="add BUNDLE's model (same model, other quantization or compile) as "
                   "variant NAME, preferred before this one in the order given; options "
                   "delegate=edgetpu|gpu|xnnpack, min_runtime=VERSION (docs/bundle.md)")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="bundle directory, or a path ending in .tar or .tar.zst (zstd-compressed)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.add_argument("-v", "--verbose", action="store_true", help="show LiteRT native logs")


def _add_heads(p: Any) -> None:
    p.add_argument("--heads", metavar="NAME=ROLE,...",
                   help="with --task detection: which output is boxes, scores, classes, count "
                   "or raw (default: from the outputs' names and shapes)")


@contextlib.contextmanager
def _progress(term: TextIO | None) -> Iterator[Any]:
    """Steps that draw a rich progress bar on ``term`` (a TTY), or do nothing."""
    from converter.build import Steps

    if term is None:
        yield Steps()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    prog = Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(file=term), transient=True)

    class RichSteps(Steps):
        current: Any = None

        def _done(self) -> None:
            for task in prog.tasks:
                if task.id == self.current:
                    prog.update(task.id, total=task.total or 1, completed=task.total or 1)
            self.current = None

        def stage(self, name: str) -> None:
            self._done()
            self.current = prog.add_task(name, total=None)

        def start(self, name: str, total: int) -> Callable[[int], None]:
            self._done()
            tid = self.current = prog.add_task(name, total=max(total, 1))
            return lambda n: prog.advance(tid, n)

    with prog:
        steps = RichSteps()
        yield steps
        steps._done()


@contextlib.contextmanager
def quiet_native(verbose: bool) -> Iterator[None]:
    """Hide native TF/LiteRT chatter; surface error-looking lines and crash context."""
    from converter.quiet import captured_output

    cap = None
    try:
        with captured_output(enabled=not verbose) as cap:
            yield
    except (EdgeError, KeyboardInterrupt):
        raise
    except BaseException:
        if cap is not None and cap.text:  # a bug: show everything that may explain it
            sys.stderr.write(cap.text)
        raise
    for line in cap.error_lines():
        print(f"{PROG}: native: {line}", file=sys.stderr)


def cmd_convert(a: argparse.Namespace) -> int:
    from converter.build import ConvertOptions, convert_to_bundle
    from converter.dettask import parse_heads
    from converter.quiet import terminal
    from converter.report import print_report
    from edge_agent.bundle import Preprocessing

    opts = ConvertOptions(model=a.model, representative=a.representative, profile=a.profile,
                          output=a.output, eval_data=a.eval_data, labels_file=a.labels,
                          mode=a.mode, task=a.task, heads=parse_heads(a.heads),
                          allow_float_ops=a.allow_float_ops,
                          io_dtype=a.io_dtype,
                          samples=a.samples, name=a.name,
                          version=a.version, preprocessing=Preprocessing(mean=a.mean, std=a.std),
                          color=a.color, image_input=a.image_input, trust_model=a.trust_model,
                          latency_runs=a.latency_runs, max_drop=a.max_drop,
                          max_error=a.max_error)
    with terminal() as term:
        show = not a.json and not a.verbose and term.isatty()
        with quiet_native(a.verbose), _progress(term if show else None) as steps:
            report = convert_to_bundle(opts, steps)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
        print(f"bundle written to {a.output}")
    return EXIT_OK


def cmd_bundle(a: argparse.Namespace) -> int:
    from converter.dettask import parse_heads
    from converter.wrap import WrapOptions, report_lines, wrap_to_bundle
    from edge_agent.bundle import Preprocessing

    opts = WrapOptions(model=a.model, name=a.name, version=a.version, output=a.output,
                       labels_file=a.labels, representative=a.representative, profile=a.profile,
                       task=a.task, heads=parse_heads(a.heads), samples=a.samples,
                       latency_runs=a.latency_runs,
                       preprocessing=Preprocessing(mean=a.mean, std=a.std), color=a.color,
                       image_input=a.image_input)
    if a.variant:  # wrapped beside OUT first: a bad variant leaves nothing at OUT
        from converter.variants import wrap_with_variants

        with quiet_native(a.verbose):
            report = wrap_with_variants(opts, a.variant)
    else:
        with quiet_native(a.verbose):
            report = wrap_to_bundle(opts)
    print(json.dumps(report, indent=1) if a.json else "\n".join(report_lines(report)))
    if not a.json:
        print(f"bundle written to {a.output}")
    return EXIT_OK


def cmd_profiles(a: argparse.Namespace) -> int:
    from dataclasses import asdict

    from converter.report import print_profiles
    from edge_agent.profiles import all_profiles

    profs = all_profiles()
    if a.json:
        print(json.dumps([asdict(p) for p in profs], indent=1))
    else:
        print_profiles(profs)
    return EXIT_OK


def cmd_inspect(a: argparse.Namespace) -> int:
    from converter.report import manifest_summary
    from edge_agent.bundle import read_bundle

    b = read_bundle(a.bundle)
    if a.json:
        print(json.dumps({"manifest": b.manifest.to_dict(), "report": b.report}, indent=1))
        return EXIT_OK
    for k, v in manifest_summary(b.manifest):
        print(f"{k:>16}  {v}")
    return EXIT_OK


def cmd_verify(a: argparse.Namespace) -> int:
    from edge_agent.bundle import read_bundle
    from edge_agent.runtime.backends import available_runtimes
    from edge_agent.runtime.model import verify_golden

    b = read_bundle(a.bundle)
    results: list[dict[str, Any]] = []
    with quiet_native(a.verbose):
        for rt in available_runtimes(include_tensorflow=True):
            try:
                g = verify_golden(b, rt)
                results.append({"runtime": str(rt), "ok": True, "vectors": g.vectors,
                                "max_abs_diff": g.max_abs_diff})
            except EdgeError as e:
                results.append({"runtime": str(rt), "ok": False, "error": _one_line(e)})
    if not results:
        from edge_agent.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError("no LiteRT runtime available here to verify with")
    ok = all(r["ok"] for r in results)
    if a.json:
        print(json.dumps({"bundle": str(a.bundle), "ok": ok, "results": results}, indent=1))
    else:
        for r in results:
            status = (f"ok ({r['vectors']} vectors, max diff {r['max_abs_diff']:g})" if r["ok"]
                      else f"FAILED: {r['error']}")
            print(f"{r['runtime']:>28}  {status}")
    return EXIT_OK if ok else EXIT_VERIFY


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "convert": cmd_convert, "bundle": cmd_bundle, "profiles": cmd_profiles, "inspect": cmd_inspect,
    "verify": cmd_verify}


def _cmd_analyze(a: argparse.Namespace) -> int:
    from converter.analyzecli import cmd_analyze

    return cmd_analyze(a)


COMMANDS["analyze"] = _cmd_analyze


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def exit_code(e: EdgeError) -> int:
    if isinstance(e, UnsupportedOpsError):
        return EXIT_IMPOSSIBLE
    if isinstance(e, BadInputError):
        return EXIT_BAD_INPUT
    return EXIT_ENV


def main(argv: list[str] | None = None) -> int:
    # Before anything imports TensorFlow or LiteRT: no C++ INFO/WARNING logging.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except EdgeError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
