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

from .atomic import atomic_dir, write_json, write_text
from .config import Config
from .contract import input_notes, output_note, output_saturation
from .data import load_data
from .distill import check_distill, choose, distill, student_input, summary
from .errors import InputError
from .export import hls_input_type, load_qonnx
from .flow import check_hardware_tools, hardware_summary, student_to_hardware
from .report import training_plot, write_report
from .resource import fold_arms
from .runtime import torch_threads
from .student import build_student, describe, param_count, save_student
from .teacher import ForeignTeacher, obtain_teacher, save_teacher, teacher_accuracy, teacher_logits, teacher_params


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
    from .boards import load_board

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
        # fail fast: a bad student spec must not cost a teacher training first
        build_student(cfg.student, student_input(data.x_val[:1], cfg.student).shape[1:], data.n_classes, cfg.source)
        check_distill(cfg.student, cfg.distill, data, cfg.source, teacher_known=False)  # keys that need no teacher
        timings["data"] = time.perf_counter() - t
        log(f"[data] {data.name}: {data.manifest['train']}/{data.manifest['val']}/{data.manifest['test']} rows, "
            f"shape {data.shape}, {data.n_classes} classes")
        for note in input_notes(data.manifest["input_contract"]):
            log(f"[data] input {note}")

        t = time.perf_counter()
        tmodel, tcfg, tres = obtain_teacher(cfg.teacher, data, cfg.teacher["path"], progress, cfg.source)
        save_teacher(tmodel, tcfg, data.shape, data.n_classes, d / "teacher.pt")
        tl = teacher_logits(tmodel, tcfg["arch"], data)
        np.savez(d / "teacher_logits.npz", **tl)
        tacc = teacher_accuracy(tl, data)
        timings["teacher"] = time.perf_counter() - t
        log(f"[teacher] {tcfg['arch']}: test {100 * tacc['test']:.2f} %")

        t = time.perf_counter()
        spec, auto = cfg.student, None
        arm_specs: dict[str, Any] = {}  # resource-aware arms: each learned its own precisions, so its own spec
        if cfg.student["auto"]:  # resource-aware grid; its best point for the board is this run's student
            from .pareto import auto_student

            arms, chosen, auto = auto_student(cfg, data, tmodel, tl, d / "pareto", cfg.student["auto"]["board"],
                                              progress, log)
            spec, reason, arm_specs = auto["spec"], auto["reason"], auto.pop("arm_specs")
        else:
            arms = distill(spec, cfg.distill, data, tl["train"], progress, cfg.source, teacher=tmodel,
                           teacher_cfg=tcfg, teacher_unlab=tl.get("unlab"))
            chosen, reason = choose(arms, cfg.distill["select"], data)
            if cfg.student["resource"] is not None:  # learned precisions -> brevitas students, checked exact
                arms, arm_specs = fold_arms(arms, student_input(np.concatenate([data.x_val, data.x_test]), spec))
                spec = arm_specs[chosen]
        shape = student_input(data.x_test, spec).shape[1:]
        for k, a in arms.items():
            save_student(a.model, arm_specs.get(k) or spec, shape, d / f"student_{k}.pt")
        save_student(arms[chosen].model, spec, shape, d / "student.pt")
        timings["distill"] = time.perf_counter() - t
        summ = summary(arms)
        out_sat = output_saturation(arms[chosen].model, student_input(data.x_test, spec))
        if out_sat["warn"]:
            log(f"[distill] output: {output_note(out_sat)}")
        log("[distill] " + ", ".join(f"{k} test {100 * a.test_acc:.2f} %" for k, a in arms.items())
            + f" -> exporting {chosen}")
        training_plot({k: a.fit.history for k, a in arms.items()}, tacc["val"], d / "training.png")

        hw = student_to_hardware(arms[chosen].model, shape, d, cfg, board, student_input(data.x_test, spec),
                                 y_test=data.y_test, teacher_test=tl["test"], student_pt=d / "student.pt",
                                 report_boards=report_boards, log=log)
        timings.update(hw.timings)

        val_diff = 100 * (summ.get("kd", summ["scratch"])["val_acc"] - summ["scratch"]["val_acc"])
        test_diff = 100 * (summ.get("kd", summ["scratch"])["test_acc"] - summ["scratch"]["test_acc"])
        rep = {
            "config_source": cfg.source,
            "data": data.manifest,
            "teacher": {"arch": tcfg["arch"], "test_acc": tacc["test"], "val_acc": tacc["val"],
                        "params": teacher_params(tmodel),
                        "epochs": None if tres is None else tres.epochs_run,
                        "loaded_from": cfg.teacher["path"],
                        "handed_over": tmodel.describe() if isinstance(tmodel, ForeignTeacher) else None},
            "students": summ,
            "chosen": {"arm": chosen, "reason": reason, "val_diff_points": val_diff, "test_diff_points": test_diff,
                       "noise_note": _noise_note(val_diff, data.manifest["val"])},
            "student": {"layers": describe(arms[chosen].model), "params": param_count(arms[chosen].model),
                        "input_type": hls_input_type(load_qonnx(hw.onnx)), "distill": cfg.distill},
            "verify": hw.verify,
            "output_contract": out_sat,
            "verify_random_inputs": cfg.verify["random_inputs"],
            "board": board.name,
            "hardware_report": "hw_report.md" if hw.hw_report else None,
            "hardware": hardware_summary(hw.hw_report),
            "auto": auto,
            "timings_s": timings,
        }
        write_report(d, rep)
    return rep


def check_out_dir(out: str | Path) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: --out exists and is not a directory")
    return p
