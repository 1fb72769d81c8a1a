"""Input augmentation that fits the modality, for every arm (scratch included) so that gains stay paired.

Function matching (Beyer et al. 2022) needs the teacher to see exactly the augmented input the student
sees; ``distill.train_arm`` evaluates the teacher online on the output of ``augment`` whenever it is on.
The same augmentation is a plain training option for the scratch student, which is the control that
tells a teacher's gain from the augmentation's (benchmarks/kd_pays.py: on mnist1d most of the function-matching gain came
from the augmentation and the long schedule, not from the teacher).

The transforms act on inputs in their data shape, channels first:

* ``shift``: signals ``(C, L)`` roll circularly by up to ``shift`` samples (a heartbeat or stroke pattern
  shifted in time is the same class); images ``(C, H, W)`` translate by up to ``shift`` pixels with zero
  fill (no wrap-around: a digit does not re-enter from the other side);
* ``scale``: amplitude scaled by a factor in ``[1 - scale, 1 + scale]`` per sample;
* ``noise``: additive Gaussian noise with standard deviation ``noise`` (in input units).

Flat feature vectors (no spatial axis) only get ``scale`` and ``noise``.  Whether an augmentation keeps
the label is a property of the data, not of the code: 8x8 digits shifted by one pixel lose 20-46 % of the
teacher's accuracy (measured on the digits teacher).  ``follow`` measures that before training and scales
down what the teacher cannot follow (the rule is in its docstring); the report shows what it found.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    shift: int = 0
    scale: float = 0.0
    noise: float = 0.0

    @classmethod
    def from_config(cls, dcfg: dict[str, Any]) -> "Augment":
        return cls(int(dcfg.get("augment_shift", 0) or 0), float(dcfg.get("augment_scale", 0) or 0),
                   float(dcfg.get("augment_noise", 0) or 0))

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.scale > 0 or self.noise > 0

    def __call__(self, x: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Augment a batch ``x`` (any layout holding ``prod(shape)`` values per row); returns x's layout."""
        if not self.active:
            return x
        b = len(x)
        h = x.reshape(b, *shape)
        if self.shift > 0 and len(shape) == 2:
            h = roll_1d(h, torch.randint(-self.shift, self.shift + 1, (b,), generator=gen))
        elif self.shift > 0 and len(shape) == 3:
            off = torch.randint(-self.shift, self.shift + 1, (b, 2), generator=gen)
            h = translate_2d(h, off[:, 0], off[:, 1])
        if self.scale > 0:
            f = 1 + (2 * torch.rand(b, generator=gen) - 1) * self.scale
            h = h * f.reshape(b, *([1] * len(shape)))
        if self.noise > 0:
            h = h + self.noise * torch.randn(h.shape, generator=gen)
        return h.reshape(x.shape)


@functools.lru_cache(maxsize=64)
def _arange(n: int) -> torch.Tensor:
    """``torch.arange(n)``, made once per length (every augmented batch indexes with the same ranges);
    read only."""
    return torch.arange(n)


