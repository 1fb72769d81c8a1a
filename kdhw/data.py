"""Datasets: built-in sets that need no network, file loaders, and a seeded stratified split.

Inputs are returned channels-first in their natural shape ((1, 8, 8) for digits, (1, L) for signals) and
scaled to a small fixed range so that an 8-bit fixed-point input quantizer covers them; the pipeline
flattens them for MLP students.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class Dataset:
    """Arrays of one split plus what the report and the manifest need."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    manifest: dict[str, Any] = field(default_factory=dict)
    # Transfer set: training inputs without labels (rows whose labels a budget dropped, plus a
    # ``data.unlabeled`` file).  Distillation terms read them; the hard-label term never does.
    x_unlab: np.ndarray | None = None
    # under a label budget: rows of the original train split that kept / lost their labels (so teacher
    # outputs computed once on the whole split can be shared by every budget and seed)
    train_index: np.ndarray | None = None
    dropped_index: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def unlab(self) -> np.ndarray:
        """The transfer-set inputs, (0, *shape) when there are none."""
        return self.x_train[:0] if self.x_unlab is None else self.x_unlab


# ---------------------------------------------------------------- built-in sets

def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, pixels 0..16 scaled to [0, 1] (exact on a 1/16 grid)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32), d.target.astype(np.int64)


# Ten hand-drawn 1D stroke patterns (one per class), 12 control points each.  A sample is its class
# pattern, randomly scaled, shifted, sheared, padded and corrupted by white and correlated noise, then
# resampled to ``length`` points: simple enough to generate anywhere, hard enough that a linear model
# or a tiny MLP fails where a small CNN succeeds.
_PATTERNS = np.array([
    [0, 2, 4, 4, 3, 1, -1, -3, -4, -4, -2, 0],
    [0, 0, 1, 4, 4, 4, 4, 4, 4, 1, 0, 0],
    [0, 3, 4, 3, 0, -2, -4, -4, -4, -2, 1, 4],
    [0, 3, 4, 2, 0, 2, 4, 3, 0, -2, -3, -1],
    [4, 3, 1, -1, -3, -3, 2, 4, 2, 0, -1, -1],
    [4, 4, 0, -1, 0, 2, 4, 2, 0, -2, -4, -2],
    [-4, -2, 0, 2, 4, 3, 0, -2, 0, 2, 1, -1],
    [4, 4, 4, 3, 1, -1, -3, -4, -4, -4, -4, -4],
    [0, 3, 0, -3, 0, 3, 0, -3, 0, 3, 0, -3],
    [2, 4, 2, 0, 0, 0, 1, 2, 3, 4, 3, 2],
], dtype=np.float64)


