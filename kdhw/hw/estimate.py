"""Pre-synthesis resource and latency estimate from the QONNX graph alone (no RTL, no tools, milliseconds).

Why a formula at all: a board comparison should not need a synthesis run per candidate student, and users
ask for numbers before they own Vivado.  kdhw's RTL is da4ml distributed arithmetic: every constant
multiplication becomes shifts and adds, fully unrolled and pipelined, so cost follows the non-zero digits of
the integer weights in canonical signed digit (CSD) form, not the number of multipliers, and no DSP or BRAM
is used.  Per linear layer (dense or conv) with integer weights W, input activations of ``a`` bits, fan-in
``n``, ``P`` output positions (1 for dense) and ``d_j`` CSD digits feeding output j:

    adders = P * (sum_j max(d_j - 1, 0) + n_out)            one adder per extra digit, + the bias add
    LUT    = K_DENSE * sum_dense(adders * (a + 2)) + K_CONV * sum_conv(adders * (a + 2))

An adder costs about one LUT per bit of its operand (a) plus the carry/growth bits (+2).  K_DENSE < 1
because da4ml shares common subexpressions between the many outputs of a dense layer (about a third of the
adders disappear); K_CONV is about 1: few filters share little, and the following max-pool's comparators
are absorbed in it.

    FF      = input_bits + output_bits + K_REG * boundaries * adder_bits / depth
    latency = boundaries + 1 cycles

The input and the output are registered once each.  ``depth`` is the delay of the whole design in da4ml's
units: ceil(log2(mean d_j + 1)) adder levels per linear layer plus 3 for the bias add, ReLU and
requantization, ceil(log2 k) per k-wide max-pool.  da4ml cuts the pipeline every ``latency_cutoff`` units
(5 by default), giving ``boundaries`` = ceil(depth / cutoff) - 1 internal cuts.  Each cut registers the
values live at that point, about the logic's average width: adder_bits (the sum of adders * (a + 2) above)
per unit of depth, times K_REG for what yosys keeps (constant and duplicate bits are removed).

K_DENSE, K_CONV and K_REG were fitted (least squares on relative error) against yosys ``synth_xilinx``
counts of kdhw's own RTL for 17 trained students (``benchmarks/estimate_vs_yosys.py --calibrate``) and are
evaluated on 8 other students that played no part in choosing or fitting the formula; benchmarks/README.md quotes
that table (the FF term's first form failed its evaluation: ``benchmarks/results/estimate_vs_yosys.v1.md``).
The LUT figure is in Xilinx LUT6 units: an iCE40/ECP5 LUT4 count is larger.

Stream designs (``rtl.mode: stream``) are priced from what the generator built, not from the graph: the
RTL directory's ``rtl.json`` carries an inventory of every unit (``kdhw.hw.rtl._stream_inventory``), and
``estimate_stream`` adds up, in LUT6:

    datapaths  = sum of da4ml's own cost of each unit's datapath (its adder LUTs)
    logic      = muxes: width * ceil((sources - 1) / 3) (4:1 multiplexers, one LUT6 each per bit)
               + ROMs: bits * ceil(words / 64) (64 words per LUT6)
               + adders and counters: one LUT per bit (accumulators, argmax comparators, frame counters x2)
               + FIFO storage as LUT-RAM: 4 LUTs per 6 bits per 32 words (RAM32M)
    LUT        = K_S_DP * datapaths + K_S_LOGIC * logic
    FF         = K_S_FF * (pipeline registers + line buffers + collect registers + counters, credits,
                           accumulators, operand and output registers)
    DSP        = MAC lane multipliers (one DSP48 / MULT18 each; iCE40: none, yosys builds them from LUTs)
    latency, II: the cycle model's (exact, rtl.json)

K_S_* were fitted the same way against yosys counts of stream designs of other students than the ones the
benchmarks/README.md's evaluation table quotes (``benchmarks/estimate_vs_yosys.py --stream --calibrate``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.boards import Board

# fitted by benchmarks/estimate_vs_yosys.py --calibrate (17 calibration students, yosys 0.23 synth_xilinx)
K_DENSE = 0.650
K_CONV = 1.007
K_REG = 0.522
LUT_TERMS = ("dense_adder_bits", "conv_adder_bits")
FF_TERMS = ("cut_bits",)
ADDER_EXTRA_BITS = 2
POST_DELAY = 3  # bias add, ReLU, requantization after each linear layer, in da4ml delay units
DEFAULT_CUTOFF = 5.0  # = kdhw.hw.rtl.DEFAULT_LATENCY_CUTOFF
# stream designs: fitted by benchmarks/estimate_vs_yosys.py --stream --calibrate
K_S_DP = 0.944
K_S_LOGIC = 0.781
K_S_FF = 0.850
# Lattice logic cells = per family (a * LUT6 estimate + b * FF estimate): an iCE40/ECP5 cell is one LUT4 and
# one flip-flop, so a design rich in registers (line buffers, FIFOs: no LUT-RAM on iCE40) needs cells for them
# too.  Fitted (least squares on relative error, in sample) on the placed designs of
# benchmarks/stream_vs_parallel.py (nextpnr's ICESTORM_LC / TRELLIS_COMB); a screening figure, nextpnr decides.
LATTICE_CELLS = {"ice40": (0.9, 2.825), "ecp5": (1.483, 1.423)}  # (per LUT6, per FF): results/stream_vs_parallel.json
STREAM_LUT_TERMS = ("dp_cost", "logic_luts")
STREAM_FF_TERMS = ("ff_bits",)
FORMULA = (f"LUT = {K_DENSE:.3f}*sum_dense(adders*(a+2)) + {K_CONV:.3f}*sum_conv(adders*(a+2)), "
           "adders = P*(sum_j max(csd_j-1,0) + n_out); "
           f"FF = input_bits + output_bits + {K_REG:.3f}*boundaries*adder_bits/depth; latency = boundaries + 1; "
           "DSP = BRAM = 0")


def csd_digits(v: np.ndarray) -> np.ndarray:
    """Number of non-zero digits of each integer in canonical signed-digit form (the minimal count of
    +-2^k terms, hence the adders a shift-and-add multiplier by that constant needs, plus one)."""
    v = np.abs(np.asarray(v).astype(np.int64))
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
    while node is not None and node.op_type in ("MaxPool", "Reshape", "Flatten", "Transpose", "Identity", "Relu"):
        node = mw.find_producer(node.input[0])
    return node if node is not None and node.op_type == "Quant" else None


def _bits(mw: Any, quant: Any) -> int:
    return int(np.asarray(mw.get_initializer(quant.input[3])).ravel()[0])


def _int_weights(mw: Any, tensor: str) -> tuple[np.ndarray, int] | None:
    q = mw.find_producer(tensor)
    if q is None or q.op_type != "Quant" or mw.get_initializer(q.input[0]) is None:
        return None
    w = mw.get_initializer(q.input[0])
    scale = np.asarray(mw.get_initializer(q.input[1]), dtype=np.float64)
    return np.round(np.asarray(w, dtype=np.float64) / scale).astype(np.int64), _bits(mw, q)


def layer_costs(onnx_path: str | Path) -> list[dict[str, Any]]:
    """Per-layer terms of the formula (adders, bit widths, delay) for the report and for calibration."""
    from .export import load_qonnx

    return _layer_rows(load_qonnx(onnx_path))


def _layer_rows(mw: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for node in mw.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            wq = _int_weights(mw, node.input[1])
            q_in = _quant_of(mw, node.input[0])
            if wq is None or q_in is None:
                continue
            w, wbits = wq
            a = _bits(mw, q_in)
            out_shape = mw.get_tensor_shape(node.output[0])
            if node.op_type == "Conv":  # (O, I, k...) -> (fan_in, O): one column per output channel
                wm = w.reshape(w.shape[0], -1).T
                positions = int(np.prod(out_shape[2:]))
            else:
                trans = any(att.name == "transB" and att.i for att in node.attribute)
                wm = w.T if trans else w  # (n_in, n_out)
                positions = 1
            fan_in, n_out = wm.shape
            digits = csd_digits(wm).sum(0)
            adders = positions * (int(np.maximum(digits - 1, 0).sum()) + n_out)
            rows.append({"node": node.name, "op": "conv" if node.op_type == "Conv" else "dense", "adders": adders,
                         "adder_bits": adders * (a + ADDER_EXTRA_BITS), "a_bits": a, "w_bits": wbits,
                         "fan_in": fan_in, "n_out": n_out, "positions": positions,
                         "csd_digits": int(digits.sum()), "values_out": positions * n_out,
                         "delay": math.ceil(math.log2(float(digits.mean()) + 1.0)) + POST_DELAY})
        elif node.op_type == "MaxPool":
            k = int(np.prod(next(att.ints for att in node.attribute if att.name == "kernel_shape")))
            vals = int(np.prod(mw.get_tensor_shape(node.output[0])[1:]))
            rows.append({"node": node.name, "op": "maxpool", "values_out": vals, "window": k,
                         "delay": math.ceil(math.log2(k)) if k > 1 else 0})
    return rows


def features(onnx_path: str | Path, latency_cutoff: float = DEFAULT_CUTOFF) -> dict[str, float]:
    """The formula's terms for one model: what the constants multiply (and what calibration regresses on)."""
    from .export import load_qonnx

    mw = load_qonnx(onnx_path)
    return _features(mw, _layer_rows(mw), latency_cutoff)


