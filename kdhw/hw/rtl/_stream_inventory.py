"""Stream mode: what the generated Verilog is made of, counted from the plan (for ``kdhw.hw.estimate``).

The resource estimate of a folded design cannot come from the QONNX graph alone: line buffers, tap
multiplexers, MAC lanes, weight ROMs, accumulators and FIFOs are choices of the stream generator.  This
module counts them with the very width formulas ``_stream_hdl`` prints the Verilog with, one record per
unit, so the estimate prices the design that was generated and nothing else.  Each record is plain JSON
(``rtl.json`` -> ``inventory``):

* ``ff``: register bits by purpose (datapath pipeline registers excluded, see ``dp``);
* ``line_buffer_bits`` / ``collect_bits``: the shift registers holding input positions; ``line_memories``:
  ``[words, bits, "bram"]`` per row memory of a line buffer in block RAM (``rtl.fold.line_buffer``);
* ``fifo``: depth and width of the unit's output FIFO (its storage is LUT-RAM on Xilinx and ECP5);
* ``mux``: ``[width, sources]`` per multiplexer (line-buffer taps, MAC operand select, output beats);
* ``rom``: weight ROM words and bits per word (folded dense);
* ``memory``: ``[words, bits, "bram" | "lut"]`` of a weight memory with a registered read (``fmac``: block RAM
  where the family has it); ``acc_memory``: the same for an ``fmac``'s accumulators (serial requantization);
* ``mult``: ``[a_bits, b_bits, count]`` of the MAC lane multipliers (DSP blocks where the family maps them);
  a lane and output whose weights are all 0 has none (synthesis removes a product with a constant 0).  An
  ``fmac`` lists its PE x SIMD multipliers at the memory's weight width (``kdhw.hw.synth`` counts them for
  ``synth_ice40 -dsp``), and ``mult_lanes`` the same per weight width: lane (pe, s) reads weights of
  ``b_bits`` (the two's complement width of the codes it holds: yosys removes the constant bits of the weight
  memory), a lane whose weights are all 0 none;
* ``windows`` (``fmac`` after a ``gather`` window unit): output positions per frame (each runs the steps);
  ``steps``: issue steps per frame (``fmac``);
* ``adders``: ``[bits, count]`` (accumulators, argmax comparators); ``counters``: bits of frame/step counters;
* ``dp``: the da4ml datapath's cost (its LUT estimate), pipeline register bits and stages.
"""

from __future__ import annotations

from typing import Any

from ._stream_hdl import _bits, _bus_width, line_buffer_rows, window_fifo_depth
from ._stream_plan import StreamPlan, Unit, kif_width


def _dp(u: Unit) -> dict[str, Any] | None:
    """da4ml's cost of the unit's datapath; None for a unit without one (a ``gather`` window: no arithmetic)."""
    pipe = getattr(u.dp, "pipe", None) if u.dp is not None else None
    if pipe is None:
        return None
    return {"cost": float(pipe.cost), "reg_bits": int(pipe.reg_bits), "stages": int(u.dp.stages)}


def _stages(u: Unit) -> int:
    return int(u.dp.stages) if u.dp is not None and getattr(u.dp, "stages", None) is not None else 0


def _fifo_ctl(depth: int) -> int:
    aw = _bits(depth - 1)
    return 2 * aw + aw + 1  # write and read pointers, occupancy count


def _window(u: Unit) -> dict[str, Any]:
    s = u.spec
    wi, wo = _bus_width(u.in_lanes), _bus_width(u.out_lanes)
    P, Gx, Ho = s.get("P", 1), s["Gx"], s["Ho"]
    # a gather unit (``spec["gather"]``) has no datapath: its taps go straight into a short FIFO
    L = 0 if s.get("gather") else _stages(u)
    D = window_fifo_depth(u)
    nw = _bits(s["n_total"])
    gyw, gxw = _bits(max(Ho - 1, 1)), _bits(max(Gx - 1, 1))
    nvw = _bits(P)
    entry_w = P * wo + (nvw if P > 1 else 0)
    ff = {"counters": 3 * nw + gyw + gxw + 1, "credit": _bits(D) + L + 1, "fifo_control": _fifo_ctl(D)}
    if P > 1:
        ff["lane_tags"] = (L + 1) * nvw + _bits(P - 1)
    # one multiplexer per (lane, tap): the distinct line-buffer offsets it reads over the border classes,
    # plus the pad value where some class reads outside the image
    row_keys = [tuple(r["mask"]) for r in s["rows"]]
    col_keys = [tuple(tuple(o) for o in c["off"]) for c in s["cols"]]
    rcls = sorted(set(row_keys), key=row_keys.index)
    ccls = sorted(set(col_keys), key=col_keys.index)
    mux = []
    read: set[int] = set()
    for p in range(P):
        for ky, kx in s["taps"]:
            srcs = set()
            for rc in rcls:
                for cc in ccls:
                    co = cc[p][kx]
                    srcs.add(s["row_off"][ky] * s["W"] + co if rc[ky] and co >= 0 else "pad")
            read |= {k for k in srcs if k != "pad"}
            if len(srcs) > 1:
                mux.append([wi, len(srcs)])
    if P > 1:
        mux.append([wo, P])  # lane of the FIFO head being sent
    lb_bits, line_memories = s["depth"] * wi, []
    if s.get("line_buffer") == "bram" and read:  # row memories + a short shift register per row (``_stream_hdl``)
        W = s["W"]
        last = line_buffer_rows(W, read)
        rows = max(last)
        lb_bits = (sum(c + 1 for c in last.values()) + rows) * wi + _bits(W - 1)
        line_memories = [[W, wi, "bram"]] * rows
    rec = {"ff": ff, "line_buffer_bits": lb_bits, "fifo": [D, entry_w], "mux": mux,
           "counters": 3 * nw + gyw + gxw, "adders": [[nw, 2]], "dp": _dp(u)}
    if line_memories:
        rec["line_memories"] = line_memories
    if s.get("gather"):
        rec["gather"] = True
    return rec


