"""Quantization-aware training of the student, from scratch and with distillation, as paired arms.

Every run trains the same student twice with the same seed, initial weights and batch order: once on
labels alone (scratch) and once with the configured distillation method.  That pairing is what makes
"KD helped by x points" a measurement rather than seed noise (tiny students swing several points with
the seed).  The recipe options (mixup, float warm-up) apply to both arms, so a gain measured here is the
teacher's and not the augmentation's or the schedule's.  The arm exported is chosen on validation
accuracy unless the config forces one.

Teacher outputs come from a cache (one pass over the training rows, so a KD epoch costs what a scratch
epoch costs) unless mixup is on: a mixed input is new every batch, so the teacher is evaluated online on
exactly the input the student sees (function matching, Beyer et al. 2022).

Born-again generation 0 is the scratch arm (labels only), as in Furlanello et al. 2018: the method then
uses no external teacher at all, so whatever it gains is self-distillation, and generation 0 costs nothing
extra because the scratch arm is trained anyway.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import brevitas.nn as qnn

from .data import Dataset
from .errors import InputError
from .augment import Augment, mixup
from .losses import METHODS, ensemble_logits, get_method, hint_loss, one_hot_like
from .resource import build_trainable
from .student import StudentNet, build_student, param_count
from .training import FitResult, FloatWarmup, accuracy, fit, predict_logits

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
    """Teacher forward on student-space inputs, also returning the outputs of the tapped layers."""
    mods = list(teacher.children()) if taps else [teacher]

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x.reshape(len(x), *shape)
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(mods):
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


# ---------------------------------------------------------------- one arm

def _require(method: str, dcfg: dict[str, Any], teacher_train: Any, teacher: Any, teacher_fn: Any,
             src: str) -> None:
    meth = get_method(method)
    has_model = teacher is not None or teacher_fn is not None
    if meth.needs_teacher and teacher_train is None and not has_model:
        raise InputError(f"{src}: distill.method = {method} needs a teacher (teacher section or teacher.path)")
    if meth.needs_teacher_model and teacher is None:
        raise InputError(f"{src}: distill.method = {method} needs the teacher network (its hidden layers), "
                         "but only cached teacher logits were given")
    if _online(dcfg) and meth.needs_teacher and not has_model:
        raise InputError(f"{src}: distill.mixup_alpha / augment_* > 0 with method {method} needs the teacher "
                         "network (it is evaluated online on each augmented batch), but only cached teacher "
                         "logits were given")


def _online(dcfg: dict[str, Any]) -> bool:
    """Is every batch a new input (mixup or augmentation), so the teacher must run online?"""
    return float(dcfg.get("mixup_alpha", 0) or 0) > 0 or Augment.from_config(dcfg).active


def train_arm(
    name: str, spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
    method: str, progress: bool = True, src: str = "config", *, teacher: nn.Module | None = None,
    teacher_fn: TeacherFn | None = None, extra_teachers: list[nn.Module] | None = None,
    teacher_unlab: np.ndarray | None = None, init_state: dict[str, torch.Tensor] | None = None,
) -> Arm:
    """Train one student arm with ``method``.

    ``teacher_train`` / ``teacher_unlab``: cached teacher logits on the labelled training rows and on the
    transfer set (``data.unlab``); ``teacher``: the float teacher network (hidden-layer methods, online
    teacher under augmentation, or logits not cached); ``teacher_fn`` overrides how the teacher is
    evaluated (born-again passes the previous generation); ``extra_teachers``: the other members of an
    ensemble; ``init_state``: start from these weights instead of a fresh initialisation (QKD's
    self-study-then-distil schedule passes the trained scratch student).

    Methods that read a teacher train on labelled + transfer-set rows (the hard-label term sees only the
    labelled ones); label-only methods train on the labelled rows with the same number of steps per epoch.
    """
    meth = get_method(method)
    _require(method, dcfg, teacher_train, teacher, teacher_fn, src)
    if method == "born_again" and teacher_fn is None and teacher is None:
        raise InputError(f"{src}: distill.method = born_again is trained generation by generation by distill(); "
                         "train_arm needs the previous generation as teacher_fn")
    xs = {s: student_input(getattr(data, f"x_{s}"), spec) for s in ("train", "val", "test")}
    x_unlab = student_input(data.unlab, spec)
    seed = int(dcfg["seed"])
    torch.manual_seed(seed)
    model = build_trainable(spec, xs["train"].shape[1:], data.n_classes, src)  # resource-aware when asked
    if init_state is not None:
        model.load_state_dict(init_state)
    extras = list(extra_teachers or [])
    params = dict(dcfg)
    uses_teacher = meth.needs_teacher or method == "born_again"
    transfer = uses_teacher and len(x_unlab) > 0
    x_fit = np.concatenate([xs["train"], x_unlab]) if transfer else xs["train"]
    y_fit = (np.concatenate([data.y_train, np.full(len(x_unlab), -1, dtype=np.int64)]) if transfer
             else data.y_train)
    bs = int(dcfg["batch_size"])
    n_all = len(xs["train"]) + len(x_unlab)
    steps = -(-n_all // bs) if len(x_fit) < n_all else None

    taps: dict[str, int] = {}
    s_hint = s_emb_name = None
    if method == "rkd":
        s_emb_name = embedding_layer(model)
        taps["emb"] = len(list(teacher.children())) - 2 if isinstance(teacher, nn.Sequential) else -1
        if taps["emb"] < 0:
            raise InputError(f"{src}: distill.method = rkd needs a teacher built as nn.Sequential (kdhw teachers are)")
    if method == "fitnets":
        s_hint = hint_layer(model, dcfg, src)
        taps["hint"] = teacher_layer_index(teacher, dcfg.get("teacher_hint_layer", -2), src)
    if uses_teacher and teacher_fn is None and teacher is not None:
        base = _sequential_fn(teacher, data.shape, taps)
        if method == "ensemble":
            members = [base] + [_sequential_fn(m, data.shape, {}) for m in extras]
            t = float(dcfg["temperature"])
            teacher_fn = lambda x: {"logits": ensemble_logits([f(x)["logits"] for f in members], t)}  # noqa: E731
        else:
            teacher_fn = base
    online_models = [m for m in [teacher, *extras] if m is not None]

    online = _online(dcfg)
    cache: dict[str, torch.Tensor] = {}
    if uses_teacher and not online:
        cache = _teacher_cache(method, dcfg, data, x_fit, transfer, teacher_train, teacher_unlab, teacher,
                               teacher_fn, taps, extras, online_models, src)

    # augmentation and mixup draw from their own generators, seeded alike in every arm
    mix_a = float(dcfg.get("mixup_alpha", 0) or 0)
    aug = Augment.from_config(dcfg)
    mix_rng = np.random.default_rng(seed + 7919)
    mix_g = torch.Generator().manual_seed(seed + 7919)

    def batch_inputs(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(input, labels, teacher outputs) of one batch; mixup mixes inputs and one-hot labels alike."""
        if not online:
            return x, y, {k: v[idx] for k, v in cache.items()}
        x = aug(x, data.shape, mix_g)
        if mix_a > 0:
            lam = float(mix_rng.beta(mix_a, mix_a))
            x, y = mixup(x, one_hot_like(y, data.n_classes), lam, torch.randperm(len(x), generator=mix_g))
        if uses_teacher:
            with torch.no_grad():
                return x, y, {k: v.detach() for k, v in teacher_fn(x).items()}
        return x, y, {}

    def loss_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x, y, t = batch_inputs(x, y, idx)
        s_emb = None
        if s_emb_name is not None:
            out, feats = m(x, return_features=True)
            s_emb = feats[s_emb_name].flatten(1)
        else:
            out = m(x)
        loss = meth.loss(out, t.get("logits"), y, params, s_emb=s_emb, t_emb=t.get("emb"))
        resource = getattr(m, "resource_loss", None)  # a resource-aware student owns its cost term
        return loss if resource is None else loss + resource()

    if uses_teacher:
        for tm in online_models:
            tm.eval()
    info: dict[str, Any] = {}
    if transfer:
        info["transfer_rows"] = int(len(x_unlab))
    if init_state is not None:
        info["init"] = "scratch"
    if aug.active and teacher_fn is not None and uses_teacher:
        info.update(teacher_on_augmented(teacher_fn, online_models, aug, xs["train"], data, seed))
    warm = FloatWarmup(model, int(dcfg.get("float_warmup_epochs", 0) or 0))
    common = dict(lr=dcfg["lr"], batch_size=bs, seed=seed, progress=progress, steps_per_epoch=steps)
    epochs = int(dcfg["epochs"])
    h = int(dcfg.get("hint_epochs", 0)) if method == "fitnets" else 0
    try:
        if h > 0:
            assert s_hint is not None
            assert teacher_fn is not None
            res1, adapter = _hint_stage(model, s_hint, teacher_fn, batch_inputs, x_fit, y_fit, xs, data, h, warm,
                                        common, name)
            info.update({"hint_layer": s_hint, "teacher_hint_layer": taps["hint"], "hint_epochs": h,
                         "adapter_params": sum(p.numel() for p in adapter.parameters()),
                         "hint_loss_last": res1.history[-1]["loss"] if res1.history else None})
        res = fit(model, loss_fn, x_fit, y_fit, xs["val"], data.y_val, epochs=epochs - h,
                  desc=name, on_epoch=lambda e: (warm(e + h), getattr(model, "set_epoch", int)(e + h)),
                  select_from=max(0, warm.epochs - h, getattr(model, "select_from", 0) - h), **common)
    finally:
        warm.finish()
    if h > 0:
        n = max(res1.epochs_run + res.epochs_run, 1)
        res = FitResult(res.best_val_acc, res.best_epoch + h, res1.epochs_run + res.epochs_run,
                        res1.history + [{**r, "epoch": r["epoch"] + h} for r in res.history],
                        (res1.seconds_per_epoch * res1.epochs_run + res.seconds_per_epoch * res.epochs_run) / n,
                        (res1.cpu_seconds_per_epoch * res1.epochs_run + res.cpu_seconds_per_epoch * res.epochs_run) / n)
    if warm.epochs:
        info["float_warmup_epochs"] = warm.epochs
    return Arm(name, model, res, accuracy(model, xs["test"], data.y_test), info)


