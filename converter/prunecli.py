"""``edge-convert prune``: magnitude pruning with fine-tuning, and what it saves as a bundle.

Every check that needs no TensorFlow runs first (sparsity range, epochs, output path,
model path, labels in ``--train`` / ``--eval``, the profile). Then the model is fine-tuned
while pruned (:func:`converter.prune.prune_model`), the unpruned and the pruned model are
each converted to a full-int8 bundle for ``--profile`` and measured raw and in the
``.tar.zst`` frame, and only then is ``-o`` written, atomically: a failure anywhere leaves
nothing there. Registers ``distill`` (:mod:`converter.distillcli`) beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converter.errors import OptionError
from converter.prunebase import DEFAULT_PROFILE


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """``prune`` and ``distill`` subcommands, and their entries in ``commands``."""
    from converter.distillcli import add_distill_parser, cmd_distill

    p = sub.add_parser("prune", help="prune a Keras model's kernels to a sparsity while "
                       "fine-tuning it, and report the compressed bundle it makes")
    p.add_argument("model", type=Path, help=".keras or .h5 model to prune")
    p.add_argument("--train", type=Path, required=True, metavar="DATA",
                   help="labelled fine-tuning data: image folder, .npz with x and y (or a "
                   "folder of .npz shards)")
    p.add_argument("--sparsity", type=float, required=True, metavar="S",
                   help="fraction of every Dense/Conv kernel set to zero, 0.5..0.9")
    p.add_argument("--epochs", type=int, default=10, metavar="N",
                   help="fine-tuning epochs; sparsity ramps up over the first 3/4 (default 10)")
    p.add_argument("--eval", dest="eval_data", type=Path, metavar="DATA",
                   help="labelled held-out data for the before/after figures (default: --train)")
    add_training_options(p, "the pruned model")
    commands["prune"] = cmd_prune
    add_distill_parser(sub)
    commands["distill"] = cmd_distill


def add_training_options(p: argparse.ArgumentParser, result: str) -> None:
    """The flags prune and distill share; ``result`` names what ``-o`` receives."""
    p.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME",
                   help="profile the int8 bundles are measured for (default generic-x86_64)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.keras",
                   help=f"{result} (a plain .keras file)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show TF/LiteRT native logs")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR",
                   help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--time-limit", type=float, default=3600.0, metavar="S",
                   help="stop training after S seconds (default 3600)")
    p.add_argument("--samples", type=int, default=200, metavar="N",
                   help="calibration samples for the int8 bundles (default 200)")
    p.add_argument("--trust-model", action="store_true",
                   help="let Keras load Python lambda layers (runs code from the model file)")


def check_training_options(a: argparse.Namespace) -> None:
    """What prune and distill share: training flags, ``-o``, ``--eval`` labels, profile."""
    from converter.prunebase import check_keras_output, check_labelled, check_time_limit
    from edge_agent.profiles import load_profile

    if a.batch_size < 1:
        raise OptionError(f"--batch-size must be >= 1, got {a.batch_size}")
    if not (a.learning_rate > 0 and math.isfinite(a.learning_rate)):
        raise OptionError(f"--learning-rate must be a positive number, got {a.learning_rate}")
    if a.samples < 1:
        raise OptionError(f"--samples must be >= 1, got {a.samples}")
    check_time_limit(a.time_limit)
    check_keras_output(a.output)
    if a.eval_data is not None:
        check_labelled(a.eval_data, "--eval")
    load_profile(a.profile)


def _preflight(a: argparse.Namespace) -> None:
    from converter.prune import check_epochs, check_sparsity
    from converter.prunebase import check_labelled
    from converter.tfload import check_model_path

    check_sparsity(a.sparsity)
    check_epochs(a.epochs)
    check_training_options(a)
    check_model_path(a.model)
    check_labelled(a.train, "--train")


def run_prune(a: argparse.Namespace) -> dict[str, Any]:
    """Prune, measure both bundles, write ``-o``; returns the report."""
    from converter import prunebase as pb
    from converter.prune import prune_model

    _preflight(a)
    model = pb.load_keras(a.model, "MODEL", trust=a.trust_model)
    train = pb.load_data(a.train, model, labelled=True)
    ev = pb.load_data(a.eval_data, model, labelled=True) if a.eval_data else None
    y = pb.targets(train, model)
    scored = a.eval_data or a.train  # the int8 figures: on the data the float ones are
    before = pb.int8_figures(a.model, a.train, scored, a.profile, a.samples)
    pruned, rep = prune_model(model, train.x, y, sparsity=a.sparsity, epochs=a.epochs,
                              x_eval=None if ev is None else ev.x,
                              y_eval=None if ev is None else pb.targets(ev, model),
                              batch_size=a.batch_size, learning_rate=a.learning_rate,
                              seed=a.seed, time_limit_s=a.time_limit)
    with tempfile.TemporaryDirectory(prefix="edge-prune-") as tmp:
        saved = Path(tmp) / "pruned.keras"
        pb.save_keras(pruned, saved)
        after = pb.int8_figures(saved, a.train, scored, a.profile, a.samples)
        pb.write_keras(saved, a.output)
    return {"model": str(a.model), "output": str(a.output), "train": train.source,
            "eval": None if ev is None else ev.source, "pruning": rep.as_dict(),
            "bundle": {"profile": a.profile, "unpruned": before.as_dict(),
                       "pruned": after.as_dict(),
                       "zstd_ratio": round(after.bundle_zstd_bytes / before.bundle_zstd_bytes, 4),
                       "raw_ratio": round(after.bundle_tar_bytes / before.bundle_tar_bytes, 4)}}


def report_lines(r: dict[str, Any]) -> list[str]:
    p, b = r["pruning"], r["bundle"]
    unit = "top-1" if p["metric"] == "top1" else "MAE"
    lines = [f"pruned {r['model']} to {p['sparsity']:.1%} sparsity (target "
             f"{p['target_sparsity']:.0%}) in {p['epochs']} epochs, {p['steps']} steps, "
             f"{p['seconds']} s" + (" (stopped by --time-limit)" if p["stopped_early"] else ""),
             f"{'layer':<32} {'weights':>9} {'zeros':>9} {'sparsity':>8}"]
    lines += [f"{x['layer'][:32]:<32} {x['weights']:>9} {x['zeros']:>9} {x['sparsity']:>8.1%}"
              for x in p["layers"]]
    drop = f", drop {p['drop_points']} points" if p["drop_points"] is not None else ""
    lines.append(f"float {unit} on {p['evaluated_on']} data: before {p['before']}, after "
                 f"{p['after']}{drop}")
    lines.append(f"{'int8 bundle (' + b['profile'] + ')':<32} {'model':>9} {'tar':>9} "
                 f"{'tar.zst':>9} {'int8 ' + unit:>10}")
    for k in ("unpruned", "pruned"):
        f = b[k]
        lines.append(f"{k:<32} {f['int8_tflite_bytes']:>9} {f['bundle_tar_bytes']:>9} "
                     f"{f['bundle_zstd_bytes']:>9} {f['int8_top1']!s:>10}")
    lines.append(f"compressed bundle: pruned / unpruned = {b['zstd_ratio']} (raw tar "
                 f"{b['raw_ratio']}: zeros only shrink when compressed)")
    return lines


def run_and_print(a: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]],
                  lines: Callable[[dict[str, Any]], list[str]], written: str) -> int:
    """Run a training command quietly, print its report (text or ``--json``)."""
    from converter.cli import quiet_native

    with quiet_native(a.verbose):
        report = run(a)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(lines(report)))
        print(f"{written} written to {a.output}")
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    return run_and_print(a, run_prune, report_lines, "pruned model")