def mac_operand_bits(u: Unit) -> tuple[int, int]:
    """(input operand bits, weight bits) of every MAC lane multiplier, as ``mac_unit`` declares them."""
    s = u.spec
    in_k = u.in_lanes
    fx = s["fx"]
    live = [kif_width(k) > 0 for k in in_k]
    xw = max([kif_width(k) + fx - int(k[2]) + (0 if k[0] else 1) for k, lv in zip(in_k, live) if lv] + [2])
    wmax = max([abs(int(v)) for row in s["wcodes"] for v in row] + [1])
    return xw, wmax.bit_length() + 1


def _mac(u: Unit) -> dict[str, Any]:
    s = u.spec
    wi, wo = _bus_width(u.in_lanes), _bus_width(u.out_lanes)
    J, NB, P, Q, O = s["J"], s["NB"], s["P"], s["Q"], s["O"]
    S = NB * Q
    L = u.dp.stages
    D = L + 3
    xw, ww = mac_operand_bits(u)
    live = [kif_width(k) > 0 for k in u.in_lanes]
    sw, qw = _bits(max(S - 1, 1)), _bits(max(Q - 1, 1))
    ff = {"operand": wi, "accumulators": int(sum(s["acc_bits"])), "counters": sw + qw + 2,
          "credit": _bits(D) + L + 1, "fifo_control": _fifo_ctl(D)}
    mux = []
    for p in range(P):
        srcs = sum(1 for qq in range(Q) if qq * P + p < J and live[qq * P + p])
        if srcs < Q:
            srcs += 1  # the zero default
        if srcs > 1:
            mux.append([xw, srcs])
    return {"ff": ff, "fifo": [D, wo], "mux": mux, "rom": [S, P * O * ww], "mult": _mult_widths(u, xw, ww),
            "adders": [[int(b), P] for b in s["acc_bits"]], "counters": sw + qw, "dp": _dp(u)}


def _mult_widths(u: Unit, xw: int, ww: int) -> list[list[int]]:
    """[a_bits, b_bits, count] of the MAC multipliers: one per (lane, output) that reads a non-zero weight."""
    s = u.spec
    J, NB, P, Q, O = s["J"], s["NB"], s["P"], s["Q"], s["O"]
    live = [kif_width(k) > 0 for k in u.in_lanes]
    n = 0
    for p in range(P):
        for o in range(O):
            for step in range(NB * Q):
                b, qq = divmod(step, Q)
                j = qq * P + p
                e = s["elem_of"][b][j] if j < J else -1
                if e >= 0 and live[j] and int(s["wcodes"][e][o]):
                    n += 1
                    break
    return [[xw, ww, n]] if n else []


def _lane_weight_bits(u: Unit, ww: int) -> list[list[int]]:
    """[weight bits, count] of an ``fmac``'s PE x SIMD multipliers: lane (pe, s)'s weights are the codes of
    output g*PE + pe and input lane c*SIMD + s over every step; a lane whose codes are all 0 has no multiplier."""
    s = u.spec
    J, O, PE, SIMD, C, G = s["J"], s["O"], s["PE"], s["SIMD"], s["C"], s["G"]
    live = [kif_width(k) > 0 for k in u.in_lanes]
    wc = s["wcodes"]
    out: dict[int, int] = {}
    for pe in range(PE):
        for si in range(SIMD):
            lo = hi = 0
            for b in range(s["NB"]):
                for c in range(C):
                    j = c * SIMD + si
                    e = s["elem_of"][b][j] if j < J else -1
                    if e < 0 or not live[j]:
                        continue
                    for g in range(G):
                        o = g * PE + pe
                        if o < O:
                            v = int(wc[e][o])
                            lo, hi = min(lo, v), max(hi, v)
            if lo == hi == 0:
                continue
            b = min(max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1, ww)  # signed
            out[b] = out.get(b, 0) + 1
    return [[b, n] for b, n in sorted(out.items())]


