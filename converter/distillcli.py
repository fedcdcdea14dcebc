"""``edge-convert distill``: train a small student from a trained teacher (Keras 3).

Checks needing no TensorFlow first (options, output path, both model paths, DATA, labels
in ``--eval``, the profile); then both models are loaded and their shapes compared (a
student whose input or output shape is not the teacher's is a one-line error), the
student is distilled (:func:`converter.distill.distill_model`), converted to a full-int8
bundle to measure it, and only then is ``-o`` written, atomically.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


def add_distill_parser(sub: Any) -> None:
    from converter.prunecli import add_training_options

    d = sub.add_parser("distill", help="distill a trained teacher into a smaller student "
                       "(keras.distillation) and report teacher, student and student-int8")
    d.add_argument("teacher", type=Path, help="trained .keras or .h5 teacher")
    d.add_argument("--student", type=Path, required=True, metavar="STUDENT.keras",
                   help="the student model (its architecture; weights are trained from there)")
    d.add_argument("--data", type=Path, required=True, metavar="DATA",
                   help="training data, labelled or not: image folder, .npz (x, optional y), "
                   "folder of .npz shards, or .npy")
    d.add_argument("--eval", dest="eval_data", type=Path, metavar="DATA",
                   help="labelled held-out data for the figures (default: --data, if labelled)")
    d.add_argument("--temperature", type=float, default=4.0, metavar="T",
                   help="softmax temperature of the distillation loss (default 4)")
    d.add_argument("--alpha", type=float, default=0.1, metavar="A",
                   help="weight of the label loss, 0..1, used only when DATA has labels; "
                   "the teacher's loss weighs 1 - A (default 0.1)")
    d.add_argument("--epochs", type=int, default=10, metavar="N", help="default 10")
    add_training_options(d, "the trained student")


def _preflight(a: argparse.Namespace) -> None:
    from converter.data import check_data_path
    from converter.distill import check_options
    from converter.prunecli import check_training_options
    from converter.tfload import check_model_path

    check_options(a.temperature, a.alpha, a.epochs)
    check_training_options(a)
    check_model_path(a.teacher)
    check_model_path(a.student)
    check_data_path(a.data)


def run_distill(a: argparse.Namespace) -> dict[str, Any]:
    from converter import prunebase as pb
    from converter.distill import check_pair, distill_model

    _preflight(a)
    teacher = pb.load_keras(a.teacher, "TEACHER", trust=a.trust_model)
    student = pb.load_keras(a.student, "--student", trust=a.trust_model)
    check_pair(teacher, student, str(a.teacher), str(a.student))
    data = pb.load_data(a.data, teacher, labelled=False)
    y = None if data.y is None else pb.targets(data, teacher)
    ev = pb.load_data(a.eval_data, teacher, labelled=True) if a.eval_data else None
    trained, rep = distill_model(
        teacher, student, data.x, y, temperature=a.temperature, alpha=a.alpha,
        epochs=a.epochs, x_eval=None if ev is None else ev.x,
        y_eval=None if ev is None else pb.targets(ev, teacher), batch_size=a.batch_size,
        learning_rate=a.learning_rate, seed=a.seed, time_limit_s=a.time_limit)
    with tempfile.TemporaryDirectory(prefix="edge-distill-") as tmp:
        saved = Path(tmp) / "student.keras"
        pb.save_keras(trained, saved)
        int8 = pb.int8_figures(saved, a.data, a.eval_data or (a.data if y is not None else None),
                               a.profile, a.samples)
        pb.write_keras(saved, a.output)
    return {"teacher": str(a.teacher), "student": str(a.student), "output": str(a.output),
            "data": data.source, "eval": None if ev is None else ev.source,
            "distillation": rep.as_dict(),
            "size": {"teacher_keras_bytes": a.teacher.stat().st_size,
                     "teacher_params": rep.teacher_params,
                     "student_params": rep.student_params, "profile": a.profile,
                     "student": int8.as_dict()}}


def report_lines(r: dict[str, Any]) -> list[str]:
    d, s = r["distillation"], r["size"]
    st = s["student"]
    how = (f"alpha {d['alpha']} on labels" if d["labelled"] else "no labels: teacher only")
    unit = {"top1": "top-1", "mae": "MAE", "agreement": "agreement"}[d["metric"]]
    lines = [f"distilled {r['teacher']} ({s['teacher_params']} params) into {r['student']} "
             f"({s['student_params']} params): T {d['temperature']}, {how}, {d['epochs']} "
             f"epochs, {d['seconds']} s" + (" (stopped by --time-limit)" if d["stopped_early"]
                                             else ""),
             f"{'':<16} {unit + ' (' + d['evaluated_on'] + ')':>16} {'size':>28}",
             f"{'teacher':<16} {d['teacher']!s:>16} "
             f"{str(s['teacher_keras_bytes']) + ' B .keras':>28}",
             f"{'student before':<16} {d['student_before']!s:>16}",
             f"{'student':<16} {d['student_after']!s:>16} "
             f"{str(st['float_tflite_bytes']) + ' B float tflite':>28}",
             f"{'student int8':<16} {st['int8_top1']!s:>16} "
             f"{str(st['int8_tflite_bytes']) + ' B int8 tflite':>28}",
             f"student int8 bundle ({s['profile']}): tar {st['bundle_tar_bytes']} B, tar.zst "
             f"{st['bundle_zstd_bytes']} B"]
    if d["agreement_after"] is not None:
        lines.append(f"top-1 agreement with the teacher: before {d['agreement_before']}, "
                     f"after {d['agreement_after']}")
    return lines


def cmd_distill(a: argparse.Namespace) -> int:
    from converter.prunecli import run_and_print

    return run_and_print(a, run_distill, report_lines, "student")
