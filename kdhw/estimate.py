"""Pre-synthesis resource estimate from the QONNX graph alone (no RTL, no tools).

kdhw's RTL is distributed arithmetic: every constant multiplication becomes shifts and adds, fully
unrolled, so the cost follows the non-zero digits of the integer weights in canonical signed digit (CSD)
form rather than the number of multipliers.  Per linear layer (dense or conv) with integer weights W,
input activations of ``a`` bits, ``w`` weight bits, fan-in ``n`` and ``P`` output positions (1 for dense):

    adders  = P * sum_j max(d_j - 1, 0) + P * n_out       d_j = CSD digits feeding output j; + bias add
    width   = a + w + ceil(log2(n))                        accumulator width
    LUT     = K_LUT * adders * width                       one LUT (+carry) per adder bit, shared terms discount
    max-pool: LUT += K_CMP * values_out * (k - 1) * a      comparator + mux per extra window element
    FF      = K_FF * (sum over layers of values_out * width) + input bits     pipeline registers
    DSP = BRAM = 0                                         DA uses neither

K_LUT, K_CMP and K_FF were fitted once against yosys ``synth_xilinx`` counts of kdhw's own RTL for a
calibration set of students disjoint from the set ``benchmarks/estimate_vs_yosys.py`` reports on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .boards import Board

K_LUT = 0.50
K_CMP = 1.0
K_FF = 0.50
FORMULA = ("LUT = %.2f*sum_layers(P*(sum_j max(csd_j-1,0) + n_out) * (a+w+ceil(log2 n))) + %.2f*maxpool_cmp_bits; "
           "FF = %.2f*sum_layers(values_out*acc_width) + input_bits; DSP = BRAM = 0" % (K_LUT, K_CMP, K_FF))


def csd_digits(v: np.ndarray) -> np.ndarray:
    """Number of non-zero digits of each integer in canonical signed-digit form."""
    v = np.abs(v.astype(np.int64))
    out = np.zeros_like(v)
    while np.any(v):
        odd = (v & 1).astype(bool)
        # a digit of +-1 is taken where v is odd; choose -1 when v = 3 mod 4 (CSD rule)
        d = np.where(odd, np.where((v & 3) == 3, -1, 1), 0)
        out += odd
        v = (v - d) >> 1
    return out


def _quant_of(mw: Any, tensor: str) -> Any:
    """The Quant node that produced ``tensor``, looking through shape-only ops."""
    node = mw.find_producer(tensor)
    while node is not None and node.op_type in ("MaxPool", "Reshape", "Flatten", "Transpose", "Identity"):
        node = mw.find_producer(node.input[0])
    return node if node is not None and node.op_type == "Quant" else None


def _int_weights(mw: Any, tensor: str) -> tuple[np.ndarray, int] | None:
    q = mw.find_producer(tensor)
    if q is None or q.op_type != "Quant" or mw.get_initializer(q.input[0]) is None:
        return None
    w = mw.get_initializer(q.input[0])
    scale = np.asarray(mw.get_initializer(q.input[1]), dtype=np.float64)
    bits = int(np.asarray(mw.get_initializer(q.input[3])).ravel()[0])
    return np.round(np.asarray(w, dtype=np.float64) / scale).astype(np.int64), bits


def layer_costs(onnx_path: str | Path) -> list[dict[str, Any]]:
    """Per-layer terms of the formula (adders, widths, values) for the report and for calibration."""
    from .export import load_qonnx

    mw = load_qonnx(onnx_path)
    rows = []
    for node in mw.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            wq = _int_weights(mw, node.input[1])
            q_in = _quant_of(mw, node.input[0])
            if wq is None or q_in is None:
                continue
            w, wbits = wq
            a = int(np.asarray(mw.get_initializer(q_in.input[3])).ravel()[0])
            out_shape = mw.get_tensor_shape(node.output[0])
            if node.op_type == "Conv":  # (O, I, k...) -> per output channel digits
                n_out, fan_in = w.shape[0], int(np.prod(w.shape[1:]))
                digits = csd_digits(w.reshape(n_out, -1)).sum(1)
                positions = int(np.prod(out_shape[2:]))
            else:
                trans = any(att.name == "transB" and att.i for att in node.attribute)
                wm = w.T if trans else w  # (n_in, n_out)
                fan_in, n_out = wm.shape
                digits = csd_digits(wm).sum(0)
                positions = 1
            width = a + wbits + math.ceil(math.log2(max(fan_in, 2)))
            adders = positions * (int(np.maximum(digits - 1, 0).sum()) + n_out)
            rows.append({"node": node.name, "op": node.op_type, "adders": adders, "width": width,
                         "values_out": positions * n_out, "a_bits": a, "w_bits": wbits, "fan_in": fan_in})
        elif node.op_type == "MaxPool":
            q_in = _quant_of(mw, node.input[0])
            a = int(np.asarray(mw.get_initializer(q_in.input[3])).ravel()[0]) if q_in is not None else 8
            k = int(np.prod(next(att.ints for att in node.attribute if att.name == "kernel_shape")))
            vals = int(np.prod(mw.get_tensor_shape(node.output[0])[1:]))
            rows.append({"node": node.name, "op": "MaxPool", "cmp_bits": vals * (k - 1) * a, "values_out": vals})
    return rows


def estimate(onnx_path: str | Path, board: Board | None = None) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM estimate, and utilization + fit on ``board`` when given."""
    from .export import input_format, input_shape, load_qonnx

    mw = load_qonnx(onnx_path)
    in_bits = input_format(mw)[0] * int(np.prod(input_shape(mw)))
    rows = layer_costs(onnx_path)
    lin = [r for r in rows if "adders" in r]
    lut = K_LUT * sum(r["adders"] * r["width"] for r in lin) + K_CMP * sum(r.get("cmp_bits", 0) for r in rows)
    ff = K_FF * sum(r["values_out"] * r["width"] for r in lin) + in_bits
    res: dict[str, Any] = {"lut": int(round(lut)), "ff": int(round(ff)), "dsp": 0, "bram36": 0,
                           "formula": FORMULA, "layers": rows}
    if board is not None:
        res["utilization_pct"] = {"lut": 100.0 * res["lut"] / board.lut, "ff": 100.0 * res["ff"] / board.ff,
                                  "dsp": 0.0, "bram36": 0.0}
        res["fits"] = res["lut"] <= board.lut and res["ff"] <= board.ff
    return res
