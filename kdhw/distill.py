"""Quantization-aware training of the student, from scratch and with distillation, as paired arms.

Every run trains the same student twice with the same seed, initial weights and batch order: once on
labels alone (scratch) and once with the configured distillation loss.  That pairing is what makes
"KD helped by x points" a measurement rather than seed noise (tiny students swing several points with
the seed).  The arm exported is chosen on validation accuracy unless the config forces one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import Dataset
from .errors import InputError
from .losses import NEEDS_TEACHER, get_loss
from .student import StudentNet, build_student, param_count
from .training import FitResult, accuracy, fit


@dataclass
class Arm:
    name: str
    model: StudentNet
    fit: FitResult
    test_acc: float


def student_input(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """MLP students read flat vectors: the QONNX input then has no spatial layout to convert."""
    first = (spec.get("layers") or [{}])[0]
    return x.reshape(len(x), -1) if isinstance(first, dict) and first.get("type") == "dense" else x


def train_arm(
    name: str, spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
    method: str, progress: bool = True, src: str = "config",
) -> Arm:
    xs = {s: student_input(getattr(data, f"x_{s}"), spec) for s in ("train", "val", "test")}
    torch.manual_seed(dcfg["seed"])
    model = build_student(spec, xs["train"].shape[1:], data.n_classes, src)
    loss = get_loss(method)
    if method in NEEDS_TEACHER and teacher_train is None:
        raise InputError(f"{src}: distill.method = {method} needs a teacher (teacher section or teacher.path)")
    tl = None if teacher_train is None else torch.from_numpy(teacher_train.astype(np.float32))
    params = {"temperature": dcfg["temperature"], "alpha": dcfg["alpha"]}

    def loss_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return loss(m(x), None if tl is None else tl[idx], y, params)

    res = fit(model, loss_fn, xs["train"], data.y_train, xs["val"], data.y_val, epochs=dcfg["epochs"],
              lr=dcfg["lr"], batch_size=dcfg["batch_size"], seed=dcfg["seed"], desc=name, progress=progress)
    return Arm(name, model, res, accuracy(model, xs["test"], data.y_test))


def distill(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
            progress: bool = True, src: str = "config") -> dict[str, Arm]:
    """Train the scratch arm and (if a teacher method is configured) the distilled arm."""
    arms = {"scratch": train_arm("scratch", spec, dcfg, data, None, "none", progress, src)}
    if dcfg["method"] != "none":
        arms["kd"] = train_arm("kd", spec, dcfg, data, teacher_train, dcfg["method"], progress, src)
    return arms


def choose(arms: dict[str, Arm], select: str) -> tuple[str, str]:
    """Pick the exported arm: forced by config, or the better validation accuracy (ties -> scratch)."""
    if select in ("kd", "scratch"):
        if select not in arms:
            raise InputError(f"distill.select = {select} but no {select} arm was trained")
        return select, "forced by distill.select"
    best = max(arms, key=lambda k: (arms[k].fit.best_val_acc, k == "scratch"))
    return best, "best validation accuracy"


def summary(arms: dict[str, Arm]) -> dict[str, Any]:
    return {
        k: {"val_acc": a.fit.best_val_acc, "test_acc": a.test_acc, "best_epoch": a.fit.best_epoch,
            "epochs": a.fit.epochs_run, "seconds_per_epoch": a.fit.seconds_per_epoch,
            "params": param_count(a.model)}
        for k, a in arms.items()
    }
