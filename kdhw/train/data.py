"""Datasets: built-in sets that need no network, file loaders, a layout rule, and a seeded stratified split.

Built-in sets: ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist1d`` (the real MNIST-1D of Greydanus
2020, regenerated offline by the ``mnist1d`` package: 4,000 train and 1,000 test signals of 40 samples, the
package's test rows kept as the test split) and ``mnist1d_lookalike`` (kdhw's own fast synthetic stand-in
for tests, not MNIST-1D).

Inputs are returned channels-first ((1, 8, 8) for digits, (1, L) for signals, (L,) or (F,) for flat
rows).  Which of these a file's rows become is decided by one rule for every loader (``resolve_layout``):
``data.layout`` when given, else the student's first layer or the teacher, else the array as stored;
never the number of columns.  ``load_data`` adds the input contract (``kdhw.contract``): every split
measured against the student's input format before anything is trained.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import math
import pickle
import random
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from kdhw.errors import InputError


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


# MNIST-1D (Greydanus 2020) as its package regenerates it offline: ``make_dataset(get_dataset_args())`` with
# the package's default arguments (5,000 rows, seed 42, train_split 0.8) is the canonical set, bit for bit.
# Nothing is downloaded (``get_dataset`` would fetch a pickle; it is never called).
MNIST1D_VERSION = "0.0.2.post1"


@functools.lru_cache(maxsize=1)
def _mnist1d_canonical() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise InputError(f"data.dataset = mnist1d needs the mnist1d package (pip install mnist1d=={MNIST1D_VERSION}; "
                         "kdhw's dependencies include it)") from None
    args = get_dataset_args()
    # make_dataset seeds Python's and numpy's global generators; put them back so loading data changes
    # nothing else in the process
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x, xt = (np.asarray(d[k], dtype=np.float32)[:, None, :] for k in ("x", "x_test"))
    y, yt = (np.asarray(d[k], dtype=np.int64) for k in ("y", "y_test"))
    for a in (x, y, xt, yt):
        a.setflags(write=False)
    try:
        from importlib.metadata import version

        ver = version("mnist1d")
    except Exception:  # pragma: no cover - an unusual install without metadata
        ver = "unknown"
    extra = {"source": f"mnist1d {ver}: mnist1d.data.make_dataset(get_dataset_args()), generated offline",
             "generator_args": {k: v for k, v in vars(args).items() if k != "url"},
             "test_split": "given: the package's test rows, kept as they are"}
    return x, y, xt, yt, extra


def load_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The real MNIST-1D (Greydanus 2020): (x_train, y_train, x_test, y_test, manifest extras).

    Signals are (N, 1, 40) float32 as the package makes them (the whole set centred and scaled to unit
    standard deviation: values in about [-5.5, 4.6]); 4,000 train rows and 1,000 test rows, 10 classes.
    Generated once per process (about a second) and kept in memory; nothing is written to disk."""
    x, y, xt, yt, extra = _mnist1d_canonical()
    return x.copy(), y.copy(), xt.copy(), yt.copy(), copy.deepcopy(extra)


# mnist1d_lookalike: NOT MNIST-1D.  kdhw's own fast synthetic stand-in, kept for tests and for the benchmarks
# whose committed results were measured on it (before ``mnist1d`` was the real set): any number of rows,
# generated in milliseconds with no package.  Ten hand-drawn 1D stroke patterns (one per class), 12 control
# points each.  A sample is its class pattern, randomly scaled, shifted, sheared, padded and corrupted by
# white and correlated noise, then resampled to ``length`` points: simple enough to generate anywhere, hard
# enough that a linear model or a tiny MLP fails where a small CNN succeeds.
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