def roll_1d(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Per-sample circular shift of ``(B, C, L)`` along L: out[b, :, i] = x[b, :, (i - shifts[b]) mod L]."""
    b, c, n = x.shape
    idx = (_arange(n).unsqueeze(0) - shifts.unsqueeze(1)) % n
    return x.gather(2, idx.unsqueeze(1).expand(b, c, n))


def translate_2d(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Per-sample translation of ``(B, C, H, W)`` by (dy, dx) pixels, zeros shifted in."""
    b, c, hgt, wid = x.shape
    p = int(max(dy.abs().max(), dx.abs().max()))
    if p == 0:
        return x
    padded = F.pad(x, (p, p, p, p))
    rows = (_arange(hgt).unsqueeze(0) - dy.unsqueeze(1) + p)  # (B, H)
    cols = (_arange(wid).unsqueeze(0) - dx.unsqueeze(1) + p)  # (B, W)
    bi = _arange(b).reshape(b, 1, 1, 1)
    ci = _arange(c).reshape(1, c, 1, 1)
    return padded[bi, ci, rows.reshape(b, 1, hgt, 1), cols.reshape(b, 1, 1, wid)]


def mixup(x: torch.Tensor, y_soft: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex combination of each row with a permuted partner; labels are mixed as class probabilities.

    Unlabelled rows carry an all-zero label vector, so a mixed row keeps label mass only from its
    labelled part and the hard-label loss weighs it accordingly (``losses.hard_ce``).
    """
    return lam * x + (1 - lam) * x[perm], lam * y_soft + (1 - lam) * y_soft[perm]


# ---------------------------------------------------------------- augmentations the teacher can follow

FOLLOW_ROWS = 2000  # labelled rows the check reads at most (a seeded subset beyond that)
FOLLOW_DRAWS = 4  # random draws of each augmentation per row
MAX_HALVINGS = 4  # a float augmentation halved this often and still too strong is switched off


def follow(aug: Augment, predict: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, y: np.ndarray,
           shape: tuple[int, ...], seed: int, max_drop: float, scalable: set[str] | None = None,
           ) -> tuple[Augment, list[dict[str, Any]]]:
    """Scale down each augmentation the teacher cannot follow; returns the kept one and what was measured.

    Rule: each augmentation (shift, scale, noise) is applied alone to the labelled rows ``x`` (at most
    ``FOLLOW_ROWS``), ``FOLLOW_DRAWS`` random draws per row, and the teacher's top-1 accuracy on them is
    compared with its accuracy on the clean rows.  While the drop is larger than ``max_drop`` (a share,
    0.05 = 5 points), an augmentation named in ``scalable`` is halved (a shift in whole samples or pixels:
    2 -> 1 -> 0; a scale or noise level at most ``MAX_HALVINGS`` times, then off).  One not in
    ``scalable`` (the user set it) is measured and kept.  The last record is the kept augmentation as a
    whole, which is what the online teacher will see.
    """
    scalable = {"shift", "scale", "noise"} if scalable is None else scalable
    if len(x) > FOLLOW_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), FOLLOW_ROWS, replace=False))
        x, y = x[pick], y[pick]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def acc(a: Augment) -> float:
        g = torch.Generator().manual_seed(seed + 104729)
        draws = FOLLOW_DRAWS if a.active else 1
        hits = [(_predict_batched(predict, a(xt, shape, g)).argmax(1).numpy() == y).mean() for _ in range(draws)]
        return float(np.mean(hits))

    clean = acc(Augment())
    records: list[dict[str, Any]] = []
    kept = Augment()
    for name in ("shift", "scale", "noise"):
        asked = getattr(aug, name)
        if not asked:
            continue
        value, tried = asked, []
        for step in range(MAX_HALVINGS + 2):
            a = acc(Augment(**{name: value}))
            tried.append({"value": value, "teacher_acc": a})
            if clean - a <= max_drop or name not in scalable:
                break
            value = value // 2 if name == "shift" else (value / 2 if step < MAX_HALVINGS else 0.0)
            if not value:
                tried.append({"value": value, "teacher_acc": clean})
                break
        kept = replace(kept, **{name: value})
        records.append({"augment": name, "asked": asked, "kept": value, "teacher_acc_clean": clean,
                        "scaled_down": value != asked, "user_set": name not in scalable, "tried": tried})
    if records:
        records.append({"augment": "all kept", "kept": {"shift": kept.shift, "scale": kept.scale, "noise": kept.noise},
                        "teacher_acc_clean": clean, "teacher_acc": acc(kept)})
    return kept, records


def _predict_batched(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     batch: int = 1024) -> torch.Tensor:
    return torch.cat([predict(x[i:i + batch]) for i in range(0, len(x), batch)])
