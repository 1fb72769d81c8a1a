"""Per-board hardware report: analytic estimate, open synthesis, vendor reports, latency, fit, I/O.

Hardware engineers compare boards before owning any vendor tool, so every figure that can be had without
one is here: the pre-synthesis estimate (``kdhw.hw.estimate``) and open synthesis of the generated RTL
(``kdhw.hw.synth``).  For Xilinx boards the report also writes a Vivado out-of-context synthesis script
(the package's ``templates/vivado_ooc_synth.tcl``, linked from ``hls/``, filled in); the reports it
produces, or an HLS ``csynth.xml`` of the hls4ml project, come back in through ``--vendor-report`` and are
shown beside the open figures.
"""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kdhw.boards import Board
from kdhw.errors import CheckFailed, InputError
from kdhw.util.atomic import atomic_dir, save_figure, write_json, write_text

from .estimate import estimate_design
from .rtl import load_meta
from .synth import XILINX_FAMILY, check_tools, synthesize, vivado_tcl

RESOURCES = ("lut", "ff", "dsp", "bram36")


def _norm_part(part: str | None) -> str | None:
    """Xilinx part names compare equal across tools: Vivado prints ``7z020clg400-1``, HLS ``xc7z020-clg400-1``."""
    if not part:
        return None
    p = part.strip().lower().replace("-", "")
    return p[2:] if p.startswith("xc") else p