def make_mnist1d_lookalike(n: int = 4000, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``dataset: mnist1d_lookalike``: procedurally generated 1D 'digit' signals, shape (n, 1, length), values
    in about [-2, 2).  A fast synthetic stand-in for tests, not MNIST-1D (that is ``load_mnist1d``)."""
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
    if x.ndim < 2 or x.ndim > 4:
        raise InputError(f"{path}: 'x' has shape {x.shape}; expected (N, F) rows, (N, C, L) signals or "
                         "(N, C, H, W) images")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"{path}: 'x' has dtype {x.dtype}; expected real numbers")
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
        guess = images.with_name(re.sub(r"images-idx\d", "labels-idx1", images.name).replace("images", "labels"))
        labels = guess if guess != images and guess.is_file() else None
    y = None
    if labels is not None:
        y = _labels(read_idx(labels), labels)
        if len(y) != len(x):
            raise InputError(f"{labels}: {len(y)} labels for {len(x)} images in {images}")
    return x, y


def load_mitbih_csv(path: Path, has_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """MIT-BIH heartbeat CSV: one beat per row, samples..., then the class label (last column).

    Rows come back as stored, (N, L); the layout rule makes them (N, 1, L) signals for a Conv1D student
    or a cnn1d teacher (``data.layout: signal`` says so explicitly)."""
    if not path.is_file():
        raise InputError(f"{path}: CSV file not found")
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(f"{path}: not a numeric CSV ({str(e).splitlines()[0]})") from None
    if has_labels:
        if arr.shape[1] < 2:
            raise InputError(f"{path}: a row needs samples and a label (last column)")
        return arr[:, :-1].astype(np.float32), _labels(arr[:, -1], path)
    return arr.astype(np.float32), None


def _labels(y: np.ndarray, src: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and y.min() < 0):
        raise InputError(f"{src}: labels must be a 1D array of non-negative integers")
    return y.astype(np.int64)


FILE_KINDS = ("npz", "idx", "mitbih_csv", "image_folder", "cifar10")


def load_file(kind: str, path: str | Path, options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One labelled data file (or folder, for ``image_folder`` and ``cifar10``) as (x, y), x as stored.

    ``options``: the data section, for the image loaders' ``image_size`` and ``color``."""
    p = Path(path)
    opts = options or {}
    if kind == "image_folder":
        x, y, _ = load_image_folder(p, opts.get("image_size"), opts.get("color") or "gray")
        return x, y
    if kind == "cifar10":
        x, y, _ = load_cifar10(p, opts.get("image_size"), opts.get("color") or "rgb")
        return x, y
    if not p.is_file():
        raise InputError(f"{p}: data file not found")
    if kind == "npz":
        return load_npz(p)
    if kind == "idx":
        return load_idx(p, None)
    if kind == "mitbih_csv":
        return load_mitbih_csv(p)
    raise InputError(f"unknown file kind {kind!r}; allowed: {', '.join(FILE_KINDS)}")


# ---------------------------------------------------------------- images: folders and CIFAR-10 batches

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLORS = ("gray", "rgb")


def _fit_images(items: Iterable[tuple[Any, str]], size: tuple[int, int] | None, color: str) -> np.ndarray:
    """(PIL image, where it came from) pairs -> (N, C, H, W) float32 in [0, 1]: each converted to gray (C = 1)
    or RGB (C = 3) and resized to ``size`` = (H, W) (area averaging when shrinking, bilinear when enlarging)
    as it arrives, so a folder of large scans never sits in memory at full size; without a size every
    image must already have the first one's."""
    from PIL import Image

    out = []
    want = None if size is None else (int(size[1]), int(size[0]))  # PIL speaks (W, H)
    for img, src in items:
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            a = np.asarray(img, dtype=np.float64)
            a = a / (65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0)
            img = Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8))
        img = img.convert("L" if color == "gray" else "RGB")
        if want is None:
            want = img.size
        if img.size != want:
            if size is None:
                raise InputError(f"{src}: image is {img.size[1]}x{img.size[0]}, the first one {want[1]}x{want[0]}; "
                                 f"set data.image_size: [{want[1]}, {want[0]}] (H, W) to resize them all")
            shrink = img.size[0] >= want[0] and img.size[1] >= want[1]
            img = img.resize(want, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.float32) / 255.0
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def load_image_folder(path: Path, size: Any = None, color: str = "gray") -> tuple[np.ndarray, np.ndarray, dict]:
    """A folder with one subfolder per class of PNG/JPEG files (the layout most labelled image sets ship in).

    Classes are the subfolder names in sorted order (recorded in the manifest); hidden files are skipped,
    any other file is refused by name rather than silently dropped.  Returns (x, y, manifest extras).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise InputError(f"{path}: data.dataset = image_folder needs a folder with one subfolder per class")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{path}: found {len(classes)} class subfolder(s); an image folder needs one subfolder "
                         "per class (at least 2), each holding that class's PNG/JPEG files")
    files: list[Path] = []
    ys: list[int] = []
    for c, name in enumerate(classes):
        mine = sorted(f for f in (path / name).iterdir() if f.is_file() and not f.name.startswith("."))
        if not mine:
            raise InputError(f"{path / name}: class folder holds no images")
        for f in mine:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{f}: not an image kdhw reads (allowed: {', '.join(IMAGE_SUFFIXES)}); move it out "
                                 "of the class folder")
        files += mine
        ys += [c] * len(mine)

    def opened() -> Iterator[tuple[Any, str]]:
        for f in files:
            try:
                im = Image.open(f)
                im.load()
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise InputError(f"{f}: not a readable image ({type(e).__name__})") from None
            with im:
                yield im, str(f)

    return _fit_images(opened(), _size(size), color), np.asarray(ys, dtype=np.int64), {"classes": classes}


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch is made of: a dict of numpy arrays, lists, bytes and ints.

    A pickle can name any importable callable and call it while loading; a data file from the internet
    must not get to.  Everything outside this short list is refused before it is looked up.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


class _Refused(pickle.UnpicklingError):
    """A pickle that names something outside ``_CifarUnpickler.ALLOWED``."""


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (``data_batch_N`` / ``test_batch``): (N, 3, 32, 32) uint8 and labels."""
    try:
        with open(path, "rb") as fh:
            blob = _CifarUnpickler(fh, encoding="bytes").load()
    except _Refused as e:
        raise InputError(f"{path}: refused to unpickle {e}: a CIFAR-10 batch holds only numpy arrays, lists and "
                         "bytes, so this file is not one (kdhw never loads arbitrary pickles)") from None
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError):
        raise InputError(f"{path}: not a readable CIFAR-10 python batch") from None
    if not isinstance(blob, dict):
        raise InputError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'; this pickle holds "
                         f"a {type(blob).__name__}")
    keys = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in blob.items()}
    data, labels = keys.get("data"), keys.get("labels", keys.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        raise InputError(f"{path}: a CIFAR-10 batch needs 'data' (N, 3072) uint8 and N 'labels'")
    return data.reshape(-1, 3, 32, 32), _labels(np.asarray(labels), path)


def load_cifar10(path: Path, size: Any = None, color: str = "rgb") -> tuple[np.ndarray, np.ndarray, dict]:
    """CIFAR-10 python batches: a folder holding ``data_batch_*`` and/or ``test_batch`` (as the
    ``cifar-10-python`` archive unpacks), or one batch file.  All rows are pooled and split by kdhw's own
    seeded stratified split, like every other data set.  Optional gray conversion and resizing."""
    from PIL import Image

    if path.is_dir():
        files = sorted(path.glob("data_batch_*")) + sorted(path.glob("test_batch"))
        if not files:
            raise InputError(f"{path}: no data_batch_* or test_batch file; give the folder the CIFAR-10 python "
                             "archive unpacks to (cifar-10-batches-py) or one batch file")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{path}: CIFAR-10 batch file or folder not found")
    parts = [read_cifar_batch(f) for f in files]
    raw = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    extra = {"files": [f.name for f in files]}
    if size is None and color == "rgb":
        return (raw / 255.0).astype(np.float32), y, extra
    imgs = ((Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))), f"{path} row {i}") for i, a in enumerate(raw))
    return _fit_images(imgs, _size(size), color), y, extra


