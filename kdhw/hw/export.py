"""Export a brevitas student to QONNX and execute the QONNX graph as the integer reference.

The QONNX file is the contract between training and hardware: the hls4ml and RTL stages read only it, so
a user may bring their own QONNX file and start there.  ``check_qonnx`` refuses graphs that cannot be
bit-exact (unsupported ops, non-power-of-two scales) with one line naming the node.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from kdhw.errors import InputError
from kdhw.util.atomic import write_bytes

SUPPORTED_OPS = (
    "Quant", "MatMul", "Gemm", "Add", "Relu", "Conv", "MaxPool", "Flatten", "Reshape", "Transpose",
    "Mul", "Identity",
)


def export_qonnx(model: Any, input_shape: tuple[int, ...], out_path: str | Path) -> Path:
    """brevitas -> QONNX -> cleaned QONNX at ``out_path`` (written atomically)."""
    import logging

    import torch
    from brevitas.export import export_qonnx as _bexport
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out_path = Path(out_path)
    model = model.eval()
    with tempfile.TemporaryDirectory() as td:
        raw = Path(td) / "raw.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            _bexport(model, torch.zeros(1, *input_shape), str(raw))
        mw = cleanup_model(ModelWrapper(str(raw)))
        mw.model.graph.input[0].name  # noqa: B018 - graph must have an input
        write_bytes(out_path, mw.model.SerializeToString())
    return out_path


def load_qonnx(path: str | Path) -> Any:
    """Load and validate a QONNX file; InputError (one line) for anything kdhw cannot make bit-exact."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        proto = onnx.load(str(p))
        onnx.checker.check_model(proto)
    except Exception:
        raise InputError(f"{p}: not an ONNX model (onnx could not parse it)") from None
    if len(proto.graph.input) - len(proto.graph.initializer) > 1 and len(
        [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    ) != 1:
        raise InputError(f"{p}: the model must have exactly one input")
    check_qonnx(ModelWrapper(proto), str(p))  # before clean-up, so messages use the file's node names
    mw = cleanup_model(ModelWrapper(proto))
    check_qonnx(mw, str(p))
    return mw


def check_qonnx(mw: Any, src: str) -> None:
    """Refuse ops kdhw does not support and quantizer scales that are not powers of two."""
    for node in mw.graph.node:
        if node.op_type not in SUPPORTED_OPS:
            raise InputError(
                f"{src}: node '{node.name}' has op {node.op_type}, which kdhw does not support; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
        if node.op_type == "Quant":
            scale = mw.get_initializer(node.input[1])
            if scale is None:
                raise InputError(f"{src}: Quant node '{node.name}' has a run-time scale; kdhw needs constant scales")
            s = np.asarray(scale, dtype=np.float64).ravel()
            e = np.log2(s)
            if not np.all(np.isfinite(e)) or not np.allclose(e, np.round(e), atol=0, rtol=0):
                raise InputError(
                    f"{src}: Quant node '{node.name}' has scale {s[0]:.6g}, not a power of two; hls4ml cannot be "
                    "bit-exact with it (use brevitas *FixedPoint quantizers)"
                )
            zp = mw.get_initializer(node.input[2])
            if zp is not None and np.any(np.asarray(zp) != 0):
                raise InputError(f"{src}: Quant node '{node.name}' has a non-zero zero-point; kdhw supports zero-point 0 only")
        if node.op_type == "Mul":
            c = mw.get_initializer(node.input[1]) if len(node.input) > 1 else None
            if c is None:
                c = mw.get_initializer(node.input[0])
            if c is None:
                raise InputError(f"{src}: Mul node '{node.name}' multiplies two run-time tensors; not supported")
            e = np.log2(np.abs(np.asarray(c, dtype=np.float64).ravel()))
            if not np.all(np.isfinite(e)) or not np.all(e == np.round(e)):
                raise InputError(
                    f"{src}: Mul node '{node.name}' scales by a constant that is not a power of two; not bit-exact"
                )


def input_shape(mw: Any) -> tuple[int, ...]:
    """Shape of the graph input without the batch dimension."""
    name = mw.graph.input[0].name
    shp = mw.get_tensor_shape(name)
    return tuple(int(d) for d in shp[1:])


def input_format(mw: Any) -> tuple[int, int, bool]:
    """(bits, int_bits, signed) of the Quant node that consumes the graph input.

    The HLS input precision is set to exactly this type: with hls4ml's default input type, off-grid float
    inputs would be truncated and then rounded, and about a third of rows would differ.
    """
    inp = mw.graph.input[0].name
    consumers = mw.find_consumers(inp)
    q = next((n for n in consumers or [] if n.op_type == "Quant"), None)
    if q is None:
        raise InputError("the graph input is not quantized by a Quant node; kdhw needs a fixed-point input quantizer")
    scale = float(np.asarray(mw.get_initializer(q.input[1])).ravel()[0])
    bits = int(np.asarray(mw.get_initializer(q.input[3])).ravel()[0])
    signed = bool(next(a.i for a in q.attribute if a.name == "signed"))
    frac = -int(round(math.log2(scale)))
    int_bits = bits - frac - (1 if signed else 0)
    return bits, int_bits, signed


def hls_input_type(mw: Any) -> str:
    bits, int_bits, signed = input_format(mw)
    if signed:
        return f"fixed<{bits},{int_bits + 1},RND_CONV,SAT>"
    return f"ufixed<{bits},{int_bits},RND_CONV,SAT>"


def _batched(mw: Any, n: int) -> Any:
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    return mw.transform(ChangeBatchSize(n)).transform(InferShapes())


def reference(mw: Any, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """QONNX execution of the whole batch at once (one sample at a time is ~100x slower)."""
    from qonnx.core.onnx_exec import execute_onnx

    shp = input_shape(mw)
    if tuple(x.shape[1:]) != shp:
        raise InputError(f"inputs have shape {tuple(x.shape[1:])} per row; the model expects {shp}")
    outs = []
    in_name, out_name = mw.graph.input[0].name, mw.graph.output[0].name
    for i in range(0, len(x), chunk):
        xb = np.ascontiguousarray(x[i:i + chunk], dtype=np.float32)
        m = _batched(mw, len(xb))
        outs.append(execute_onnx(m, {in_name: xb})[out_name])
    return np.concatenate(outs).reshape(len(x), -1)


def reference_intermediates(mw: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the graph for ``x`` (used to find the first diverging layer)."""
    from qonnx.core.onnx_exec import execute_onnx

    m = _batched(mw, len(x))
    ctx = execute_onnx(m, {mw.graph.input[0].name: np.ascontiguousarray(x, dtype=np.float32)},
                       return_full_exec_context=True)
    return {k: np.asarray(v) for k, v in ctx.items()}
