"""Distillation losses, chosen by name from a registry (config ``distill.method``).

Each loss maps (student logits, teacher logits or None, labels, params) to a scalar; losses that read
hidden representations (``rkd``) take them as keyword tensors.  Keeping them pure functions of tensors
makes each one testable on hand-computed values, independent of training.

Every method mixes its own term with the hard-label cross-entropy as ``alpha * term + (1 - alpha) * CE``,
so ``alpha`` means the same thing across methods: 1 = the method alone, 0 = plain labels.

Labels are either class indices (B,) or class probabilities (B, C): mixup hands the loss the mixed
one-hot targets, and ``F.cross_entropy`` on probabilities is exactly the mixed hard-label loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from kdhw.errors import InputError

Loss = Callable[..., torch.Tensor]  # (student, teacher | None, labels, params, **features) -> scalar


@dataclass(frozen=True)
class Method:
    """One distillation method, whole: its loss, what it needs besides the student (so missing pieces are
    refused before training starts), the distill keys it reads, and the ``Teaching`` class that reads its
    teacher (``kdhw.train.distill``; None: logits only).  ``distill.method``'s choices are this table's keys."""

    name: str
    loss: Loss
    needs_teacher: bool  # teacher logits (cached or online)
    needs_teacher_model: bool  # the teacher's hidden layers, not only its logits
    summary: str
    params: tuple[str, ...] = ()  # distill.* keys the method reads
    teaching: type | None = None


METHODS: dict[str, Method] = {}


def register(name: str, needs_teacher: bool = True, needs_teacher_model: bool = False,
             summary: str = "", params: tuple[str, ...] = ("temperature", "alpha")) -> Callable[[Loss], Loss]:
    def deco(fn: Loss) -> Loss:
        METHODS[name] = Method(name, fn, needs_teacher, needs_teacher_model, summary or (fn.__doc__ or "").strip(),
                               params)
        return fn

    return deco


def teaches(name: str) -> Callable[[type], type]:
    """Class decorator: ``cls`` owns how method ``name`` reads its teacher (its ``Method.teaching``)."""
    def deco(cls: type) -> type:
        METHODS[name] = replace(METHODS[name], teaching=cls)
        return cls

    return deco


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown distillation method '{name}'; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def get_loss(name: str) -> Loss:
    return get_method(name).loss


# ---------------------------------------------------------------- building blocks

def hard_ce(student: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on the labelled rows of a batch that may also hold transfer-set rows.

    Class indices: ``-1`` marks a row without a label; the mean runs over labelled rows only (0 when the
    batch has none), so the hard term keeps its scale whatever the label budget.  Class probabilities
    (mixup): each row's label mass weighs it (1 for a labelled pair, lambda when only one partner had a
    label, 0 for two unlabelled rows); with every row labelled this is plain ``F.cross_entropy``.
    """
    eps = float(smoothing)
    if labels.dim() == 1:
        mask = labels >= 0
        if bool(mask.all()):
            return F.cross_entropy(student, labels, label_smoothing=eps)
        if not bool(mask.any()):
            return student.sum() * 0.0
        return F.cross_entropy(student[mask], labels[mask], label_smoothing=eps)
    w = labels.sum(1)
    if bool(torch.all((w - 1).abs() < 1e-6)):
        return F.cross_entropy(student, labels, label_smoothing=eps)
    m = w > 1e-9
    if not bool(m.any()):
        return student.sum() * 0.0
    per_row = F.cross_entropy(student[m], labels[m] / w[m, None], reduction="none", label_smoothing=eps)
    return (per_row * w[m]).sum() / w[m].sum()


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher^T || p_student^T) * T^2, batch mean.

    The T^2 factor keeps the soft-target gradient on the same scale as the hard-label term when T changes
    (Hinton et al. 2015), so alpha means the same thing at every temperature.
    """
    t = float(temperature)
    log_ps = F.log_softmax(student / t, dim=1)
    log_pt = F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * t * t


def soft_kl_probs(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || p_student^T) * T^2 for a target given as probabilities (zeros allowed)."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, dim=1), target, reduction="batchmean") * t * t


def one_hot_like(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class probabilities from indices (an unlabelled row, index -1, becomes all zeros); probabilities
    pass through unchanged."""
    if labels.dim() == 2:
        return labels.to(torch.float32)
    return F.one_hot(labels.clamp_min(0), n_classes).to(torch.float32) * (labels >= 0).unsqueeze(1)