def _size(size: Any) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


# ---------------------------------------------------------------- layout: one rule for every loader

LAYOUTS = ("flat", "signal", "image")


def resolve_layout(data_cfg: dict[str, Any], student: dict[str, Any] | None = None,
                   teacher: dict[str, Any] | None = None) -> tuple[str | None, str]:
    """(layout, why): ``data.layout`` when given; else what the student's first layer reads (conv1d:
    signal, conv2d: image); else what the teacher reads (a handed-over teacher's saved input shape, or
    ``teacher.arch`` cnn1d / cnn2d); else None: the rows as stored.  Never from the number of columns."""
    if data_cfg.get("layout"):
        return data_cfg["layout"], "data.layout"
    layers = (student or {}).get("layers") or [{}]
    first = layers[0].get("type") if isinstance(layers[0], dict) else None
    if first in ("conv1d", "conv2d"):
        return ("signal" if first == "conv1d" else "image"), f"the student's first layer is {first}"
    if teacher:
        if teacher.get("path"):
            rank = _saved_input_rank(teacher["path"])
            if rank in (1, 2, 3):
                return ("flat", "signal", "image")[rank - 1], f"teacher.path {teacher['path']} was trained on that layout"
        arch = teacher.get("arch")
        if arch in ("cnn1d", "cnn2d") and not teacher.get("path"):
            return ("signal" if arch == "cnn1d" else "image"), f"teacher.arch = {arch}"
    return None, "as stored"


def _saved_input_rank(path: str) -> int | None:
    try:
        import torch

        return len(torch.load(path, map_location="cpu", weights_only=True)["input_shape"])
    except Exception:
        return None  # the teacher stage reports an unreadable file with its own message