def parse_vendor_report(path: str | Path) -> dict[str, Any]:
    """Resources (and latency or fmax) from the user's own vendor reports.

    Accepts a Vivado/Vitis HLS ``csynth.xml``, a Vivado ``report_utilization`` text report, or a folder
    holding either (the folder ``hls/vivado_ooc_synth.tcl`` writes also holds ``timing_summary.rpt``, whose
    WNS gives the achieved fmax; of its two utilization reports, the post-route ``utilization.rpt`` is read,
    not ``utilization_synth.rpt``).  Anything else is an InputError naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: vendor report not found")
    if p.is_dir():
        found = sorted(p.rglob("*csynth.xml")) or sorted(p.rglob("*util*.rpt"),
                                                          key=lambda q: (q.name != "utilization.rpt", str(q)))
        if not found:
            raise InputError(f"{p}: no *csynth.xml or Vivado *util*.rpt report found under this folder")
        p = found[0]
    if p.suffix.lower() == ".xml":
        return _parse_csynth(p)
    return _parse_vivado_utilization(p)


def _parse_csynth(p: Path) -> dict[str, Any]:
    try:
        root = ET.parse(p).getroot()
    except (OSError, ET.ParseError):
        raise InputError(f"{p}: not a readable Vivado/Vitis HLS csynth.xml report") from None

    def num(*tags: str) -> float | None:
        for t in tags:
            el = root.find(f".//AreaEstimates/Resources/{t}")
            if el is not None and el.text and el.text.strip().replace(".", "", 1).isdigit():
                return float(el.text)
        return None

    lat = root.find(".//PerformanceEstimates/SummaryOfOverallLatency")
    cyc = lat.findtext("Worst-caseLatency") if lat is not None else None
    ii = lat.findtext("Interval-max") if lat is not None else None
    est_clk = root.findtext(".//PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")
    bram18 = num("BRAM_18K")
    res = {"file": str(p), "kind": "HLS csynth.xml (hls4ml project)", "lut": num("LUT"), "ff": num("FF"),
           "dsp": num("DSP", "DSP48E"), "bram36": None if bram18 is None else bram18 / 2.0,
           "latency_cycles": int(cyc) if cyc and cyc.strip().isdigit() else None,
           "interval": int(ii) if ii and ii.strip().isdigit() else None,
           "part": root.findtext(".//UserAssignments/Part"),
           "clock_ns": _float(root.findtext(".//UserAssignments/TargetClockPeriod")),
           "fmax_mhz": None, "wns_ns": None}
    ec = _float(est_clk)
    if ec:
        res["fmax_mhz"] = 1000.0 / ec  # HLS's own estimate of the clock it reaches, not a timing closure
    if all(res[k] is None for k in RESOURCES):
        raise InputError(f"{p}: no AreaEstimates/Resources found; is this a csynth.xml report?")
    return res


def _float(text: str | None) -> float | None:
    try:
        return float(text.replace(",", "")) if text is not None else None
    except ValueError:
        return None


# first column of report_utilization's tables -> kdhw resource; 7-series spells LUTs "Slice", UltraScale "CLB"
_VIVADO_ROWS = {"slice luts": "lut", "clb luts": "lut", "slice registers": "ff", "clb registers": "ff",
                "dsps": "dsp", "block ram tile": "bram36", "uram": "uram"}


def _parse_vivado_utilization(p: Path) -> dict[str, Any]:
    try:
        text = p.read_text(errors="replace")
    except OSError:
        raise InputError(f"{p}: not readable") from None
    got: dict[str, float] = {}
    part = state = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("| Device") and ":" in s:
            part = s.split(":", 1)[1].strip() or None
            continue
        if s.startswith("| Design State") and ":" in s:  # Synthesized, Routed, ...
            state = s.split(":", 1)[1].strip() or None
            continue
        if not s.startswith("|"):
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if len(cells) < 2:
            continue
        key = _VIVADO_ROWS.get(cells[0].rstrip("*").strip().lower())
        val = _float(cells[1])
        if key and val is not None and key not in got:  # the summary table comes first; keep it
            got[key] = val
    if not any(k in got for k in ("lut", "ff")):
        raise InputError(f"{p}: not a Vivado report_utilization report (no 'Slice LUTs' / 'CLB LUTs' row), "
                         "nor a csynth.xml")
    routed = state is not None and state.lower() == "routed"
    res: dict[str, Any] = {"file": str(p), "kind": "Vivado report_utilization (" + ("placed and routed" if routed else
                                                                                    "RTL synthesis") + ")",
                           **{k: got.get(k) for k in RESOURCES}, "latency_cycles": None, "interval": None,
                           "part": part, "design_state": state, "clock_ns": None, "wns_ns": None, "fmax_mhz": None}
    timing = p.parent / "timing_summary.rpt"
    if timing.is_file():
        res.update(_parse_vivado_timing(timing))
    return res


def _parse_vivado_timing(p: Path) -> dict[str, Any]:
    """WNS and the clock period of a ``report_timing_summary`` file; fmax = 1000 / (period - WNS)."""
    lines = p.read_text(errors="replace").splitlines()
    wns = period = None
    for i, line in enumerate(lines):
        toks = line.split()
        if wns is None and toks[:1] == ["WNS(ns)"]:
            vals = [ln.split() for ln in lines[i + 1:i + 4] if ln.strip() and not ln.strip().startswith("-")]
            wns = _float(vals[0][0]) if vals else None
        if period is None and toks[:2] == ["Clock", "Waveform(ns)"]:
            for ln in lines[i + 2:i + 6]:
                if "}" in ln:
                    after = ln.split("}", 1)[1].split()
                    period = _float(after[0]) if after else None
                    break
    if wns is None or period is None:
        raise InputError(f"{p}: no WNS / clock period found; is this a report_timing_summary report?")
    return {"timing_file": str(p), "wns_ns": wns, "clock_ns": period,
            "fmax_mhz": 1000.0 / (period - wns) if period - wns > 0 else None}


def synth_flow_key(b: Board) -> str:
    """Boards with the same key get the same open-synthesis result (Xilinx: one yosys run per family)."""
    return XILINX_FAMILY.get(b.family, b.family) if b.vendor == "xilinx" else f"{b.family}:{b.part}"


def _pct(used: float | None, avail: float) -> float | None:
    return None if used is None or avail <= 0 else 100.0 * used / avail


def port_pins(meta: dict[str, Any]) -> dict[str, int]:
    """Pins of each port of the generated top (``rtl.json`` ports): what a board must route to pins."""
    return {name: int(p["width"]) if isinstance(p, dict) else 1 for name, p in meta["ports"].items()}


def io_budget(b: Board, rtl_meta: dict[str, Any] | None, par_bits: tuple[int, int]) -> dict[str, Any]:
    """Pins the generated top needs on ``b``, from its real ports; and the parallel form's figure beside it.

    ``par_bits``: (input, output) bits of the parallel form's ports (every element at once)."""
    pin, pout = par_bits
    par_total = pin + pout + 1  # + clock
    io: dict[str, Any] = {
        "pins": b.io_pins,
        "pins_needed_parallel": par_total, "fits_parallel": par_total <= b.io_pins,
        "serialization_factor": 1 if par_total <= b.io_pins else math.ceil((pin + pout) / max(b.io_pins - 1, 1)),
    }
    if rtl_meta is None:  # no RTL: the parallel form is what the estimate describes
        io.update(form="parallel", ports=None, pins_needed=par_total, fits=par_total <= b.io_pins, bits_in=pin,
                  bits_out=pout)
        return io
    ports = port_pins(rtl_meta)
    need = sum(ports.values())
    stream = rtl_meta.get("mode") == "stream"
    io.update(form="stream" if stream else "parallel", ports=ports, pins_needed=need, fits=need <= b.io_pins,
              bits_in=ports["s_axis_tdata" if stream else "model_inp"],
              bits_out=ports["m_axis_tdata" if stream else "model_out"])
    return io


