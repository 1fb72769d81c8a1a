"""Quantization-aware training of the student, from scratch and with distillation, as paired arms.

Every run trains the same student with the same seed, initial weights and batch order at least twice: on
labels alone (scratch) and with the configured distillation method (kd).  That pairing is what makes "KD
helped by x points" a measurement rather than seed noise (tiny students swing several points with the
seed).  Which arms and with what settings is the recipe's choice (``kdhw.train.recipe``): under plain the recipe
options (mixup, augmentation, float warm-up) apply to both arms; under function matching a third arm,
scratch_aug, gets the distilled arm's augmentation and schedule on labels only, so the teacher's own share
of a gain is measured too.  The arm exported is chosen on validation accuracy (ties: validation loss)
unless the config forces one; with a transfer set the distilled arm is kept unless validation clearly
overturns it (``choose_scores``).  Within an arm the exported epoch is the best on validation, or, for a
distilled arm on a transfer set under ``checkpoint: teacher`` (function matching's default), the one that
agrees best with the teacher on the transfer rows (``teacher_agreement``).

Each method is one ``Teaching`` object (built by ``teaching_for``) that owns what the method needs: how
the teacher is read (cached logits, the network online, hidden-layer taps, a previous generation), the
batch loss, the stages it trains in (FitNets: hint, then KD) and what the report says about it.
``train_arm`` builds the student, the rows and the batches, and assembles each batch's loss in one place.

Teacher outputs come from a cache (one pass over the training rows, so a KD epoch costs what a scratch
epoch costs) unless mixup or augmentation is on: a new input every batch, so the teacher is evaluated
online on exactly the input the student sees (function matching, Beyer et al. 2022).

Born-again generation 0 is the scratch arm (labels only), as in Furlanello et al. 2018: the method then
uses no external teacher at all, so whatever it gains is self-distillation, and generation 0 costs nothing
extra because the scratch arm is trained anyway.
"""

from __future__ import annotations

import collections
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import brevitas.nn as qnn
import numpy as np
import torch
import torch.nn as nn

from kdhw.errors import InputError

from . import fast
from .augment import Augment, mixup
from .data import Dataset
from .loop import FitResult, FloatWarmup, LossFn, Score, accuracy, fit, predict_logits
from .losses import METHODS, Method, ensemble_logits, get_method, hint_loss, one_hot_like, teaches
from .recipe import check as check_recipe
from .recipe import plain_settings
from .recipe import resolve as resolve_recipe
from .resource import build_trainable, resource_spec
from .student import StudentNet, build_student, param_count, set_relu_grad_leak
from .teacher import ForeignTeacher

TeacherFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # student-space batch -> {"logits", "emb", "hint"}


@dataclass
class Arm:
    name: str
    model: StudentNet
    fit: FitResult
    test_acc: float
    info: dict[str, Any] = field(default_factory=dict)


def student_input(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """MLP students read flat vectors: the QONNX input then has no spatial layout to convert."""
    first = (spec.get("layers") or [{}])[0]
    flat = isinstance(first, dict) and first.get("type") == "dense"
    return x.reshape(len(x), int(np.prod(x.shape[1:]))) if flat else x


# ---------------------------------------------------------------- layers the methods read

def embedding_layer(model: StudentNet) -> str:
    """The student's penultimate representation: the output feeding its last dense layer."""
    last = max(i for i, m in enumerate(model.layers) if isinstance(m, qnn.QuantLinear) or getattr(m, "is_linear", 0))
    return model.names[last - 1]


def hint_layer(model: StudentNet, dcfg: dict[str, Any], src: str) -> str:
    """The configured student hint layer (default: the penultimate representation), checked to exist."""
    name = dcfg.get("hint_layer")
    if name is None:
        return embedding_layer(model)
    allowed = model.names[1:]
    if name not in allowed:
        raise InputError(f"{src}: distill.hint_layer = {name!r} is not a layer of the student; "
                         f"choose one of: {', '.join(allowed)}")
    return name


def teacher_layer_index(teacher: nn.Module, ref: Any, src: str) -> int:
    """Resolve ``distill.teacher_hint_layer`` (index, negative allowed, or child name) in an nn.Sequential."""
    if not isinstance(teacher, nn.Sequential):
        raise InputError(f"{src}: distill.teacher_hint_layer needs a teacher built as nn.Sequential "
                         f"(kdhw teachers are), got {type(teacher).__name__}")
    names = [n for n, _ in teacher.named_children()]
    n = len(names)
    desc = ", ".join(f"{i}={type(m).__name__}" for i, m in enumerate(teacher.children()))
    if isinstance(ref, str) and ref in names:
        return names.index(ref)
    if isinstance(ref, str) and ref.lstrip("-").isdigit():
        ref = int(ref)
    if isinstance(ref, int) and not isinstance(ref, bool) and -n <= ref < n and ref % n < n - 1:
        return ref % n
    raise InputError(f"{src}: distill.teacher_hint_layer = {ref!r} is not a hidden layer of the teacher; "
                     f"choose an index in [{-n}, {n - 2}] or a name: {desc}")


def _sequential_fn(teacher: nn.Module, shape: tuple[int, ...], taps: dict[str, int]) -> TeacherFn:
    """Teacher forward on student-space inputs, also returning the outputs of the tapped layers.

    Without gradients (the teacher is only ever read) an nn.Sequential runs layer by layer, each layer's own
    forward without the module-call machinery, and its max pools as ``fast.exact_max_pool``: the same values,
    the pools several times faster than torch's kernel on the small maps of kdhw's teachers (function
    matching runs the teacher on every training batch).
    """
    seq = type(teacher) is nn.Sequential
    mods = list(teacher.children()) if taps or seq else [teacher]
    quick = [fast.exact_max_pool(m) or fast.bare_forward(m) for m in mods] if seq else mods

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x.reshape(len(x), *shape)
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(mods if torch.is_grad_enabled() else quick):
            h = m(h)
            for key, j in taps.items():
                if i == j:
                    out[key] = h.flatten(1)
        out["logits"] = h
        return out

    return fn


def student_teacher_fn(model: nn.Module) -> TeacherFn:
    """A (previous-generation) student used as teacher: same input space, logits only."""
    return lambda x: {"logits": model(x)}


def _run(fn: TeacherFn, models: list[nn.Module], x: np.ndarray, batch: int = 1024) -> dict[str, torch.Tensor]:
    """One no-grad pass of ``fn`` over all rows (the cache a KD epoch reads)."""
    for m in models:
        m.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            for k, v in fn(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))).items():
                parts.setdefault(k, []).append(v.detach())
    return {k: torch.cat(v) for k, v in parts.items()}


