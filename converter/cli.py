"""``edge-convert``: convert, inspect and verify model bundles; list device profiles.

Exit codes: 0 ok, 1 verification failed, 2 bad input / conversion impossible.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeError


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-convert", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="quantize a Keras/SavedModel model into a bundle")
    c.add_argument("model", type=Path, help=".keras, .h5 or SavedModel directory")
    c.add_argument("--representative", type=Path, required=True,
                   help="calibration data: image folder, .npz or .npy")
    c.add_argument("--profile", required=True, help="device profile name (edge-convert profiles)")
    c.add_argument("--eval", dest="eval_data", type=Path, help="labelled evaluation data")
    c.add_argument("--labels", type=Path, help="labels file, one per line")
    c.add_argument("--mode", default="int8", choices=["int8", "int16x8", "float16", "dynamic"])
    c.add_argument("--io-dtype", choices=["int8", "uint8", "float32"],
                   help="model input/output dtype (default: the profile's)")
    c.add_argument("--samples", type=int, default=200, help="representative samples (default 200)")
    c.add_argument("--name", help="model name (default: the model file's stem)")
    c.add_argument("--version", type=int, default=1, help="positive integer version")
    c.add_argument("--mean", type=_floats, default=(0.0,), help="per-channel mean (pixels)")
    c.add_argument("--std", type=_floats, default=(255.0,), help="per-channel std (pixels)")
    c.add_argument("--color", choices=["rgb", "grayscale"], help="default: from input channels")
    c.add_argument("-o", "--output", type=Path, required=True, help="bundle dir or .tar")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    pr = sub.add_parser("profiles", help="list device profiles")
    pr.add_argument("--json", action="store_true")
    i = sub.add_parser("inspect", help="print a bundle's manifest")
    i.add_argument("bundle", type=Path)
    i.add_argument("--json", action="store_true")
    v = sub.add_parser("verify", help="check golden vectors on every runtime available here")
    v.add_argument("bundle", type=Path)
    v.add_argument("--json", action="store_true")
    return p


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    from converter.build import Steps

    if not enabled:
        yield Steps()
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), transient=False) as prog:

        class RichSteps(Steps):
            def stage(self, name: str) -> None:
                prog.console.log(name)

            def start(self, name: str, total: int) -> Callable[[int], None]:
                tid = prog.add_task(name, total=total)
                return lambda n: prog.advance(tid, n)

        yield RichSteps()


def cmd_convert(a: argparse.Namespace) -> int:
    from converter.build import ConvertOptions, convert_to_bundle
    from converter.report import print_report
    from edge_agent.bundle import Preprocessing

    if a.version < 1:
        raise EdgeError(f"--version must be a positive integer, got {a.version}")
    if a.samples < 1:
        raise EdgeError(f"--samples must be >= 1, got {a.samples}")
    pre = Preprocessing(mean=a.mean, std=a.std, color=a.color or "rgb")
    opts = ConvertOptions(model=a.model, representative=a.representative, profile=a.profile,
                          output=a.output, eval_data=a.eval_data, labels_file=a.labels,
                          mode=a.mode, io_dtype=a.io_dtype, samples=a.samples, name=a.name,
                          version=a.version, preprocessing=pre)
    with _progress(not a.json and sys.stderr.isatty()) as steps:
        report = convert_to_bundle(opts, steps)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
        print(f"bundle written to {a.output}")
    return 0


def cmd_profiles(a: argparse.Namespace) -> int:
    from dataclasses import asdict

    from converter.report import print_profiles
    from edge_agent.profiles import all_profiles

    profs = all_profiles()
    if a.json:
        print(json.dumps([asdict(p) for p in profs], indent=1))
    else:
        print_profiles(profs)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from converter.report import manifest_summary
    from edge_agent.bundle import read_bundle

    b = read_bundle(a.bundle)
    if a.json:
        print(json.dumps({"manifest": b.manifest.to_dict(), "report": b.report}, indent=1))
        return 0
    for k, v in manifest_summary(b.manifest):
        print(f"{k:>16}  {v}")
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from edge_agent.bundle import read_bundle
    from edge_agent.runtime.backends import available_runtimes
    from edge_agent.runtime.model import verify_golden

    b = read_bundle(a.bundle)
    results: list[dict[str, Any]] = []
    failed = False
    for rt in available_runtimes(include_tensorflow=True):
        try:
            g = verify_golden(b, rt)
            results.append({"runtime": str(rt), "ok": True, "vectors": g.vectors,
                            "max_abs_diff": g.max_abs_diff})
        except EdgeError as e:
            failed = True
            results.append({"runtime": str(rt), "ok": False, "error": str(e)})
    if not results:
        raise EdgeError("no LiteRT runtime available here to verify with")
    if a.json:
        print(json.dumps({"bundle": str(a.bundle), "ok": not failed, "results": results},
                         indent=1))
    else:
        for r in results:
            status = (f"ok ({r['vectors']} vectors, max diff {r['max_abs_diff']:g})" if r["ok"]
                      else f"FAILED: {r['error']}")
            print(f"{r['runtime']:>28}  {status}")
    return 1 if failed else 0


COMMANDS = {"convert": cmd_convert, "profiles": cmd_profiles, "inspect": cmd_inspect,
            "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except EdgeError as e:
        print(f"edge-convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-convert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