def _features(mw: Any, rows: list[dict[str, Any]], latency_cutoff: float) -> dict[str, float]:
    from .export import input_format, input_shape

    n_out = int(np.prod(mw.get_tensor_shape(mw.graph.output[0].name)[1:]))
    out_q = mw.find_producer(mw.graph.output[0].name)
    out_bits = _bits(mw, out_q) if out_q is not None and out_q.op_type == "Quant" else 8
    depth = max(sum(r["delay"] for r in rows), 1)
    boundaries = max(math.ceil(depth / latency_cutoff) - 1, 0)
    adder_bits = sum(r["adder_bits"] for r in rows if "adder_bits" in r)
    return {
        "dense_adder_bits": float(sum(r["adder_bits"] for r in rows if r["op"] == "dense")),
        "conv_adder_bits": float(sum(r["adder_bits"] for r in rows if r["op"] == "conv")),
        "boundaries": float(boundaries),
        "cut_bits": float(boundaries * adder_bits / depth),
        "input_bits": float(input_format(mw)[0] * int(np.prod(input_shape(mw)))),
        "output_bits": float(n_out * out_bits),
        "io_bits": float(input_format(mw)[0] * int(np.prod(input_shape(mw))) + n_out * out_bits),
        "depth": float(depth),
    }


def estimate(onnx_path: str | Path, board: Board | None = None,
             latency_cutoff: float = DEFAULT_CUTOFF) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM and latency estimate; utilization and fit on ``board`` when given."""
    from .export import load_qonnx

    mw = load_qonnx(onnx_path)
    rows = _layer_rows(mw)
    f = _features(mw, rows, latency_cutoff)
    lut = K_DENSE * f["dense_adder_bits"] + K_CONV * f["conv_adder_bits"]
    ff = f["io_bits"] + K_REG * f["cut_bits"]
    res: dict[str, Any] = {"lut": int(round(lut)), "ff": int(round(ff)), "dsp": 0, "bram36": 0,
                           "latency_cycles": int(f["boundaries"]) + 1, "formula": FORMULA, "features": f,
                           "layers": rows,
                           "note": ("Calibrated on yosys synth_xilinx LUT6/FF counts of kdhw's da4ml RTL; "
                                    "out-of-sample sMAPE in benchmarks/README.md (benchmarks/estimate_vs_yosys.py). On Lattice "
                                    "parts the report shows logic cells converted from it (LATTICE_CELLS).")}
    if board is not None:
        res["utilization_pct"] = {"lut": 100.0 * res["lut"] / board.lut, "ff": 100.0 * res["ff"] / board.ff,
                                  "dsp": 0.0, "bram36": 0.0}
        res["fits"] = res["lut"] <= board.lut and res["ff"] <= board.ff
    return res


STREAM_FORMULA = (f"LUT = {K_S_DP:.3f}*datapath_cost + {K_S_LOGIC:.3f}*(mux + ROM + adder/counter + LUT-RAM LUTs); "
                  f"FF = {K_S_FF:.3f}*register bits; DSP = MAC multipliers (0 on iCE40); latency, II exact")


def stream_features(meta: dict[str, Any]) -> dict[str, float]:
    """The stream formula's terms for one stream design (its rtl.json), in LUT6 / register bits."""
    inv = meta.get("inventory")
    if not inv:
        raise ValueError("rtl.json of a stream design without an inventory (regenerate it with this kdhw)")
    f = {"dp_cost": 0.0, "mux_luts": 0.0, "rom_luts": 0.0, "adder_luts": 0.0, "lutram_luts": 0.0, "ff_bits": 0.0,
         "fifo_bits": 0.0, "multipliers": 0.0, "soft_mult_bits": 0.0, "multipliers_ecp5": 0.0, "mult_bits": 0.0,
         "line_buffer_bits": 0.0}
    for u in inv["units"]:
        dp = u.get("dp")
        if dp:
            f["dp_cost"] += dp["cost"]
            f["ff_bits"] += dp["reg_bits"]
        f["ff_bits"] += sum(u["ff"].values()) + u.get("line_buffer_bits", 0) + u.get("collect_bits", 0)
        f["line_buffer_bits"] += u.get("line_buffer_bits", 0)
        f["mux_luts"] += sum(w * math.ceil((n - 1) / 3) for w, n in u.get("mux", []))
        if u.get("rom"):
            words, bits = u["rom"]
            f["rom_luts"] += bits * math.ceil(words / 64)
        f["adder_luts"] += sum(b * c for b, c in u.get("adders", [])) + 2 * u.get("counters", 0)
        if u.get("fifo"):
            depth, width = u["fifo"]
            f["lutram_luts"] += 4 * math.ceil(width / 6) * math.ceil(depth / 32)
            f["fifo_bits"] += depth * width
        for a, b, n in u.get("mult", []):
            if _maps_to_dsp(a, b, "xc7"):
                f["multipliers"] += n * math.ceil(a / 25) * math.ceil(b / 18)
            else:
                f["soft_mult_bits"] += n * a * b
            if _maps_to_dsp(a, b, "ecp5"):
                f["multipliers_ecp5"] += n * math.ceil(a / 18) * math.ceil(b / 18)
            f["mult_bits"] += n * a * b
    f["logic_luts"] = f["mux_luts"] + f["rom_luts"] + f["adder_luts"] + f["lutram_luts"] + f["soft_mult_bits"]
    return f