# ---------------------------------------------------------------- what one method needs, in one object

def _require(method: str, dcfg: dict[str, Any], teacher_train: Any, teacher: Any, teacher_fn: Any,
             src: str) -> None:
    meth = get_method(method)
    runs = (teacher is not None and getattr(teacher, "runnable", True)) or teacher_fn is not None
    if meth.needs_teacher and teacher_train is None and teacher is None and teacher_fn is None:
        raise InputError(f"{src}: distill.method = {method} needs a teacher (teacher section or teacher.path)")
    if meth.needs_teacher_model and teacher is None:
        raise InputError(f"{src}: distill.method = {method} needs the teacher network (its hidden layers), "
                         "but only cached teacher logits were given")
    if meth.needs_teacher_model and isinstance(teacher, ForeignTeacher):
        fmt = teacher.describe()["format"]
        raise InputError(f"{src}: distill.method = {method} needs the teacher's hidden layers, but teacher.path "
                         f"{teacher.path} is {'an' if fmt[0] in 'AEIOU' else 'a'} {fmt}, outputs only; use a kdhw "
                         "teacher or a method that reads logits (hinton, kl_mae, logits_mse, pseudo_label)")
    if _online(dcfg) and meth.needs_teacher and not runs:
        raise InputError(f"{src}: distill.mixup_alpha / augment_* > 0 with method {method} needs the teacher "
                         "network (it is evaluated online on each augmented batch), but only cached teacher "
                         "logits were given")


def _online(dcfg: dict[str, Any]) -> bool:
    """Is every batch a new input (mixup or augmentation), so the teacher must run online?"""
    return float(dcfg.get("mixup_alpha", 0) or 0) > 0 or Augment.from_config(dcfg).active


@dataclass
class Stage:
    """One ``fit`` call of an arm: most methods train in one stage, FitNets in two (hint, then KD)."""

    desc: str
    epochs: int
    loss: LossFn
    params: list[nn.Parameter] | None = None  # None: the student's own parameters
    select: bool = True  # may this stage's epochs be the exported checkpoint?


class Teaching:
    """One arm's method bound to its teacher: how the teacher is read, the batch loss, the stages, the report.

    The teacher is read from a cache of its outputs on every training row (one pass, so a KD epoch costs
    what a scratch epoch costs) or online on each batch (augmented inputs); the cache is filled from the
    pipeline's ``teacher_logits.npz`` where it has the rows and from one no-grad pass of the network where
    it does not (the transfer set, hidden-layer taps, a previous generation).  Subclasses add what their
    method needs beyond logits; ``train_arm`` asks for nothing else.
    """

    def __init__(self, method: Method, dcfg: dict[str, Any], data: Dataset, model: StudentNet, src: str, *,
                 teacher: nn.Module | None, teacher_fn: TeacherFn | None,
                 extra_teachers: list[nn.Module] | None) -> None:
        self.method, self.params, self.src = method, dict(dcfg), src
        self.shape = data.shape
        self.teacher, self.extras = teacher, list(extra_teachers or [])
        self.models = [m for m in [teacher, *self.extras] if m is not None]  # the networks behind teacher_fn
        self.taps: dict[str, int] = {}  # teacher layers read besides its logits
        self.student_feature: str | None = None  # student layer the loss reads besides its logits
        self.setup(model, dcfg)
        if self.reads_teacher and teacher_fn is None and teacher is not None:
            teacher_fn = self.network_fn()
        self.teacher_fn = teacher_fn

    @property
    def reads_teacher(self) -> bool:
        """Does the loss read a teacher (so the arm trains on labelled + transfer-set rows)?"""
        return self.method.needs_teacher

    def setup(self, model: StudentNet, dcfg: dict[str, Any]) -> None:
        """Resolve (and check) the layers the method reads; nothing for logit-only methods."""

    def network_fn(self) -> TeacherFn:
        assert self.teacher is not None
        return _sequential_fn(self.teacher, self.shape, self.taps)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """The method's loss on one batch: the student's forward and the registered loss function."""
        if self.student_feature is None:
            return self.method.loss(model(x), t.get("logits"), y, self.params)
        out, feats = model(x, return_features=True)
        return self.method.loss(out, t.get("logits"), y, self.params,
                                s_emb=feats[self.student_feature].flatten(1), t_emb=t.get("emb"))

    def cache(self, x_fit: np.ndarray, transfer: bool, teacher_train: np.ndarray | None,
              teacher_unlab: np.ndarray | None) -> dict[str, torch.Tensor]:
        """Teacher outputs on every training row (labelled, then transfer set), computed once per arm."""
        logits = self._cached_logits(x_fit, transfer, teacher_train, teacher_unlab)
        cache: dict[str, torch.Tensor] = {}
        if self.taps or logits is None:
            if self.teacher_fn is None:
                raise InputError(f"{self.src}: distill.method = {self.method.name} on a transfer set needs the "
                                 "teacher network or its logits on the transfer set (teacher_logits.npz 'unlab')")
            cache = _run(self.teacher_fn, self.models, x_fit)
        if logits is not None:
            cache["logits"] = logits
        return cache

    def _cached_logits(self, x_fit: np.ndarray, transfer: bool, teacher_train: np.ndarray | None,
                       teacher_unlab: np.ndarray | None) -> torch.Tensor | None:
        """The given logits for every training row, or None when they do not cover them."""
        if teacher_train is None:
            return None
        if not transfer:
            return torch.from_numpy(teacher_train.astype(np.float32))
        if teacher_unlab is not None:
            if len(teacher_unlab) != len(x_fit) - len(teacher_train):
                raise InputError(f"{self.src}: cached teacher logits cover {len(teacher_unlab)} transfer-set rows, "
                                 f"the data has {len(x_fit) - len(teacher_train)}; recompute the teacher logits")
            return torch.from_numpy(np.concatenate([teacher_train, teacher_unlab]).astype(np.float32))
        return None

    def stages(self, name: str, epochs: int, batch_loss: LossFn, batches: Batches,
               model: StudentNet, x_fit: np.ndarray) -> list[Stage]:
        return [Stage(name, epochs, batch_loss)]

    def info(self, results: list[FitResult]) -> dict[str, Any]:
        """What the report says about this method after training."""
        return {}


