"""Float teacher: MLP, 1D CNN or 2D CNN from config; trained with early stopping, or loaded.

Its logits on every split are computed once and cached (``teacher_logits.npz``) so distillation epochs
cost the same as scratch epochs.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .atomic import write_bytes
from .data import Dataset
from .errors import InputError
from .training import FitResult, accuracy, fit, predict_logits


def build_teacher(cfg: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    arch, ch, hidden, k = cfg["arch"], cfg["channels"], cfg["hidden"], cfg["kernel"]
    if not all(isinstance(c, int) and c > 0 for c in ch):
        raise InputError(f"teacher.channels must be a list of positive integers, got {ch!r}")
    if arch == "mlp":
        n = math.prod(input_shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, n_classes))
    nd = len(input_shape) - 1
    if arch == "cnn1d" and nd != 1 or arch == "cnn2d" and nd != 2:
        raise InputError(
            f"teacher.arch = {arch} does not fit inputs of shape {input_shape}; "
            f"use {'cnn1d' if nd == 1 else 'cnn2d' if nd == 2 else 'mlp'} (or mlp)"
        )
    conv, pool, bn = (nn.Conv1d, nn.MaxPool1d, nn.BatchNorm1d) if nd == 1 else (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d)
    layers: list[nn.Module] = []
    c_in, spatial = input_shape[0], list(input_shape[1:])
    for c in ch:
        layers += [conv(c_in, c, k, padding=k // 2), bn(c), nn.ReLU()]
        if min(spatial) >= 4:
            layers.append(pool(2))
            spatial = [s // 2 for s in spatial]
        c_in = c
    n = c_in * math.prod(spatial)
    layers += [nn.Flatten(), nn.Dropout(0.2), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


def teacher_input(data_x: np.ndarray, arch: str) -> np.ndarray:
    return data_x.reshape(len(data_x), -1) if arch == "mlp" else data_x


def train_teacher(cfg: dict[str, Any], data: Dataset, progress: bool = True) -> tuple[nn.Module, FitResult]:
    torch.manual_seed(cfg["seed"])
    model = build_teacher(cfg, data.shape, data.n_classes)
    ce = nn.CrossEntropyLoss()
    res = fit(model, lambda m, x, y, i: ce(m(x), y), data.x_train, data.y_train, data.x_val, data.y_val,
              epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=cfg["seed"],
              patience=cfg["patience"], desc="teacher", progress=progress)
    return model, res


def save_teacher(model: nn.Module, cfg: dict[str, Any], input_shape: tuple[int, ...], n_classes: int,
                 path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"cfg": cfg, "input_shape": list(input_shape), "n_classes": n_classes,
                "state_dict": model.state_dict()}, buf)
    write_bytes(path, buf.getvalue())


def load_teacher(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a teacher saved by kdhw (weights_only: no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: teacher file not found")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        model = build_teacher(blob["cfg"], tuple(blob["input_shape"]), int(blob["n_classes"]))
        model.load_state_dict(blob["state_dict"])
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{p}: not a kdhw teacher checkpoint ({type(e).__name__})") from None
    return model.eval(), blob["cfg"]


def load_teacher_for(path: str | Path, data: Dataset, src: str = "config") -> tuple[nn.Module, dict[str, Any]]:
    """Load a handed-over teacher and check it was trained for this data's input shape and classes."""
    model, cfg = load_teacher(path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    shape, n = tuple(blob["input_shape"]), int(blob["n_classes"])
    if shape != tuple(data.shape) or n != data.n_classes:
        raise InputError(f"{src}: teacher.path {path} was trained on inputs {shape} with {n} classes; the data has "
                         f"{tuple(data.shape)} and {data.n_classes} classes")
    return model, cfg


def shared_teacher(cfg: Any, data: Dataset, out: Path, teacher_path: str | None,
                   progress: bool) -> tuple[nn.Module, dict[str, Any], str]:
    """The one teacher every task of a grid verb (sweep, pareto) shares: a given file, the one ``out`` already
    holds for the same teacher config and data (a resumed grid does not retrain it), or a new one saved there.
    ``cfg`` is the run's Config; returns (model, its config, how it was obtained)."""
    import json

    from .atomic import write_json

    tpath = teacher_path or cfg.teacher["path"]
    if tpath:  # checked against the data like every other verb's handed-over teacher
        tmodel, tcfg, _ = obtain_teacher(cfg.teacher, data, tpath, progress, cfg.source)
        return tmodel, tcfg, f"loaded from {tpath}"
    pt, meta = Path(out) / "teacher.pt", Path(out) / "teacher.json"
    want = {"cfg": cfg.teacher, "data_sha256_16": data.manifest["sha256_16"]}
    if pt.is_file() and meta.is_file():
        try:
            same = {k: json.loads(meta.read_text()).get(k) for k in want} == json.loads(json.dumps(want))
        except (OSError, json.JSONDecodeError):
            same = False
        if same:
            return load_teacher(pt)[0], dict(cfg.teacher), f"reused {pt}"
    tmodel, _ = train_teacher(cfg.teacher, data, progress)
    save_teacher(tmodel, cfg.teacher, data.shape, data.n_classes, pt)
    write_json(meta, want)
    return tmodel, dict(cfg.teacher), f"trained, saved to {pt}"


def obtain_teacher(teacher_cfg: dict[str, Any], data: Dataset, path: str | Path | None = None, progress: bool = True,
                   src: str = "config") -> tuple[nn.Module, dict[str, Any], Any]:
    """The handed-over teacher at ``path`` (checked against the data), else a new one trained from
    ``teacher_cfg``: ``(model, the config it was built from, the training result or None)``.

    One place for that choice, so every verb (run, distill, select, sweep) refuses a mismatched file the
    same way and reports the same effective teacher config.
    """
    if path:
        model, saved = load_teacher_for(path, data, src)
        return model, {**teacher_cfg, **saved, "path": str(path)}, None
    model, res = train_teacher(teacher_cfg, data, progress)
    return model, dict(teacher_cfg), res


def teacher_logits(model: nn.Module, arch: str, data: Dataset) -> dict[str, np.ndarray]:
    """Logits on every split and on the transfer set ("unlab", when there is one), computed once: the cache
    distillation reads, so a KD epoch costs what a scratch epoch costs."""
    out = {s: predict_logits(model, teacher_input(getattr(data, f"x_{s}"), arch)) for s in ("train", "val", "test")}
    if len(data.unlab):
        out["unlab"] = predict_logits(model, teacher_input(data.unlab, arch))
    return out


def teacher_accuracy(logits: dict[str, np.ndarray], data: Dataset) -> dict[str, float]:
    return {s: float((logits[s].argmax(1) == getattr(data, f"y_{s}")).mean()) for s in ("train", "val", "test")}


__all__ = ["build_teacher", "train_teacher", "save_teacher", "load_teacher", "teacher_logits", "accuracy"]
