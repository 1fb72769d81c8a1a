"""The one training loop teacher and students share: Adam, cosine decay, best-validation checkpoint.

Keeping a single loop makes the teacher/scratch/KD comparison fair by construction: the arms differ only
in the loss (and the teacher targets it reads), never in optimiser, schedule, batch order or selection.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

# loss_fn(model, x, y, idx) -> scalar; idx indexes the training set (for cached teacher logits)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# score(model) -> (primary, tie-break): the epoch with the highest primary is kept, ties to the higher tie-break
Score = Callable[[nn.Module], tuple[float, float]]


@dataclass
class FitResult:
    best_val_acc: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    # process CPU time: unlike wall time it does not grow when other jobs share the cores, so cost ratios
    # between arms (KD vs scratch epoch) stay comparable on a busy machine
    cpu_seconds_per_epoch: float = 0.0
    # validation cross-entropy at the best epoch: a continuous score that breaks ties in accuracy, which are
    # common on a validation split of a few dozen rows (None when a custom metric selected the epoch)
    best_val_loss: float | None = None
    # the selection score at the chosen epoch when a ``score`` other than validation picked it (agreement with
    # the teacher on the transfer set); None when validation accuracy picked it
    best_score: float | None = None


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
    return float((predict_logits(model, x, batch).argmax(1) == y).mean())


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy (negative log-likelihood) from one pass over ``x``."""
    z = predict_logits(model, x, batch)
    nll = float(torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(np.asarray(y))))
    return float((z.argmax(1) == y).mean()), nll