def virtual_teacher(labels: torch.Tensor, n_classes: int, correct_prob: float) -> torch.Tensor:
    """Tf-KD's hand-made teacher: ``correct_prob`` on the label, the rest spread evenly on the others.

    Linear in the one-hot target, so a mixup target gives the same mixture of virtual teachers.
    """
    a = float(correct_prob)
    y = one_hot_like(labels, n_classes)
    return y * a + (1 - y) * (1 - a) / (n_classes - 1)


def ensemble_logits(members: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits whose softmax at T is the members' mean softmax at T.

    Averaging probabilities (not logits) is what "average of the teachers' soft targets" means; writing the
    mean back as logits (T * log mean p) lets every logit-based loss use the ensemble unchanged.
    """
    t = float(temperature)
    probs = torch.stack([F.softmax(z / t, dim=1) for z in members]).mean(0)
    return t * torch.log(probs.clamp_min(1e-30))


def hint_loss(adapted: torch.Tensor, teacher_hint: torch.Tensor) -> torch.Tensor:
    """FitNets stage 1: mean squared error of the adapted student hint against the teacher layer."""
    return F.mse_loss(adapted.flatten(1), teacher_hint.flatten(1))


def _pairwise_dist(e: torch.Tensor) -> torch.Tensor:
    d2 = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)
    # sqrt of 0 has an infinite gradient: keep the diagonal out of it
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return torch.where(eye, torch.zeros_like(d2), d2.clamp_min(1e-12).sqrt())


def rkd_distance(s_emb: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
    """Distance-wise RKD (Park et al. 2019): Huber loss between pairwise distances, each set divided by its
    mean off-diagonal distance so that embeddings of different widths and scales compare."""
    s, t = s_emb.flatten(1), t_emb.flatten(1)
    n = len(s)
    if n < 2:
        return s.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    ds, dt = _pairwise_dist(s), _pairwise_dist(t.detach())
    ds = ds / ds[off].mean().clamp_min(1e-12)
    dt = dt / dt[off].mean().clamp_min(1e-12)
    return F.smooth_l1_loss(ds[off], dt[off])


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between i and k, for every (i, j, k): <unit(e_i - e_j), unit(e_k - e_j)>."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # [j, i] = e_i - e_j
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2))  # [j, i, k]


def rkd_angle(s_emb: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
    """Angle-wise RKD: Huber loss between the cosines of all triplet angles (scale-free by construction)."""
    s, t = s_emb.flatten(1), t_emb.flatten(1)
    if len(s) < 3:
        return s.sum() * 0.0
    return F.smooth_l1_loss(_angles(s), _angles(t.detach()))


def _mix(alpha: float, term: torch.Tensor, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    a = float(alpha)
    if a == 1.0:
        return term
    return a * term + (1 - a) * hard_ce(student, labels)


# ---------------------------------------------------------------- registered methods

@register("none", needs_teacher=False, params=(), summary="labels only: the scratch student")
def hard_only(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
              p: dict[str, Any], **_: Any) -> torch.Tensor:
    """Plain cross-entropy on labels: the scratch student."""
    return hard_ce(student, labels)


@register("hinton", summary="KL at temperature T x T^2 (Hinton et al. 2015)")
def hinton(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
           p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * T^2 * KL(soft teacher || soft student) + (1 - alpha) * CE(labels)."""
    assert teacher is not None
    return _mix(p["alpha"], soft_kl(student, teacher, p["temperature"]), student, labels)


@register("logits_mse", params=("alpha",), summary="MSE between student and teacher logits (Ba & Caruana 2014)")
def logits_mse(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
               p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * mean((z_s - z_t)^2) + (1 - alpha) * CE; the mean runs over batch and classes."""
    assert teacher is not None
    return _mix(p["alpha"], F.mse_loss(student, teacher), student, labels)


@register("kl_mae", params=("temperature", "alpha", "mae_weight"), summary="KL at T plus mean absolute error between soft student and soft teacher")
def kl_mae(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
           p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * (T^2 KL + mae_weight * sum_c |p_s^T - p_t^T|, batch mean) + (1 - alpha) * CE.

    The MAE part is bounded (at most 2 per row), which makes it less sensitive to a confidently wrong
    teacher row than the KL term alone.
    """
    assert teacher is not None
    t = float(p["temperature"])
    mae = (F.softmax(student / t, 1) - F.softmax(teacher / t, 1)).abs().sum(1).mean()
    return _mix(p["alpha"], soft_kl(student, teacher, t) + float(p["mae_weight"]) * mae, student, labels)


@register("rkd", needs_teacher_model=True, params=("alpha", "rkd_distance", "rkd_angle"),
          summary="distance- and angle-wise relations of penultimate embeddings (Park et al. 2019)")
def rkd(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
        p: dict[str, Any], *, s_emb: torch.Tensor | None = None, t_emb: torch.Tensor | None = None,
        **_: Any) -> torch.Tensor:
    """alpha * (rkd_distance * L_dist + rkd_angle * L_angle) + (1 - alpha) * CE."""
    assert s_emb is not None and t_emb is not None
    term = float(p["rkd_distance"]) * rkd_distance(s_emb, t_emb) + float(p["rkd_angle"]) * rkd_angle(s_emb, t_emb)
    return _mix(p["alpha"], term, student, labels)


@register("tf_kd", needs_teacher=False, params=("temperature", "alpha", "tf_kd_prob"),
          summary="teacher-free KD: a virtual teacher (label prob a, rest uniform) at temperature T")
def tf_kd(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
          p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * T^2 * KL(virtual || softmax(z_s / T)) + (1 - alpha) * CE; the virtual teacher is not softened."""
    q = virtual_teacher(labels, student.shape[1], p["tf_kd_prob"])
    return _mix(p["alpha"], soft_kl_probs(student, q, p["temperature"]), student, labels)


@register("label_smoothing", needs_teacher=False, params=("alpha", "smoothing"), summary="control without teacher: CE on smoothed labels")
def label_smoothing(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
                    p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * CE(smoothed labels, eps = smoothing) + (1 - alpha) * CE."""
    return _mix(p["alpha"], hard_ce(student, labels, p["smoothing"]), student, labels)


@register("pseudo_label", params=("alpha",), summary="control: CE on the teacher's argmax instead of its soft targets")
def pseudo_label(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
                 p: dict[str, Any], **_: Any) -> torch.Tensor:
    """alpha * CE(argmax teacher) + (1 - alpha) * CE(labels)."""
    assert teacher is not None
    return _mix(p["alpha"], hard_ce(student, teacher.argmax(1)), student, labels)


# Methods whose batch loss is hinton's: what differs is the teacher, read by their Teaching class
# (kdhw.train.distill): a hint layer regressed first (FitNets, stage 1 ``hint_loss``), the previous generation
# (born-again), or the average soft targets of several teachers (``ensemble_logits``).
register("fitnets", needs_teacher_model=True,
         params=("temperature", "alpha", "hint_layer", "teacher_hint_layer", "hint_epochs"),
         summary="stage 1: a student layer regressed onto a teacher layer through a linear adapter; stage 2: hinton")(hinton)
register("born_again", needs_teacher=False, params=("temperature", "alpha", "generations"),
         summary="N generations of self-distillation, each student taught by the previous one")(hinton)
register("ensemble", params=("temperature", "alpha", "teachers", "ensemble_size"),
         summary="hinton on the average soft targets of several teachers")(hinton)

# what check_distill refuses without a teacher
NEEDS_TEACHER = frozenset(n for n, m in METHODS.items() if m.needs_teacher)