@teaches("rkd")
class RelationalTeaching(Teaching):
    """RKD: relations between penultimate embeddings, the teacher's read from its last hidden layer."""

    def setup(self, model: StudentNet, dcfg: dict[str, Any]) -> None:
        self.student_feature = embedding_layer(model)
        t = self.teacher
        self.taps["emb"] = len(list(t.children())) - 2 if isinstance(t, nn.Sequential) else -1
        if self.taps["emb"] < 0:
            raise InputError(f"{self.src}: distill.method = rkd needs a teacher built as nn.Sequential "
                             "(kdhw teachers are)")


@teaches("fitnets")
class FitNetsTeaching(Teaching):
    """FitNets: stage 1 regresses a student layer onto a teacher layer through a linear adapter that is not
    exported; stage 2 is Hinton KD.  Layers after the hint get no gradient in stage 1, so Adam leaves them
    untouched until stage 2."""

    def setup(self, model: StudentNet, dcfg: dict[str, Any]) -> None:
        self.hint = hint_layer(model, dcfg, self.src)
        self.taps["hint"] = teacher_layer_index(self.teacher, dcfg.get("teacher_hint_layer", -2), self.src)
        self.hint_epochs = int(dcfg.get("hint_epochs", 0))
        self.adapter: nn.Module | None = None

    def stages(self, name: str, epochs: int, batch_loss: LossFn, batches: Batches,
               model: StudentNet, x_fit: np.ndarray) -> list[Stage]:
        h = self.hint_epochs
        if h <= 0:
            return [Stage(name, epochs, batch_loss)]
        assert self.teacher_fn is not None
        x2 = torch.from_numpy(np.ascontiguousarray(x_fit[:2], dtype=np.float32))
        with torch.no_grad():
            # a copy: a forward of the training model would already move brevitas' runtime activation statistics
            _, feats = copy.deepcopy(model)(x2, return_features=True)
            s_dim, t_dim = feats[self.hint].flatten(1).shape[1], self.teacher_fn(x2)["hint"].shape[1]
        adapter = self.adapter = nn.Linear(s_dim, t_dim)
        layer = self.hint

        def hint_batch_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            x, _, t = batches(x, y, idx)
            _, f = m(x, return_features=True)
            return hint_loss(adapter(f[layer].flatten(1)), t["hint"])

        return [Stage(f"{name} hint", h, hint_batch_loss, list(model.parameters()) + list(adapter.parameters()),
                      select=False),
                Stage(name, epochs - h, batch_loss)]

    def info(self, results: list[FitResult]) -> dict[str, Any]:
        if self.adapter is None:
            return {}
        first = results[0]
        return {"hint_layer": self.hint, "teacher_hint_layer": self.taps["hint"], "hint_epochs": self.hint_epochs,
                "adapter_params": sum(p.numel() for p in self.adapter.parameters()),
                "hint_loss_last": first.history[-1]["loss"] if first.history else None}


@teaches("ensemble")
class EnsembleTeaching(Teaching):
    """Hinton KD on the mean soft targets of several teachers (``ensemble_logits``)."""

    def network_fn(self) -> TeacherFn:
        members = [_sequential_fn(m, self.shape, {}) for m in [self.teacher, *self.extras] if m is not None]
        t = float(self.params["temperature"])
        return lambda x: {"logits": ensemble_logits([f(x)["logits"] for f in members], t)}

    def cache(self, x_fit: np.ndarray, transfer: bool, teacher_train: np.ndarray | None,
              teacher_unlab: np.ndarray | None) -> dict[str, torch.Tensor]:
        main = self._cached_logits(x_fit, transfer, teacher_train, teacher_unlab)
        if main is None:
            if self.teacher is None:
                raise InputError(f"{self.src}: distill.method = ensemble on a transfer set needs the teacher network "
                                 "or its logits on the transfer set")
            main = _run(_sequential_fn(self.teacher, self.shape, {}), self.models, x_fit)["logits"]
        logits = [main] + [_run(_sequential_fn(m, self.shape, {}), self.extras, x_fit)["logits"] for m in self.extras]
        return {"logits": ensemble_logits(logits, self.params["temperature"])}


@teaches("born_again")
class BornAgainTeaching(Teaching):
    """Self-distillation: the teacher is the previous generation (``teacher_fn``), never an external one."""

    @property
    def reads_teacher(self) -> bool:
        return True