def _teacher_cache(method: str, dcfg: dict[str, Any], data: Dataset, x_fit: np.ndarray, transfer: bool,
                   teacher_train: np.ndarray | None, teacher_unlab: np.ndarray | None, teacher: nn.Module | None,
                   teacher_fn: TeacherFn | None, taps: dict[str, int], extras: list[nn.Module],
                   online_models: list[nn.Module], src: str) -> dict[str, torch.Tensor]:
    """Teacher outputs on every training row (labelled, then transfer set), computed once per arm.

    Cached logits are used where given (``teacher_logits.npz``); what is missing (the transfer set's
    logits, hidden-layer taps, a previous generation's logits) comes from one no-grad pass.
    """
    def cached() -> torch.Tensor | None:
        if teacher_train is None:
            return None
        if not transfer:
            return torch.from_numpy(teacher_train.astype(np.float32))
        if teacher_unlab is not None:
            if len(teacher_unlab) != len(x_fit) - len(teacher_train):
                raise InputError(f"{src}: cached teacher logits cover {len(teacher_unlab)} transfer-set rows, the "
                                 f"data has {len(x_fit) - len(teacher_train)}; recompute the teacher logits")
            return torch.from_numpy(np.concatenate([teacher_train, teacher_unlab]).astype(np.float32))
        return None

    if method == "ensemble":
        main = cached()
        if main is None:
            if teacher is None:
                raise InputError(f"{src}: distill.method = ensemble on a transfer set needs the teacher network or "
                                 "its logits on the transfer set")
            main = _run(_sequential_fn(teacher, data.shape, {}), online_models, x_fit)["logits"]
        logits = [main] + [_run(_sequential_fn(m, data.shape, {}), extras, x_fit)["logits"] for m in extras]
        return {"logits": ensemble_logits(logits, dcfg["temperature"])}
    logits = cached()
    cache: dict[str, torch.Tensor] = {}
    if taps or logits is None:
        if teacher_fn is None:
            raise InputError(f"{src}: distill.method = {method} on a transfer set needs the teacher network or its "
                             "logits on the transfer set (teacher_logits.npz 'unlab')")
        cache = _run(teacher_fn, online_models, x_fit)
    if logits is not None:
        cache["logits"] = logits
    return cache


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