def throughput(cycles: int | None, ii: int | None, clock_mhz: float | None) -> tuple[float | None, float | None]:
    """(latency in ns, frames per second) at a clock in MHz."""
    if not clock_mhz or cycles is None:
        return None, None
    return cycles * 1000.0 / clock_mhz, (clock_mhz * 1e6 / ii if ii else None)


def _board_entry(b: Board, est: dict[str, Any], syn: dict[str, Any] | None, vendor: dict[str, Any] | None,
                 rtl_meta: dict[str, Any] | None, par_bits: tuple[int, int], vivado_tcl: str | None) -> dict[str, Any]:
    """One board's figures.  Utilization and fit use the most trustworthy count at hand: the user's Vivado
    synthesis of this RTL, else open synthesis, else the analytic estimate.  An HLS csynth.xml describes the
    hls4ml project (another implementation of the same network), so it is shown beside, never as the basis."""
    avail = {"lut": b.lut, "ff": b.ff, "dsp": b.dsp, "bram36": b.bram36}
    basis, used = "estimate", {k: est.get(k) for k in RESOURCES}
    if syn and syn.get("lut") is not None:
        basis, used = "open synthesis", {k: syn.get(k) for k in RESOURCES}
    if vendor and vendor["kind"].startswith("Vivado"):
        basis = "Vivado place and route" if vendor.get("design_state") == "Routed" else "Vivado synthesis"
        used = {k: vendor.get(k) for k in RESOURCES}
    util = {k: _pct(used[k], avail[k]) for k in RESOURCES}
    fits = all(used[k] is None or used[k] <= avail[k] for k in RESOURCES)
    if basis == "open synthesis" and syn is not None and syn.get("fits") is False:
        fits = False  # place-and-route failed or used more cells than the part has (a missed clock is not this)
    if vendor is not None:
        vendor = {**vendor, "utilization_pct": {k: _pct(vendor.get(k), avail[k]) for k in RESOURCES},
                  "fits": all(vendor.get(k) is None or vendor[k] <= avail[k] for k in RESOURCES)}
    cycles = rtl_meta["latency_cycles"] if rtl_meta else None
    ii = int(rtl_meta.get("initiation_interval", 1)) if rtl_meta else None
    fmax, fmax_src = (syn.get("fmax_mhz"), "nextpnr") if syn and syn.get("fmax_mhz") else (None, None)
    if vendor and vendor["kind"].startswith("Vivado") and vendor.get("fmax_mhz"):
        fmax, fmax_src = vendor["fmax_mhz"], "Vivado timing summary" + (" (post-route)" if vendor.get(
            "design_state") == "Routed" else "")
    ns_b, fps_b = throughput(cycles, ii, b.clock_mhz)
    ns_f, fps_f = throughput(cycles, ii, fmax)
    return {
        "board": b.name, "part": b.part, "vendor": b.vendor, "family": b.family, "clock_mhz": b.clock_mhz,
        "available": avail, "mode": (rtl_meta or {}).get("mode"),
        "estimate": {**{k: est[k] for k in RESOURCES}, "lut_unit": est.get("lut_unit", "LUT6")},
        "synthesis": syn, "vendor_report": vendor,
        "utilization_basis": basis, "used": used, "utilization_pct": util, "fits": fits,
        "dsp_use": est.get("dsp_use") or [], "bram_use": est.get("bram_use") or [],
        "bram_unit": "EBR" if b.vendor == "lattice" else "RAMB36", "dsp_flow": est.get("dsp_flow"),
        "latency": {"cycles": cycles, "cycles_estimate": est["latency_cycles"], "initiation_interval": ii,
                    "ns_at_board_clock": ns_b, "frames_per_s_at_board_clock": fps_b,
                    "fmax_mhz": fmax, "fmax_source": fmax_src, "ns_at_fmax": ns_f, "frames_per_s_at_fmax": fps_f,
                    "meets_board_clock": None if not fmax else fmax >= b.clock_mhz},
        "io": io_budget(b, rtl_meta, par_bits), "vivado_tcl": vivado_tcl,
    }