def teaching_for(method: str, dcfg: dict[str, Any], data: Dataset, model: StudentNet, src: str = "config", *,
                 teacher: nn.Module | None = None, teacher_fn: TeacherFn | None = None,
                 extra_teachers: list[nn.Module] | None = None) -> Teaching:
    """The object that owns ``method``'s teacher access, loss, stages and report info for one arm."""
    meth = get_method(method)
    return (meth.teaching or Teaching)(meth, dcfg, data, model, src, teacher=teacher, teacher_fn=teacher_fn,
                                              extra_teachers=extra_teachers)


@dataclass
class TrainingRows:
    """The rows an arm trains on and its optimizer steps per epoch."""

    x: np.ndarray
    y: np.ndarray  # -1 on transfer-set rows
    steps: int | None  # None: one pass over ``x``
    transfer: int  # transfer-set rows included

    @classmethod
    def of(cls, x_train: np.ndarray, x_unlab: np.ndarray, y_train: np.ndarray, reads_teacher: bool,
           batch_size: int) -> TrainingRows:
        """Labelled + transfer-set rows when the loss reads a teacher; else the labelled rows with as many steps
        per epoch as an arm that reads them all (paired arms differ in what they see, not how long they train)."""
        transfer = reads_teacher and len(x_unlab) > 0
        x = np.concatenate([x_train, x_unlab]) if transfer else x_train
        y = np.concatenate([y_train, np.full(len(x_unlab), -1, dtype=np.int64)]) if transfer else y_train
        n_all = len(x_train) + len(x_unlab)
        return cls(x, y, -(-n_all // batch_size) if len(x) < n_all else None, len(x_unlab) if transfer else 0)


class Batches:
    """Input, labels and teacher outputs of each training batch.

    With mixup or augmentation on, every batch is a new input: augmented, mixed (inputs and one-hot labels
    alike), and the teacher runs on exactly that input (function matching, Beyer et al. 2022).  Otherwise
    the teacher outputs are the cached rows of the batch.  Augmentation and mixup draw from their own
    generators, seeded alike in every arm, so paired arms see the same inputs.

    Online batches do not depend on the student, so ``prepare`` (``fit`` calls it at the start of each
    epoch) makes the epoch's batches ahead on a worker thread, one after the other in step order: the
    teacher and the augmentation run on a second core while the student trains, and every batch is the one
    the step would have made itself (the worker alone draws from the generators, in the same order).
    """

    def __init__(self, dcfg: dict[str, Any], data: Dataset, seed: int, teacher_fn: TeacherFn | None,
                 cache: dict[str, torch.Tensor], ahead: bool = False) -> None:
        self.online = _online(dcfg)
        self.aug, self.mix_a = Augment.from_config(dcfg), float(dcfg.get("mixup_alpha", 0) or 0)
        self.shape, self.n_classes = data.shape, data.n_classes
        self.teacher_fn, self.cache = teacher_fn, cache
        self.mix_rng = np.random.default_rng(seed + 7919)
        self.mix_g = torch.Generator().manual_seed(seed + 7919)
        self._pool: Any = None
        self._ahead: collections.deque[tuple[torch.Tensor, Any]] = collections.deque()
        if ahead and self.online:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdhw-batches")

    def prepare(self, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """Start making these batches (in order) on the worker thread; without one, nothing."""
        if self._pool is None:
            return
        for x, y, idx in batches:
            self._ahead.append((idx, self._pool.submit(self._make, x, y)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, collections.deque()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if not self.online:
            return x, y, {k: v[idx] for k, v in self.cache.items()}
        if self._ahead:
            made_for, fut = self._ahead.popleft()
            if made_for is not idx:
                raise RuntimeError("internal error: a prepared batch was consumed out of order")
            return fut.result()
        return self._make(x, y)

    def _make(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            x = self.aug(x, self.shape, self.mix_g)
            if self.mix_a > 0:
                lam = float(self.mix_rng.beta(self.mix_a, self.mix_a))
                x, y = mixup(x, one_hot_like(y, self.n_classes), lam, torch.randperm(len(x), generator=self.mix_g))
            if self.teacher_fn is None:
                return x, y, {}
            return x, y, {k: v.detach() for k, v in self.teacher_fn(x).items()}


# ---------------------------------------------------------------- one arm

def train_arm(
    name: str, spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
    method: str, progress: bool = True, src: str = "config", *, teacher: nn.Module | None = None,
    teacher_fn: TeacherFn | None = None, extra_teachers: list[nn.Module] | None = None,
    teacher_unlab: np.ndarray | None = None, init_state: dict[str, torch.Tensor] | None = None,
    after_epoch: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> Arm:
    """Train one student arm with ``method``.

    ``teacher_train`` / ``teacher_unlab``: cached teacher logits on the labelled training rows and on the
    transfer set (``data.unlab``); ``teacher``: the float teacher network (hidden-layer methods, online
    teacher under augmentation, or logits not cached); ``teacher_fn`` overrides how the teacher is
    evaluated (born-again passes the previous generation); ``extra_teachers``: the other members of an
    ensemble; ``init_state``: start from these weights instead of a fresh initialisation (QKD's
    self-study-then-distil schedule passes the trained scratch student); ``after_epoch``: ``fit``'s hook,
    called after every epoch of the selectable stages.

    Methods that read a teacher train on labelled + transfer-set rows (the hard-label term sees only the
    labelled ones); label-only methods train on the labelled rows with the same number of steps per epoch.
    """
    dcfg = plain_settings(dcfg)
    _require(method, dcfg, teacher_train, teacher, teacher_fn, src)
    if get_method(method).name == "born_again" and teacher_fn is None and teacher is None:
        raise InputError(f"{src}: distill.method = born_again is trained generation by generation by distill(); "
                         "train_arm needs the previous generation as teacher_fn")
    xs = {s: student_input(getattr(data, f"x_{s}"), spec) for s in ("train", "val", "test")}
    seed = int(dcfg["seed"])
    torch.manual_seed(seed)
    spec = resource_spec(spec, int(dcfg["epochs"]))  # a beta ramp spans this arm's own epochs (fm trains longer)
    model = build_trainable(spec, xs["train"].shape[1:], data.n_classes, src)  # resource-aware when asked
    if init_state is not None:
        model.load_state_dict(init_state)
    set_relu_grad_leak(model, float(dcfg["relu_grad_leak"]))
    teaching = teaching_for(method, dcfg, data, model, src, teacher=teacher, teacher_fn=teacher_fn,
                            extra_teachers=extra_teachers)
    rows = TrainingRows.of(xs["train"], student_input(data.unlab, spec), data.y_train, teaching.reads_teacher,
                           int(dcfg["batch_size"]))
    x_fit, y_fit = rows.x, rows.y
    info: dict[str, Any] = {"transfer_rows": rows.transfer} if rows.transfer else {}
    if init_state is not None:
        info["init"] = "scratch"
    t_fn = teaching.teacher_fn if teaching.reads_teacher else None
    cache = (teaching.cache(x_fit, rows.transfer > 0, teacher_train, teacher_unlab)
             if teaching.reads_teacher and not _online(dcfg) else {})
    batches = Batches(dcfg, data, seed, t_fn, cache, ahead=fast.ENABLED and fast.spare_core())
    if teaching.reads_teacher:
        for tm in teaching.models:
            tm.eval()
    if batches.aug.active and t_fn is not None:
        info.update(teacher_on_augmented(t_fn, teaching.models, batches.aug, xs["train"], data, seed))

    def batch_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The one place a training batch's loss is assembled: inputs and teacher targets, then the method."""
        x, y, t = batches(x, y, idx)
        loss = teaching.loss(m, x, y, t)
        resource = getattr(m, "resource_loss", None)  # a resource-aware student owns its cost term
        return loss if resource is None else loss + resource()

    stages = teaching.stages(name, int(dcfg["epochs"]), batch_loss, batches, model, x_fit)
    warm = FloatWarmup(model, int(dcfg.get("float_warmup_epochs", 0) or 0))
    common = dict(lr=dcfg["lr"], batch_size=int(dcfg["batch_size"]), seed=seed, progress=progress,
                  steps_per_epoch=rows.steps, prepare=batches.prepare if batches.online else None)
    # the real teacher on a transfer set may pick the epoch (not a previous born-again generation)
    by_teacher = (dcfg.get("checkpoint") == "teacher" and teaching.reads_teacher and rows.transfer > 0
                  and teacher_fn is None)
    score = None
    if by_teacher:
        x_tr = x_fit[len(x_fit) - rows.transfer:]
        t_tr = (cache["logits"][len(x_fit) - rows.transfer:] if "logits" in cache else
                _run(teaching.teacher_fn, teaching.models, x_tr)["logits"])  # type: ignore[arg-type]
        score = teacher_agreement(x_tr, t_tr)
    fast.attach(model)  # brevitas students train on the fused forward: the same numbers, far less overhead
    try:
        results = _fit_stages(model, stages, warm, x_fit, y_fit, xs["val"], data.y_val, common, score, after_epoch)
    finally:
        fast.detach(model)  # export and everything after training run brevitas' own forward
        batches.close()
    info.update(teaching.info(results))
    if by_teacher:
        info["checkpoint"] = {"by": "teacher agreement", "rows": rows.transfer,
                              "agreement": results[-1].best_score}
    if warm.epochs:
        info["float_warmup_epochs"] = warm.epochs
    return Arm(name, model, _merged(results), accuracy(model, xs["test"], data.y_test), info)


def teacher_agreement(x: np.ndarray, t_logits: torch.Tensor) -> Score:
    """The score ``checkpoint: teacher`` keeps an epoch by: the share of the rows ``x`` where the student's top
    class is the teacher's, ties to the lower cross-entropy against the teacher's probabilities.

    Why: under a label budget the validation split keeps a few dozen rows, so the best-validation epoch is
    decided by one or two of them; the transfer set has hundreds or thousands of rows the teacher labels,
    and a tiny student's accuracy follows its agreement with a much better teacher.  The rows are the clean
    transfer inputs, which function matching's student only ever saw augmented and mixed.  On held-out seeds
    (5-9) of the kd_pays students this choice tested above the budget-cut validation's on every student
    (+0.3 to +4.3 points) and level with the full validation split's on average
    (benchmarks/results/checkpoint_rule.md).
    """
    top = t_logits.argmax(1).numpy()
    logp_t = torch.log_softmax(t_logits.float(), 1)
    p_t = logp_t.exp()

    def score(model: nn.Module) -> tuple[float, float]:
        z = torch.from_numpy(predict_logits(model, x))
        ce = float(-(p_t * torch.log_softmax(z, 1)).sum(1).mean())
        return float((z.argmax(1).numpy() == top).mean()), -ce

    return score


def _fit_stages(model: StudentNet, stages: list[Stage], warm: FloatWarmup, x_fit: np.ndarray, y_fit: np.ndarray,
                x_val: np.ndarray, y_val: np.ndarray, common: dict[str, Any],
                score: Score | None = None,
                after_epoch: Callable[[nn.Module, dict[str, Any]], None] | None = None) -> list[FitResult]:
    """Train the stages one after the other; float warm-up counts epochs across them, and only epochs of a
    selectable stage after the warm-up (and after a resource-aware student's own ``select_from``) may become
    the exported checkpoint.  A resource-aware student's ``set_epoch`` hears the epoch of selectable stages."""
    results: list[FitResult] = []
    offset = 0
    set_epoch = getattr(model, "set_epoch", None)
    try:
        for st in stages:
            if st.select:
                def on_epoch(e: int, o: int = offset) -> None:
                    warm(e + o)
                    if set_epoch is not None:
                        set_epoch(e + o)
                select_from = max(0, warm.epochs - offset, getattr(model, "select_from", 0) - offset)
            else:
                def on_epoch(e: int, o: int = offset) -> None:
                    warm(e + o)
                select_from = st.epochs
            results.append(fit(model, st.loss, x_fit, y_fit, x_val, y_val, epochs=st.epochs, desc=st.desc,
                               on_epoch=on_epoch, select_from=select_from, params=st.params,
                               score=score if st.select else None,
                               after_epoch=after_epoch if st.select else None, **common))
            offset += st.epochs
    finally:
        warm.finish()
    return results


def _merged(results: list[FitResult]) -> FitResult:
    """One FitResult over all stages: epochs numbered across them, costs averaged per epoch."""
    if len(results) == 1:
        return results[0]
    offsets = [sum(r.epochs_run for r in results[:i]) for i in range(len(results))]
    last, n = results[-1], offsets[-1] + results[-1].epochs_run
    return FitResult(last.best_val_acc, last.best_epoch + offsets[-1], n,
                     [{**row, "epoch": row["epoch"] + o} for r, o in zip(results, offsets) for row in r.history],
                     sum(r.seconds_per_epoch * r.epochs_run for r in results) / max(n, 1),
                     sum(r.cpu_seconds_per_epoch * r.epochs_run for r in results) / max(n, 1), last.best_val_loss,
                     last.best_score)


def teacher_on_augmented(teacher_fn: TeacherFn, models: list[nn.Module], aug: Augment, x: np.ndarray,
                         data: Dataset, seed: int) -> dict[str, float]:
    """Teacher accuracy on the labelled training rows, clean and after one pass of the augmentation.

    An augmentation that changes the class (a shifted 8x8 digit) makes the online teacher's targets wrong;
    this pair of numbers in the report is how a user sees that before trusting function matching.
    """
    for m in models:
        m.eval()
    g = torch.Generator().manual_seed(seed + 104729)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        clean = teacher_fn(xt)["logits"].argmax(1).numpy()
        augd = teacher_fn(aug(xt, data.shape, g))["logits"].argmax(1).numpy()
    return {"teacher_train_acc_clean": float((clean == data.y_train).mean()),
            "teacher_train_acc_augmented": float((augd == data.y_train).mean())}


# ---------------------------------------------------------------- teachers for the ensemble

def _saved_input_shape(path: str) -> tuple[int, ...] | None:
    try:
        return tuple(torch.load(path, map_location="cpu", weights_only=True)["input_shape"])
    except Exception:
        return None


def ensemble_members(dcfg: dict[str, Any], data: Dataset, teacher_cfg: dict[str, Any] | None = None,
                     progress: bool = True, src: str = "config") -> list[nn.Module]:
    """The ensemble's members besides the main teacher: the listed files, or ``ensemble_size - 1`` teachers
    trained like the main one with seeds teacher.seed + 1, + 2, ... (different inits and batch orders)."""
    from .teacher import load_teacher, train_teacher

    if dcfg.get("teachers"):
        out = []
        for p in dcfg["teachers"]:
            model, _ = load_teacher(p)
            shape = _saved_input_shape(p)
            if shape is not None and shape != data.shape:
                raise InputError(f"{src}: distill.teachers: {p} was trained on inputs of shape {shape}, "
                                 f"the data has {data.shape}")
            out.append(model)
        return out
    k = int(dcfg.get("ensemble_size", 1)) - 1
    if k <= 0:
        return []
    if teacher_cfg is None:
        raise InputError(f"{src}: distill.method = ensemble with ensemble_size = {k + 1} must train {k} more "
                         "teachers but got no teacher config; list teacher.pt files in distill.teachers instead")
    return [train_teacher({**teacher_cfg, "seed": int(teacher_cfg["seed"]) + i + 1, "path": None}, data, progress)[0]
            for i in range(k)]


# ---------------------------------------------------------------- both arms

def check_distill(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, src: str = "config", *,
                  teacher_train: np.ndarray | None = None, teacher: nn.Module | None = None,
                  teacher_known: bool = True) -> None:
    """Refuse a method whose inputs are missing before anything is trained (one line each).

    With ``teacher_known=False`` (called before the teacher exists) only the student side is checked.
    """
    method = get_method(dcfg["method"]).name
    if method == "fitnets":
        shape = student_input(data.x_val[:1], spec).shape[1:]
        hint_layer(build_student(spec, shape, data.n_classes, src), dcfg, src)
        if teacher is not None:
            teacher_layer_index(teacher, dcfg.get("teacher_hint_layer", -2), src)
    if method == "ensemble" and dcfg.get("teachers"):
        for p in dcfg["teachers"]:
            if not Path(p).is_file():
                raise InputError(f"{src}: distill.teachers: {p}: teacher file not found")
    if dcfg.get("checkpoint") == "teacher" and len(data.unlab) == 0:
        raise InputError(f"{src}: distill.checkpoint = teacher needs a transfer set (a label budget or "
                         "data.unlabeled): the teacher's agreement is measured on rows without labels; use val")
    if teacher_known:
        _require(method, dcfg, teacher_train, teacher, None, src)
        check_recipe(dcfg, teacher, src)


def distill(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
            progress: bool = True, src: str = "config", *, teacher: nn.Module | None = None,
            teacher_cfg: dict[str, Any] | None = None, extra_teachers: list[nn.Module] | None = None,
            scratch: Arm | None = None, teacher_unlab: np.ndarray | None = None,
            scratch_aug: Arm | None = None, parallel: bool = False) -> dict[str, Arm]:
    """Train the arms of the run's recipe (``kdhw.train.recipe``): plain = scratch and (if a method is configured)
    the distilled arm; function matching = scratch, ``scratch_aug`` (its control: the same augmentation and
    schedule, labels only) and the distilled arm.

    Optional: ``teacher`` (the float network: hidden-layer methods, online teacher under augmentation),
    ``teacher_cfg`` (to train extra ensemble members), ``extra_teachers`` (ensemble members already built,
    so a sweep trains them once), ``scratch`` / ``scratch_aug`` (arms already trained with the same
    settings), ``teacher_unlab`` (cached teacher logits on the transfer set ``data.unlab``), ``parallel``
    (train ``scratch_aug`` in a second process meanwhile: for a single run on a machine with a spare core,
    not for grids that already fill the cores).

    ``distill.init: scratch`` is QKD's schedule: the distilled arm starts from the trained scratch student
    (quantized self-study first) instead of a fresh initialisation.
    """
    method = dcfg["method"]
    check_distill(spec, dcfg, data, src, teacher_train=teacher_train, teacher=teacher)
    recipe = resolve_recipe(dcfg, data, teacher, src=src)
    given = {"scratch": scratch, "scratch_aug": scratch_aug}
    plan = recipe.arms(method)
    aside = (_Aside("scratch_aug", spec, plan["scratch_aug"], data, src)
             if parallel and "scratch_aug" in plan and scratch_aug is None else None)
    arms: dict[str, Arm] = {}
    try:
        _train_here(plan, given, aside, arms, spec, data, teacher_train, progress, src, recipe, teacher=teacher,
                    teacher_cfg=teacher_cfg, extra_teachers=extra_teachers, teacher_unlab=teacher_unlab)
    except BaseException:
        if aside is not None:
            aside.stop()  # a failed run exits now, not once the control arm has finished training
        raise
    if aside is not None:
        arms[aside.name] = aside.result()
    return {name: arms[name] for name in plan}


def _train_here(plan: dict[str, tuple[dict[str, Any], str]], given: dict[str, Arm | None], aside: _Aside | None,
                arms: dict[str, Arm], spec: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
                progress: bool, src: str, recipe: Any, **teachers: Any) -> None:
    """The arms of ``plan`` this process trains, into ``arms`` (in plan order: kd may start from scratch)."""
    for name, (cfg, meth) in plan.items():
        if given.get(name) is not None:
            arms[name] = given[name]  # type: ignore[assignment]
        elif aside is not None and name == aside.name:
            continue  # collected by distill() once the arms trained here are done
        elif name == "kd":
            arms[name] = _distilled_arm(spec, cfg, data, teacher_train, arms["scratch"], progress, src, **teachers)
            arms[name].info["recipe"] = recipe.describe()
        else:
            arms[name] = train_arm(name, spec, cfg, data, None, meth, progress, src)


def _arm_elsewhere(name: str, spec: dict[str, Any], cfg: dict[str, Any], meth: str, data: Dataset,
                   src: str) -> dict[str, Any]:
    """``train_arm`` in a worker process (one intra-op thread, as the CLI trains); what rebuilds the arm."""
    torch.set_num_threads(1)
    arm = train_arm(name, spec, cfg, data, None, meth, False, src)
    return {"state": arm.model.state_dict(), "training": arm.model.training, "fit": arm.fit,
            "test_acc": arm.test_acc, "info": arm.info}


class _Aside:
    """An arm that reads no teacher (function matching's ``scratch_aug``), trained in a second process while
    this one trains the others.  Why: each arm is a long run of tiny steps, bound by one core's Python
    overhead, and the machine has a second core; ``train_arm`` seeds everything from the arm's settings, so
    the arm is the same as trained here (tests/train/test_distill.py compares the weights).  The student is
    rebuilt here from its weights (brevitas modules do not pickle)."""

    def __init__(self, name: str, spec: dict[str, Any], arm: tuple[dict[str, Any], str], data: Dataset,
                 src: str) -> None:
        import multiprocessing

        self.name, self.spec, self.cfg, self.data, self.src = name, spec, arm[0], data, src
        self._pool = multiprocessing.get_context("spawn").Pool(1)  # a pool that stop() can terminate
        self._job = self._pool.apply_async(_arm_elsewhere, (name, spec, arm[0], arm[1], data, src))

    def stop(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def result(self) -> Arm:
        try:
            out = self._job.get()
        finally:
            self._pool.close()
            self._pool.join()
        x = student_input(self.data.x_train[:1], self.spec)
        spec = resource_spec(self.spec, int(plain_settings(self.cfg)["epochs"]))
        model = build_trainable(spec, x.shape[1:], self.data.n_classes, self.src)
        model.load_state_dict(out["state"])
        model.train(out["training"])
        return Arm(self.name, model, out["fit"], out["test_acc"], out["info"])


def _distilled_arm(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
                   scratch: Arm, progress: bool, src: str, *, teacher: nn.Module | None,
                   teacher_cfg: dict[str, Any] | None, extra_teachers: list[nn.Module] | None,
                   teacher_unlab: np.ndarray | None) -> Arm:
    """The arm trained with ``distill.method``: born-again generations from the scratch arm, an ensemble's
    members, or one arm (from the scratch student's weights under ``init: scratch``)."""
    method = dcfg["method"]
    if method == "born_again":
        return _born_again(spec, dcfg, data, scratch, progress, src)
    init = scratch.model.state_dict() if dcfg.get("init", "fresh") == "scratch" else None
    extras = None
    if method == "ensemble":
        extras = extra_teachers if extra_teachers is not None else ensemble_members(dcfg, data, teacher_cfg,
                                                                                    progress, src)
    arm = train_arm("kd", spec, dcfg, data, teacher_train, method, progress, src, teacher=teacher,
                    extra_teachers=extras, teacher_unlab=teacher_unlab, init_state=init)
    if method == "ensemble":
        arm.info.update(_ensemble_info(teacher, teacher_train, extras or [], dcfg, data))
    return arm


def _ensemble_info(teacher: nn.Module | None, teacher_train: Any, extras: list[nn.Module], dcfg: dict[str, Any],
                   data: Dataset) -> dict[str, Any]:
    """Test accuracy of each member and of the averaged soft targets (when every member is a network)."""
    if teacher is None:
        return {"members": 1 + len(extras)}
    logits = [torch.from_numpy(predict_logits(m, data.x_test)) for m in [teacher, *extras]]
    ens = ensemble_logits(logits, dcfg["temperature"]).numpy()
    return {"members": len(logits),
            "member_test_acc": [float((z.numpy().argmax(1) == data.y_test).mean()) for z in logits],
            "ensemble_test_acc": float((ens.argmax(1) == data.y_test).mean())}


def _born_again(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, gen0: Arm, progress: bool,
                src: str) -> Arm:
    """Generation k + 1 is distilled from generation k; generation 0 is the scratch arm."""
    prev, gens = gen0, [{"generation": 0, "val_acc": gen0.fit.best_val_acc, "test_acc": gen0.test_acc}]
    for g in range(1, int(dcfg["generations"]) + 1):
        prev.model.eval()
        prev = train_arm(f"gen{g}", spec, dcfg, data, None, "born_again", progress, src,
                         teacher_fn=student_teacher_fn(prev.model))
        gens.append({"generation": g, "val_acc": prev.fit.best_val_acc, "test_acc": prev.test_acc})
    return Arm("kd", prev.model, prev.fit, prev.test_acc, {**prev.info, "generations": gens})


# One-sided 95 % normal quantile: how far another arm's validation accuracy must exceed the distilled arm's
# before a run with a transfer set gives up the teacher's measured gain (``choose``).
KEEP_DISTILLED_Z = 1.645


def noise_margin(a: float, b: float, rows: int, z: float = KEEP_DISTILLED_Z) -> float:
    """The accuracy difference two arms show on ``rows`` validation rows by chance alone, at ``z`` standard
    errors (two independent proportions at their mean; the mean is kept half a row away from 0 and 1 so a
    29-row split where both arms score 100 % or 96.6 % still has a non-zero margin)."""
    n = max(int(rows), 1)
    p = min(max((a + b) / 2, 0.5 / n), 1 - 0.5 / n)
    return z * math.sqrt(2 * p * (1 - p) / n)


def choose_scores(scores: dict[str, tuple[float, float | None]], select: str, *, transfer_rows: int = 0,
                  val_rows: int = 0) -> tuple[str, str]:
    """Pick the exported arm from (validation accuracy, validation loss) per arm; ``choose`` on trained arms.

    Without a transfer set: the best validation accuracy; ties (common on a split of a few dozen rows) go to
    the lower validation loss (cross-entropy at the best epoch, a continuous score that separates a
    confident, right student from a lucky one), and only then to scratch.

    With a transfer set (``transfer_rows`` > 0: a label budget or unlabelled rows) and a distilled arm, that
    arm is kept unless another arm's validation accuracy is higher by more than ``noise_margin``.  Why: with
    a transfer set the teacher's gain was significant on every student kdhw measured (benchmarks/kd_pays),
    while a validation split cut to the label budget (29 rows on digits at 10 %) cannot tell arms a few
    points apart, so "best validation accuracy" there mostly exports noise; a clearly better arm still wins.
    """
    if select in ("kd", "scratch", "scratch_aug"):
        if select not in scores:
            raise InputError(f"distill.select = {select} but no {select} arm was trained")
        return select, "forced by distill.select"

    def loss(k: str) -> float:
        v = scores[k][1]
        return math.inf if v is None else v

    if transfer_rows > 0 and val_rows > 0 and "kd" in scores:
        kd = scores["kd"][0]
        better = [k for k in scores if k != "kd" and scores[k][0] - kd > noise_margin(scores[k][0], kd, val_rows)]
        if not better:
            return "kd", (f"distilled arm kept (transfer set of {transfer_rows} rows): no other arm beats its "
                          f"validation accuracy {100 * kd:.2f} % by more than the noise of {val_rows} rows")
        scores = {k: scores[k] for k in better}
    best = max(scores, key=lambda k: (scores[k][0], -loss(k), k == "scratch"))
    acc = scores[best][0]
    tied = [k for k in scores if scores[k][0] == acc]
    if len(tied) == 1:
        return best, "best validation accuracy" + (" (by more than the validation noise)" if transfer_rows > 0
                                                   and val_rows > 0 and best != "kd" else "")
    losses = ", ".join(f"{k} {loss(k):.3f}" for k in sorted(tied, key=loss))
    return best, f"validation accuracy tied at {100 * acc:.2f} %; lowest validation loss ({losses})"


def choose(arms: dict[str, Arm], select: str, data: Dataset | None = None) -> tuple[str, str]:
    """Pick the exported arm: forced by ``distill.select``, else ``choose_scores`` on each arm's best
    validation accuracy and loss (``data`` says whether the run has a transfer set and how many validation
    rows judged the arms)."""
    return choose_scores({k: (a.fit.best_val_acc, a.fit.best_val_loss) for k, a in arms.items()}, select,
                         transfer_rows=0 if data is None else len(data.unlab),
                         val_rows=0 if data is None else len(data.y_val))


def summary(arms: dict[str, Arm]) -> dict[str, Any]:
    out = {}
    for k, a in arms.items():
        out[k] = {"val_acc": a.fit.best_val_acc, "val_loss": a.fit.best_val_loss, "test_acc": a.test_acc,
                  "best_epoch": a.fit.best_epoch,
                  "epochs": a.fit.epochs_run, "seconds_per_epoch": a.fit.seconds_per_epoch,
                  "cpu_seconds_per_epoch": a.fit.cpu_seconds_per_epoch, "params": param_count(a.model)}
        if a.info:
            out[k]["info"] = json.loads(json.dumps(a.info, default=float))
    return out


__all__ = ["Arm", "METHODS", "check_distill", "choose", "choose_scores", "distill", "ensemble_members", "student_input", "summary",
           "train_arm"]