def _hint_stage(model: StudentNet, layer: str, teacher_fn: TeacherFn, batch_inputs: Any, x_fit: np.ndarray,
                y_fit: np.ndarray, xs: dict[str, np.ndarray], data: Dataset, epochs: int, warm: FloatWarmup,
                common: dict[str, Any], name: str) -> tuple[FitResult, nn.Module]:
    """FitNets stage 1: the student up to ``layer`` plus a linear adapter regress the teacher's hint layer.

    The adapter lives only here (it is not part of the exported student).  Layers after the hint get no
    gradient from this loss, so Adam leaves them untouched until stage 2.
    """
    x2 = torch.from_numpy(np.ascontiguousarray(x_fit[:2], dtype=np.float32))
    with torch.no_grad():
        # a copy: a forward of the training model would already move brevitas' runtime activation statistics
        _, feats = copy.deepcopy(model)(x2, return_features=True)
        s_dim, t_dim = feats[layer].flatten(1).shape[1], teacher_fn(x2)["hint"].shape[1]
    adapter = nn.Linear(s_dim, t_dim)

    def loss_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x, _, t = batch_inputs(x, y, idx)
        _, f = m(x, return_features=True)
        return hint_loss(adapter(f[layer].flatten(1)), t["hint"])

    res = fit(model, loss_fn, x_fit, y_fit, xs["val"], data.y_val, epochs=epochs,
              desc=f"{name} hint", on_epoch=warm, select_from=epochs,
              params=list(model.parameters()) + list(adapter.parameters()), **common)
    return res, adapter


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
    if teacher_known:
        _require(method, dcfg, teacher_train, teacher, None, src)


