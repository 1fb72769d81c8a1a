"""Several fixed-point students behind a small model selector that routes each input to one of them.

The selector is itself a tiny brevitas MLP built by ``build_student`` (same power-of-two quantizers, same
8-bit input format as the students), not a float network: in hardware the routing decision is made on the
chip next to the students, and only a selector that goes through the same QONNX -> hls4ml path is
bit-exact there.  A float selector would make the system accuracy measured here a claim about a circuit
nobody can build.  It also exports, converts and verifies exactly like a student.

Training: every student is trained on its own (with the configured distillation method and arm selection,
like ``kdhw distill``); the selector then learns, per input, the probability that each student is right
(one sigmoid per student, binary cross-entropy on the students' correctness on the training rows) and
routes to the most probable one.  Its checkpoint is chosen on the *system's* validation accuracy.  Equal
selector outputs (the 8-bit output can tie) go to the student listed first: list the cheapest first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config
from .data import Dataset
from .distill import Arm, choose, distill, student_input
from .errors import InputError
from .student import StudentNet, build_student, param_count, save_student
from .training import FitResult, fit, predict_logits


@dataclass
class System:
    specs: list[dict[str, Any]]
    students: list[Arm]
    selector_spec: dict[str, Any]
    selector: StudentNet
    selector_fit: FitResult
    report: dict[str, Any] = field(default_factory=dict)


def student_specs(cfg: Config) -> list[dict[str, Any]]:
    """``selector.students``: each entry overrides keys of the ``student`` section (layers, bit widths)."""
    entries = cfg.selector["students"]
    if len(entries) < 2:
        raise InputError(f"{cfg.source}: selector.students needs at least 2 student specs, got {len(entries)}")
    allowed = set(cfg.student)
    out = []
    for i, e in enumerate(entries):
        extra = set(e) - allowed
        if extra:
            raise InputError(f"{cfg.source}: selector.students[{i}]: unknown key '{sorted(extra)[0]}'; "
                             f"allowed: {', '.join(sorted(allowed))}")
        out.append({**copy.deepcopy(cfg.student), **copy.deepcopy(e)})
    return out


def selector_spec(cfg: Config, n_students: int) -> dict[str, Any]:
    """A dense-ReLU-dense brevitas MLP on the flattened input, one output per student."""
    s, sel = cfg.student, cfg.selector
    return {"input": copy.deepcopy(s["input"]), "output": copy.deepcopy(s["output"]), "scaling": "po2",
            "weight_bits": sel["weight_bits"], "act_bits": sel["act_bits"], "bias_bits": s["bias_bits"],
            "layers": [{"type": "dense", "units": sel["hidden"]}, {"type": "relu"},
                       {"type": "dense", "units": n_students}]}


def route(selector: nn.Module, x: np.ndarray) -> np.ndarray:
    """Index of the student each row goes to (``x`` in any shape; the selector reads it flattened)."""
    return predict_logits(selector, x.reshape(len(x), -1)).argmax(1)


def _preds(arms: list[Arm], specs: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """(rows, students) predicted classes."""
    return np.stack([predict_logits(a.model, student_input(x, s)).argmax(1) for a, s in zip(arms, specs)], 1)


def train_system(cfg: Config, data: Dataset, teacher_train: np.ndarray | None = None, progress: bool = True,
                 *, teacher: nn.Module | None = None, teacher_cfg: dict[str, Any] | None = None,
                 extra_teachers: list[nn.Module] | None = None) -> System:
    specs = student_specs(cfg)
    src = cfg.source
    for i, spec in enumerate(specs):  # fail fast, before any training
        build_student(spec, student_input(data.x_val[:1], spec).shape[1:], data.n_classes,
                      f"{src}: selector.students[{i}]")
    students = []
    for i, spec in enumerate(specs):
        arms = distill(spec, cfg.distill, data, teacher_train, progress, f"{src}: selector.students[{i}]",
                       teacher=teacher, teacher_cfg=teacher_cfg, extra_teachers=extra_teachers)
        chosen, _ = choose(arms, cfg.distill["select"])
        students.append(arms[chosen])

    k = len(specs)
    sspec = selector_spec(cfg, k)
    flat = {s: getattr(data, f"x_{s}").reshape(len(getattr(data, f"x_{s}")), -1) for s in ("train", "val")}
    correct_train = (_preds(students, specs, data.x_train) == data.y_train[:, None]).astype(np.float32)
    pred_val = _preds(students, specs, data.x_val)
    rows = np.arange(len(data.x_val))

    def system_val_acc(m: nn.Module) -> float:
        return float((pred_val[rows, route(m, flat["val"])] == data.y_val).mean())

    def loss_fn(m: nn.Module, x: torch.Tensor, c: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(m(x), c)

    seed = int(cfg.distill["seed"])
    torch.manual_seed(seed)
    sel = build_student(sspec, flat["train"].shape[1:], k, f"{src}: selector")
    sres = fit(sel, loss_fn, flat["train"], correct_train, flat["val"], data.y_val, epochs=cfg.selector["epochs"],
               lr=cfg.selector["lr"], batch_size=cfg.distill["batch_size"], seed=seed, desc="selector",
               progress=progress, metric=system_val_acc)
    system = System(specs, students, sspec, sel, sres)
    system.report = system_report(system, data)
    return system


def system_report(system: System, data: Dataset) -> dict[str, Any]:
    """Accuracy of the routed system and of each student, parameters of each part, how often each is picked."""
    pred = _preds(system.students, system.specs, data.x_test)
    pick = route(system.selector, data.x_test)
    rows = np.arange(len(pick))
    correct = pred == data.y_test[:, None]
    k = len(system.students)
    students = []
    for i, (a, s) in enumerate(zip(system.students, system.specs)):
        students.append({"index": i, "layers": s["layers"], "weight_bits": s["weight_bits"], "act_bits": s["act_bits"],
                         "params": param_count(a.model), "val_acc": a.fit.best_val_acc,
                         "test_acc": float(correct[:, i].mean()), "picked_fraction": float((pick == i).mean()),
                         "acc_when_picked": float(correct[pick == i, i].mean()) if (pick == i).any() else None})
    sel_params = param_count(system.selector)
    return {
        "system": {"test_acc": float(correct[rows, pick].mean()), "val_acc": system.selector_fit.best_val_acc,
                   "params_total": sel_params + sum(s["params"] for s in students),
                   "best_single_student_test_acc": float(correct.mean(0).max()),
                   "oracle_test_acc": float(correct.any(1).mean()),
                   "test_rows": int(len(pick))},
        "selector": {"kind": "brevitas MLP", "layers": system.selector_spec["layers"],
                     "weight_bits": system.selector_spec["weight_bits"],
                     "act_bits": system.selector_spec["act_bits"], "params": sel_params,
                     "best_epoch": system.selector_fit.best_epoch},
        "students": students,
        "n_students": k,
    }


def report_markdown(rep: dict[str, Any]) -> str:
    s = rep["system"]
    lines = [
        "# Multi-student system with a model selector", "",
        f"System test accuracy **{100 * s['test_acc']:.2f} %** on {s['test_rows']} rows "
        f"(best single student {100 * s['best_single_student_test_acc']:.2f} %, oracle "
        f"{100 * s['oracle_test_acc']:.2f} %); {s['params_total']} parameters in all.", "",
        "| part | params | test accuracy | picked |", "|---|---|---|---|",
        f"| selector ({rep['selector']['kind']}, w{rep['selector']['weight_bits']}a{rep['selector']['act_bits']}) "
        f"| {rep['selector']['params']} | — | — |",
    ]
    for st in rep["students"]:
        lines.append(f"| student {st['index']} (w{st['weight_bits']}a{st['act_bits']}) | {st['params']} | "
                     f"{100 * st['test_acc']:.2f} % | {100 * st['picked_fraction']:.1f} % |")
    return "\n".join(lines) + "\n"


def save_system(system: System, data: Dataset, out: str | Path) -> Path:
    """``student_<i>.pt`` and ``selector.pt`` (each loadable by ``kdhw export``), plus the report."""
    from .atomic import atomic_dir, write_json, write_text

    out = Path(out)
    with atomic_dir(out) as d:
        for i, (a, s) in enumerate(zip(system.students, system.specs)):
            save_student(a.model, s, student_input(data.x_test[:1], s).shape[1:], d / f"student_{i}.pt")
        save_student(system.selector, system.selector_spec, (int(np.prod(data.shape)),), d / "selector.pt")
        write_json(d / "selector.json", system.report)
        write_text(d / "selector.md", report_markdown(system.report))
    return out
