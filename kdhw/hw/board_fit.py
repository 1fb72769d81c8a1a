"""Fit a board: the least folded RTL form of a student that a board can take (``rtl.mode: auto``).

A board limits a design four ways: logic (LUT, FF, DSP, block RAM), pins, and clock.  The parallel form (every input
and output at once, a new input every cycle) is the fastest and needs the most of all four; the stream
form trades throughput for size and pins through its parallelism knob.  ``choose_form`` walks a fixed
ladder of candidates from the least to the most folded and takes the first that fits:

1. ``parallel``;
2. ``stream`` at parallelism 8, 4, 2, 1, each with the dense layers unrolled and then folded over their
   input beats (``dense: unrolled`` / ``auto``); an MLP's input beat carries as many elements as the lanes
   use (``in_elements`` = parallelism) and the board's pins allow;
3. ``fold`` (``rtl.fold``, stream parallelism 1): every dense layer PE outputs x SIMD inputs per cycle with its
   weights (and, requantized serially, its accumulators) in block RAM and PE x SIMD multipliers (DSP blocks
   where the family maps them), at PE x SIMD = 2 x 2 and 1 x 1 (``FOLDS``).  Slower than every stream rung
   (one weight per multiplier per cycle), much smaller where the weights dominate.

The parallel form is judged first.  Only when it does not fit is the most folded stream form generated and
screened.  When even that cannot fit, no stream rung can: the fold rungs are generated instead, the most
folded (1 x 1) first, and when that cannot fit either nothing can (a refusal).  Otherwise the other rungs
are generated (seconds each; a parallelism no layer can use gives the same Verilog and appears once) and all
are judged in order of throughput (initiation interval, then estimated LUTs).  Each judgement: pins from the real ports of its top,
then the analytic estimate (``kdhw.hw.estimate``) against the board with a margin for the estimate's error, and
only a candidate that passes both is confirmed by open synthesis (yosys; nextpnr place-and-route and its fmax against the board
clock on iCE40/ECP5; Xilinx parts have no open timing model, so their clock is not checked).  Without
synthesis (``synth=False``) the estimate decides, and it must fit with its measured error band added
(``FIT_BAND``, for fold rungs ``FIT_BAND_FOLD``: the error measured on folded designs): a form that only
synthesis could show to fit is not picked blind.  Every candidate's figures and the reason
it was rejected are kept (``rtl.json`` -> ``fit``), and the hardware report prints them.

``pareto`` uses the same function for its per-board pick (with ``parallel_pins=False`` the parallel form
is judged behind the serial pin wrapper the Lattice flow synthesizes, i.e. without a pin check).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kdhw.boards import Board
from kdhw.errors import InputError

PARALLELISMS = (8, 4, 2, 1)
# A candidate whose estimate exceeds the board by more than this is not synthesized: the estimate's LUT
# error is ~5-15 % sMAPE (benchmarks/README.md), Lattice LUT4 conversions are rougher; synthesis decides the rest.
SCREEN_MARGIN = 1.25
# Without synthesis to confirm it, a form is taken only when its estimate plus the estimate's measured error
# band fits the part: the largest amount by which open synthesis exceeded the estimate over the 14 xc7 and 8 / 10
# Lattice designs of benchmarks/results/stream_vs_parallel.json (LUT / logic cells; tests/hw/test_fit_band.py
# recomputes them from that file).  A p=3 MLP estimated at 5,011 LUT4 was picked for the UP5K's 5,280 and did not
# place; with the band it is not picked.
FIT_BAND: dict[str, dict[str, float]] = {
    "xilinx": {"lut": 0.24, "ff": 0.72, "dsp": 0.0},
    "lattice": {"lut": 0.23, "ff": 0.72, "dsp": 0.0},
}
# The band of the fold rungs (rtl.fold): the largest amount by which yosys exceeded the estimate over the 19
# folded designs of benchmarks/results/estimate_vs_yosys_stream{,.fold_calibration}.json (xc7 LUT / FF: 11 %
# at most; iCE40 logic cells after nextpnr's packing: 39 %, a PE = 4 design whose 12 multipliers are more than the
# UP5K's 8 SB_MAC16s and are built from logic), and never less than the stream band (a folded design keeps
# stream units).  Block RAM and DSP counts: yosys never used more than the estimate on any of them, in any of the
# three families, hence 0.  tests/hw/test_fit_band.py recomputes them from those files.
FIT_BAND_FOLD: dict[str, dict[str, float]] = {
    "xilinx": {"lut": 0.24, "ff": 0.72, "dsp": 0.0, "bram36": 0.0},
    "lattice": {"lut": 0.39, "ff": 0.72, "dsp": 0.0, "bram36": 0.0},
}
# PE x SIMD of the fold rungs, least folded first (each folds every dense layer; requantization serial)
FOLDS = ((2, 2), (1, 1))
FIT_DIR = "fit"
# clk, aresetn, s_axis_tvalid/tready/tlast, m_axis_tvalid/tready/tlast, tlast_err
STREAM_CONTROL_PINS = 9


def _label(opts: dict[str, Any]) -> str:
    """``dense folded``: every dense layer whose input arrives in several beats is folded (``dense: auto``)."""
    if opts["mode"] == "parallel":
        return "parallel"
    if opts.get("fold"):
        f = opts["fold"]
        return f"fold pe={f['pe']} simd={f['simd']} (weights in block RAM)"
    parts = [f"stream p={opts['parallelism']}", "dense unrolled" if opts["dense"] == "unrolled" else "dense folded"]
    if opts.get("in_elements"):
        parts.append(f"{opts['in_elements']} input element(s)/beat")
    return ", ".join(parts)


def _pins_limit_in_elements(board: Board, bits: int, tdata_out: int) -> int:
    """The most input elements per beat whose tdata (rounded to bytes) leaves the pins for the rest."""
    from kdhw.hw.rtl._stream_hdl import round_bytes

    e = 1
    while round_bytes((e + 1) * bits) + tdata_out + STREAM_CONTROL_PINS <= board.io_pins and e < 4096:
        e += 1
    return e


def _verilog_hash(d: Path, meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for f in meta["verilog_files"]:
        h.update((d / f).read_bytes())
    return h.hexdigest()


class _Ladder:
    """Generates candidates under ``work``; identical Verilog (a parallelism a layer cannot use) appears once."""

    def __init__(self, onnx_path: Path, work: Path, board: Board, latency_cutoff: float | None,
                 output: str | None, out_elements: int | None, top: str | None = None,
                 tlast: str | None = None) -> None:
        self.onnx, self.work, self.board = onnx_path, work, board
        self.cutoff, self.output, self.out_elements = latency_cutoff, output, out_elements
        self.top, self.tlast = top, tlast
        self.seen: set[str] = set()
        self.n = 0

    def make(self, opts: dict[str, Any]) -> dict[str, Any] | None:
        from .rtl import qonnx_to_rtl

        d = self.work / f"c{self.n}"
        self.n += 1
        kw = {k: v for k, v in opts.items() if k != "mode" and v is not None}
        if opts["mode"] == "stream":
            kw.update(output=self.output, out_elements=self.out_elements, tlast=self.tlast)
        if self.top is not None:
            kw["top"] = self.top
        meta = qonnx_to_rtl(self.onnx, d, mode=opts["mode"], latency_cutoff=self.cutoff,
                            clock_period_ns=self.board.clock_period_ns, **kw)
        h = _verilog_hash(d, meta)
        if h in self.seen:
            shutil.rmtree(d)
            return None
        self.seen.add(h)
        return {"label": _label(opts), "options": opts, "dir": d, "meta": meta}

    def most_folded(self) -> dict[str, Any]:
        """The smallest stream rung (parallelism 1, dense layers folded, one input element per beat): when it
        cannot fit, no rung can, and the others are not generated."""
        c = self.make({"mode": "stream", "parallelism": 1, "dense": "auto", "in_elements": None})
        assert c is not None
        return c

    def others(self, smallest: dict[str, Any]) -> list[dict[str, Any]]:
        """The other stream rungs.  An MLP's beats carry elements of a vector: as many as its lanes use and the
        pins allow."""
        pm = smallest["meta"]
        e_max = None
        if pm["stream"].get("vector_input"):
            e_max = min(_pins_limit_in_elements(self.board, pm["input_format"]["bits"],
                                                pm["ports"]["m_axis_tdata"]["width"]), int(pm["n_inputs"]))
        rungs = []
        for p in PARALLELISMS:
            e = None if e_max is None or p == 1 else min(p, e_max)
            for d in ("unrolled", "auto"):
                if (p, d) != (1, "auto"):  # an MLP's lanes cannot outnumber the elements of a beat
                    rungs.append({"mode": "stream", "parallelism": p if e is None else e, "dense": d, "in_elements": e})
        return [c for opts in rungs if (c := self.make(opts)) is not None]

    def folds(self, most: bool) -> list[dict[str, Any]]:
        """The fold rungs: ``most`` the most folded one (PE = SIMD = 1) alone, else the others.  None where
        the student has no dense layer to fold (the Verilog would be the stream p=1 form's)."""
        out = []
        for pe, simd in (FOLDS[-1:] if most else FOLDS[:-1]):
            c = self.make({"mode": "stream", "parallelism": 1, "in_elements": None,
                           "fold": {"pe": pe, "simd": simd}})
            if c is not None and any(u.get("kind") == "fmac" for u in c["meta"]["inventory"]["units"]):
                out.append(c)
        return out


def _screen(c: dict[str, Any], board: Board, margin: float | None, parallel_pins: bool) -> str | None:
    """Why the candidate cannot fit by its ports and estimate, or None.  ``margin``: the screen's slack
    before synthesis decides; None: no synthesis follows, so the estimate plus its error band must fit."""
    if c["options"]["mode"] == "stream" or parallel_pins:
        if c["pins"] > board.io_pins:
            return f"pins {c['pins']:,} > {board.io_pins}"
    est = c["estimate"]
    over = []
    bands = FIT_BAND_FOLD if c["options"].get("fold") else FIT_BAND
    band = bands.get(board.vendor, bands["xilinx"])
    for k, cap in (("lut", board.lut), ("ff", board.ff), ("dsp", board.dsp), ("bram36", board.bram36)):
        if k not in est:
            continue
        name = "BRAM" if k == "bram36" else k.upper()
        if margin is not None and est[k] > cap * margin:
            over.append(f"{name} {est[k]:,g} > {cap:,g} x {margin:g}")
        elif margin is None and est[k] * (1 + band.get(k, 0.0)) > cap:
            over.append(f"{name} {est[k]:,g} + {100 * band.get(k, 0.0):.0f} % (the estimate's error band) > {cap:,g}")
    return ("estimate: " + ", ".join(over)) if over else None


def _confirm(c: dict[str, Any], board: Board, work: Path) -> tuple[dict[str, Any], str | None]:
    """Open synthesis of the candidate for the board; (result, why it does not fit or None)."""
    from .synth import synthesize

    syn = synthesize(c["dir"], board, work / f"syn_{c['dir'].name}")
    if not syn.get("ok"):
        return syn, f"{'place-and-route' if board.vendor == 'lattice' else 'synthesis'} failed: {syn.get('error')}"
    over = []
    for k, cap in (("lut", board.lut), ("ff", board.ff), ("dsp", board.dsp), ("bram36", board.bram36)):
        if (syn.get(k) or 0) > cap:
            over.append(f"{'BRAM' if k == 'bram36' else k.upper()} {syn[k]:,g} > {cap:,g}")
    if syn.get("fits") is False:
        over.append("does not fit the part (nextpnr)")
    fmax = syn.get("fmax_mhz")
    if fmax is not None and fmax < board.clock_mhz:
        over.append(f"fmax {fmax:.1f} MHz < {board.clock_mhz:g} MHz")
    return syn, ("synthesis: " + ", ".join(over)) if over else None


def _record(c: dict[str, Any]) -> dict[str, Any]:
    m = c["meta"]
    syn = c.get("synthesis")
    return {"label": c["label"], "options": {k: v for k, v in c["options"].items() if v is not None},
            "initiation_interval": m["initiation_interval"], "latency_cycles": m["latency_cycles"],
            "pins": c["pins"], "estimate": {k: c["estimate"].get(k, 0) for k in ("lut", "ff", "dsp", "bram36")},
            "estimate_lut_unit": c["estimate"].get("lut_unit", "LUT6"),
            "synthesis": None if syn is None else {k: syn.get(k) for k in ("tool", "lut", "ff", "dsp", "bram36", "fmax_mhz",
                                                                           "ok")},
            "verdict": c["verdict"], "why": c["why"]}


def choose_form(onnx_path: str | Path, board: Board, work: str | Path, *, synth: bool = True,
                parallel_pins: bool = True, latency_cutoff: float | None = None, output: str | None = None,
                out_elements: int | None = None, known: dict[str, dict[str, Any]] | None = None,
                top: str | None = None, tlast: str | None = None, log: Any = print) -> dict[str, Any]:
    """Judge the ladder of candidates for ``board`` (module docstring) under ``work``.

    Returns {"board", "method", "chosen" (index into candidates or None), "candidates": [records], "dir":
    the chosen candidate's RTL directory}.  ``known`` maps a candidate label to a synthesis result already
    at hand for this board (pareto has the parallel form's), which is used instead of synthesizing again.
    """
    from .estimate import estimate_design
    from .report import port_pins

    onnx_path, work = Path(onnx_path), Path(work)
    ladder = _Ladder(onnx_path, work, board, latency_cutoff, output, out_elements, top, tlast)
    margin = SCREEN_MARGIN if synth else None

    def prepare(c: dict[str, Any]) -> dict[str, Any]:
        c["pins"] = sum(port_pins(c["meta"]).values())
        c["estimate"] = estimate_design(onnx_path, c["meta"], board)
        c["verdict"], c["why"], c["synthesis"] = "not tried", None, None
        return c

    def judge(c: dict[str, Any]) -> bool:
        why = _screen(c, board, margin, parallel_pins)
        if why is None and synth:
            if known and c["label"] in known:
                c["synthesis"] = known[c["label"]]
                why = None if _known_fits(known[c["label"]], board) else "synthesis: over the board's resources"
            else:
                log(f"[fit] {board.name}: synthesizing {c['label']} ...")
                c["synthesis"], why = _confirm(c, board, work)
        c["verdict"], c["why"] = ("rejected", why) if why else ("chosen", "fits" + (
            "" if synth else " (by the estimate; not synthesized)"))
        log(f"[fit] {board.name}: {c['label']}: {c['verdict']}" + (f" ({why})" if why else ""))
        return why is None

    # the parallel form leads (II = 1); the stream rungs are generated only when it does not fit, and judged
    # least folded first: throughput, then size
    def order(cs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(cs, key=lambda c: (c["meta"]["initiation_interval"], c["estimate"]["lut"]))

    def first_fit(rest: list[dict[str, Any]]) -> int | None:
        start = len(cands)
        cands.extend(rest)
        for i, c in enumerate(rest, start):
            if judge(c):
                return i
        return None

    cands = [prepare(ladder.make({"mode": "parallel"}))]
    chosen = 0 if judge(cands[0]) else None
    if chosen is None:
        smallest = prepare(ladder.most_folded())
        why = _screen(smallest, board, margin, parallel_pins)
        # the fold rungs (weights in block RAM): judged after the stream rungs (their II is larger); generated
        # most folded first, and the others only when that one passes the screen
        folds = [prepare(c) for c in ladder.folds(most=True)]
        fold_why = _screen(folds[0], board, margin, parallel_pins) if folds else None
        if folds and fold_why is None:
            folds += [prepare(c) for c in ladder.folds(most=False)]
        elif folds:
            folds[0]["verdict"], folds[0]["why"] = "rejected", fold_why
            log(f"[fit] {board.name}: {folds[0]['label']} (the most folded form): rejected ({fold_why})")
        if why is not None:  # no stream rung can fit
            smallest["verdict"], smallest["why"] = "rejected", why
            log(f"[fit] {board.name}: {smallest['label']} (the most folded stream form): rejected ({why})")
            cands.append(smallest)
            if folds and fold_why is None:
                log(f"[fit] {board.name}: {len(folds)} fold candidates")
                chosen = first_fit(order(folds))
            else:
                cands.extend(folds)
        else:
            rest = order([smallest, *(prepare(c) for c in ladder.others(smallest)), *(folds if fold_why is None else [])])
            log(f"[fit] {board.name}: {len(rest)} stream candidates")
            chosen = first_fit(rest)
            if fold_why is not None:
                cands.extend(folds)
    return {"board": board.name, "clock_mhz": board.clock_mhz,
            "method": "pins, estimate, then open synthesis" if synth else "pins and estimate (no synthesis)",
            "clock_checked": bool(synth and board.vendor == "lattice"),
            "chosen": None if chosen is None else cands[chosen]["label"],
            "candidates": [_record(c) for c in cands], "dir": None if chosen is None else str(cands[chosen]["dir"]),
            "synthesis_of_chosen": None if chosen is None else cands[chosen].get("synthesis")}


def _known_fits(syn: dict[str, Any], board: Board) -> bool:
    return all((syn.get(k) or 0) <= cap for k, cap in (("lut", board.lut), ("ff", board.ff), ("dsp", board.dsp),
                                                        ("bram36", board.bram36)))


def refusal(onnx_path: str | Path, board: Board, res: dict[str, Any]) -> InputError:
    """Nothing fits: one line naming the smallest candidate and its figures."""
    cands = res["candidates"]
    small = min(cands, key=lambda r: ((r["synthesis"] or {}).get("lut") or r["estimate"]["lut"]))
    syn = small["synthesis"] or {}
    src = syn if syn.get("lut") else small["estimate"]
    bram = f", {src.get('bram36'):g} BRAM" if src.get("bram36") else ""  # block RAM: only a fold rung has any
    figs = (f"{syn['lut']:,} LUT, {syn.get('ff') or 0:,} FF, {syn.get('dsp') or 0} DSP{bram} (open synthesis)"
            if syn.get("lut")
            else f"{small['estimate']['lut']:,} LUT, {small['estimate']['ff']:,} FF, {small['estimate']['dsp']} DSP"
                 f"{bram} (estimate)")
    return InputError(f"{onnx_path}: no RTL form fits board {board.name} ({board.lut:,} LUT, {board.ff:,} FF, "
                      f"{board.dsp} DSP, {board.io_pins} pins, {board.clock_mhz:g} MHz); the smallest candidate, "
                      f"{small['label']}, needs {figs}, {small['pins']} pins ({small['why']})")


def fit_board(onnx_path: str | Path, out_dir: str | Path, board: Board, *, synth: bool = True,
              latency_cutoff: float | None = None, output: str | None = None, out_elements: int | None = None,
              top: str | None = None, tlast: str | None = None, log: Any = print) -> dict[str, Any]:
    """``kdhw rtl --mode auto --board B``: write the chosen form into ``out_dir`` (atomically) with the
    decision in its rtl.json (``fit``); InputError (exit 2) when no candidate fits."""
    from kdhw.util.atomic import atomic_dir, write_json

    from .rtl import META_FILE

    with tempfile.TemporaryDirectory(prefix="kdhw_fit_") as tmp:
        res = choose_form(onnx_path, board, tmp, synth=synth, latency_cutoff=latency_cutoff, output=output,
                          out_elements=out_elements, top=top, tlast=tlast, log=log)
        if res["chosen"] is None:
            raise refusal(onnx_path, board, res)
        src = Path(res.pop("dir"))
        syn = res.pop("synthesis_of_chosen")
        with atomic_dir(out_dir) as d:
            shutil.rmtree(d)
            shutil.copytree(src, d)
            meta = json.loads((d / META_FILE).read_text())
            if syn is not None:  # the report re-uses it for this board instead of synthesizing again
                logs = Path(tmp) / f"syn_{src.name}"
                if logs.is_dir():
                    shutil.copytree(logs, d / FIT_DIR)
                res["synthesis"] = {**syn, "logs": FIT_DIR if logs.is_dir() else None,
                                    "verilog_sha256": _verilog_hash(d, meta)}
            meta["fit"] = res
            write_json(d / META_FILE, meta)
    return meta


def rtl_for_config(onnx_path: Path, out_dir: Path, rtl_cfg: dict[str, Any], board: Board, *, synth: bool,
                   log: Any = print) -> dict[str, Any]:
    """The RTL a config asks for: ``rtl.mode: auto`` fits ``board``; otherwise the mode given."""
    from .rtl import qonnx_to_rtl, rtl_options

    if rtl_cfg.get("mode") == "auto":
        return fit_board(onnx_path, out_dir, board, synth=synth, latency_cutoff=rtl_cfg.get("latency_cutoff"),
                         output=rtl_cfg.get("output"), out_elements=rtl_cfg.get("out_elements"),
                         top=rtl_cfg.get("top"), tlast=rtl_cfg.get("tlast"), log=log)
    return qonnx_to_rtl(onnx_path, out_dir, **rtl_options(rtl_cfg), clock_period_ns=board.clock_period_ns)


__all__ = ["FIT_BAND", "FIT_BAND_FOLD", "FOLDS", "PARALLELISMS", "SCREEN_MARGIN", "choose_form", "fit_board", "refusal",
           "rtl_for_config"]
