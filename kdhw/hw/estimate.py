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
               + K_F_DP * folded datapaths + K_F_LOGIC * folded logic      (``fmac`` units, ``rtl.fold``)
    FF         = K_S_FF * (pipeline registers + line buffers + collect registers + counters, credits,
                           accumulators, operand and output registers)
               + K_F_FF * folded units' registers + K_F_FF_DP * their datapaths' pipeline registers
    DSP        = MAC lane multipliers that yosys' mul2dsp maps: both operands >= 2 bits and a product of
                 >= 9 bits on xc7 (DSP48E1), any on ECP5 (MULT18X18D), >= 11 bits on iCE40 (SB_MAC16, only with
                 ``synth_ice40 -dsp``, which ``kdhw.hw.synth`` gives when the multipliers fit the part's DSPs)
    BRAM       = the weight and accumulator memories of folded units (registered reads, ``ram_style
                 "block"``) tiled into the family's block RAM (``bram_blocks``: RAMB18/RAMB36 on Xilinx,
                 counted in RAMB36; DP16KD on ECP5; SB_RAM40_4K on iCE40), plus on iCE40 the FIFOs and weight
                 ROMs that yosys' memory cost model puts there (no LUT-RAM on iCE40)
    latency, II: the cycle model's (exact, rtl.json)

