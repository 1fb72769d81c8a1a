"""Stream mode, step 4: write a stream design (Verilog, plan, pipelines, rtl.json) into an RTL directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdhw.config import check_fold
from kdhw.errors import InputError
from kdhw.util.atomic import write_json, write_text

from ._hdl_text import finish, helper_sources, mark_unread_stage_inputs, prefix_helpers, used_helpers
from ._stream_hdl import (
    FMAC_FIFO_DEPTH,
    TLAST_MODES,
    datapath_modules,
    fifo_module,
    fmac_operand_bits,
    input_unit,
    output_unit,
    stream_geometry,
    top_module,
    unit_module,
    window_fifo_depth,
)
from ._stream_inventory import stream_inventory
from ._stream_plan import OUTPUT_MODES, StreamPlan, kif_width, plan_json, plan_stream
from ._stream_time import stream_timing

RESET_DOC = ("aresetn: active-low, synchronous (sampled on the rising edge of clk); hold it low for at least one "
             "cycle. It empties the core: a frame in progress is dropped, m_axis_tvalid and s_axis_tready are low "
             "while it is asserted, and the first beat after it starts a new frame")
TLAST_DOCS = {
    "required": ("rtl.tlast: required. The core counts input beats and checks s_axis_tlast against the count: tlast "
                 "must come with the last beat of each frame. A frame whose tlast comes early (on beat k of N) is "
                 "completed with zero-valued elements (code 0) for beats k+1..N, s_axis_tready low meanwhile; a "
                 "frame whose beat N has tlast low is computed from its first N beats, and the beats after them are "
                 "accepted and discarded up to and including the next beat with tlast high. Both set tlast_err "
                 "(sticky until reset). Every tlast-delimited input frame gives exactly one output frame. So "
                 "s_axis_tlast tied low gives one output frame and then discards every later beat; tied high, every "
                 "beat is a frame of its own (zero-filled after it when N > 1): a source without TLAST needs "
                 "rtl.tlast: ignore"),
    "ignore": ("rtl.tlast: ignore. Frames are counted: every N accepted beats are one frame, whatever s_axis_tlast "
               "says, so tlast tied low or tied high (or a source without TLAST) works. s_axis_tlast is only "
               "compared with the count: a beat whose tlast differs from 'this is beat N of its frame' sets tlast_err "
               "(sticky until reset) and changes nothing else. m_axis_tlast still marks the last beat of each output "
               "frame. A beat lost or added upstream shifts the framing of every later frame until reset"),
}
TLAST_DOC = TLAST_DOCS["required"]  # the behaviour of designs whose rtl.json predates rtl.tlast
LATENCY_DOC = ("clock cycles from the rising edge that accepts a frame's first input beat to the rising edge that "
               "transfers its last output beat, for one frame into an idle core with tvalid held high and "
               "m_axis_tready high")
II_DOC = ("clock cycles between the acceptance of the first beats of consecutive frames when frames are offered "
          "back to back (tvalid always high) and m_axis_tready is always high; the throughput is one frame per II "
          "cycles")


def check_stream_options(parallelism: int, in_elements: int | None, out_elements: int | None, output: str,
                         dense: str, tlast: str = "required", fold: dict[str, Any] | None = None) -> None:
    def pos_int(v: Any, key: str, hi: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise InputError(f"rtl.{key} = {v!r} must be an integer in [1, {hi}]")

    pos_int(parallelism, "parallelism", 64)
    if in_elements is not None:
        pos_int(in_elements, "in_elements", 4096)
    if out_elements is not None:
        pos_int(out_elements, "out_elements", 4096)
    if output not in OUTPUT_MODES:
        raise InputError(f"rtl.output = {output!r}; allowed: {', '.join(OUTPUT_MODES)}")
    from ._stream_plan import DENSE_MODES

    if dense not in DENSE_MODES:
        raise InputError(f"rtl.dense = {dense!r}; allowed: {', '.join(DENSE_MODES)}")
    if tlast not in TLAST_MODES:
        raise InputError(f"rtl.tlast = {tlast!r}; allowed: {', '.join(TLAST_MODES)}")
    check_fold(fold)
    if fold is not None and dense == "unrolled":
        raise InputError("rtl.fold folds every dense layer; it contradicts rtl.dense = 'unrolled'")


def _layer_record(u: Any, cycles: int) -> dict[str, Any]:
    s = u.spec
    rec: dict[str, Any] = {"unit": u.name, "layer": s.get("layer"), "kind": u.kind, "nodes": u.nodes, "beats_in": u.beats_in,
                           "beats_out": u.beats_out, "cycles_per_frame": cycles,
                           "datapath_stages": 0 if s.get("gather") else u.dp.stages,
                           "fifo_depth": window_fifo_depth(u) if u.kind == "window" else u.dp.stages + 3,
                           "datapath_cost": float(u.dp.pipe.cost), "datapath_reg_bits": int(u.dp.pipe.reg_bits),
                           "in_lane_bits": [kif_width(k) for k in u.in_lanes],
                           "out_lane_bits": [kif_width(k) for k in u.out_lanes]}
    if u.kind == "window":
        if s.get("chosen_by"):
            rec["fold_chosen_by"] = s["chosen_by"]
        rec.update(op="conv taps (gathered for the folded conv after it)" if s.get("gather") else s["op"],
                   parallelism=s["P"], parallelism_unit="output positions per issue",
                   input_size=[s["C"], s["H"], s["W"]] if s["rank"] == 2 else [s["C"], s["W"]],
                   output_size=[s["F"], s["Ho"], s["Wo"]] if s["rank"] == 2 else [s["F"], s["Wo"]],
                   positions_in=s["H"] * s["W"], positions_out=s["Ho"] * s["Wo"],
                   issues_per_frame=s["Ho"] * s["Gx"], virtual_padding_beats=s["n_total"] - s["H"] * s["W"],
                   line_buffer_positions=s["depth"], line_buffer=s.get("line_buffer", "registers"),
                   kernel=s["kernel"], stride=s["stride"], dilation=s["dilation"],
                   pad_begin=s["pad"])
    elif u.kind == "mac":
        if s.get("chosen_by"):
            rec["fold_chosen_by"] = s["chosen_by"]
        rec.update(op="dense (folded)", parallelism=s["P"], parallelism_unit="input elements per cycle (MAC lanes)",
                   inputs=s["N"], outputs=s["O"], steps_per_frame=s["NB"] * s["Q"], multipliers=s["P"] * s["O"],
                   rom_words=s["NB"] * s["Q"], accumulator_bits=s["acc_bits"])
    elif u.kind == "fmac":
        rec["fifo_depth"] = FMAC_FIFO_DEPTH
        win = s.get("windows") or 1
        rec.update(op="conv (folded, weights in memory)" if s.get("windows") else "dense (folded, weights in memory)",
                   parallelism=None, pe=s["PE"], simd=s["SIMD"], fold_chosen_by=s.get("chosen_by"),
                   memory=s.get("memory", "bram"), requant=s.get("requant", "parallel"), inputs=s["N"],
                   outputs=s["O"], windows_per_frame=win, steps_per_window=s["steps"], steps_per_frame=s["steps"] * win,
                   multipliers=s["PE"] * s["SIMD"], memory_words=s["steps"],
                   memory_bits_per_word=s["PE"] * s["SIMD"] * fmac_operand_bits(u)[1],
                   accumulator_bits=s["acc_bits"])
    else:
        rec.update(op="dense (unrolled)", parallelism=None, inputs=s["N"], outputs=s["O"],
                   **({"fold_chosen_by": s["chosen_by"]} if s.get("chosen_by") else {}))
    return rec


def _fold_json(fold: dict[str, Any]) -> dict[str, Any]:
    """``rtl.fold`` as rtl.json keeps it: layer keys as strings (an index and a node name may both appear)."""
    out = dict(fold)
    if out.get("layers") is not None:
        out["layers"] = {str(k): dict(v) for k, v in out["layers"].items()}
    return out


def _plan_to_target(mw: Any, cutoff: float, parallelism: int, in_elements: int | None, dense: str,
                    fold: dict[str, Any] | None, output: str, eo: int,
                    ) -> tuple[StreamPlan, dict[str, Any], dict[str, Any]]:
    """(plan, output geometry, timing).  With ``rtl.fold.target_ii`` each layer's fold is first chosen from its
    step count; the cycle model then measures the II, and while a folded layer is the bottleneck and the II
    is above the target, that layer's budget shrinks by the miss and the plan is made again.  A target the
    fastest fold cannot reach (an unfolded unit, the input's beats or one step per window) is an error.  A conv
    whose fmac would cost more than its window unit at the layer's budget stays in the window unit."""
    target = (fold or {}).get("target_ii")
    budget: dict[int, int] = {}
    window_cost: dict[int, float] = {}
    if target is not None:  # what each conv costs unfolded, to weigh folding it at this II
        plain = plan_stream(mw, cutoff, parallelism, in_elements, dense, None)
        window_cost = {int(u.spec["layer"]): float(u.dp.pipe.cost) for u in plain.units
                       if u.kind == "window" and u.spec["op"] == "conv"}
    for _ in range(12):
        plan = plan_stream(mw, cutoff, parallelism, in_elements, dense, fold, budget, window_cost)
        if eo > plan.n_outputs:
            raise InputError(f"rtl.out_elements = {eo} exceeds the model's {plan.n_outputs} outputs")
        geo = stream_geometry(plan, output, eo)
        timing = stream_timing(plan, geo["beats_out"])
        ii = timing["initiation_interval"]
        if target is None or ii <= target:
            return plan, geo, timing
        u = next(u for u in plan.units if u.name == timing["bottleneck"])
        s = u.spec
        own = timing["unit_cycles_per_frame"][plan.units.index(u)]
        full = u.kind == "fmac" and s["PE"] * s["SIMD"] >= min(s["O"], 64) * min(s["J"], 64)
        if full and budget.get(int(s["layer"])) != 0:
            budget[int(s["layer"])] = 0  # a layer the fmac cannot keep up with stays in its unfolded unit
            continue
        if u.kind != "fmac" or full:
            what = (f"{u.name} ({', '.join(u.nodes)}, {u.kind}) takes {own} cycles per frame" if u.kind != "fmac"
                    else f"{u.name} ({', '.join(u.nodes)}) is fully parallel and takes {own} cycles per frame")
            raise InputError(f"rtl.fold.target_ii = {target} cannot be met: {what} (the II reached is {ii}); "
                             "raise the target")
        layer = int(s["layer"])
        cur = budget.get(layer, target)
        budget[layer] = max(1, cur - (ii - target) - 1)
    raise InputError(f"rtl.fold.target_ii = {target}: no plan met it in 12 tries (the II reached is {ii}); raise the "
                     "target or set the slow layer's pe/simd in rtl.fold.layers")


def build_stream(mw: Any, tmp: Path, top: str, cutoff: float, parallelism: int, in_elements: int | None,
                 out_elements: int | None, output: str, dense: str, tlast: str = "required",
                 fold: dict[str, Any] | None = None) -> tuple[dict[str, Any], StreamPlan]:
    """Write the stream design into ``tmp`` (an atomic_dir being built); returns (rtl.json fields, plan)."""
    check_stream_options(parallelism, in_elements, out_elements, output, dense, tlast, fold)
    eo = out_elements or 1
    plan, geo, timing = _plan_to_target(mw, cutoff, parallelism, in_elements, dense, fold, output, eo)
    n_out = plan.n_outputs
    src = tmp / "src"
    files: list[str] = []
    used = []

    def put(name: str, text: str) -> None:
        write_text(src / f"{name}.v", finish(text))
        files.append(f"src/{name}.v")

    name, text = fifo_module(top)
    put(name, text)
    put(f"{top}_axis_in", input_unit(top, plan, geo["tdata_in"], tlast))
    for u in plan.units:
        dps = datapath_modules(top, u)
        stages = {f"{top}_{u.name}_dp_stage{i}": sol for i, sol in enumerate(u.dp.pipe.solutions)}
        for mod, code in dps.items():
            used.append(code)
            if mod in stages:
                code = mark_unread_stage_inputs(code, stages[mod])
            put(mod, prefix_helpers(code, top))
        put(f"{top}_{u.name}", unit_module(top, u))
        (tmp / "model").mkdir(parents=True, exist_ok=True)
        u.dp.pipe.save(tmp / "model" / f"{u.name}.json")
    put(f"{top}_axis_out", output_unit(top, plan, output, eo, geo["tdata_out"], geo["class_bits"]))
    fin, fout = plan.input_format, plan.output_format
    doc = _top_doc(top, plan, geo, output, eo, timing, tlast)
    put(top, top_module(top, plan, geo["tdata_in"], geo["tdata_out"], doc))
    helpers = helper_sources(top, used_helpers("\n".join(used)))
    for name, text in helpers.items():
        write_text(src / "static" / f"{name}.v", text)
    files = [f"src/static/{name}.v" for name in helpers] + files
    write_json(tmp / "model" / "stream.json", plan_json(plan))
    cost = sum(float(u.dp.pipe.cost) for u in plan.units)
    ports = {
        "clk": {"direction": "input", "width": 1, "doc": "rising-edge clock"},
        "aresetn": {"direction": "input", "width": 1, "doc": RESET_DOC},
        "s_axis_tdata": {"direction": "input", "width": geo["tdata_in"]},
        "s_axis_tvalid": {"direction": "input", "width": 1},
        "s_axis_tready": {"direction": "output", "width": 1},
        "s_axis_tlast": {"direction": "input", "width": 1},
        "m_axis_tdata": {"direction": "output", "width": geo["tdata_out"]},
        "m_axis_tvalid": {"direction": "output", "width": 1},
        "m_axis_tready": {"direction": "input", "width": 1},
        "m_axis_tlast": {"direction": "output", "width": 1},
        "tlast_err": {"direction": "output", "width": 1,
                      "doc": ("sticky: a frame had the wrong number of beats" if tlast == "required" else
                              "sticky: a beat's s_axis_tlast disagreed with the beat count (framing unchanged)")},
    }
    meta = {
        "mode": "stream",
        "tlast": tlast,
        "latency_cycles": timing["latency_cycles"],
        "initiation_interval": timing["initiation_interval"],
        "latency_cutoff": cutoff,
        "input_shape": list(plan.input_shape),
        "output_shape": list(plan.output_shape),
        "n_inputs": int(sum(1 for b in plan.in_elements_of_beat for e in b if e >= 0)),
        "n_outputs": n_out,
        "input_bits_total": int(sum(1 for b in plan.in_elements_of_beat for e in b if e >= 0)) * fin.bits,
        "output_bits_total": n_out * fout.bits,
        "input_format": {**fin.to_json(), "rounding": plan.input_rounding},
        "output_format": fout.to_json(),
        "stream": {
            "beats_in": plan.beats_in, "beats_out": geo["beats_out"], "in_elements": plan.in_lanes,
            "out_elements": eo if output != "class" else None, "output": output, "class_bits": geo["class_bits"],
            "logit_beats": geo["logit_beats"], "parallelism": parallelism, "dense": dense,
            **({"fold": _fold_json(fold)} if fold is not None else {}),
            **({"target_ii": fold["target_ii"]}
               if fold is not None and fold.get("target_ii") else {}),
            "vector_input": plan.vector_input,
            "in_beat": (f"element j of the beat (j < {plan.in_lanes}) at s_axis_tdata[j*{fin.bits} +: {fin.bits}]; "
                        + (f"beat b carries elements b*{plan.in_lanes} .. b*{plan.in_lanes}+{plan.in_lanes - 1} of the "
                           "row-major (channels-first) flattened input (past the last element: ignored)"
                           if plan.vector_input else
                           "a beat is one position (all channels, channel j in element j), positions in row-major "
                           "order")
                        + "; unused high bits ignored"),
            "in_elements_of_beat": plan.in_elements_of_beat,
            "out_beat": _out_beat_doc(output, eo, fout.bits, geo),
            "reset": RESET_DOC, "tlast": TLAST_DOCS[tlast], "tlast_mode": tlast, "latency_definition": LATENCY_DOC,
            "ii_definition": II_DOC,
            "bottleneck_unit": timing["bottleneck"], "frames_to_steady_state": timing["frames_simulated"],
            "frame_starts_back_to_back": [t - timing["frame_starts"][0] for t in timing["frame_starts"]],
            "tie_rule": "class = index of the largest logit; ties go to the lowest index (numpy argmax)",
        },
        "ports": ports,
        "layers": [_layer_record(u, c) for u, c in zip(plan.units, timing["unit_cycles_per_frame"])],
        "verilog_files": files,
        "inventory": stream_inventory(plan, geo, output, eo, tlast),
        "da4ml_estimate": {
            "lut": int(round(cost)), "cost": cost,
            "ff": int(sum(u.dp.pipe.reg_bits for u in plan.units)),
            "adders": int(sum(1 for u in plan.units for st in u.dp.pipe.solutions for op in st.ops
                              if op.opcode in (0, 1, 4))),
            "note": ("da4ml's estimate of the unit datapaths only (adders, pipeline registers); line buffers, "
                     "FIFOs, counters, MAC multipliers and ROMs are not included"),
        },
    }
    return meta, plan


def _out_beat_doc(output: str, eo: int, bits: int, geo: dict[str, Any]) -> str:
    parts = []
    if output in ("logits", "both"):
        parts.append(f"beats 0..{geo['logit_beats'] - 1}: logits, element j of the beat at m_axis_tdata[j*{bits} +: "
                     f"{bits}], beat b carries logits b*{eo} .. b*{eo}+{eo - 1} (past the last: 0)")
    if output in ("class", "both"):
        parts.append(f"{'last beat' if output == 'both' else 'one beat'}: the class index in "
                     f"m_axis_tdata[{geo['class_bits'] - 1}:0] (ties: lowest index)")
    return "; ".join(parts) + "; m_axis_tlast on the frame's last beat; unused high bits 0"


def _top_doc(top: str, plan: StreamPlan, geo: dict[str, Any], output: str, eo: int, timing: dict[str, Any],
             tlast: str) -> str:
    fin, fout = plan.input_format, plan.output_format

    def fmt_doc(f: Any) -> str:
        kind = "two's complement" if f.signed else "unsigned"
        return f"{kind} codes {f.lo}..{f.hi}, value = code * 2^-{f.frac_bits}"

    lines = [
        "// Generated by kdhw (QONNX -> da4ml), stream mode: AXI4-Stream in, AXI4-Stream out.",
        f"// Input frame: {plan.beats_in} beat(s) of {plan.in_lanes} element(s) x {fin.bits} bits in s_axis_tdata "
        f"[{geo['tdata_in'] - 1}:0]; {fmt_doc(fin)}.",
        f"// Output frame: {geo['beats_out']} beat(s): {_out_beat_doc(output, eo, fout.bits, geo)};",
        f"//   logits are {fmt_doc(fout)}.",
        "// A beat moves on a rising edge where tvalid && tready.  s_axis_tready and m_axis_tvalid never depend",
        "// combinationally on s_axis_tvalid / m_axis_tready; m_axis_tdata/tlast are held while",
        "// m_axis_tvalid && !m_axis_tready.",
        f"// Reset: {RESET_DOC}.",
        *_wrap_comment(f"{TLAST_DOCS[tlast]}."),
        f"// Latency {timing['latency_cycles']} cycles ({LATENCY_DOC}).",
        f"// Initiation interval {timing['initiation_interval']} cycles ({II_DOC}).",
    ]
    return "\n".join(lines)


def _wrap_comment(text: str, width: int = 116) -> list[str]:
    import textwrap

    return ["// " + line for line in textwrap.wrap(text, width - 3)]