def _rel(path: str | Path, base: Path) -> str:
    """Paths inside the run folder are stored relative to it: the folder is built under a temporary name
    and renamed, and users move run folders between machines."""
    p, b = Path(path).resolve(), base.resolve()
    return str(p.relative_to(b)) if p.is_relative_to(b) else str(p)


def _vendor_for(vendor: dict[str, Any] | None, boards: list[Board]) -> dict[str, Board]:
    """Boards the vendor report belongs to (same part; every Xilinx board when the report names none)."""
    if vendor is None:
        return {}
    part = _norm_part(vendor.get("part"))
    xil = [b for b in boards if b.vendor == "xilinx"]
    hit = [b for b in xil if part is None or _norm_part(b.part) == part]
    if not hit:
        raise InputError(f"{vendor['file']}: report is for part {vendor.get('part')}, which none of the boards "
                         f"given uses ({', '.join(f'{b.name}: {b.part}' for b in boards)})")
    return {b.name: b for b in hit}


def hardware_report(run_dir: str | Path, boards: list[Board], onnx_path: str | Path, rtl_dir: str | Path | None,
                    vendor_report: str | Path | None = None, synth: bool = True,
                    log: Any = print) -> dict[str, Any]:
    """Build the per-board report; write hw_report.{json,md,html}, one PNG per board, the open-synthesis
    logs under hw_synth/ and, per Xilinx board, hw_vivado_<board>.tcl for vendor synthesis, into run_dir.

    Every check that can fail on user input (boards, vendor report, tools) runs before any synthesis.
    """
    run_dir = Path(run_dir)
    if not boards:
        raise InputError("no board given; name at least one (kdhw boards lists them)")
    rtl_meta = load_meta(rtl_dir) if rtl_dir else None
    vendor = parse_vendor_report(vendor_report) if vendor_report else None
    if vendor is not None:
        vendor.update({k: _rel(vendor[k], run_dir) for k in ("file", "timing_file") if vendor.get(k)})
    vendor_boards = _vendor_for(vendor, boards)
    if synth and rtl_dir:
        check_tools(boards)
    ests = {b.name: estimate_design(onnx_path, rtl_meta, b) for b in boards}
    est0 = ests[boards[0].name]
    if rtl_meta:
        par_bits = (int(rtl_meta["input_bits_total"]), int(rtl_meta["output_bits_total"]))
    else:
        par_bits = (int(est0["features"]["input_bits"]), int(est0["features"]["output_bits"]))
    syn_by_flow: dict[str, dict[str, Any]] = {}
    if synth and rtl_dir:
        reused = _fit_synthesis(Path(rtl_dir), rtl_meta, run_dir)
        flows: dict[str, Board] = {}
        for b in sorted(boards, key=lambda b: b.name != (reused or {}).get("board")):
            flows.setdefault(synth_flow_key(b), b)
        log("[report] open synthesis: " + ", ".join(
            f"{b.name} ({key}{', from rtl.mode auto' if reused and b.name == reused['board'] else ''})"
            for key, b in flows.items()) + " ...")
        with atomic_dir(run_dir / "hw_synth") as td:
            def job(item: tuple[str, Board]) -> tuple[str, dict[str, Any]]:
                key, b = item
                if reused and b.name == reused["board"]:
                    return key, reused["synthesis"]
                sub = key.replace(":", "_")
                res = synthesize(rtl_dir, b, Path(td) / sub)
                return key, {**res, "logs": f"hw_synth/{sub}"}

            with ThreadPoolExecutor(2) as ex:
                syn_by_flow = dict(ex.map(job, flows.items()))
    tcls: dict[str, str] = {}
    if rtl_dir:
        for b in boards:
            if b.vendor == "xilinx":
                tcls[b.name] = vivado_tcl(rtl_dir, b, run_dir / f"hw_vivado_{b.name}.tcl").name
    entries = []
    for b in boards:
        syn = syn_by_flow.get(synth_flow_key(b))
        v = vendor if b.name in vendor_boards else None
        entries.append(_board_entry(b, ests[b.name], syn, v, rtl_meta, par_bits, tcls.get(b.name)))
    rep = {"model": _rel(onnx_path, run_dir), "rtl": _rel(rtl_dir, run_dir) if rtl_dir else None,
           "mode": (rtl_meta or {}).get("mode"), "estimate_formula": est0["formula"],
           "estimate_note": est0["note"], "fit": (rtl_meta or {}).get("fit"),
           "ports": port_pins(rtl_meta) if rtl_meta else None, "boards": entries}
    for e in entries:
        _plot(e, run_dir / f"hw_{e['board']}.png")
    write_json(run_dir / "hw_report.json", rep)
    write_text(run_dir / "hw_report.md", render_markdown(rep))
    write_text(run_dir / "hw_report.html", render_html(rep))
    return rep