def apply_layout(x: np.ndarray, layout: str | None, why: str, src: str, natural: str | None = None) -> np.ndarray:
    """Lay rows out as ``layout``: flat (N, F), signal (N, C, L) or image (N, C, H, W).

    (N, F) rows become (N, 1, F) signals; (N, H, W) arrays become (N, 1, H, W) images (unless ``natural``
    says they are signals, as for mnist1d); anything else that does not match is an error saying how to fix
    the file or the config.
    """
    shape = tuple(x.shape[1:])
    if layout is None:
        return x
    if layout == "flat":
        return x.reshape(len(x), -1)
    if why == "data.layout":
        fix = "choose another data.layout"
    elif why.startswith("teacher.arch"):
        fix = "choose the teacher for these rows (teacher.arch: cnn1d for signals, mlp for any rows) or set data.layout"
    else:
        fix = "set data.layout (flat, signal or image)"
    if layout == "signal":
        if x.ndim == 2:
            return x[:, None, :]
        if x.ndim == 3:
            return x
        raise InputError(f"{src}: rows are images of shape {shape}; layout signal ({why}) needs (N, L) rows or "
                         f"(N, C, L) signals: reshape the data, or {fix}")
    if x.ndim == 4:
        return x
    if x.ndim == 3 and natural != "signal":
        return x[:, None]
    if x.ndim == 3:
        raise InputError(f"{src}: rows are signals of shape {shape}; layout image ({why}) needs (N, H, W) or "
                         f"(N, C, H, W) images: {fix}")
    hint = ""
    side = math.isqrt(shape[0])
    if side * side == shape[0]:
        hint = f" (e.g. x.reshape(N, 1, {side}, {side}))"
    raise InputError(f"{src}: rows are {shape[0]} values each; layout image ({why}) needs (N, H, W) or (N, C, H, W) "
                     f"arrays: store them as images{hint}, or {fix}")


def _check_student_layout(shape: tuple[int, ...], student: dict[str, Any] | None, src: str) -> None:
    """A conv student on rows of the wrong rank: say which layout it needs (instead of a rank error later)."""
    layers = (student or {}).get("layers") or [{}]
    first = layers[0].get("type") if isinstance(layers[0], dict) else None
    need = {"conv1d": (2, "signal", "(channels, length)"), "conv2d": (3, "image", "(channels, height, width)")}
    if first in need and len(shape) != need[first][0]:
        rank, layout, what = need[first]
        raise InputError(f"{src}: the student's first layer is {first}, which reads {what} rows, but the data rows "
                         f"have shape {shape}; set data.layout: {layout}"
                         + (" (rows (N, L) become (N, 1, L) signals)" if layout == "signal" else ""))


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


