"""The training recipe, chosen by the data: plain distillation, or function matching with its control.

``distill.recipe: auto`` (the default) picks **function matching** exactly when the run has a transfer set
(a label budget or ``data.unlabeled``), a method that reads a teacher, and a teacher that can run here (a
kdhw, ONNX or TorchScript network; a logits file cannot see augmented inputs); otherwise **plain**.  Why:
a teacher pays when it can label inputs the student has no labels for, and it pays most when it is run
on exactly the augmented input the student sees, for many epochs (Beyer et al. 2022; measured in
``benchmarks/kd_pays.py``).  On the teacher's own fully labelled set nothing beat scratch, so plain stays
the default there.

Function matching = modality-aware augmentation + mixup, the teacher evaluated online on each augmented
batch, alpha 0.9, a patient schedule (``epochs_factor`` x ``epochs`` at ``FM_BATCH_FACTOR`` x the batch;
``FM_STEPS`` can cap it in optimizer steps), and the distilled arm's exported epoch chosen by its agreement
with the teacher on the transfer rows (``checkpoint: teacher``).  Its control, ``scratch_aug``, is the same student trained on labels only with the **same** augmentation, mixup
and number of steps, so ``kd - scratch_aug`` is the teacher's own share of the gain and ``scratch_aug -
scratch`` the recipe's.

Every value the recipe sets is a config key left unset (``None``) in the schema: a key the user sets wins.
Augmentations the recipe chose are checked against the teacher before training (``augment.follow``): one
that changes the teacher's answer on labelled rows by more than ``MAX_TEACHER_DROP`` is scaled down, and
the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from kdhw.errors import InputError

from .augment import Augment, follow
from .losses import get_method

RECIPES = ("auto", "plain", "function_matching")
# the recipe-owned keys and their plain values (what an unset key means outside function matching)
PLAIN: dict[str, Any] = {"alpha": 0.5, "mixup_alpha": 0.0, "augment_shift": 0, "augment_scale": 0.0,
                         "augment_noise": 0.0, "epochs_factor": 1, "checkpoint": "val"}
FM_ALPHA = 0.9  # kd_pays: KD at T = 1, alpha = 0.9 beat validation-chosen (T, alpha) on 3 of 4 students
FM_MIXUP = 0.4
# function matching keeps the epoch that agrees best with the teacher on the clean transfer rows: on held-out
# seeds it beat the epoch chosen on a label budget's few validation rows on every kd_pays student
# (benchmarks/results/checkpoint_rule.md; see kdhw.train.distill.teacher_agreement)
FM_CHECKPOINT = "teacher"
# epochs_factor of function matching: set from benchmarks/fm_schedule.py (accuracy vs 1x/3x/10x/30x); its
# rule named 10x while the distilled arm kept its best-validation epoch, 30x once it keeps the agreement one.
# It applies where FM_STEPS is None, and to the recipe of a run that sets distill.epochs_factor.
FM_EPOCHS_FACTOR = 30
# function matching's schedule in optimizer steps: the augmented arms train FM_EPOCHS_FACTOR x epochs, but
# at most ceil(FM_STEPS / steps per epoch) epochs (at least the plain epochs) unless distill.epochs_factor
# is set.  Why steps: a multiple of the plain epochs meant 15,300 steps on the digits students and 30,600
# on the embedded default (60 plain epochs), for the same data.  Off (None): benchmarks/fm_schedule.py --steps
# named 2,500 steps at FM_BATCH_FACTOR 2 by its rule (validation within 0.5 point), but that schedule tested
# 2.5-3.5 points under epochs_factor 30 on the mnist1d students, on its own seeds and on train_speed's
# (fm_schedule.steps.md, train_speed.md), so it does not keep accuracy; on the digits students it did.
FM_STEPS: int | None = None
# ... of FM_BATCH_FACTOR x batch_size rows each (never more than one epoch's rows), at the learning rate x
# the square root of the batch's growth.  4, measured (benchmarks/results/fm_schedule.batch.md): the same
# epochs at batch 256 instead of 64 kept validation accuracy on the four kd_pays students (mean +0.38 point,
# test +0.04) with a quarter of the optimizer steps, which is where a tiny student's training time goes.
FM_BATCH_FACTOR = 4
NOISE_OF_STD = 0.1  # Gaussian noise, as a share of the training inputs' standard deviation
SCALE = 0.1  # signals: amplitude factor in [0.9, 1.1]
MAX_TEACHER_DROP = 0.05  # an augmentation may cost the teacher at most 5 points of accuracy on labelled rows

TeacherPredict = Callable[[torch.Tensor], torch.Tensor]  # data-shaped batch -> teacher logits


def plain_settings(dcfg: dict[str, Any]) -> dict[str, Any]:
    """``dcfg`` with every recipe-owned key the user left unset at its plain value."""
    return {**dcfg, **{k: v for k, v in PLAIN.items() if dcfg.get(k) is None}}


def modality(shape: tuple[int, ...]) -> str:
    """``signal`` (C, L), ``image`` (C, H, W) or ``tabular`` (anything else: flat feature vectors)."""
    return {2: "signal", 3: "image"}.get(len(shape), "tabular")


def augmentation_for(shape: tuple[int, ...], x_train: np.ndarray) -> dict[str, Any]:
    """Function matching's augmentation for this modality, before the teacher-following check.

    Signals: circular shift by up to 1/20 of their length (at least 1 sample), amplitude x [0.9, 1.1],
    noise.  Images: translation by up to 1/14 of the smaller side (at least 1 pixel, zero fill), noise; no
    flips (a flipped digit or letter is another class).  Tabular rows: noise only (a shifted or rescaled
    feature vector is another row).  Noise: Gaussian, ``NOISE_OF_STD`` x the training inputs' std.
    """
    kind = modality(shape)
    noise = input_noise(x_train)
    shift = 0
    if kind == "signal":
        shift = max(1, round(shape[1] / 20))
    elif kind == "image":
        shift = max(1, round(min(shape[1:]) / 14))
    return {"augment_shift": shift, "augment_scale": SCALE if kind == "signal" else 0.0, "augment_noise": noise}


def input_noise(x_train: np.ndarray, share: float = NOISE_OF_STD) -> float:
    """Std of Gaussian input noise, ``share`` x the training inputs' std (3 significant digits, so the value a
    report prints is the value trained with)."""
    return float(f"{share * float(np.std(x_train)):.3g}") if len(x_train) and share > 0 else 0.0


@dataclass
class Recipe:
    """What each arm of a run trains with: its distill settings and its method."""

    name: str  # "plain" | "function_matching"
    reason: str  # why this recipe (auto's decision, or the config)
    plain: dict[str, Any]  # settings of the plain arms: scratch, and kd under the plain recipe
    augmented: dict[str, Any] | None = None  # settings of scratch_aug and kd under function matching
    teacher_check: list[dict[str, Any]] = field(default_factory=list)  # per augmentation: teacher accuracy

    def arms(self, method: str) -> dict[str, tuple[dict[str, Any], str]]:
        """Arm name -> (settings, method), in training order."""
        if self.augmented is None:
            out = {"scratch": (self.plain, "none")}
            if method != "none":
                out["kd"] = (self.plain, method)
            return out
        return {"scratch": (self.plain, "none"), "scratch_aug": (self.augmented, "none"),
                "kd": (self.augmented, method)}

    def describe(self) -> dict[str, Any]:
        """The report's view: which recipe, why, and what the augmented arms trained with."""
        out: dict[str, Any] = {"name": self.name, "reason": self.reason}
        if self.augmented is not None:
            a = self.augmented
            out["augmented"] = {k: a[k] for k in ("epochs", "epochs_factor", "batch_size", "lr", "mixup_alpha",
                                                  "augment_shift", "augment_scale", "augment_noise", "alpha",
                                                  "temperature", "checkpoint")}
            out["plain_epochs"] = self.plain["epochs"]
            out["teacher_check"] = self.teacher_check
        return out


