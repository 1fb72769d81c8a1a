"""Shared fixtures: small but really trained students (brevitas QAT for a few epochs) exported to QONNX."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

warnings.filterwarnings("ignore")
os.environ.setdefault("KDHW_TORCH_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
os.environ.setdefault("KDHW_NO_PROGRESS", "1")

SPECS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": "digits",
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": False}, "output": {"bits": 8},
                    "weight_bits": 4, "bias_bits": 16, "act_bits": 4,
                    "layers": [{"type": "dense", "units": 12}, {"type": "relu"}, {"type": "dense", "units": 10}]},
    },
    "conv1d": {
        "data": "mnist1d_lookalike",
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "output": {"bits": 8},
                    "weight_bits": 4, "bias_bits": 16, "act_bits": 4,
                    "layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"},
                               {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                               {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
    },
    "conv2d": {
        "data": "digits",
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": False}, "output": {"bits": 8},
                    "weight_bits": 4, "bias_bits": 16, "act_bits": 4,
                    "layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"},
                               {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
    },
}


def dataset(name: str) -> Any:
    from kdhw.config import validate
    from kdhw.train.data import load_dataset

    cfg = validate({"data": {"dataset": name, "mnist1d_samples": 1200}})
    return load_dataset(cfg.data)


def trained_student(kind: str, epochs: int = 3) -> tuple[Any, Any, dict[str, Any]]:
    """A student of ``kind`` after a few epochs of real QAT; returns (model, dataset, spec)."""
    from kdhw.config import validate
    from kdhw.train.distill import train_arm

    spec = SPECS[kind]
    data = dataset(spec["data"])
    dcfg = validate({"distill": {"epochs": epochs, "method": "none"}}).distill
    arm = train_arm("scratch", spec["student"], dcfg, data, None, "none", progress=False)
    return arm.model, data, spec["student"]


def off_grid_inputs(shape: tuple[int, ...], n: int, signed: bool, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = -2.3 if signed else -0.2
    return rng.uniform(lo, 2.3, size=(n, *shape)).astype(np.float32)


@pytest.fixture(scope="session")
def qonnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """kind -> (QONNX path, verification inputs = test split + 300 off-grid floats)."""
    from kdhw.hw.export import export_qonnx
    from kdhw.train.distill import student_input

    out = {}
    d = tmp_path_factory.mktemp("qonnx")
    for kind in SPECS:
        model, data, spec = trained_student(kind)
        x_test = student_input(data.x_test, spec)
        shape = x_test.shape[1:]
        path = export_qonnx(model, shape, d / f"{kind}.onnx")
        x = np.concatenate([x_test, off_grid_inputs(shape, 300, spec["input"]["signed"])])
        out[kind] = (path, x)
    return out


def hardware_signature(onnx_path: Path) -> list[tuple[Any, ...]]:
    """What the hardware stages read from an exported student apart from its constants: every node's op type
    and, for each Quant node, its bit width and zero point and whether every scale is a power of two (the
    scale values, like the weights, follow training).  Students with equal signatures take the same path
    through hls4ml and da4ml, so one bit-exactness run covers them all."""
    from qonnx.core.modelwrapper import ModelWrapper

    m = ModelWrapper(str(onnx_path))
    sig: list[tuple[Any, ...]] = []
    for n in m.graph.node:
        if n.op_type != "Quant":
            sig.append((n.op_type,))
            continue
        scale, zero, bits = (np.asarray(m.get_initializer(x), dtype=float).ravel() for x in n.input[1:4])
        po2 = bool(np.all(scale > 0) and np.all(np.log2(scale) == np.round(np.log2(scale))))
        sig.append(("Quant", tuple(bits.tolist()), tuple(zero.tolist()), po2))
    return sig


def write_tiny_board(folder: Path) -> Path:
    """A catalog entry (an iCE40 LP384 with 21 pins) far too small for any student, in ``folder``."""
    p = folder / "tiny-fpga.yaml"
    p.write_text("name: tiny-fpga\nvendor: lattice\nfamily: ice40\npart: lp384-qn32\nclock_mhz: 12\nlut: 100\n"
                 "ff: 100\ndsp: 0\nbram36: 0\nuram: 0\nio_pins: 21\n"
                 'sources: ["test board: a catalog entry far too small for any student"]\n')
    return p


RTL_KINDS = ["mlp", "conv1d", "conv2d"]


def _rtl_designs(qonnx_models: dict, root: Path, **opts: Any) -> dict[str, tuple[Path, Path, np.ndarray]]:
    from kdhw.hw.rtl import qonnx_to_rtl

    out = {}
    for kind in RTL_KINDS:
        path, x = qonnx_models[kind]
        qonnx_to_rtl(path, root / kind, **opts)
        out[kind] = (path, root / kind, x)
    return out


@pytest.fixture(scope="session")
def designs(qonnx_models, tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """kind -> (QONNX path, parallel RTL dir, verification inputs)."""
    return _rtl_designs(qonnx_models, tmp_path_factory.mktemp("rtl"))


@pytest.fixture(scope="session")
def streams(qonnx_models, tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """kind -> (QONNX path, stream RTL dir with the default stream options, verification inputs)."""
    return _rtl_designs(qonnx_models, tmp_path_factory.mktemp("stream"), mode="stream")