K_S_* were fitted the same way against yosys counts of stream designs of other students than the ones the
benchmarks/README.md's evaluation table quotes (``benchmarks/estimate_vs_yosys.py --stream --calibrate``);
K_F_* on folded designs (``--stream --calibrate --fold``), the other units of those designs priced with K_S_*.
A folded unit's weights are in block RAM, so they cost no LUTs, and its registered products sit in the DSP
blocks where the product is in one.  On iCE40 the logic cells of folded units have their own ratio
(``LATTICE_CELLS_FOLD``, fitted on nextpnr's packing of the same folded designs).
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
# folded dense units (rtl.fold, ``fmac``): fitted by benchmarks/estimate_vs_yosys.py --stream --calibrate --fold
# on its FOLD_CALIBRATION designs, the other units of those designs priced with K_S_*
K_F_DP = 0.495
K_F_LOGIC = 1.845
K_F_FF = 0.802
K_F_FF_DP = 0.281
# Lattice logic cells = per family (a * LUT6 estimate + b * FF estimate): an iCE40/ECP5 cell is one LUT4 and
# one flip-flop, so a design rich in registers (line buffers, FIFOs: no LUT-RAM on iCE40) needs cells for them
# too.  Fitted (least squares on relative error, in sample) on the placed designs of
# benchmarks/stream_vs_parallel.py (nextpnr's ICESTORM_LC / TRELLIS_COMB); a screening figure, nextpnr decides.
LATTICE_CELLS = {"ice40": (0.9, 2.825), "ecp5": (1.483, 1.423)}  # (per LUT6, per FF): results/stream_vs_parallel.json
# the folded units' share of an iCE40 design: per (LUT6, FF) of their estimate, logic cells after nextpnr's packing;
# fitted by benchmarks/estimate_vs_yosys.py --stream --calibrate --fold on FOLD_CALIBRATION (ECP5: LATTICE_CELLS)
LATTICE_CELLS_FOLD = {"ice40": (0.0, 2.505)}
STREAM_LUT_TERMS = ("dp_cost", "logic_luts")
STREAM_FF_TERMS = ("ff_bits",)
FOLD_LUT_TERMS = ("fold_dp_cost", "fold_logic_luts")
FOLD_FF_TERMS = ("fold_ff_bits", "fold_dp_ff_bits")
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


STREAM_FORMULA = (f"LUT = {K_S_DP:.3f}*datapath_cost + {K_S_LOGIC:.3f}*(mux + ROM + adder/counter + LUT-RAM LUTs) "
                  f"+ folded units: {K_F_DP:.3f}*datapath_cost + {K_F_LOGIC:.3f}*(mux + adder/counter + soft "
                  f"multiplier LUTs); FF = {K_S_FF:.3f}*register bits + folded units: {K_F_FF:.3f}*register bits + "
                  f"{K_F_FF_DP:.3f}*datapath pipeline bits; "
                  "DSP = MAC multipliers yosys maps to DSP blocks; BRAM = folded units' weight and accumulator "
                  "memories in block RAM tiles; latency, II exact")


def stream_features(meta: dict[str, Any]) -> dict[str, float]:
    """The stream formula's terms for one stream design (its rtl.json), in LUT6 / register bits.

    Folded dense units (``fmac``, ``rtl.fold``) are priced apart (``fold_dp_cost``, ``fold_logic_luts``,
    ``fold_ff_bits`` and their datapaths' pipeline registers ``fold_dp_ff_bits``, constants K_F_*): their
    weights sit in block RAM (``bram_<family>``, not LUTs), their
    multipliers in DSP blocks where the family maps them, and the registered products of those multipliers are
    the DSP blocks' own registers (not counted as flip-flops)."""
    inv = meta.get("inventory")
    if not inv:
        raise ValueError("rtl.json of a stream design without an inventory (regenerate it with this kdhw)")
    terms = ("dp_cost", "mux_luts", "rom_luts", "adder_luts", "lutram_luts", "ff_bits", "soft_mult_bits")
    f = {"fifo_bits": 0.0, "multipliers": 0.0, "multipliers_ecp5": 0.0, "mult_bits": 0.0,
         "line_buffer_bits": 0.0, "mult_count": 0.0, "multipliers_ice40": 0.0, "soft_mult_bits_ice40": 0.0,
         "memory_bits": 0.0, **{f"bram_{fam}": 0.0 for fam in BRAM_FAMILIES},
         **{t: 0.0 for t in terms}, **{f"fold_{t}": 0.0 for t in terms}, "fold_dp_ff_bits": 0.0}
    for u in inv["units"]:
        pre = "fold_" if u.get("kind") == "fmac" else ""
        mems = [u[k] for k in ("memory", "acc_memory") if u.get(k)] + list(u.get("line_memories", []))
        for words, bits, style in mems:  # fmac weights and accumulators, line-buffer rows: registered reads
            if style == "lut":
                f[pre + "rom_luts"] += bits * math.ceil(words / 64)
            else:
                f["memory_bits"] += words * bits
                for fam in BRAM_FAMILIES:
                    f[f"bram_{fam}"] += bram_blocks(words, bits, fam)
        dp = u.get("dp")
        if dp:
            f[pre + "dp_cost"] += dp["cost"]
            f[pre + ("dp_ff_bits" if pre else "ff_bits")] += dp["reg_bits"]
        ff = dict(u["ff"])
        mults = u.get("mult_lanes", u.get("mult")) or []  # fmac: per weight width, lanes of zeros left out
        if pre and "products" in ff:  # registered products: DSP registers where the product is in a DSP
            ff["products"] = sum(n * (a + b) for a, b, n in mults if not _maps_to_dsp(a, b, "xc7"))
        f[pre + "ff_bits"] += sum(ff.values()) + u.get("line_buffer_bits", 0) + u.get("collect_bits", 0)
        f["line_buffer_bits"] += u.get("line_buffer_bits", 0)
        f[pre + "mux_luts"] += sum(w * math.ceil((n - 1) / 3) for w, n in u.get("mux", []))
        if u.get("rom"):
            words, bits = u["rom"]
            f[pre + "rom_luts"] += bits * math.ceil(words / 64)
            # iCE40: yosys' cost model (a ROM bit in logic costs 1/16, a SB_RAM40_4K 64) moves a large weight
            # ROM into EBR (seen: 128 x 40 bits in 3 EBR; 64 x 112 bits, a tie, stays in logic)
            n_ebr = bram_blocks(words, bits, "ice40")
            if 64 * n_ebr < words * bits / 16:
                f["bram_ice40"] += n_ebr
        f[pre + "adder_luts"] += sum(b * c for b, c in u.get("adders", [])) + 2 * u.get("counters", 0)
        if u.get("fifo"):
            depth, width = u["fifo"]
            f[pre + "lutram_luts"] += 4 * math.ceil(width / 6) * math.ceil(depth / 32)
            f["fifo_bits"] += depth * width
            # iCE40 has no LUT-RAM: yosys puts a FIFO in EBR where that is cheaper than flip-flops by its cost
            # model (64 per SB_RAM40_4K, 1 per bit in logic; a tie stays in logic: 4 x 80 bits); Xilinx and ECP5
            # keep FIFOs in LUT-RAM
            n_ebr = bram_blocks(depth, width, "ice40")
            if 64 * n_ebr < depth * width:
                f["bram_ice40"] += n_ebr
        for a, b, n in mults:
            if _maps_to_dsp(a, b, "xc7"):
                f["multipliers"] += n * math.ceil(a / 25) * math.ceil(b / 18)
            else:
                f[pre + "soft_mult_bits"] += n * a * b
            if _maps_to_dsp(a, b, "ecp5"):
                f["multipliers_ecp5"] += n * math.ceil(a / 18) * math.ceil(b / 18)
            if _maps_to_dsp(a, b, "ice40"):
                f["multipliers_ice40"] += n * math.ceil(a / 16) * math.ceil(b / 16)
            else:
                f["soft_mult_bits_ice40"] += n * a * b
            f["mult_bits"] += n * a * b
            f["mult_count"] += n
    for pre in ("", "fold_"):
        f[pre + "logic_luts"] = sum(f[pre + t] for t in ("mux_luts", "rom_luts", "adder_luts", "lutram_luts",
                                                         "soft_mult_bits"))
    f["all_soft_mult_bits"] = f["soft_mult_bits"] + f["fold_soft_mult_bits"]
    return f


def _maps_to_dsp(a: int, b: int, family: str) -> bool:
    """Does yosys put an a x b multiplier into a DSP block?  Its mul2dsp rules: both operands at least 2 bits,
    and a product of at least 9 bits on Xilinx (synth_xilinx), 11 bits on iCE40 (synth_ice40 -dsp, which kdhw
    gives only when the design's multipliers fit the part's SB_MAC16s: ``ice40_uses_dsp``), any on ECP5."""
    return a >= 2 and b >= 2 and a + b >= {"xc7": 9, "ice40": 11}.get(family, 0)


def ice40_uses_dsp(meta: dict[str, Any], board: Board) -> bool:
    """``kdhw.hw.synth`` runs ``synth_ice40 -dsp`` only when the design's MAC multipliers (the inventory's
    count) fit the part's SB_MAC16s: more products than DSPs would not place, the same products in LUTs do."""
    n = sum(m[2] for u in (meta.get("inventory") or {}).get("units", []) for m in u.get("mult") or [])
    return 0 < n <= board.dsp


# Block RAM primitives as yosys' memory_libmap sees them: (cells' cost, [(data bits, words), ...] per cell);
# the cheapest tiling of a memory is taken.  xc7 (brams_xc4v.txt): RAMB18 (18 kbit, up to 36 bits wide in
# simple dual-port) or RAMB36; ECP5 (brams.txt): DP16KD / PDPW16KD (18 kbit); iCE40 (brams.txt): SB_RAM40_4K
# (4 kbit, 2 to 16 bits wide).  Counted in the board file's units: RAMB36 (a RAMB18 is half) on Xilinx, EBR
# blocks on Lattice.
BRAM_FAMILIES = ("xc7", "ice40", "ecp5")
_BRAM_CELLS: dict[str, list[tuple[float, int, list[tuple[int, int]]]]] = {  # (units per cell, cost, shapes)
    "xc7": [(0.5, 129, [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)]),
            (1.0, 257, [(1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024), (72, 512)])],
    "ecp5": [(1.0, 128, [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)])],
    "ice40": [(1.0, 64, [(2, 2048), (4, 1024), (8, 512), (16, 256)])],
}


