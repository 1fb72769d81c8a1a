"""QONNX -> hls4ml project (Vitis or Vivado backend) with a compiled C-sim.

hls4ml does the conversion; kdhw adds what makes it bit-exact and checkable: the input precision is the
input quantizer's own type, precisions stay on ``auto`` with per-layer granularity, every layer is traced
(C-sim only: the trace code sits under ``#ifndef __SYNTHESIS__``), and a ``kdhw_hls.json`` records what
``kdhw verify`` needs (input layout, tensor names per layer) so the project can be verified later by itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_dir, write_json
from .errors import InputError, ToolMissing
from .export import hls_input_type, input_shape, load_qonnx

PROJECT_NAME = "myproject"
META_FILE = "kdhw_hls.json"
HLS_MODEL_FILE = "kdhw_hls_input.onnx"


def _patch_hls4ml() -> None:
    """Register a 1D MaxPool/AveragePool handler that reads channels-last shapes and sets the pads.

    hls4ml 1.3.0's ONNX pooling handler reads n_in/n_filt in channels-first order and never sets
    pad_left/pad_right for 1D pooling, so every Conv1D student with pooling fails to convert.
    """
    import importlib

    onnx_to_hls = importlib.import_module("hls4ml.converters.onnx_to_hls")

    if getattr(onnx_to_hls, "_kdhw_patched", False):
        return
    orig = onnx_to_hls.layer_handlers["MaxPool"]

    def parse_pool(node: Any, input_names: Any, input_shapes: Any, graph: Any) -> dict[str, Any]:
        layer = orig(node, input_names, input_shapes, graph)
        if layer["class_name"].endswith("Pooling1D"):
            shp = input_shapes[0]  # channels-last: (N, L, C)
            layer["n_in"], layer["n_filt"] = int(shp[1]), int(shp[2])
            pads = list(layer.get("pads") or [0, 0])
            layer["pad_left"], layer["pad_right"] = int(pads[0]), int(pads[-1])
            k, s = layer["pool_width"], layer["stride_width"]
            layer["n_out"] = (layer["n_in"] + sum(pads[:2]) - k) // s + 1
        return layer

    for op in ("MaxPool", "AveragePool"):
        onnx_to_hls.layer_handlers[op] = parse_pool
    onnx_to_hls._kdhw_patched = True  # type: ignore[attr-defined]


def prepare_for_hls(mw: Any) -> Any:
    """The QONNX steps hls4ml needs: channels-last (CNNs), Gemm -> MatMul, clean-up."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    m = ModelWrapper(mw.model)
    if len(input_shape(m)) > 1:
        m = m.transform(ConvertToChannelsLastAndClean())
    m = m.transform(GemmToMatMul())
    return cleanup_model(m)


@contextlib.contextmanager
def _quiet() -> Any:
    """hls4ml prints every layer; keep the CLI's output to progress lines a person reads."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield buf
        finally:
            logging.disable(logging.NOTSET)


def build_hls_project(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    part: str,
    clock_period_ns: float,
    backend: str = "Vitis",
    io_type: str = "io_parallel",
    reuse_factor: int = 1,
    strategy: str = "Latency",
    board: str | None = None,
    compile_csim: bool = True,
) -> dict[str, Any]:
    """Convert ``onnx_path`` into an hls4ml project at ``out_dir`` (atomic) and compile its C-sim."""
    import hls4ml

    if backend not in ("Vitis", "Vivado"):
        raise InputError(f"backend {backend!r} is not supported; choose Vitis or Vivado")
    if io_type not in ("io_parallel", "io_stream"):
        raise InputError(f"io_type {io_type!r} is not supported; choose io_parallel or io_stream")
    if compile_csim and shutil.which("g++") is None:
        raise ToolMissing("g++ not found; the hls4ml C-sim needs it (apt-get install g++)")
    _patch_hls4ml()
    onnx_path = Path(onnx_path)
    mw = load_qonnx(onnx_path)
    in_type = hls_input_type(mw)
    shp = input_shape(mw)
    hm = prepare_for_hls(mw)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, _quiet():
        cfg = hls4ml.utils.config.config_from_onnx_model(
            hm, granularity="name", backend=backend, default_reuse_factor=reuse_factor
        )
        names = list(cfg["LayerName"])
        cfg["LayerName"][names[0]]["Precision"]["result"] = in_type
        cfg["Model"]["Strategy"] = strategy
        for n in names:
            cfg["LayerName"][n]["Trace"] = True
        try:
            hmodel = hls4ml.converters.convert_from_onnx_model(
                hm, output_dir=str(tmp), project_name=PROJECT_NAME, io_type=io_type, backend=backend,
                hls_config=cfg, part=part, clock_period=clock_period_ns,
            )
        except Exception as e:  # hls4ml raises bare Exceptions for unsupported graphs
            raise InputError(f"{onnx_path}: hls4ml could not convert the model: {str(e).splitlines()[0]}") from None
        hmodel.config.trace_output = True
        if compile_csim:
            hmodel.compile()
        else:
            hmodel.write()
        layers = []
        for layer in hmodel.get_layers():
            if layer.get_attr("function_cpp", None) is None:
                continue
            layers.append({
                "name": layer.name,
                "class": layer.class_name,
                "tensor": layer.outputs[0] if layer.outputs else None,
                "shape": [int(s) for s in layer.get_output_variable().shape],
                "precision": str(layer.get_output_variable().type.precision.definition_cpp()),
            })
        hm.save(str(tmp / HLS_MODEL_FILE))
        shutil.copy(onnx_path, tmp / "student.qonnx.onnx")
        meta = {
            "project_name": PROJECT_NAME,
            "backend": backend,
            "io_type": io_type,
            "part": part,
            "board": board,
            "clock_period_ns": clock_period_ns,
            "reuse_factor": reuse_factor,
            "strategy": strategy,
            "input_shape": list(shp),
            "input_type": in_type,
            "n_inputs": int(np.prod(shp)),
            "n_outputs": int(np.prod(hmodel.get_output_variables()[0].shape)),
            "channels_last": len(shp) > 1,
            "layers": layers,
            "source_onnx": str(onnx_path),
        }
        write_json(tmp / META_FILE, meta)
    return meta


def read_meta(project_dir: str | Path) -> dict[str, Any]:
    """Load ``kdhw_hls.json`` of a project; InputError if the directory is not a kdhw HLS project."""
    import json

    p = Path(project_dir) / META_FILE
    if not p.is_file():
        raise InputError(f"{project_dir}: not a kdhw HLS project (no {META_FILE}); create one with `kdhw hls`")
    return json.loads(p.read_text())


def env_quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
