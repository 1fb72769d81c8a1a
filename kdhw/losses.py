"""Distillation losses, chosen by name from a registry (config ``distill.method``).

Each loss maps (student logits, teacher logits or None, labels, params) to a scalar.  Keeping them pure
functions of tensors makes each one testable on hand-computed values, independent of training.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .errors import InputError

Loss = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor, dict[str, Any]], torch.Tensor]
REGISTRY: dict[str, Loss] = {}
NEEDS_TEACHER: set[str] = set()


def register(name: str, needs_teacher: bool = True) -> Callable[[Loss], Loss]:
    def deco(fn: Loss) -> Loss:
        REGISTRY[name] = fn
        if needs_teacher:
            NEEDS_TEACHER.add(name)
        return fn

    return deco


def get_loss(name: str) -> Loss:
    if name not in REGISTRY:
        raise InputError(f"unknown distillation method '{name}'; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher^T || p_student^T) * T^2, batch mean.

    The T^2 factor keeps the soft-target gradient on the same scale as the hard-label term when T changes
    (Hinton et al. 2015), so alpha means the same thing at every temperature.
    """
    t = float(temperature)
    log_ps = F.log_softmax(student / t, dim=1)
    log_pt = F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * t * t


@register("none", needs_teacher=False)
def hard_only(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
              p: dict[str, Any]) -> torch.Tensor:
    """Plain cross-entropy on labels: the scratch student."""
    return F.cross_entropy(student, labels)


@register("hinton")
def hinton(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
           p: dict[str, Any]) -> torch.Tensor:
    """alpha * T^2 * KL(soft teacher || soft student) + (1 - alpha) * CE(labels)."""
    assert teacher is not None
    alpha = float(p["alpha"])
    return alpha * soft_kl(student, teacher, p["temperature"]) + (1 - alpha) * F.cross_entropy(student, labels)