def set_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``; a brevitas student with the fused forward attached sets the same flags
    without the recursive walk (``kdhw.train.fast.FusedForward.set_mode``)."""
    fused = getattr(model, "fused", None)
    if fused is not None:
        fused.set_mode(training)
    else:
        model.train(training)


def predict_logits(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    set_mode(model, False)
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
    select_from: int = 0,
    on_epoch: Callable[[int], None] | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
    metric: Callable[[nn.Module], float] | None = None,
    steps_per_epoch: int | None = None,
    score: Score | None = None,
    prepare: Callable[[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]], None] | None = None,
    after_epoch: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train in place; the model ends holding its best-validation weights.

    Epochs tied in validation accuracy go to the lower validation loss.  Why: on a validation split of a few
    dozen rows (a label budget with ``data.labels.val``) a long schedule reaches the top accuracy early and
    many times; keeping the first such epoch exported function-matching students from epoch 9 of 300
    (benchmarks/results/kd_pays_recipe.md), while the loss keeps falling as the student converges.

    ``select_from``: epochs before it are never checkpointed (float warm-up, FitNets hint stage: their
    validation accuracy does not describe the model that will be exported); when no epoch is eligible the
    model keeps its last weights.  ``on_epoch(ep)`` runs before each epoch (switching quantizers on).
    ``params`` adds modules the loss owns (a FitNets adapter); ``metric`` replaces validation accuracy as the
    selection criterion (the model selector is judged by the accuracy of the routed system).
    ``score`` picks the epoch instead of validation, which is still measured and reported at the chosen epoch
    (function matching keeps the epoch that agrees best with the teacher on the transfer set: thousands of
    rows the teacher labels, where a label budget leaves a few dozen validation rows).
    ``steps_per_epoch``: optimizer steps per epoch when it must differ from one pass over the rows: an arm
    that trains on the labelled rows alone is given as many steps as the paired arm that also reads the
    transfer set, so the two differ in the data they see, not in how long they train.
    ``prepare``: called with each epoch's batches (inputs, labels, row indices) in step order, before its
    first ``loss_fn`` call (without ``patience``: already before the previous epoch's evaluation), so that a loss whose inputs are expensive to make (augmented
    batches and the online teacher's outputs) can make them ahead, on another core.
    ``after_epoch(model, row)``: called with each epoch's history row once it is evaluated (``kdhw pareto``
    keeps several checkpoints of one training along its beta ramp this way).
    """
    import time

    g = torch.Generator().manual_seed(seed)
    opt = adam(model.parameters() if params is None else params, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train)
    best, best_ep, best_state, best_loss, hist = -1.0, -1, None, None, []
    best_key: tuple[float, float] | None = None
    best_score: float | None = None
    t0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    ep = 0

    def epoch_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        perm = _epoch_order(len(xt), batch_size, steps_per_epoch, g)
        return list(zip(xt[perm].split(batch_size), yt[perm].split(batch_size), perm.split(batch_size)))

    # with prepare and no early stop, the next epoch's batches are handed over before this epoch's evaluation,
    # so the worker makes them while the student is scored (same order, same generators: same numbers)
    ahead = prepare is not None and patience is None
    upcoming = epoch_batches() if ahead and epochs > 0 else None
    if upcoming is not None and prepare is not None:
        prepare(upcoming)
    for ep in bar:
        if on_epoch is not None:
            on_epoch(ep)
        set_mode(model, True)
        if upcoming is not None:
            batches, upcoming = upcoming, None
        else:
            batches = epoch_batches()
            if prepare is not None:
                prepare(batches)
        losses = []
        zero_grad, step = (opt.clear_grads, opt.step_fast) if isinstance(opt, FlatAdam) else (opt.zero_grad, opt.step)
        for xb, yb, idx in batches:
            loss = loss_fn(model, xb, yb, idx)
            zero_grad()
            loss.backward()
            step()
            losses.append(loss.detach())
        # one read of the epoch's losses, not one per step; summed in step order as before
        tot, nb = sum(torch.stack(losses).tolist()) if losses else 0.0, len(losses)
        sched.step()
        if ahead and ep + 1 < epochs and prepare is not None:
            upcoming = epoch_batches()
            prepare(upcoming)
        va, vl = evaluate(model, x_val, y_val) if metric is None else (metric(model), None)
        key = (va, -vl if vl is not None else 0.0) if score is None else score(model)
        hist.append({"epoch": ep, "loss": tot / max(nb, 1), "val_acc": va, **({} if vl is None else {"val_loss": vl}),
                     **({} if score is None else {"score": key[0]})})
        if after_epoch is not None:
            after_epoch(model, hist[-1])
        if ep >= select_from and (best_key is None or key > best_key):
            best, best_ep, best_state, best_loss, best_key = va, ep, copy.deepcopy(model.state_dict()), vl, key
            best_score = None if score is None else key[0]
        bar.set_postfix(loss=f"{tot / max(nb, 1):.3f}", val=f"{va:.3f}", best=f"{best:.3f}")
        if patience is not None and ep >= select_from and ep - max(best_ep, select_from) >= patience:
            break
    bar.close()
    if isinstance(opt, FlatAdam):
        opt.release()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    n = len(hist)
    return FitResult(best, best_ep, n, hist, (time.perf_counter() - t0) / max(n, 1),
                     (time.process_time() - c0) / max(n, 1), best_loss, best_score)


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (its single-tensor update, the CPU default) done once over all parameters.

    Why: a tiny student has a few small parameter tensors, and Adam's seven ops per tensor per step cost more
    than the arithmetic.  Here every parameter becomes a view of one flat tensor, and a step is one
    concatenation of the gradients and the same seven ops on the flat tensor.  Adam's update is elementwise,
    so every value is bit-identical to ``torch.optim.Adam``'s (tests/train/test_fast_forward.py).  A step
    where some parameter has no gradient (FitNets' hint stage leaves later layers out) updates the others
    one at a time, each with its own step count, as Adam does.  ``release()`` gives every parameter its own
    storage back (``fit`` calls it when training ends).
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float) -> None:
        super().__init__(params, lr=lr)
        self._ps = list(params)
        self._segs: list[slice] = []
        n = 0
        for p in self._ps:
            self._segs.append(slice(n, n + p.numel()))
            n += p.numel()
        self._flat = torch.empty(n)
        for p, sl in zip(self._ps, self._segs):
            self._flat[sl].copy_(p.detach().reshape(-1))
            p.data = self._flat[sl].view(p.shape)
        self._m, self._v = torch.zeros(n), torch.zeros(n)
        self._steps = [0] * len(self._ps)

    @staticmethod
    def usable(params: list[torch.nn.Parameter]) -> bool:
        return (len(params) > 0 and len({id(p) for p in params}) == len(params)
                and all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.is_sparse for p in params))

    @staticmethod
    def _update(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, g: torch.Tensor, step: int, lr: float,
                b1: float, b2: float, eps: float) -> None:
        # torch.optim.adam._single_tensor_adam, line for line (no weight decay, amsgrad or maximize)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bias_correction1 = 1 - b1 ** float(step)
        bias_correction2 = 1 - b2 ** float(step)
        step_size = lr / bias_correction1
        denom = (v.sqrt() / bias_correction2 ** 0.5).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self._step()

    def step_fast(self) -> None:
        """``step()`` without the profiler record and hooks torch wraps it in (``fit``'s inner loop)."""
        self._opt_called = True  # what the LR scheduler's wrapper around step() records
        self._step()

    def clear_grads(self) -> None:
        """``zero_grad()`` (set to None) without its wrappers."""
        for p in self._ps:
            p.grad = None

    @torch.no_grad()
    def _step(self) -> None:
        group = self.param_groups[0]
        lr, (b1, b2), eps = float(group["lr"]), group["betas"], group["eps"]
        grads = [p.grad for p in self._ps]
        if all(g is not None for g in grads) and len(set(self._steps)) == 1:
            step = self._steps[0] + 1
            self._update(self._flat, self._m, self._v, torch.cat([g.reshape(-1) for g in grads]), step, lr, b1, b2,
                         eps)
            self._steps = [step] * len(self._ps)
            return
        for i, (g, sl) in enumerate(zip(grads, self._segs)):
            if g is not None:
                self._steps[i] += 1
                self._update(self._flat[sl], self._m[sl], self._v[sl], g.reshape(-1), self._steps[i], lr, b1, b2, eps)

    def release(self) -> None:
        for p in self._ps:
            p.data = p.data.clone()


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """The optimizer ``fit`` trains with: ``FlatAdam`` where it applies, else ``torch.optim.Adam``; both compute
    the same values (``kdhw.train.fast.ENABLED`` off: always the latter, for benchmarks/train_speed.py)."""
    from . import fast

    ps = list(params)
    if fast.ENABLED and FlatAdam.usable(ps) and all(p.requires_grad for p in ps):
        return FlatAdam(ps, lr)
    return torch.optim.Adam(ps, lr=lr)


