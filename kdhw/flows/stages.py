"""The one copy of the teacher and distill stages that ``kdhw run``, ``kdhw teacher``/``distill``, ``kdhw
select`` and the Python API all call.

Why one copy: the distill stage was written three times (run, the CLI verb, the API) and the copies
drifted: the API never folded resource-aware arms, so its students could not be exported.  Everything a
caller needs after distillation (each arm as a brevitas student, the spec that rebuilds it, the chosen
arm and why) comes out of ``distill_stage``; callers only decide where to save it.

Importing this module loads nothing heavy: the API imports it at ``import kdhw`` time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np
    import torch.nn as nn

    from kdhw.config import Config
    from kdhw.train.data import Dataset
    from kdhw.train.distill import Arm


@dataclass
class Teacher:
    """A float teacher: the network, the config it was built from, its logits on every split (the cache
    distillation reads), its accuracy per split, and the epochs it trained (None when loaded)."""

    model: nn.Module
    config: dict[str, Any]
    logits: dict[str, np.ndarray]
    accuracy: dict[str, float]
    epochs: int | None = None

    def save(self, path: str | Path, data: Dataset) -> Path:
        """``teacher.pt`` (weights + config; loadable with ``torch.load(weights_only=True)``) and, beside it,
        ``teacher_logits.npz`` (the cache a later ``kdhw distill`` reads)."""
        import numpy as np

        from kdhw.train.teacher import save_teacher

        p = Path(path)
        save_teacher(self.model, self.config, data.shape, data.n_classes, p)
        np.savez(p.with_name("teacher_logits.npz"), **self.logits)
        return p


def teacher_stage(cfg: Config, data: Dataset, *, path: str | Path | None = None, progress: bool = False) -> Teacher:
    """Load the teacher at ``path`` (or ``teacher.path``), checked against the data, or train one from the
    ``teacher`` section; its logits on every split are computed once here."""
    from kdhw.train.teacher import obtain_teacher, teacher_accuracy, teacher_logits

    model, tcfg, res = obtain_teacher(cfg.teacher, data, path or cfg.teacher["path"], progress, cfg.source)
    logits = teacher_logits(model, tcfg["arch"], data)
    return Teacher(model, tcfg, logits, teacher_accuracy(logits, data), None if res is None else res.epochs_run)


def check_student(cfg: Config, data: Dataset) -> None:
    """Fail fast: a bad student spec or distill key must not cost a teacher training first."""
    from kdhw.train.distill import check_distill, student_input
    from kdhw.train.student import build_student

    build_student(cfg.student, student_input(data.x_val[:1], cfg.student).shape[1:], data.n_classes, cfg.source)
    check_distill(cfg.student, cfg.distill, data, cfg.source, teacher_known=False)


@dataclass
class Students:
    """The distill stage's result: every trained arm as a brevitas student (``scratch``; ``scratch_aug`` under
    function matching; ``kd`` unless the method is none), the spec that rebuilds each, the arm chosen for
    export and why.  ``auto`` records the pareto point when ``student.auto`` chose the student."""

    arms: dict[str, Arm]
    chosen: str
    reason: str
    arm_specs: dict[str, dict[str, Any]]
    data: Dataset = field(repr=False)
    auto: dict[str, Any] | None = None

    @property
    def spec(self) -> dict[str, Any]:
        """The student config that rebuilds the chosen arm (resource-aware arms: its folded precisions)."""
        return self.arm_specs[self.chosen]

    @property
    def model(self) -> nn.Module:
        """The chosen student (a brevitas network in eval mode)."""
        return self.arms[self.chosen].model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row as the student reads it (flat for a dense first layer)."""
        return tuple(self.inputs("test")[:1].shape[1:])

    def inputs(self, split: str = "test") -> np.ndarray:
        """The rows of ``split`` (train, val, test) shaped as the student, the QONNX model and the hardware
        read them: what ``verify_design`` takes."""
        from kdhw.train.distill import student_input

        return student_input(getattr(self.data, f"x_{split}"), self.spec)

    def save(self, path: str | Path) -> Path:
        """``student.pt`` of the chosen arm (weights + the spec that rebuilds it)."""
        from kdhw.train.student import save_student

        save_student(self.model, self.spec, self.input_shape, Path(path))
        return Path(path)

    def save_all(self, folder: Path) -> Path:
        """``student_<arm>.pt`` for every arm and ``student.pt`` for the chosen one, in ``folder``."""
        from kdhw.train.student import save_student

        for k, a in self.arms.items():
            save_student(a.model, self.arm_specs[k], self.input_shape, folder / f"student_{k}.pt")
        return self.save(folder / "student.pt")


def distill_stage(cfg: Config, data: Dataset, teacher: Teacher | None, *, progress: bool = False,
                  work: Path | None = None, log: Any = print) -> Students:
    """The arms of the run's recipe (``kdhw.train.recipe``; same seed, initial weights and batch order), the
    best on validation chosen unless ``distill.select`` forces one, every resource-aware arm folded into an
    exact brevitas student.  ``student: {auto: {board: B}}`` trains the pareto grid into ``work/pareto``
    instead and takes its best point for B."""
    import numpy as np

    from kdhw.errors import InputError
    from kdhw.train.distill import choose, distill, student_input
    from kdhw.train.resource import fold_arms

    tl = None if teacher is None else teacher.logits
    if cfg.student["auto"]:
        if work is None:
            raise InputError(f"{cfg.source}: student.auto trains a pareto grid and needs a folder for it "
                             "(kdhw run, or kdhw pareto)")
        from .pareto import auto_student

        arms, chosen, auto = auto_student(cfg, data, None if teacher is None else teacher.model, tl, work / "pareto",
                                          cfg.student["auto"]["board"], progress, log)
        arm_specs = auto.pop("arm_specs")
        return Students(arms, chosen, auto["reason"], arm_specs, data, auto)
    from kdhw.train import fast

    spec = cfg.student
    arms = distill(spec, cfg.distill, data, None if tl is None else tl["train"], progress, cfg.source,
                   teacher=None if teacher is None else teacher.model,
                   teacher_cfg=None if teacher is None else teacher.config,
                   teacher_unlab=None if tl is None else tl.get("unlab"),
                   parallel=fast.ENABLED and fast.spare_core())  # one run: the second core trains scratch_aug
    chosen, reason = choose(arms, cfg.distill["select"], data)
    arms, folded = fold_arms(arms, student_input(np.concatenate([data.x_val, data.x_test]), spec))
    return Students(arms, chosen, reason, {k: folded[k] or spec for k in arms}, data)


__all__ = ["Students", "Teacher", "check_student", "distill_stage", "teacher_stage"]