def _fm_refusal(dcfg: dict[str, Any], teacher: Any) -> str | None:
    """Why function matching cannot run here (None: it can)."""
    if not get_method(dcfg["method"]).needs_teacher:
        return f"distill.method = {dcfg['method']} reads no teacher"
    if teacher is None:
        return "no teacher network was given (only cached logits)"
    if not getattr(teacher, "runnable", True):
        what = teacher.describe()["format"] if hasattr(teacher, "describe") else "cached outputs"
        return f"the teacher is a {what}, which cannot run on the augmented inputs function matching feeds it"
    return None


def matches_function(dcfg: dict[str, Any], data: Any, teacher: Any) -> bool:
    """Does this run train function matching (so a ``scratch_aug`` control too)?  ``resolve``'s choice
    without its measurements, for callers that plan arms before training (``kdhw sweep``)."""
    want = dcfg.get("recipe") or "auto"
    return want != "plain" and _fm_refusal(dcfg, teacher) is None and (want == "function_matching" or
                                                                        len(data.unlab) > 0)


def check(dcfg: dict[str, Any], teacher: Any, src: str = "config") -> None:
    """Refuse ``distill.recipe: function_matching`` without a runnable teacher, before any training."""
    refusal = _fm_refusal(dcfg, teacher)
    if dcfg.get("recipe") == "function_matching" and refusal:
        raise InputError(f"{src}: distill.recipe = function_matching needs a runnable teacher and a method that reads "
                         f"it, but {refusal}; use distill.recipe: plain (or auto)")