def _fit_synthesis(rtl_dir: Path, meta: dict[str, Any] | None, run_dir: Path) -> dict[str, Any] | None:
    """The open synthesis ``rtl.mode: auto`` ran to confirm its choice, when it is of exactly these Verilog
    files: the report shows it for that board instead of running the same flow again."""
    fit = (meta or {}).get("fit") or {}
    syn = fit.get("synthesis")
    if not syn:
        return None
    import hashlib

    h = hashlib.sha256()
    for f in meta["verilog_files"]:
        h.update((rtl_dir / f).read_bytes())
    if h.hexdigest() != syn.get("verilog_sha256"):
        return None
    logs = _rel(rtl_dir / syn["logs"], run_dir) if syn.get("logs") else None
    return {"board": fit["board"], "synthesis": {k: v for k, v in syn.items() if k != "verilog_sha256"} | {
        "logs": logs, "reused_from": "rtl.mode auto (rtl.json fit)"}}


def require_fit(rep: dict[str, Any]) -> None:
    """Exit 1 (CheckFailed) naming each board and resource that does not fit."""
    bad = []
    for e in rep["boards"]:
        if not e["fits"]:
            over = [k for k, v in e["utilization_pct"].items() if v is not None and v > 100]
            bad.append(f"{e['board']} ({', '.join(over) or 'place-and-route failed'})")
    if bad:
        raise CheckFailed(f"design does not fit: {'; '.join(bad)}")


