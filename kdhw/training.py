"""The one training loop teacher and students share: Adam, cosine decay, best-validation checkpoint.

Keeping a single loop makes the teacher/scratch/KD comparison fair by construction: the arms differ only
in the loss (and the teacher targets it reads), never in optimiser, schedule, batch order or selection.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

# loss_fn(model, x, y, idx) -> scalar; idx indexes the training set (for cached teacher logits)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    best_val_acc: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_epoch: float = 0.0


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
    return float((predict_logits(model, x, batch).argmax(1) == y).mean())


def predict_logits(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))).numpy())
    return np.concatenate(outs)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    patience: int | None = None,
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train in place; the model ends holding its best-validation weights."""
    import time

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train)
    best, best_ep, best_state, hist = -1.0, -1, None, []
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    ep = 0
    for ep in bar:
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        tot, nb = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model, xt[idx], yt[idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, nb = tot + loss.item(), nb + 1
        sched.step()
        va = accuracy(model, x_val, y_val)
        hist.append({"epoch": ep, "loss": tot / max(nb, 1), "val_acc": va})
        if va > best:
            best, best_ep, best_state = va, ep, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{tot / max(nb, 1):.3f}", val=f"{va:.3f}", best=f"{best:.3f}")
        if patience is not None and ep - best_ep >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    n = len(hist)
    return FitResult(best, best_ep, n, hist, (time.perf_counter() - t0) / max(n, 1))
