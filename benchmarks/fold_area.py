"""Issue 25, folded hardware near the limit: today's stream p=1 vs ``rtl.fold: {pe: 1, simd: 1}`` on the iCE40 UP5K.

Students: the embedded default digits MLP (``kdhw/defaults/digits.yaml``; trained here with the scratch arm of
``benchmarks.stream_vs_parallel``, or ``--digits-onnx`` names a QONNX such as ``kdhw run``'s
``student.qonnx.onnx``) and, unless ``--mlp-only``, the mnist1d Conv1D 8-16 student (``benchmarks.common`` SETS
``conv8_16_w4``).  Forms: ``stream p=1`` (today: one MAC lane and one multiplier per output neuron, weights in a
combinational case ROM) and ``fold 1,1`` (every dense layer one multiplier, weights in a registered-read memory,
requantization one output per cycle: ``kdhw.hw.rtl._stream_hdl.fmac_unit``), its weight tables placed by
``memory: auto`` (the default: up to ``ROM_LUT_BITS`` in a LUT ROM, larger ones in block RAM) and, beside it, all
in block RAM (``fold 1,1 bram``) or all in LUT ROMs (``fold 1,1 lut``): the measurement behind the threshold.  Each design is checked bit-exact in the emulator on 10,000 off-grid
vectors against the QONNX reference, then synthesized with ``kdhw.hw.synth.synthesize`` for the icebreaker
(yosys synth_ice40, ``-dsp`` when the design's multipliers fit the part's 8 SB_MAC16; nextpnr-ice40 at 12 MHz):
logic cells, EBR (SB_RAM40_4K), SB_MAC16, FFs, achieved fmax; II and latency from rtl.json (the simulator
checks both in ``tests/hw/test_rtl_fold.py``).  Writes ``results/fold_area.{json,md}``.

    nice -n 10 .venv/bin/python -m benchmarks.fold_area [--digits-onnx /tmp/x/student.qonnx.onnx] [--mlp-only]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, RESULTS, slug

warnings.filterwarnings("ignore")
BOARD = "icebreaker"
GOAL_LC = 800  # issue 25: the digits student folded into <= 800 logic cells with its weights in EBR
GOAL_SHARE = 0.70  # the Conv1D 8-16 student: placed in <= 70 % of the UP5K's cells at 12 MHz
FORMS: dict[str, dict[str, Any]] = {
    "stream p=1": {"mode": "stream", "parallelism": 1},
    "fold 1,1 bram": {"mode": "stream", "parallelism": 1, "fold": {"pe": 1, "simd": 1, "memory": "bram"}},
    "fold 1,1": {"mode": "stream", "parallelism": 1, "fold": {"pe": 1, "simd": 1}},  # memory auto, the default
    "fold 1,1 lut": {"mode": "stream", "parallelism": 1, "fold": {"pe": 1, "simd": 1, "memory": "lut"}},
}
GOAL_FORM = "fold 1,1"


def _students(mlp_only: bool) -> dict[str, dict[str, Any]]:
    from benchmarks.stream_vs_parallel import students

    st = students()
    keep = ["digits MLP (default)"] + ([] if mlp_only else ["mnist1d Conv1D 8-16"])
    return {k: st[k] for k in keep}


def _model(name: str, st: dict[str, Any], work: Path, digits_onnx: str | None) -> tuple[Path, dict[str, Any]]:
    if digits_onnx and name.startswith("digits"):
        d = work / slug(name)
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(digits_onnx, d / "model.onnx")
        return d / "model.onnx", {"student": name, "source": str(digits_onnx), "spec": st["student"]}
    from benchmarks.stream_vs_parallel import train

    rec = train(name, st, work, None)
    return work / slug(name) / "model.onnx", rec


def _design(onnx: Path, form: str, opts: dict[str, Any], work: Path) -> dict[str, Any]:
    import numpy as np

    from kdhw.boards import load_board
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import edge_vectors, emulate, qonnx_to_rtl
    from kdhw.hw.synth import synthesize

    rtl = work / slug(form)
    meta = qonnx_to_rtl(onnx, rtl, mode=opts["mode"], **{k: v for k, v in opts.items() if k != "mode"})
    x = edge_vectors(meta, 10_000, seed=11)
    exact = bool(np.array_equal(emulate(rtl, x), reference(load_qonnx(onnx), x)))
    board = load_board(BOARD)
    t = time.perf_counter()
    syn = synthesize(rtl, board, work / f"{slug(form)}_synth")
    util = syn.get("utilization") or {}
    lc_total = (util.get("ICESTORM_LC") or {}).get("available") or board.lut
    return {
        "form": form, "options": opts, "emulator_exact_10000": exact,
        "latency_cycles": meta["latency_cycles"], "initiation_interval": meta["initiation_interval"],
        "layers": [{k: rec.get(k) for k in ("unit", "kind", "op", "inputs", "outputs", "pe", "simd", "memory",
                                            "multipliers", "steps_per_frame", "cycles_per_frame")}
                   for rec in meta["layers"]],
        "placed": bool(syn.get("ok")), "fits": bool(syn.get("fits")), "logic_cells": syn.get("lut"),
        "logic_cells_available": lc_total,
        "logic_cell_share": round(syn["lut"] / lc_total, 4) if syn.get("lut") else None,
        "lut4": syn.get("lut4"), "ff": syn.get("ff"), "carry": syn.get("carry"), "ebr": syn.get("bram36"),
        "sb_mac16": syn.get("dsp"), "fmax_mhz": syn.get("fmax_mhz"), "meets_12mhz": syn.get("meets_clock"),
        "tool": syn.get("tool"), "error": syn.get("error"), "synth_seconds": round(time.perf_counter() - t, 1),
    }


def _md(res: dict[str, Any]) -> str:
    from kdhw.hw.rtl._stream_plan import ROM_LUT_BITS

    lines = ["# Folded hardware near the limit (issue 25): stream p=1 vs rtl.fold 1,1 on the iCE40 UP5K", "",
             (f"Board {BOARD} (iCE40 UP5K, 5,280 logic cells, 30 EBR, 8 SB_MAC16), nextpnr at 12 MHz; "
              f"{res['when']}, {res['host']}. Written by `python -m benchmarks.fold_area`."), "",
             ("| student | form | exact (10,000) | logic cells | share | EBR | SB_MAC16 | FF | fmax MHz | II | "
              "latency | MAC units |"), "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in res["students"]:
        for d in s["designs"]:
            units = "; ".join(f"{r['unit']} {r['kind']}" + (f" {r['op'].split(' ')[0]} pe={r['pe']} simd={r['simd']} "
                                                             f"{r['memory']}"
                                                             if r["kind"] == "fmac" else
                                                             f" x{r['multipliers']}" if r.get("multipliers") else "")
                              for r in d["layers"] if r["kind"] != "window")
            fmax = f"{d['fmax_mhz']:.1f}" if d.get("fmax_mhz") else "-"
            share = f"{100 * d['logic_cell_share']:.1f} %" if d.get("logic_cell_share") else "-"
            lc = f"{d['logic_cells']:,}" if d.get("logic_cells") else "-"
            lines.append(f"| {s['student']} | {d['form']} | {d['emulator_exact_10000']} | {lc} | {share} | "
                         f"{d['ebr']} | {d['sb_mac16']} | {d['ff']} | {fmax} | {d['initiation_interval']} | "
                         f"{d['latency_cycles']} | {units} |")
    lines += ["", ("Goals: digits MLP <= 800 logic cells with its weights in EBR; Conv1D 8-16 placed in <= 70 % "
                   "of the cells at 12 MHz."), ""]
    for g in res["goals"]:
        lines.append(f"- {g}")
    lines += ["", ("II and latency in clock cycles (rtl.json; the cocotb bench measures the same numbers). "
                   "EBR = SB_RAM40_4K, counted by yosys (fold: weights and accumulators; `memory: auto`, the "
                   f"default, puts a weight table of up to {ROM_LUT_BITS} bits in a LUT ROM and a larger one in EBR; "
                   "`bram` and `lut` put every table in one or the other). `fold 1,1` turns "
                   "each conv layer into a window unit that gathers the window's taps (no arithmetic) and an "
                   "`fmac` that applies the layer's weights to each window in turn; max-pool layers keep their "
                   "window units, and their line buffers stay in registers (a few positions deep here). Its bias/ReLU/"
                   "requantization computes what today's does, bit for bit, one output per cycle through one da4ml "
                   "datapath lane on the symbolic (accumulator, bias) pair with the bias from a table "
                   "(`requant: serial`), instead of one datapath over all outputs of a layer."), ""]
    return "\n".join(lines)


def _goals(out: dict[str, Any]) -> list[str]:
    goals = []
    for s in out["students"]:
        name, designs = s["student"], s["designs"]
        f = next(d for d in designs if d["form"] == GOAL_FORM)
        if name.startswith("digits"):
            ok = bool(f["logic_cells"] and f["logic_cells"] <= GOAL_LC and f["ebr"])
            goals.append(f"{name}, fold 1,1: {f['logic_cells']} logic cells (goal <= {GOAL_LC}), {f['ebr']} "
                         f"EBR: {'met' if ok else 'not met'} (today {designs[0]['logic_cells']})")
        else:
            ok = bool(f["placed"] and f["fits"] and f["logic_cell_share"] and f["logic_cell_share"] <= GOAL_SHARE
                      and f["meets_12mhz"])
            share = f"{100 * f['logic_cell_share']:.1f}" if f["logic_cell_share"] else "?"
            fmax = f"{f['fmax_mhz']:.1f} MHz" if f.get("fmax_mhz") else "none"
            goals.append(f"{name}, fold 1,1: {share} % of the cells (goal <= {100 * GOAL_SHARE:.0f} %), fmax {fmax} "
                         f"(goal >= 12 MHz): {'met' if ok else 'not met'} (today {designs[0]['logic_cells']} logic "
                         "cells)")
    return goals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits-onnx", help="QONNX of the digits student to use (default: train the default spec)")
    ap.add_argument("--mlp-only", action="store_true", help="skip the Conv1D 8-16 student")
    ap.add_argument("--render", action="store_true", help="only re-render fold_area.md from fold_area.json")
    a = ap.parse_args()
    if a.render:
        res = json.loads((RESULTS / "fold_area.json").read_text())
        res["goals"] = _goals(res)
        (RESULTS / "fold_area.json").write_text(json.dumps(res, indent=1) + "\n")
        (RESULTS / "fold_area.md").write_text(_md(res))
        return
    work = CACHE / "fold_area"
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"board": BOARD, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "host": f"{platform.machine()}, {platform.python_version()}", "students": [], "goals": []}
    for name, st in _students(a.mlp_only).items():
        onnx, rec = _model(name, st, work, a.digits_onnx)
        designs = []
        for form, opts in FORMS.items():
            d = _design(onnx, form, opts, work / slug(name))
            print(f"{name} | {form}: {d['logic_cells']} LC, {d['ebr']} EBR, {d['sb_mac16']} MAC16, "
                  f"fmax {d['fmax_mhz']}, II {d['initiation_interval']}, latency {d['latency_cycles']}, "
                  f"exact {d['emulator_exact_10000']}", flush=True)
            designs.append(d)
        out["students"].append({"student": name, "record": rec, "designs": designs})
    out["goals"] = _goals(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fold_area.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "fold_area.md").write_text(_md(out))
    print(_md(out))


if __name__ == "__main__":
    main()