def make_mnist1d(n: int = 4000, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Procedurally generated 1D 'digit' signals, shape (n, 1, length), values in about [-2, 2)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    base = np.linspace(0, 1, _PATTERNS.shape[1])
    t = np.linspace(0, 1, length)
    x = np.empty((n, length))
    for i, c in enumerate(y):
        pat = _PATTERNS[c] * rng.uniform(0.6, 1.2)
        shear = rng.uniform(-0.75, 0.75) * np.linspace(-1, 1, pat.size)
        width = rng.uniform(0.55, 0.8)
        start = rng.uniform(0, 1 - width)
        tt = (t - start) / width
        sig = np.interp(tt, base, pat + shear, left=0.0, right=0.0)
        corr = np.convolve(rng.normal(0, 1.0, length + 8), np.ones(9) / 3.0, mode="valid")
        x[i] = sig + corr + rng.normal(0, 0.35, length)
    x = np.clip(x / 3.0, -1.95, 1.95)
    return x.reshape(n, 1, length).astype(np.float32), y.astype(np.int64)


# ---------------------------------------------------------------- file loaders

def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``.npz`` with an ``x`` array (N, ...) and optionally ``y`` (N,) integer labels."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = next((k for k in ("x", "X", "inputs") if k in keys), None)
            if xk is None:
                raise InputError(f"{path}: .npz has keys {sorted(keys)}; expected 'x' (and 'y' for labels)")
            x = z[xk]
            yk = next((k for k in ("y", "Y", "labels") if k in keys), None)
            y = z[yk] if yk else None
    except InputError:
        raise
    except Exception:
        raise InputError(f"{path}: not a readable .npz file") from None
    if x.ndim == 2:
        x = x[:, None, :] if x.shape[1] > 64 else x
    return x.astype(np.float32), (None if y is None else _labels(y, path))


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format: magic 0x0000 + dtype + ndim, big-endian dims, then data)."""
    if not path.is_file():
        raise InputError(f"{path}: IDX file not found")
    buf = _open(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if buf[2] not in dtypes:
        raise InputError(f"{path}: IDX data type 0x{buf[2]:02x} unknown; allowed: {', '.join(hex(k) for k in dtypes)}")
    nd = buf[3]
    dims = struct.unpack(">" + "I" * nd, buf[4:4 + 4 * nd])
    data = np.frombuffer(buf, dtype=dtypes[buf[2]], offset=4 + 4 * nd)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: IDX header says {dims} but the file holds {data.size} values")
    return data.reshape(dims)


def load_idx(images: Path, labels: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """MNIST-style images (N, H, W) as (N, 1, H, W) in [0, 1]; labels from the matching labels file."""
    x = read_idx(images)
    if x.ndim == 3:
        x = x[:, None]
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if labels is None:
        guess = Path(str(images).replace("images-idx3", "labels-idx1").replace("images", "labels"))
        labels = guess if guess != images and guess.is_file() else None
    y = None
    if labels is not None:
        y = _labels(read_idx(labels), labels)
        if len(y) != len(x):
            raise InputError(f"{labels}: {len(y)} labels for {len(x)} images in {images}")
    return x, y


def load_mitbih_csv(path: Path, has_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """MIT-BIH heartbeat CSV: one beat per row, samples..., then the class label (last column)."""
    if not path.is_file():
        raise InputError(f"{path}: CSV file not found")
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(f"{path}: not a numeric CSV ({str(e).splitlines()[0]})") from None
    if has_labels:
        if arr.shape[1] < 2:
            raise InputError(f"{path}: a row needs samples and a label (last column)")
        return arr[:, None, :-1].astype(np.float32), _labels(arr[:, -1], path)
    return arr[:, None, :].astype(np.float32), None


def _labels(y: np.ndarray, src: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and y.min() < 0):
        raise InputError(f"{src}: labels must be a 1D array of non-negative integers")
    return y.astype(np.int64)


def load_file(kind: str, path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: data file not found")
    if kind == "npz":
        return load_npz(p)
    if kind == "idx":
        return load_idx(p, None)
    if kind == "mitbih_csv":
        return load_mitbih_csv(p)
    raise InputError(f"unknown file kind {kind!r}; allowed: npz, idx, mitbih_csv")


# ---------------------------------------------------------------- split

def split(x: np.ndarray, y: np.ndarray, val: float, test: float, seed: int, name: str) -> Dataset:
    """Seeded stratified train/val/test split with a manifest (sizes, seed, content hash)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(x))
    strat = y if np.bincount(y).min() >= 3 else None
    trv, te = train_test_split(idx, test_size=test, random_state=seed, stratify=strat)
    tr, va = train_test_split(trv, test_size=val / (1 - test), random_state=seed,
                              stratify=None if strat is None else y[trv])
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()[:16]
    n_classes = int(y.max()) + 1
    manifest = {"dataset": name, "seed": seed, "n": int(len(x)), "train": int(len(tr)), "val": int(len(va)),
                "test": int(len(te)), "n_classes": n_classes, "shape": list(x.shape[1:]), "sha256_16": h}
    return Dataset(name, x[tr], y[tr], x[va], y[va], x[te], y[te], n_classes, manifest)


def load_dataset(cfg: dict[str, Any], src: str = "config") -> Dataset:
    """The data section of a config -> a split Dataset."""
    kind = cfg["dataset"]
    if kind == "digits":
        x, y = load_digits_arrays()
    elif kind == "mnist1d":
        x, y = make_mnist1d(cfg.get("mnist1d_samples", 4000), seed=cfg["seed"])
    else:
        x, y = load_file(kind, cfg["path"])
        if y is None:
            raise InputError(f"{cfg['path']}: no labels found; a labelled data set needs them")
    if len(x) < 30:
        raise InputError(f"{src}: data set has {len(x)} rows; need at least 30 for a train/val/test split")
    d = split(x, y, cfg["val_fraction"], cfg["test_fraction"], cfg["seed"], kind)
    if cfg.get("labels"):
        d = apply_label_budget(d, cfg["labels"], cfg["seed"], src)
    if cfg.get("unlabeled"):
        extra = load_unlabeled(cfg["unlabeled"], d.shape, src)
        d.x_unlab = np.concatenate([d.unlab, extra])
        d.manifest["unlabeled_file"] = {"path": str(cfg["unlabeled"]), "rows": int(len(extra)),
                                        "sha256_16": hashlib.sha256(extra.tobytes()).hexdigest()[:16]}
    d.manifest["unlabeled"] = int(len(d.unlab))
    return d


# ---------------------------------------------------------------- label budget and transfer set