def _maps_to_dsp(a: int, b: int, family: str) -> bool:
    """Does yosys put an a x b multiplier into a DSP block?  Its mul2dsp rules: both operands at least 2 bits,
    and on Xilinx (synth_xilinx) a product of at least 9 bits; iCE40 (synth_ice40 without -dsp): never."""
    if family == "ice40":
        return False
    return a >= 2 and b >= 2 and (family == "ecp5" or a + b >= 9)


def estimate_stream(meta: dict[str, Any]) -> dict[str, Any]:
    """LUT6/FF/DSP of a generated stream design (rtl.json dict), Xilinx units (``estimate_design`` converts
    for a board); latency and II are the design's own."""
    f = stream_features(meta)
    dsp = int(f["multipliers"])
    res: dict[str, Any] = {
        "lut": int(round(K_S_DP * f["dp_cost"] + K_S_LOGIC * f["logic_luts"])),
        "ff": int(round(K_S_FF * f["ff_bits"])), "dsp": dsp, "bram36": 0,
        "latency_cycles": int(meta["latency_cycles"]), "initiation_interval": int(meta["initiation_interval"]),
        "formula": STREAM_FORMULA, "features": f, "mode": "stream",
        "dsp_use": _dsp_use(meta),
        "note": ("Stream design priced from its inventory (rtl.json); LUT6/FF calibrated on yosys synth_xilinx "
                 "counts of stream designs; DSP = MAC multipliers (iCE40: built from LUTs). On Lattice parts: "
                 "logic cells from the LUT6 and FF figures (LATTICE_CELLS).")}
    return res