def _fmac(u: Unit) -> dict[str, Any]:
    s = u.spec
    wi = _bus_width(u.in_lanes)
    PE, SIMD, C, G, K, S = s["PE"], s["SIMD"], s["C"], s["G"], s["K"], s["steps"]
    W = int(s.get("windows") or 1)  # output positions per frame (a folded conv: one run of the steps each)
    L = _stages(u)
    xw, ww = mac_operand_bits(u)
    A = max(s["acc_bits"])
    cnt = _bits(max(S - 1, 1)) + _bits(max(K - 1, 1)) + (_bits(max(C - 1, 1)) + _bits(max(G - 1, 1)) if C > 1 else 0)
    if W > 1:
        cnt += _bits(W - 1)
    serial = s.get("requant") == "serial"
    amem = serial and G >= 2  # accumulators in a memory (``fmac_unit``)
    ff = {"operand": (0 if s.get("hold") else wi) + SIMD * xw, "products": PE * SIMD * (xw + ww),
          "accumulators": PE * A if amem else G * PE * A, "counters": cnt + 8, "credit": L + 2}
    if serial:  # one group per cycle through a PE-lane datapath into an output register
        ff["output"] = G * PE * kif_width(u.out_lanes[0])
        ff["credit"] += 2 * (L + 1) + 2 * _bits(max(G - 1, 1)) + 2
    mux = [[xw, C + 1]] * SIMD if C > 1 else []
    # the datapath's input register is the ring and its output register the unit's output buffer (no FIFO)
    extra = {"acc_memory": [G, PE * A, "bram"]} if amem else {}
    lanes = [[xw, b, n] for b, n in _lane_weight_bits(u, ww)]
    return {"ff": ff, "mux": mux, **extra, "memory": [S, PE * SIMD * ww, s.get("memory", "bram")],
            "mult": [[xw, ww, PE * SIMD]], "mult_lanes": lanes, "adders": [[A, PE * SIMD]], "counters": cnt,
            "dp": _dp(u),
            "steps": S * W, **({"windows": W} if W > 1 else {})}


def _collect(u: Unit) -> dict[str, Any]:
    s = u.spec
    wi, wo = _bus_width(u.in_lanes), _bus_width(u.out_lanes)
    L = _stages(u)
    D = L + 3
    bw = _bits(max(s["NB"] - 1, 1))
    ff = {"counters": bw + 1, "credit": _bits(D) + L + 1, "fifo_control": _fifo_ctl(D)}
    return {"ff": ff, "collect_bits": s["NB"] * wi, "fifo": [D, wo], "mux": [], "counters": bw, "dp": _dp(u)}


def stream_inventory(plan: StreamPlan, geo: dict[str, Any], output: str, out_elements: int,
                     tlast: str = "required") -> dict[str, Any]:
    """Per-unit inventory of a stream design (module docstring), plus the AXI4-Stream input and output units."""
    units = []
    for u in plan.units:
        rec = {"window": _window, "mac": _mac, "collect": _collect, "fmac": _fmac}[u.kind](u)
        units.append({"unit": u.name, "kind": u.kind, **rec})
    cw = _bits(max(plan.beats_in - 1, 1))
    ob = plan.output_format.bits
    n = plan.n_outputs
    nbo = geo["beats_out"]
    out: dict[str, Any] = {"unit": "axis_out", "kind": "output",
                           "ff": {"logits": n * ob if output != "class" else 0, "counters": _bits(max(nbo - 1, 1)) + 1},
                           "mux": [[geo["tdata_out"], nbo]] if nbo > 1 else [], "counters": _bits(max(nbo - 1, 1))}
    if output != "logits":
        cb = geo["class_bits"]
        out["ff"]["class"] = cb
        out["adders"] = [[ob, n - 1]]  # argmax comparators
        out["mux"].append([ob + cb, n - 1])  # winners of the tournament
    # beat counter and the sticky tlast_err flag; tlast: required adds the 2-bit repair state (fill / drop)
    inp = {"unit": "axis_in", "kind": "input", "ff": {"counters": cw + (3 if tlast == "required" else 1)}, "mux": [],
           "counters": cw}
    return {"version": 1, "units": [inp, *units, out]}
