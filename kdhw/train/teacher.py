"""Float teacher: MLP, 1D CNN or 2D CNN from config; trained with early stopping, or handed over.

Its logits on every split are computed once and cached (``teacher_logits.npz``) so distillation epochs
cost the same as scratch epochs.

A handed-over teacher (``teacher.path``) is a kdhw checkpoint, or a model trained elsewhere: an ONNX file
(run with onnxruntime; what PyTorch and Keras users can both export), a TorchScript file, or a logits file
(``.npz``) for a teacher that cannot run here.  Each is checked against the data before any training
(input shape, number of classes) and whether it emits logits or probabilities is detected (probabilities
are turned into log-probabilities, whose softmax is the same distribution); ``describe()`` says what was
found, for the report.  A logits file answers only for the rows it holds, matched by content: it cannot
see augmented inputs, so function matching and hidden-layer methods refuse it.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from kdhw.errors import InputError
from kdhw.util.atomic import write_bytes

from .data import Dataset
from .loop import FitResult, accuracy, fit, predict_logits


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
    """teacher.pt of a run: a kdhw teacher's weights, or a foreign teacher's file bytes (rebuilt on load)."""
    buf = io.BytesIO()
    body: dict[str, Any] = ({"foreign": model.saved()} if isinstance(model, ForeignTeacher)
                            else {"state_dict": model.state_dict()})
    torch.save({"cfg": {k: v for k, v in cfg.items() if v is None or isinstance(v, (str, int, float, bool, list))},
                "input_shape": list(input_shape), "n_classes": n_classes, **body}, buf)
    write_bytes(path, buf.getvalue())


def load_teacher(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a handed-over teacher: a kdhw checkpoint (weights_only: no arbitrary unpickling, possibly
    holding a foreign model saved by a run), an ONNX model, a TorchScript file or a logits file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: teacher file not found")
    kind = teacher_kind(p)
    if kind != "kdhw":
        model = FOREIGN[kind](p.read_bytes(), str(p))
        return model, {"arch": kind, **model.describe()}
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        if "foreign" in blob:  # a foreign teacher saved into a run directory by save_teacher
            f = blob["foreign"]
            model = FOREIGN[f["kind"]].restore(f)
            model.outputs = f["outputs"]
            return model, dict(blob["cfg"])
        model = build_teacher(blob["cfg"], tuple(blob["input_shape"]), int(blob["n_classes"]))
        model.load_state_dict(blob["state_dict"])
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{p}: not a kdhw teacher checkpoint ({type(e).__name__}); a handed-over teacher is a "
                         "kdhw teacher.pt, an ONNX model (.onnx), a TorchScript file or a logits file (.npz)") from None
    return model.eval(), blob["cfg"]


def teacher_kind(path: Path) -> str:
    """``kdhw`` (a torch checkpoint), ``onnx``, ``torchscript`` or ``logits``, from the suffix and the content."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".npz":
        return "logits"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "kdhw"


def load_teacher_for(path: str | Path, data: Dataset, src: str = "config") -> tuple[nn.Module, dict[str, Any]]:
    """Load a handed-over teacher and check it fits this data's input shape and classes."""
    model, cfg = load_teacher(path)
    if isinstance(model, ForeignTeacher):
        model.check(data, src)
        return model, {**cfg, **model.describe()}
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

    from kdhw.util.atomic import write_json

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


def teacher_params(model: nn.Module) -> int | None:
    """Parameter count of a teacher (None for a logits file, which has none to count)."""
    if isinstance(model, ForeignTeacher):
        return model.n_params
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- teachers trained outside kdhw

def row_hashes(x: np.ndarray) -> list[str]:
    """sha256 of each row's float32 values (C order): how a logits file's rows are matched to the data."""
    if len(x) == 0:
        return []
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in flat]


def write_logits_file(path: str | Path, x: np.ndarray, logits: np.ndarray) -> None:
    """A logits file for ``teacher.path``: the teacher's outputs on inputs ``x`` (the rows as kdhw loads
    them), matched to the data by content.  Users without kdhw write the same with numpy:
    ``np.savez(path, x=x, logits=logits)`` (or ``row_sha256=`` hex digests instead of ``x``)."""
    buf = io.BytesIO()
    np.savez(buf, x=np.asarray(x, dtype=np.float32), logits=np.asarray(logits, dtype=np.float32))
    write_bytes(Path(path), buf.getvalue())