def _dsp_use(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What may take DSP blocks: the MAC lanes of folded dense layers, one entry per unit."""
    out = []
    for u in meta.get("inventory", {}).get("units", []):
        mults = u.get("mult") or []
        if not mults:
            continue
        layer = next((rec for rec in meta.get("layers", []) if rec["unit"] == u["unit"]), {})
        n = sum(m[2] for m in mults)
        ops = ", ".join(f"{c} of {a} x {b} bits" for a, b, c in mults)
        out.append({"unit": u["unit"], "nodes": layer.get("nodes", []), "multipliers": n, "operands": mults,
                    "what": f"the MAC lanes of the folded dense layer {u['unit']} ({layer.get('parallelism', '?')} "
                            f"lane(s) x {layer.get('outputs', '?')} outputs: {n} multiplier(s) with non-zero weights, "
                            f"{ops})"})
    return out


def estimate_design(onnx_path: str | Path, rtl_meta: dict[str, Any] | None = None, board: Board | None = None,
                    ) -> dict[str, Any]:
    """The estimate of the design that was generated, in ``board``'s units: a stream design from its
    inventory, a parallel one (or no RTL) from the QONNX graph.  On a Lattice board the LUT figure is in
    logic cells (``LATTICE_CELLS`` applied to the LUT6 and FF figures; on iCE40, whose flow keeps multipliers
    out of its DSP blocks, plus a cell per partial-product bit of each MAC multiplier)."""
    if rtl_meta is not None and rtl_meta.get("mode") == "stream":
        res = estimate_stream(rtl_meta)
    else:
        cutoff = float(rtl_meta["latency_cutoff"]) if rtl_meta else DEFAULT_CUTOFF
        res = estimate(onnx_path, latency_cutoff=cutoff)
        res.update(mode="parallel", initiation_interval=1, dsp_use=[])
    res["lut_unit"] = "LUT6"
    if board is None:
        return res
    if board.vendor == "lattice":
        res["lut6"] = res["lut"]
        f = res["features"]
        # iCE40 builds every multiplier from logic: those the LUT6 formula put into DSP48s come on top
        soft = f.get("mult_bits", 0.0) - f.get("soft_mult_bits", 0.0) if board.family == "ice40" else 0.0
        a, b = LATTICE_CELLS.get(board.family, (1.0, 0.0))
        res["lut"] = int(round(a * res["lut6"] + b * res["ff"] + soft))
        res["lut_unit"] = "LUT4"
        res["dsp"] = 0 if board.family == "ice40" else int(f.get("multipliers_ecp5", res["dsp"]))
    res["utilization_pct"] = {"lut": 100.0 * res["lut"] / board.lut, "ff": 100.0 * res["ff"] / board.ff,
                              "dsp": 100.0 * res["dsp"] / board.dsp if board.dsp else (0.0 if not res["dsp"] else None),
                              "bram36": 0.0}
    res["fits"] = res["lut"] <= board.lut and res["ff"] <= board.ff and res["dsp"] <= board.dsp
    return res