def distill(spec: dict[str, Any], dcfg: dict[str, Any], data: Dataset, teacher_train: np.ndarray | None,
            progress: bool = True, src: str = "config", *, teacher: nn.Module | None = None,
            teacher_cfg: dict[str, Any] | None = None, extra_teachers: list[nn.Module] | None = None,
            scratch: Arm | None = None, teacher_unlab: np.ndarray | None = None) -> dict[str, Arm]:
    """Train the scratch arm and (if a method is configured) the distilled arm.

    Optional: ``teacher`` (the float network: hidden-layer methods, online teacher under augmentation),
    ``teacher_cfg`` (to train extra ensemble members), ``extra_teachers`` (ensemble members already built,
    so a sweep trains them once), ``scratch`` (an already trained scratch arm with the same recipe),
    ``teacher_unlab`` (cached teacher logits on the transfer set ``data.unlab``).

    ``distill.init: scratch`` is QKD's schedule: the distilled arm starts from the trained scratch student
    (quantized self-study first) instead of a fresh initialisation.
    """
    method = dcfg["method"]
    check_distill(spec, dcfg, data, src, teacher_train=teacher_train, teacher=teacher)
    arms = {"scratch": scratch or train_arm("scratch", spec, dcfg, data, None, "none", progress, src)}
    if method == "none":
        return arms
    init = arms["scratch"].model.state_dict() if dcfg.get("init", "fresh") == "scratch" else None
    if method == "born_again":
        arms["kd"] = _born_again(spec, dcfg, data, arms["scratch"], progress, src)
        return arms
    extras = None
    if method == "ensemble":
        extras = extra_teachers if extra_teachers is not None else ensemble_members(dcfg, data, teacher_cfg,
                                                                                    progress, src)
    arm = train_arm("kd", spec, dcfg, data, teacher_train, method, progress, src, teacher=teacher,
                    extra_teachers=extras, teacher_unlab=teacher_unlab, init_state=init)
    if method == "ensemble":
        arm.info.update(_ensemble_info(teacher, teacher_train, extras or [], dcfg, data))
    arms["kd"] = arm
    return arms


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


def choose(arms: dict[str, Arm], select: str) -> tuple[str, str]:
    """Pick the exported arm: forced by config, or the better validation accuracy (ties -> scratch)."""
    if select in ("kd", "scratch"):
        if select not in arms:
            raise InputError(f"distill.select = {select} but no {select} arm was trained")
        return select, "forced by distill.select"
    best = max(arms, key=lambda k: (arms[k].fit.best_val_acc, k == "scratch"))
    return best, "best validation accuracy"


def summary(arms: dict[str, Arm]) -> dict[str, Any]:
    out = {}
    for k, a in arms.items():
        out[k] = {"val_acc": a.fit.best_val_acc, "test_acc": a.test_acc, "best_epoch": a.fit.best_epoch,
                  "epochs": a.fit.epochs_run, "seconds_per_epoch": a.fit.seconds_per_epoch,
                  "cpu_seconds_per_epoch": a.fit.cpu_seconds_per_epoch, "params": param_count(a.model)}
        if a.info:
            out[k]["info"] = json.loads(json.dumps(a.info, default=float))
    return out


__all__ = ["Arm", "METHODS", "check_distill", "choose", "distill", "ensemble_members", "student_input", "summary",
           "train_arm"]