def apply_label_budget(d: Dataset, budget: dict[str, Any], data_seed: int, src: str = "config") -> Dataset:
    """Keep labels on a seeded, stratified subset of the training split; the rest become transfer inputs.

    The test split keeps its labels: it measures the student.  The validation split keeps all of them too
    unless ``labels.val`` is true: then each class keeps the same share of its validation rows as of its
    training rows (at least one), as a user who really has that few labels would, and the other
    validation rows are left out (not moved to the transfer set, whose rows are all training-split rows,
    so teacher outputs computed once on that split can be indexed by ``dropped_index``).  Either way every
    arm is selected on the same validation rows, so the comparison between arms stays paired.  The subsets
    depend only on ``labels.seed`` (default: the data seed), never on the method.
    """
    seed = int(budget.get("seed", data_seed) if budget.get("seed") is not None else data_seed)
    rng = np.random.default_rng(seed)
    classes = np.unique(d.y_train)
    keep: list[np.ndarray] = []
    share: dict[int, float] = {}
    for c in classes:
        rows = np.flatnonzero(d.y_train == c)
        if budget.get("per_class") is not None:
            k = int(budget["per_class"])
            if k > len(rows):
                raise InputError(f"{src}: data.labels.per_class = {k} but class {int(c)} has only {len(rows)} "
                                 "training rows; choose a smaller number or use data.labels.fraction")
        else:
            k = max(1, int(round(float(budget["fraction"]) * len(rows))))
        keep.append(rng.choice(rows, size=k, replace=False))
        share[int(c)] = k / len(rows)
    lab = np.sort(np.concatenate(keep))
    drop = np.setdiff1d(np.arange(len(d.y_train)), lab)
    d.x_unlab = np.concatenate([d.unlab, d.x_train[drop]])
    d.x_train, d.y_train = d.x_train[lab], d.y_train[lab]
    d.train_index, d.dropped_index = lab, drop
    d.manifest["labels"] = {**{k: v for k, v in budget.items() if v is not None}, "seed": seed,
                            "labelled": int(len(lab)), "dropped": int(len(drop))}
    d.manifest["train"] = int(len(lab))
    if budget.get("val"):
        vrng = np.random.default_rng([seed, 1])  # its own stream: the training subset is the same either way
        vkeep = []
        for c in np.unique(d.y_val):
            rows = np.flatnonzero(d.y_val == c)
            k = max(1, int(round(share.get(int(c), 1.0) * len(rows))))
            vkeep.append(vrng.choice(rows, size=min(k, len(rows)), replace=False))
        v = np.sort(np.concatenate(vkeep))
        d.manifest["labels"]["val_labelled"] = int(len(v))
        d.manifest["labels"]["val_left_out"] = int(len(d.y_val) - len(v))
        d.x_val, d.y_val = d.x_val[v], d.y_val[v]
        d.manifest["val"] = int(len(v))
    return d


def load_unlabeled(path: str | Path, shape: tuple[int, ...], src: str = "config") -> np.ndarray:
    """A transfer-set file (.npz with ``x``, IDX images, or CSV of samples) checked against ``shape``.

    A file with labels is refused rather than silently stripped: handing labelled data to the unlabelled
    slot usually means the wrong file, and a user who wants a label budget has ``data.labels`` for it.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{src}: data.unlabeled: {p}: file not found")
    name = p.name.lower()
    if name.endswith(".npz"):
        x, y = load_npz(p)
        if y is not None:
            raise InputError(f"{p}: data.unlabeled holds labels (a 'y' array); a transfer set is inputs only: "
                             "drop 'y', or put the file in data.path and use data.labels for a label budget")
    elif name.endswith(".csv"):
        x, _ = load_mitbih_csv(p, has_labels=False)
        want = math.prod(shape)
        if x.shape[-1] == want + 1:
            raise InputError(f"{p}: data.unlabeled rows have {x.shape[-1]} columns, one more than the "
                             f"{want} samples of the labelled rows: a label column? A transfer set is inputs only")
    else:
        x = read_idx(p)
        if x.ndim == 1:
            raise InputError(f"{p}: data.unlabeled is a 1-D IDX file (labels); give the images file")
        if x.ndim == 3:
            x = x[:, None]
        x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    x = x.astype(np.float32)
    if len(x) == 0:
        raise InputError(f"{p}: data.unlabeled holds no rows")
    if tuple(x.shape[1:]) != tuple(shape):
        if math.prod(x.shape[1:]) == math.prod(shape):
            x = x.reshape(len(x), *shape)
        else:
            raise InputError(f"{p}: data.unlabeled rows have shape {tuple(x.shape[1:])}, the labelled rows "
                             f"{tuple(shape)}; a transfer set must match the labelled inputs")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{p}: data.unlabeled contains NaN or infinite values")
    return x