def _plot(e: dict[str, Any], path: Path) -> None:
    """Bar chart of utilization (%) per resource, one bar per source of figures, 100 % line in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"estimate": e["estimate"]}
    if e["synthesis"] and e["synthesis"].get("lut") is not None:
        series["open synthesis"] = e["synthesis"]
    if e["vendor_report"]:
        series["Vivado" if e["vendor_report"]["kind"].startswith("Vivado") else "HLS csynth"] = e["vendor_report"]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    w = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ys = [100.0 * (vals.get(k) or 0) / e["available"][k] if e["available"][k] else 0 for k in RESOURCES]
        ax.bar([j + i * w for j in range(len(RESOURCES))], ys, w, label=name)
    ax.axhline(100, color="r", lw=1, ls="--")
    ax.set_xticks([j + w * (len(series) - 1) / 2 for j in range(len(RESOURCES))], ["LUT", "FF", "DSP", "BRAM"])
    ax.set_ylabel("utilization (%)")
    ax.set_title(f"{e['board']} ({e['part']}): {'fits' if e['fits'] else 'DOES NOT FIT'}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v.is_integer() and nd == 0:
        return f"{int(v):,}"
    return f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}"


def _blocks(v: Any) -> str:
    """A block RAM count: whole blocks as integers, RAMB18 halves (Xilinx counts in RAMB36) with one decimal."""
    if v is None:
        return "—"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def _fps(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in rep["boards"]:
        s = e["synthesis"] or {}
        lat = e["latency"]
        io = e["io"]
        dsp_used = e["used"]["dsp"]
        bram_used = e["used"]["bram36"]
        rows.append([
            e["board"], _f(e["estimate"]["lut"]), _f(s.get("lut")), _f(s.get("ff")),
            f"{_f(dsp_used, 0) if dsp_used is not None else '—'} / {e['available']['dsp']:,}",
            f"{_blocks(bram_used)} / {_blocks(e['available']['bram36'])} {e.get('bram_unit', 'RAMB36')}",
            f"{_f(e['utilization_pct']['lut'])} % ({e['utilization_basis']})",
            _f(lat["fmax_mhz"]) + (f" ({lat['fmax_source']})" if lat["fmax_source"] else "")
            + (f", misses the board clock ({e['clock_mhz']:g} MHz)" if lat["meets_board_clock"] is False else ""),
            f"{lat['cycles'] if lat['cycles'] is not None else '—'} / {_f(lat['ns_at_board_clock'])} / "
            f"{_f(lat['ns_at_fmax'])}",
            f"{lat['initiation_interval'] if lat['initiation_interval'] is not None else '—'} / "
            f"{_fps(lat['frames_per_s_at_board_clock'])} / {_fps(lat['frames_per_s_at_fmax'])}",
            "yes" if e["fits"] else "**no**",
            f"{io['pins_needed']} / {io['pins']}" + ("" if io["fits"] else " (**no**)"),
        ])
    return rows


HEAD = ["board", "est. LUT", "synth LUT", "synth FF", "DSP used / board", "BRAM used / board", "LUT util", "fmax MHz",
        "latency: cycles / ns at board clock / ns at fmax", "II cycles / frames/s at board clock / at fmax", "fits",
        "pins needed / available"]


def _io_note(io: dict[str, Any]) -> str:
    if io["form"] == "stream":
        p = io["ports"]
        return (f"I/O (stream top's ports): s_axis_tdata {p['s_axis_tdata']} + m_axis_tdata {p['m_axis_tdata']} bits "
                f"+ {io['pins_needed'] - p['s_axis_tdata'] - p['m_axis_tdata']} control pins (clk, aresetn, "
                f"tvalid/tready/tlast of each stream, tlast_err) = {io['pins_needed']} pins; the board has "
                f"{io['pins']} user I/O: {'fits' if io['fits'] else 'does NOT fit'}. The parallel form would need "
                f"{io['pins_needed_parallel']}.")
    text = (f"I/O (parallel ports): {io['bits_in']} input + {io['bits_out']} output bits + clock = "
            f"{io['pins_needed']} pins; the board has {io['pins']} user I/O")
    if io["fits"]:
        return text + ". Fits in parallel."
    return (text + f": serialize ×{io['serialization_factor']} (shift registers at the ports), keep the core on-chip "
            "behind a bus, or generate the stream form (`kdhw rtl --mode stream`, or `--mode auto --board B`).")


def _dsp_note(e: dict[str, Any]) -> str | None:
    used = e["used"]["dsp"]
    uses = e.get("dsp_use") or []
    if not uses:
        return (f"DSP: {_f(used, 0) if used is not None else 0} used of {e['available']['dsp']:,}; the RTL is "
                "shift-and-add logic (da4ml), no multiplier.") if used else None
    what = "; ".join(u["what"] for u in uses)
    n = sum(u["multipliers"] for u in uses)
    if e["family"] == "ice40":
        if e.get("dsp_flow") == "synth_ice40 -dsp":
            return (f"DSP: {_f(used, 0) if used is not None else 0} used ({e['utilization_basis']}) of "
                    f"{e['available']['dsp']:,} SB_MAC16, estimate {e['estimate']['dsp']}. The design has {n} "
                    f"multiplier(s): {what}; they fit the part's SB_MAC16s, so yosys runs synth_ice40 -dsp, which "
                    "puts a product of at least 11 bits into an SB_MAC16 and builds smaller ones from logic cells.")
        return (f"DSP: {_f(used, 0) if used is not None else 0} used of {e['available']['dsp']:,}. The design has {n} "
                f"multiplier(s): {what}; more than the part's SB_MAC16s, so yosys synth_ice40 (no -dsp) builds them "
                "from logic cells, and they are in the LUT count.")
    return (f"DSP: {_f(used, 0) if used is not None else '—'} used ({e['utilization_basis']}) of "
            f"{e['available']['dsp']:,} on the board, estimate {e['estimate']['dsp']}: {what}. yosys puts a multiplier "
            "into a DSP block when both operands have at least 2 bits (on Xilinx also a product of at least 9 bits); "
            "smaller ones become logic, as does everything else (shift-and-add).")


def _bram_note(e: dict[str, Any]) -> str | None:
    """Which memories take block RAM (folded layers' weights and accumulators) and how many blocks, against
    the board's total."""
    uses = e.get("bram_use") or []
    used = e["used"]["bram36"]
    unit = e.get("bram_unit", "RAMB36")
    fam = e["family"] if e["family"] in ("ice40", "ecp5") else "xc7"
    prim = {"ice40": "SB_RAM40_4K (4 kbit)", "ecp5": "DP16KD (18 kbit)"}.get(fam, "RAMB18 / RAMB36 (18 / 36 kbit; a "
                                                                                  "RAMB18 counts as half)")
    if not uses:
        return (f"BRAM: {_blocks(used)} {unit} used ({e['utilization_basis']}) of "
                f"{_blocks(e['available']['bram36'])}: FIFOs or weight ROMs that yosys puts in block RAM.") if used else None
    what = "; ".join(f"{u['unit']} {u['what']} {u['words']:,} x {u['bits']} bits"
                     + (" in logic (memory: lut)" if u["style"] == "lut" else
                        f" -> {_blocks(u['blocks'][fam])} {unit}") for u in uses)
    pct = e["utilization_pct"]["bram36"]
    return (f"BRAM: {_blocks(used)} {unit} used ({e['utilization_basis']}) of {_blocks(e['available']['bram36'])} "
            "on the board" + (f" ({_f(pct)} %)" if pct is not None else "")
            + f", estimate {_blocks(e['estimate']['bram36'])}: {what}. Block RAM primitive: {prim}; yosys tiles each "
            "memory with the fewest blocks.")


def _board_notes(e: dict[str, Any]) -> list[str]:
    s = e["synthesis"]
    lines = []
    if s:
        parts = [f"Open synthesis: {s.get('tool', '—')}", s.get("note") or "",
                 f"failed: {s['error']}" if s.get("error") else "", f"logs in `{s['logs']}/`" if s.get("logs") else "",
                 f"re-used from {s['reused_from']}" if s.get("reused_from") else ""]
        lines.append("; ".join(p for p in parts if p) + ".")
    else:
        lines.append("No open synthesis run (no RTL, or --no-synth); figures are the analytic estimate.")
    if e["estimate"].get("lut_unit") == "LUT4":
        lines.append("The LUT estimate is in logic cells (LUT4 + flip-flop) for this Lattice part: the LUT6 and FF "
                     "figures converted with ratios measured on open synthesis (kdhw.hw.estimate.LATTICE_CELLS).")
    lat = e["latency"]
    if lat["cycles"] is not None:
        ii = lat.get("initiation_interval") or 1
        at = (f"{_f(lat['ns_at_board_clock'])} ns and {_fps(lat['frames_per_s_at_board_clock'])} frames/s at the "
              f"board's {e['clock_mhz']:g} MHz")
        if lat["fmax_mhz"]:
            at += (f"; {_f(lat['ns_at_fmax'])} ns and {_fps(lat['frames_per_s_at_fmax'])} frames/s at the achieved "
                   f"{_f(lat['fmax_mhz'])} MHz "
                   + ("(meets the board clock)" if lat["meets_board_clock"] else
                      "(misses the board clock: a deeper pipeline, `kdhw rtl --latency-cutoff` lower, or a "
                      "slower clock; fit is decided on resources)"))
        lines.append(f"Latency {lat['cycles']} cycles (estimate {lat['cycles_estimate']}); "
                     + ("a new input every cycle (II = 1)" if ii == 1 else
                        f"a new frame every {ii} cycles (II = {ii}, AXI4-Stream core)") + f": {at}.")
    else:
        lines.append(f"Latency, estimated: {lat['cycles_estimate']} cycles (no RTL generated).")
    dsp = _dsp_note(e)
    if dsp:
        lines.append(dsp)
    bram = _bram_note(e)
    if bram:
        lines.append(bram)
    lines.append(_io_note(e["io"]))
    v = e["vendor_report"]
    if v:
        lines.append(f"{v['kind']} `{v['file']}`: LUT {_f(v['lut'], 0)}, FF {_f(v['ff'], 0)}, DSP {_f(v['dsp'], 0)}, "
                     f"BRAM36 {_f(v['bram36'])}" + (f", latency {v['latency_cycles']} cycles" if v["latency_cycles"]
                                                   is not None else "")
                     + (f", fmax {_f(v['fmax_mhz'])} MHz" if v.get("fmax_mhz") else "")
                     + f"; {'fits' if v['fits'] else 'does NOT fit'}.")
    if e["vivado_tcl"]:
        lines.append(f"Vendor numbers: `vivado -mode batch -source {e['vivado_tcl']}` (out-of-context synthesis, "
                     f"placement and routing of this RTL for {e['part']}), then `kdhw report DIR --board {e['board']} "
                     f"--vendor-report "
                     f"DIR/vivado_{e['board']}`.")
    return lines


FIT_HEAD = ["candidate", "II", "latency", "pins", "est. LUT / FF / DSP / BRAM", "synth LUT / FF / DSP / BRAM",
            "fmax MHz", "verdict"]


def _fit_rows(fit: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in fit["candidates"]:
        s = c["synthesis"] or {}
        est = c["estimate"]
        rows.append([c["label"], str(c["initiation_interval"]), str(c["latency_cycles"]), str(c["pins"]),
                     f"{est['lut']:,} / {est['ff']:,} / {est['dsp']} / {_blocks(est.get('bram36'))}",
                     f"{_f(s.get('lut'))} / {_f(s.get('ff'))} / {_f(s.get('dsp'))} / {_blocks(s.get('bram36'))}"
                     if s else "—",
                     _f(s.get("fmax_mhz")), f"{c['verdict']}" + (f": {c['why']}" if c["why"] else "")])
    return rows


def _fit_intro(fit: dict[str, Any]) -> str:
    return (f"`rtl.mode: auto` for {fit['board']} ({fit['clock_mhz']:g} MHz) chose **{fit['chosen']}**: the least "
            f"folded candidate (lowest II, then fewest LUTs) that fits the board's LUT/FF/DSP/BRAM and pins"
            + (" and meets its clock (nextpnr)" if fit["clock_checked"] else
               "" if "no synthesis" in fit["method"] else " (clock not checked: no open timing model for this part)")
            + f". Judged by {fit['method']}; estimates above the board by more than the screening margin are not "
            "synthesized.")


def render_markdown(rep: dict[str, Any]) -> str:
    lines = ["# kdhw hardware report", "",
             f"Model `{rep['model']}`; RTL `{rep['rtl']}`" + (f" ({rep['mode']} form)" if rep.get("mode") else "") + ".",
             "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(rep)]
    lines += ["", f"Estimate formula: `{rep['estimate_formula']}`. {rep['estimate_note']}", ""]
    fit = rep.get("fit")
    if fit:
        lines += ["## Fitting the board (rtl.mode: auto)", "", _fit_intro(fit), "",
                  "| " + " | ".join(FIT_HEAD) + " |", "|" + "---|" * len(FIT_HEAD)]
        lines += ["| " + " | ".join(r) + " |" for r in _fit_rows(fit)]
        lines.append("")
    for e in rep["boards"]:
        lines += [f"## {e['board']}", ""]
        lines += [f"- {t}" for t in _board_notes(e)]
        lines += ["", f"![{e['board']} utilization](hw_{e['board']}.png)", ""]
    return "\n".join(lines) + "\n"


def render_html(rep: dict[str, Any]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in r) + "</tr>" for r in _rows(rep))
    fit = rep.get("fit")
    fit_html = ""
    if fit:
        fit_html = (f"<h2>Fitting the board (rtl.mode: auto)</h2><p>{esc(_fit_intro(fit).replace('`', '').replace('**', ''))}"
                    "</p><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in FIT_HEAD) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _fit_rows(fit))
                    + "</table>")
    boards = "".join(
        f"<h2>{esc(e['board'])}</h2><ul>" + "".join(f"<li>{esc(t.replace('`', ''))}</li>" for t in _board_notes(e))
        + f"</ul><img src='hw_{esc(e['board'])}.png' alt='{esc(e['board'])} utilization'>" for e in rep["boards"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kdhw hardware report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}</style></head><body>"
            f"<h1>kdhw hardware report</h1><p>Model {esc(rep['model'])}</p><table><tr>{head}</tr>{body}</table>"
            f"<p>Estimate formula: <code>{esc(rep['estimate_formula'])}</code>. {esc(rep['estimate_note'])}</p>"
            f"{fit_html}{boards}</body></html>\n")