def _epoch_order(n: int, batch_size: int, steps: int | None, g: torch.Generator) -> torch.Tensor:
    """Row order of one epoch: one permutation, or as many reshuffled passes as ``steps`` batches need."""
    perm = torch.randperm(n, generator=g)
    if steps is None or steps <= -(-n // batch_size):
        return perm if steps is None else perm[:steps * batch_size]
    parts = [perm]
    while sum(len(p) for p in parts) < steps * batch_size:
        parts.append(torch.randperm(n, generator=g))
    return torch.cat(parts)[:steps * batch_size]


class FloatWarmup:
    """Quantizers off for the first ``epochs`` epochs of a brevitas model, then on for good.

    brevitas 0.13.4's ``quantization_status_manager`` switches weight, bias and activation quantizers off
    (layers then compute exactly in float) and back on with their previous state; activation scales that
    brevitas initialises from runtime statistics collect them once quantization is on, i.e. from the
    warmed-up float network.  Call it with the arm's global epoch number before each epoch.
    """

    def __init__(self, model: nn.Module, epochs: int) -> None:
        self.model, self.epochs, self._ctx = model, epochs, None

    def __call__(self, epoch: int) -> None:
        if epoch < self.epochs and self._ctx is None:
            from brevitas.graph.calibrate import quantization_status_manager

            self._ctx = quantization_status_manager(self.model, disable_act_quant=True, disable_weight_quant=True,
                                                    disable_bias_quant=True, is_training=True)
            self._ctx.__enter__()
        elif epoch >= self.epochs:
            self.finish()

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def finish(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)