def bram_blocks(words: int, bits: int, family: str) -> float:
    """Block RAMs that yosys uses for a ``words`` x ``bits`` memory on ``family`` (the cheapest tiling of
    the primitive's shapes), in the board's units (see ``_BRAM_CELLS``)."""
    if words <= 0 or bits <= 0:
        return 0.0
    best: tuple[float, float] | None = None
    for units, cost, shapes in _BRAM_CELLS[family]:
        for w, d in shapes:
            n = math.ceil(bits / w) * math.ceil(words / d)
            if best is None or n * cost < best[0]:
                best = (n * cost, n * units)
    assert best is not None
    return best[1]


def bram_family(board: Board) -> str:
    """The block RAM model of a board's part (UltraScale parts have the same RAMB18/RAMB36 as 7-series)."""
    return board.family if board.family in ("ice40", "ecp5") else "xc7"


def estimate_stream(meta: dict[str, Any]) -> dict[str, Any]:
    """LUT6/FF/DSP of a generated stream design (rtl.json dict), Xilinx units (``estimate_design`` converts
    for a board); latency and II are the design's own."""
    f = stream_features(meta)
    dsp = int(f["multipliers"])
    res: dict[str, Any] = {
        "lut": int(round(K_S_DP * f["dp_cost"] + K_S_LOGIC * f["logic_luts"]
                         + K_F_DP * f["fold_dp_cost"] + K_F_LOGIC * f["fold_logic_luts"])),
        "ff": int(round(K_S_FF * f["ff_bits"] + K_F_FF * f["fold_ff_bits"] + K_F_FF_DP * f["fold_dp_ff_bits"])),
        "dsp": dsp, "bram36": f["bram_xc7"],
        "latency_cycles": int(meta["latency_cycles"]), "initiation_interval": int(meta["initiation_interval"]),
        "formula": STREAM_FORMULA, "features": f, "mode": "stream",
        "dsp_use": _dsp_use(meta),
        "bram_use": _bram_use(meta),
        "note": ("Stream design priced from its inventory (rtl.json); LUT6/FF calibrated on yosys synth_xilinx "
                 "counts of stream designs; DSP = MAC multipliers that yosys maps to DSP blocks (iCE40: only "
                 "with synth_ice40 -dsp, when they fit the part's SB_MAC16s); BRAM = weight and accumulator "
                 "memories of folded layers (rtl.fold) as block RAM tiles (RAMB36 units on Xilinx, EBR "
                 "blocks on Lattice; iCE40 also FIFOs where EBR is cheaper than flip-flops). On Lattice parts: "
                 "logic cells from the LUT6 and FF figures (LATTICE_CELLS).")}
    return res