class ForeignTeacher(nn.Module, ABC):
    """A teacher kdhw did not build: forward takes data rows (channels first, or flat) and returns logits.

    It has no trainable parameters here; pickling (Ray ships teachers to workers) carries the file's bytes
    and rebuilds the runtime on the other side.
    """

    kind = "foreign"
    runnable = True  # can it answer for inputs it has never seen (augmented batches)?

    def __init__(self, blob: bytes, path: str) -> None:
        super().__init__()
        self.blob, self.path = blob, path
        self.outputs = "logits"  # or "probabilities": set by check()
        self.n_params: int | None = None
        self.model_shape: tuple[int, ...] | None = None  # the row shape the model reads, once known

    @classmethod
    def restore(cls, saved: dict[str, Any]) -> ForeignTeacher:
        t = cls(saved["blob"], saved["path"])
        if saved.get("model_shape") is not None:
            t.model_shape = tuple(saved["model_shape"])
        return t

    def saved(self) -> dict[str, Any]:
        """What ``save_teacher`` stores so the run directory's teacher.pt rebuilds this teacher."""
        return {"kind": self.kind, "blob": self.blob, "path": self.path, "outputs": self.outputs,
                "model_shape": None if self.model_shape is None else list(self.model_shape)}

    def describe(self) -> dict[str, Any]:
        what = {"onnx": "ONNX model (onnxruntime)", "torchscript": "TorchScript file", "logits": "logits file"}
        return {"format": what.get(self.kind, self.kind), "outputs": self.outputs, "runnable": self.runnable,
                "model_input_shape": None if self.model_shape is None else list(self.model_shape),
                "params": self.n_params}

    @abstractmethod
    def raw(self, x: np.ndarray) -> np.ndarray:
        """The model's own outputs on a batch of rows already in ``model_shape``: one per file format."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.model_shape is not None:
            arr = arr.reshape(len(arr), *self.model_shape)
        out = torch.from_numpy(np.ascontiguousarray(self.raw(arr), dtype=np.float32))
        return torch.log(out.clamp_min(1e-12)) if self.outputs == "probabilities" else out

    def check(self, data: Dataset, src: str) -> None:
        """Input shape, number of classes, logits or probabilities: one line naming the file if wrong."""
        rows = data.x_train[:256]
        out = self._probe(rows, data, src)
        if out.ndim != 2 or out.shape[1] != data.n_classes:
            raise InputError(f"{src}: teacher.path {self.path} outputs shape {tuple(out.shape[1:])} per row; the data "
                             f"has {data.n_classes} classes (one score per class expected)")
        if not np.all(np.isfinite(out)):
            raise InputError(f"{src}: teacher.path {self.path} outputs NaN or infinite values on the data")
        probs = bool(np.all(out >= 0) and np.allclose(out.sum(1), 1.0, atol=1e-3))
        self.outputs = "probabilities" if probs else "logits"

    def _probe(self, rows: np.ndarray, data: Dataset, src: str) -> np.ndarray:
        """The model's outputs on a few data rows, finding the row layout it reads (channels first or flat)."""
        errors = []
        for shape in self._layouts(data.shape):
            try:
                out = self.raw(np.ascontiguousarray(rows.reshape(len(rows), *shape), dtype=np.float32))
            except InputError:
                raise
            except Exception as e:  # the runtime's own message says why this layout does not fit
                errors.append(f"{shape}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}")
                continue
            self.model_shape = shape
            return np.asarray(out)
        tried = " or ".join(str(s) for s in self._layouts(data.shape))
        raise InputError(f"{src}: teacher.path {self.path} does not accept the data's rows (tried shapes {tried}; "
                         f"{errors[0] if errors else 'no layout fits'})")

    def _layouts(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        flat = (math.prod(shape),)
        return [tuple(shape)] + ([flat] if flat != tuple(shape) else [])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_runtime", None)
        return state


class OnnxTeacher(ForeignTeacher):
    """An ONNX model run by onnxruntime on the CPU, in batches."""

    kind = "onnx"
    batch = 1024

    def __init__(self, blob: bytes, path: str) -> None:
        super().__init__(blob, path)
        try:
            import onnx

            m = onnx.load_from_string(blob)
            self.n_params = int(sum(np.prod(t.dims) for t in m.graph.initializer))
        except Exception:
            raise InputError(f"{path}: not a readable ONNX model") from None

    def _session(self) -> Any:
        if getattr(self, "_runtime", None) is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.intra_op_num_threads = max(1, torch.get_num_threads())
            so.inter_op_num_threads = 1
            # object.__setattr__: a runtime is rebuilt from ``blob``, never registered, copied or pickled
            object.__setattr__(self, "_runtime", ort.InferenceSession(self.blob, so, providers=["CPUExecutionProvider"]))
        return self._runtime

    def _layouts(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The declared input shape decides (a symbolic batch dimension is fine); else try both layouts."""
        declared = self._session().get_inputs()[0].shape[1:]
        if all(isinstance(d, int) for d in declared):
            return [tuple(declared)] if math.prod(declared) == math.prod(shape) else []
        return super()._layouts(shape)

    def check(self, data: Dataset, src: str) -> None:
        inp = self._session().get_inputs()[0]
        declared = inp.shape[1:]
        if all(isinstance(d, int) for d in declared) and math.prod(declared) != math.prod(data.shape):
            raise InputError(f"{src}: teacher.path {self.path} expects inputs of shape {tuple(declared)}; the data rows "
                             f"have shape {tuple(data.shape)} ({math.prod(data.shape)} values)")
        super().check(data, src)

    def raw(self, x: np.ndarray) -> np.ndarray:
        sess = self._session()
        inp = sess.get_inputs()[0]
        dtype = np.float64 if inp.type == "tensor(double)" else np.float32
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
        step = fixed or self.batch
        outs = [sess.run(None, {inp.name: x[i:i + step].astype(dtype)})[0] for i in range(0, len(x), step)]
        return np.concatenate(outs)


class TorchScriptTeacher(ForeignTeacher):
    """A TorchScript file (``torch.jit.save``): compiled code and weights, no Python unpickling."""

    kind = "torchscript"

    def __init__(self, blob: bytes, path: str) -> None:
        super().__init__(blob, path)
        self.n_params = int(sum(p.numel() for p in self._module().parameters()))

    def _module(self) -> Any:
        if getattr(self, "_runtime", None) is None:
            try:
                object.__setattr__(self, "_runtime", torch.jit.load(io.BytesIO(self.blob), map_location="cpu").eval())
            except Exception:
                raise InputError(f"{self.path}: not a readable TorchScript file") from None
        return self._runtime

    def raw(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self._module()(torch.from_numpy(x))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().numpy()


class LogitsTeacher(ForeignTeacher):
    """Outputs computed elsewhere: one row of logits (or probabilities) per input, matched by content."""

    kind = "logits"
    runnable = False

    def __init__(self, blob: bytes, path: str) -> None:
        super().__init__(blob, path)
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                keys = set(z.files)
                logits = z["logits"] if "logits" in keys else None
                hashes = ([str(h) for h in z["row_sha256"]] if "row_sha256" in keys else
                          row_hashes(z["x"]) if "x" in keys else None)
                self.file_shape = tuple(z["x"].shape[1:]) if "x" in keys else None
        except Exception:
            raise InputError(f"{path}: not a readable .npz logits file") from None
        if logits is None or hashes is None:
            raise InputError(f"{path}: a logits file needs 'logits' (rows x classes) and the inputs 'x' (or their "
                             f"'row_sha256'); it has {', '.join(sorted(keys)) or 'nothing'}")
        if logits.ndim != 2 or len(logits) != len(hashes):
            raise InputError(f"{path}: 'logits' must be (rows, classes) with one row per input; got {logits.shape} for "
                             f"{len(hashes)} inputs")
        self.table = np.asarray(logits, dtype=np.float32)
        self.index = {h: i for i, h in enumerate(hashes)}

    def raw(self, x: np.ndarray) -> np.ndarray:
        rows = [self.index.get(h) for h in row_hashes(x)]
        if any(r is None for r in rows):
            miss = sum(r is None for r in rows)
            raise InputError(f"teacher.path {self.path}: no logits for {miss} of {len(rows)} input rows; a logits file "
                             "answers only for the rows it was computed on (no augmented or random inputs)")
        return self.table[rows]

    def check(self, data: Dataset, src: str) -> None:
        if self.file_shape is not None and math.prod(self.file_shape) != math.prod(data.shape):
            raise InputError(f"{src}: teacher.path {self.path} holds inputs of shape {self.file_shape}; the data rows "
                             f"have shape {tuple(data.shape)}")
        for split in ("train", "val", "test", "unlab"):
            x = data.unlab if split == "unlab" else getattr(data, f"x_{split}")
            missing = [i for i, h in enumerate(row_hashes(x)) if h not in self.index]
            if missing:
                raise InputError(f"{src}: teacher.path {self.path} has no logits for {len(missing)} of the {len(x)} "
                                 f"{split} rows (first: {split} row {missing[0]}); rows are matched by the sha256 of "
                                 "their float32 values as kdhw loads them (kdhw.train.teacher.row_hashes)")
        self.model_shape = tuple(data.shape)
        super().check(data, src)

    def _layouts(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [tuple(shape)]


FOREIGN: dict[str, type[ForeignTeacher]] = {"onnx": OnnxTeacher, "torchscript": TorchScriptTeacher,
                                            "logits": LogitsTeacher}


def teacher_logits(model: nn.Module, arch: str, data: Dataset) -> dict[str, np.ndarray]:
    """Logits on every split and on the transfer set ("unlab", when there is one), computed once: the cache
    distillation reads, so a KD epoch costs what a scratch epoch costs."""
    out = {s: predict_logits(model, teacher_input(getattr(data, f"x_{s}"), arch)) for s in ("train", "val", "test")}
    if len(data.unlab):
        out["unlab"] = predict_logits(model, teacher_input(data.unlab, arch))
    return out


def teacher_accuracy(logits: dict[str, np.ndarray], data: Dataset) -> dict[str, float]:
    return {s: float((logits[s].argmax(1) == getattr(data, f"y_{s}")).mean()) for s in ("train", "val", "test")}


__all__ = ["ForeignTeacher", "LogitsTeacher", "OnnxTeacher", "TorchScriptTeacher", "accuracy", "build_teacher",
           "load_teacher", "obtain_teacher", "row_hashes", "save_teacher", "teacher_logits", "teacher_params",
           "train_teacher", "write_logits_file"]