def resolve(dcfg: dict[str, Any], data: Any, teacher: torch.nn.Module | None = None, *,
            predict: TeacherPredict | None = None, src: str = "config") -> Recipe:
    """Choose the recipe for this run and fill every setting it owns.

    ``teacher``: the teacher network (None when only cached logits exist); ``predict``: the teacher on
    data-shaped batches, for the teacher-following check (default: ``teacher`` itself).
    """
    want = dcfg.get("recipe") or "auto"
    if want not in RECIPES:
        raise InputError(f"{src}: distill.recipe = {want!r} is not allowed; choose one of: {', '.join(RECIPES)}")
    plain = plain_settings(dcfg)
    transfer = len(data.unlab)
    refusal = _fm_refusal(dcfg, teacher)
    if want == "plain":
        return Recipe("plain", "distill.recipe: plain", plain)
    check(dcfg, teacher, src)
    if want == "auto" and (refusal or not transfer):
        why = refusal or "no transfer set (no label budget, no data.unlabeled)"
        return Recipe("plain", f"auto: {why}", plain)
    reason = ("distill.recipe: function_matching" if want == "function_matching" else
              f"auto: a transfer set of {transfer} rows without labels and a runnable teacher")
    chosen = augmentation_for(data.shape, data.x_train)
    aug = {k: dcfg[k] if dcfg.get(k) is not None else v for k, v in chosen.items()}
    if predict is None:
        predict = _predict_fn(teacher, data.shape)
    rows = np.concatenate([data.x_train, data.x_val])
    labels = np.concatenate([data.y_train, data.y_val])
    scalable = {k for k in chosen if dcfg.get(k) is None}  # what the user set is measured, never changed
    kept, measured = follow(Augment.from_config(aug), predict, rows, labels, data.shape, int(dcfg["seed"]),
                            MAX_TEACHER_DROP, scalable={k.removeprefix("augment_") for k in scalable})
    aug = {"augment_shift": kept.shift, "augment_scale": kept.scale, "augment_noise": kept.noise}
    augmented = {**dcfg, **aug, **fm_schedule(dcfg, len(data.y_train) + transfer),
                 "alpha": FM_ALPHA if dcfg.get("alpha") is None else dcfg["alpha"],
                 "mixup_alpha": FM_MIXUP if dcfg.get("mixup_alpha") is None else dcfg["mixup_alpha"],
                 "checkpoint": FM_CHECKPOINT if dcfg.get("checkpoint") is None else dcfg["checkpoint"]}
    # the plain scratch arm is the baseline both augmented arms are measured against: no augmentation at all
    plain = {**plain, **{k: v for k, v in PLAIN.items() if k != "alpha"}}
    return Recipe("function_matching", reason, plain, augmented, measured)


def fm_schedule(dcfg: dict[str, Any], rows: int) -> dict[str, Any]:
    """Function matching's schedule for arms whose epochs read ``rows`` rows (labelled + transfer set):
    ``epochs_factor``, ``epochs``, ``batch_size`` and ``lr``.  ``distill.epochs_factor`` set: that x
    ``epochs`` at the configured batch and rate.  Unset: ``FM_EPOCHS_FACTOR`` x ``epochs`` of
    ``FM_BATCH_FACTOR`` x ``batch_size`` rows (at most one epoch's rows) at ``lr`` x the square root of the
    batch's growth: a long schedule of tiny steps is per-step overhead, and the larger batch kept accuracy.
    ``FM_STEPS`` (off) would cap it in optimizer steps (rounded up to whole epochs, never fewer than the plain
    arms' ``epochs``)."""
    plain, batch, lr = int(dcfg["epochs"]), int(dcfg["batch_size"]), dcfg["lr"]
    if dcfg.get("epochs_factor") is not None:
        factor = dcfg["epochs_factor"]
        return {"epochs_factor": factor, "epochs": int(round(factor * plain)), "batch_size": batch, "lr": lr}
    epochs = int(round(FM_EPOCHS_FACTOR * plain))
    fb = max(batch, min(batch * FM_BATCH_FACTOR, int(rows)))
    if fb != batch:
        lr = float(lr) * (fb / batch) ** 0.5
    if FM_STEPS is None:
        return {"epochs_factor": FM_EPOCHS_FACTOR, "epochs": epochs, "batch_size": fb, "lr": lr}
    capped = min(epochs, max(plain, -(-FM_STEPS // -(-max(int(rows), 1) // fb))))
    return {"epochs_factor": FM_EPOCHS_FACTOR if capped == epochs else round(capped / plain, 2), "epochs": capped,
            "batch_size": fb, "lr": lr}


def _predict_fn(teacher: torch.nn.Module | None, shape: tuple[int, ...]) -> TeacherPredict:
    assert teacher is not None

    def predict(x: torch.Tensor) -> torch.Tensor:
        teacher.eval()
        with torch.no_grad():
            return teacher(x.reshape(len(x), *shape))

    return predict


__all__ = ["FM_BATCH_FACTOR", "FM_CHECKPOINT", "FM_EPOCHS_FACTOR", "FM_STEPS", "MAX_TEACHER_DROP", "PLAIN", "RECIPES",
           "Recipe", "augmentation_for", "check", "fm_schedule", "input_noise", "matches_function", "modality",
           "plain_settings", "resolve"]