def _bram_use(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What takes block RAM: the weight and accumulator memories of folded (``fmac``) layers, per unit, with
    the blocks each family's yosys flow uses for them."""
    out = []
    for u in meta.get("inventory", {}).get("units", []):
        mems = [(u[k], what) for k, what in (("memory", "weights"), ("acc_memory", "accumulators")) if u.get(k)]
        mems += [(m, f"line-buffer row {i + 1}") for i, m in enumerate(u.get("line_memories", []))]
        for (words, bits, style), what in mems:
            out.append({"unit": u["unit"], "what": what, "words": words, "bits": bits, "style": style,
                        "blocks": {fam: (0.0 if style == "lut" else bram_blocks(words, bits, fam))
                                   for fam in BRAM_FAMILIES}})
    return out


def _dsp_use(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What may take DSP blocks: the MAC lanes of folded dense layers, one entry per unit."""
    out = []
    for u in meta.get("inventory", {}).get("units", []):
        mults = u.get("mult_lanes", u.get("mult")) or []
        if not mults:
            continue
        layer = next((rec for rec in meta.get("layers", []) if rec["unit"] == u["unit"]), {})
        n = sum(m[2] for m in mults)
        ops = ", ".join(f"{c} of {a} x {b} bits" for a, b, c in mults)
        if u.get("kind") == "fmac":
            shape = f"PE {layer.get('pe', '?')} x SIMD {layer.get('simd', '?')} lanes"
        else:
            shape = f"{layer.get('parallelism', '?')} lane(s) x {layer.get('outputs', '?')} outputs"
        out.append({"unit": u["unit"], "nodes": layer.get("nodes", []), "multipliers": n, "operands": mults,
                    "what": f"the MAC lanes of the folded dense layer {u['unit']} ({shape}: {n} multiplier(s) with "
                            f"non-zero weights, {ops})"})
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
    f = res["features"]
    if board.vendor == "lattice":
        res["lut6"] = res["lut"]
        # iCE40 builds a multiplier from logic unless synth_ice40 -dsp runs (the multipliers fit the SB_MAC16s)
        # and the product is 11 bits or more: those the LUT6 formula put into DSP48s come on top
        ice_dsp = board.family == "ice40" and ice40_uses_dsp(rtl_meta or {}, board)
        soft = 0.0
        if board.family == "ice40":
            soft = max((f.get("soft_mult_bits_ice40", 0.0) if ice_dsp else f.get("mult_bits", 0.0))
                       - f.get("all_soft_mult_bits", f.get("soft_mult_bits", 0.0)), 0.0)
        a, b = LATTICE_CELLS.get(board.family, (1.0, 0.0))
        # folded units (fmac) apart where measured: their LUT6 and FF figures with their own ratios
        lut6_f = K_F_DP * f.get("fold_dp_cost", 0.0) + K_F_LOGIC * f.get("fold_logic_luts", 0.0)
        ff_f = K_F_FF * f.get("fold_ff_bits", 0.0) + K_F_FF_DP * f.get("fold_dp_ff_bits", 0.0)
        af, bf = LATTICE_CELLS_FOLD.get(board.family, (a, b))
        res["lut"] = int(round(a * (res["lut6"] - lut6_f) + b * (res["ff"] - ff_f) + af * lut6_f + bf * ff_f + soft))
        res["lut_unit"] = "LUT4"
        if board.family == "ice40":
            res["dsp"] = int(f.get("multipliers_ice40", 0)) if ice_dsp else 0
            res["dsp_flow"] = "synth_ice40 -dsp" if ice_dsp else "synth_ice40"
        else:
            res["dsp"] = int(f.get("multipliers_ecp5", res["dsp"]))
    fam = bram_family(board)
    res["bram36"] = float(f.get(f"bram_{fam}", res.get("bram36") or 0.0))
    res["bram_unit"] = "EBR" if board.vendor == "lattice" else "RAMB36"

    def pct(used: float, cap: float) -> float | None:
        return 100.0 * used / cap if cap else (0.0 if not used else None)

    res["utilization_pct"] = {"lut": 100.0 * res["lut"] / board.lut, "ff": 100.0 * res["ff"] / board.ff,
                              "dsp": pct(res["dsp"], board.dsp), "bram36": pct(res["bram36"], board.bram36)}
    res["fits"] = (res["lut"] <= board.lut and res["ff"] <= board.ff and res["dsp"] <= board.dsp
                   and res["bram36"] <= board.bram36)
    return res