def split_given_test(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, val: float, seed: int,
                     name: str) -> Dataset:
    """A set that comes with its own test split (mnist1d): the test rows are kept as given, in their order;
    validation is a seeded stratified ``val`` share of the train rows (``data.test_fraction`` plays no part).
    The manifest hashes train and test rows together, as ``split`` hashes the whole set."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(x))
    strat = y if np.bincount(y).min() >= 2 else None
    tr, va = train_test_split(idx, test_size=val, random_state=seed, stratify=strat)
    h = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (x, y, x_test, y_test))).hexdigest()[:16]
    n_classes = int(max(y.max(), y_test.max())) + 1
    manifest = {"dataset": name, "seed": seed, "n": int(len(x) + len(x_test)), "train": int(len(tr)),
                "val": int(len(va)), "test": int(len(x_test)), "n_classes": n_classes, "shape": list(x.shape[1:]),
                "sha256_16": h}
    return Dataset(name, x[tr], y[tr], x[va], y[va], x_test, y_test, n_classes, manifest)


def load_dataset(cfg: dict[str, Any], src: str = "config", *, student: dict[str, Any] | None = None,
                 teacher: dict[str, Any] | None = None) -> Dataset:
    """The data section of a config -> a split Dataset, laid out by ``resolve_layout`` (the student and
    teacher sections, when given, decide a layout the data section leaves open)."""
    kind = cfg["dataset"]
    extra: dict[str, Any] = {}
    natural = None
    given_test: tuple[np.ndarray, np.ndarray] | None = None  # a set's own test split, kept as it is
    if kind == "digits":
        x, y = load_digits_arrays()
    elif kind == "mnist1d":
        x, y, xt, yt, extra = load_mnist1d()
        given_test = (xt, yt)
        natural = "signal"
    elif kind == "mnist1d_lookalike":
        x, y = make_mnist1d_lookalike(cfg.get("mnist1d_samples", 4000), seed=cfg["seed"])
        natural = "signal"
    elif kind == "image_folder":
        x, y, extra = load_image_folder(Path(cfg["path"]), cfg.get("image_size"), cfg.get("color") or "gray")
    elif kind == "cifar10":
        x, y, extra = load_cifar10(Path(cfg["path"]), cfg.get("image_size"), cfg.get("color") or "rgb")
    else:
        x, y = load_file(kind, cfg["path"])
        if y is None:
            raise InputError(f"{cfg['path']}: no labels found; a labelled data set needs them")
    name = cfg.get("path") or kind
    if len(x) != len(y):
        raise InputError(f"{name}: {len(x)} input rows but {len(y)} labels")
    if len(x) < 30:
        raise InputError(f"{src}: data set has {len(x)} rows; need at least 30 for a train/val/test split")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: inputs contain NaN or infinite values; the fixed-point input has no code for them")
    layout, why = resolve_layout(cfg, student, teacher)
    try:
        x = apply_layout(x, layout, why, str(name), natural)
        if given_test is not None:
            given_test = (apply_layout(given_test[0], layout, why, str(name), natural), given_test[1])
    except InputError:
        if not why.startswith("teacher.path"):
            raise
        layout, why = None, "as stored"  # the teacher check names the mismatch between its shape and the data

    _check_student_layout(tuple(x.shape[1:]), student, str(name))
    if given_test is None:
        d = split(x, y, cfg["val_fraction"], cfg["test_fraction"], cfg["seed"], kind)
    else:
        d = split_given_test(x, y, given_test[0], given_test[1], cfg["val_fraction"], cfg["seed"], kind)
    d.manifest["layout"] = {"layout": layout or {2: "flat", 3: "signal", 4: "image"}.get(x.ndim, "as stored"),
                            "why": why}
    d.manifest.update(extra)
    if cfg.get("labels"):
        d = apply_label_budget(d, cfg["labels"], cfg["seed"], src)
    if cfg.get("unlabeled"):
        xu = load_unlabeled(cfg["unlabeled"], d.shape, src)
        d.x_unlab = np.concatenate([d.unlab, xu])
        d.manifest["unlabeled_file"] = {"path": str(cfg["unlabeled"]), "rows": int(len(xu)),
                                        "sha256_16": hashlib.sha256(xu.tobytes()).hexdigest()[:16]}
    d.manifest["unlabeled"] = int(len(d.unlab))
    return d


def load_data(cfg: Any, data_cfg: dict[str, Any] | None = None, enforce: bool = True) -> Dataset:
    """Load the data of a ``Config`` and hold it to the student's input format (the input contract).

    The layout follows the student and teacher (``resolve_layout``); every split and the transfer set are
    measured against ``student.input`` and a format that clamps more than ``allow_clip`` of any split's
    values is refused (``kdhw.contract.check_input``).  ``student.input: auto`` is resolved here, from the
    training rows, and written back into ``cfg.student['input']`` (and each selector student's own
    ``input``), so the config saved with the run, the student checkpoint, the QONNX input quantizer, the
    HLS input type and ``rtl.json`` all carry the concrete format.  The measurements go to
    ``data.manifest['input_contract']`` (data_manifest.json, report.json, report.md).
    ``data_cfg`` replaces ``cfg.data`` (a sweep loads without the label budget it sweeps);
    ``enforce=False`` measures and records without refusing (``kdhw teacher``: no student is trained there).
    """
    from kdhw.contract import check_input

    d = load_dataset(cfg.data if data_cfg is None else data_cfg, cfg.source, student=cfg.student,
                     teacher=cfg.teacher)
    splits = {"train": d.x_train, "val": d.x_val, "test": d.x_test}
    if len(d.unlab):
        splits["transfer"] = d.unlab
    name = cfg.data.get("path") or f"the {d.name} data set"
    fmt, rec = check_input(splits, cfg.student.get("input"), str(name), cfg.source, enforce=enforce)
    allow = rec["allow_clip"]
    cfg.student["input"] = {**fmt.spec(), **({"allow_clip": allow} if "allow_clip" in (cfg.student.get("input") or {})
                                            else {})}
    d.manifest["input_contract"] = rec
    for i, s in enumerate((getattr(cfg, "selector", None) or {}).get("students") or []):
        if isinstance(s, dict) and s.get("input") is not None:
            f_i, _ = check_input(splits, s["input"], str(name), f"{cfg.source}: selector.students[{i}]")
            s["input"] = {**f_i.spec(), **({"allow_clip": s["input"]["allow_clip"]}
                                           if isinstance(s["input"], dict) and "allow_clip" in s["input"] else {})}
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
