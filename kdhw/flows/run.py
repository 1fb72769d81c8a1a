"""``kdhw run``: every stage in order, each reading the previous stage's artifact from disk.

The whole output directory is assembled beside the destination and swapped in at the end, so a run that
fails on bad input or crashes leaves an earlier good result untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdhw.config import Config
from kdhw.contract import input_notes, output_note, output_saturation
from kdhw.errors import InputError
from kdhw.hw.export import hls_input_type, load_qonnx
from kdhw.train.data import load_data
from kdhw.train.distill import summary
from kdhw.train.student import describe, param_count
from kdhw.train.teacher import (
    ForeignTeacher,
    teacher_params,
)
from kdhw.util.atomic import atomic_dir, write_json, write_text
from kdhw.util.runtime import torch_threads

from .run_report import training_plot, write_report
from .stages import check_student, distill_stage, teacher_stage
from .to_hardware import check_hardware_tools, hardware_summary, student_to_hardware


def _noise_note(val_diff: float, n_val: int) -> str:
    """Is a validation difference within seed noise?  One binomial standard error of a paired difference."""
    se = 100 * np.sqrt(2 * 0.1 * 0.9 / max(n_val, 1))
    if abs(val_diff) <= 2 * se:
        return f"Within seed noise (|diff| ≤ 2 × {se:.1f} points, one seed); see benchmarks/ for multi-seed figures."
    return f"Larger than 2 × {se:.1f} points of single-seed noise."


def run(cfg: Config, out: str | Path, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns report.json's dict."""
    with torch_threads():
        return _run(cfg, Path(out), progress, log)


def _run(cfg: Config, out: Path, progress: bool, log: Any) -> dict[str, Any]:
    from kdhw.boards import load_board

    board = load_board(cfg.hls["board"])
    report_boards = [load_board(b) for b in cfg.report["boards"]]  # unknown names fail before any work
    if cfg.student["auto"]:
        load_board(cfg.student["auto"]["board"])
    check_hardware_tools(cfg, report_boards)
    timings: dict[str, float] = {}
    with atomic_dir(out) as d:
        t = time.perf_counter()
        data = load_data(cfg)  # layout + input contract; student.input: auto resolved into cfg here
        write_json(d / "data_manifest.json", data.manifest)
        write_text(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        check_student(cfg, data)  # fail fast: a bad student spec must not cost a teacher training first
        timings["data"] = time.perf_counter() - t
        log(f"[data] {data.name}: {data.manifest['train']}/{data.manifest['val']}/{data.manifest['test']} rows, "
            f"shape {data.shape}, {data.n_classes} classes")
        for note in input_notes(data.manifest["input_contract"]):
            log(f"[data] input {note}")

        t = time.perf_counter()
        teacher = teacher_stage(cfg, data, progress=progress)
        teacher.save(d / "teacher.pt", data)
        tl, tacc = teacher.logits, teacher.accuracy
        timings["teacher"] = time.perf_counter() - t
        log(f"[teacher] {teacher.config['arch']}: test {100 * tacc['test']:.2f} %")

        t = time.perf_counter()
        students = distill_stage(cfg, data, teacher, progress=progress, work=d, log=log)
        arms, chosen = students.arms, students.chosen
        students.save_all(d)
        timings["distill"] = time.perf_counter() - t
        summ = summary(arms)
        x_test = students.inputs("test")
        out_sat = output_saturation(students.model, x_test)
        if out_sat["warn"]:
            log(f"[distill] output: {output_note(out_sat)}")
        log("[distill] " + ", ".join(f"{k} test {100 * a.test_acc:.2f} %" for k, a in arms.items())
            + f" -> exporting {chosen}")
        training_plot({k: a.fit.history for k, a in arms.items()}, tacc["val"], d / "training.png")

        hw = student_to_hardware(students.model, students.input_shape, d, cfg, board, x_test,
                                 y_test=data.y_test, teacher_test=tl["test"], student_pt=d / "student.pt",
                                 report_boards=report_boards, log=log)
        timings.update(hw.timings)

        val_diff = 100 * (summ.get("kd", summ["scratch"])["val_acc"] - summ["scratch"]["val_acc"])
        test_diff = 100 * (summ.get("kd", summ["scratch"])["test_acc"] - summ["scratch"]["test_acc"])
        rep = {
            "config_source": cfg.source,
            "data": data.manifest,
            "teacher": {"arch": teacher.config["arch"], "test_acc": tacc["test"], "val_acc": tacc["val"],
                        "params": teacher_params(teacher.model), "epochs": teacher.epochs,
                        "loaded_from": cfg.teacher["path"],
                        "handed_over": teacher.model.describe() if isinstance(teacher.model, ForeignTeacher) else None},
            "students": summ,
            "chosen": {"arm": chosen, "reason": students.reason, "val_diff_points": val_diff, "test_diff_points": test_diff,
                       "noise_note": _noise_note(val_diff, data.manifest["val"])},
            "student": {"layers": describe(arms[chosen].model), "params": param_count(arms[chosen].model),
                        "input_type": hls_input_type(load_qonnx(hw.onnx)), "distill": cfg.distill},
            "verify": hw.verify,
            "output_contract": out_sat,
            "verify_random_inputs": cfg.verify["random_inputs"],
            "board": board.name,
            "hardware_report": "hw_report.md" if hw.hw_report else None,
            "hardware": hardware_summary(hw.hw_report),
            "auto": students.auto,
            "timings_s": timings,
        }
        write_report(d, rep)
    return rep


def check_out_dir(out: str | Path) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: --out exists and is not a directory")
    return p
