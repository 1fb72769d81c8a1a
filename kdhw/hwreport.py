"""Per-board hardware report: analytic estimate, open synthesis, vendor HLS reports, latency, fit, I/O.

Hardware engineers compare boards before owning any vendor tool, so every figure that can be had without
one is here: the pre-synthesis estimate (``kdhw.estimate``), open synthesis of the generated RTL
(``kdhw.synth``), and, when given, the user's own Vivado/Vitis HLS report parsed from ``csynth.xml``.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .atomic import write_json, write_text
from .boards import Board
from .errors import CheckFailed, InputError
from .estimate import estimate
from .synth import XILINX_FAMILY, synthesize

RESOURCES = ("lut", "ff", "dsp", "bram36")


def parse_vendor_report(path: str | Path) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM and latency from a Vivado/Vitis HLS ``csynth.xml`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.rglob("*csynth.xml"))
        if not found:
            raise InputError(f"{p}: no *csynth.xml report found under this folder")
        p = found[0]
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
    bram18 = num("BRAM_18K")
    res = {"file": str(p), "lut": num("LUT"), "ff": num("FF"), "dsp": num("DSP", "DSP48E"),
           "bram36": None if bram18 is None else bram18 / 2.0,
           "latency_cycles": int(cyc) if cyc and cyc.isdigit() else None,
           "interval": int(ii) if ii and ii.isdigit() else None,
           "part": root.findtext(".//UserAssignments/Part"),
           "clock_ns": root.findtext(".//UserAssignments/TargetClockPeriod")}
    if all(res[k] is None for k in RESOURCES):
        raise InputError(f"{p}: no AreaEstimates/Resources found; is this a csynth.xml report?")
    return res


def _flow_key(b: Board) -> str:
    return XILINX_FAMILY.get(b.family, b.family) if b.vendor == "xilinx" else f"{b.family}:{b.part}"


def _pct(used: float | None, avail: float) -> float | None:
    return None if used is None or avail <= 0 else 100.0 * used / avail


def _board_entry(b: Board, est: dict[str, Any], syn: dict[str, Any] | None, vendor: dict[str, Any] | None,
                 rtl_meta: dict[str, Any] | None, io_bits: tuple[int, int]) -> dict[str, Any]:
    avail = {"lut": b.lut, "ff": b.ff, "dsp": b.dsp, "bram36": b.bram36}
    basis, used = "estimate", {k: est.get(k) for k in RESOURCES}
    if syn and syn.get("lut") is not None:
        basis, used = "open synthesis", {k: syn.get(k) for k in RESOURCES}
    util = {k: _pct(used[k], avail[k]) for k in RESOURCES}
    fits = all(used[k] is None or used[k] <= avail[k] for k in RESOURCES)
    if syn is not None and syn.get("fits") is False:
        fits = False
    cycles = rtl_meta["latency_cycles"] if rtl_meta else None
    fmax = syn.get("fmax_mhz") if syn else None
    bits_in, bits_out = io_bits
    total = bits_in + bits_out + 1  # + clock
    io = {"bits_in": bits_in, "bits_out": bits_out, "pins_needed_parallel": total, "pins": b.io_pins,
          "fits_parallel": total <= b.io_pins,
          "serialization_factor": 1 if total <= b.io_pins else math.ceil((bits_in + bits_out) / max(b.io_pins - 1, 1))}
    return {
        "board": b.name, "part": b.part, "vendor": b.vendor, "clock_mhz": b.clock_mhz, "available": avail,
        "estimate": {k: est[k] for k in RESOURCES}, "synthesis": syn, "vendor_report": vendor,
        "utilization_basis": basis, "utilization_pct": util, "fits": fits,
        "latency": {"cycles": cycles, "ns_at_board_clock": None if cycles is None else cycles * b.clock_period_ns,
                    "fmax_mhz": fmax, "ns_at_fmax": None if not (cycles and fmax) else cycles * 1000.0 / fmax},
        "io": io,
    }


def hardware_report(run_dir: str | Path, boards: list[Board], onnx_path: str | Path, rtl_dir: str | Path | None,
                    vendor_report: str | Path | None = None, synth: bool = True,
                    log: Any = print) -> dict[str, Any]:
    """Build the per-board report and write hw_report.{json,md,html} + one PNG per board into run_dir."""
    run_dir = Path(run_dir)
    if not boards:
        raise InputError("no board given; name at least one (kdhw boards lists them)")
    rtl_meta = json.loads((Path(rtl_dir) / "rtl.json").read_text()) if rtl_dir else None
    vendor = parse_vendor_report(vendor_report) if vendor_report else None
    est0 = estimate(onnx_path)
    if rtl_meta:
        io_bits = (int(rtl_meta["input_bits_total"]), int(rtl_meta["output_bits_total"]))
    else:
        from .export import input_format, input_shape, load_qonnx

        mw = load_qonnx(onnx_path)
        n_out = int(mw.get_tensor_shape(mw.graph.output[0].name)[-1])
        io_bits = (input_format(mw)[0] * int(math.prod(input_shape(mw))), 8 * n_out)
    syn_by_flow: dict[str, dict[str, Any]] = {}
    if synth and rtl_dir:
        flows: dict[str, Board] = {}
        for b in boards:
            flows.setdefault(_flow_key(b), b)
        with tempfile.TemporaryDirectory(prefix="kdhw-synth-") as td:
            def job(item: tuple[str, Board]) -> tuple[str, dict[str, Any]]:
                key, b = item
                log(f"[report] open synthesis for {b.name} ({key}) ...")
                return key, synthesize(rtl_dir, b, Path(td) / key.replace(":", "_"))

            with ThreadPoolExecutor(2) as ex:
                syn_by_flow = dict(ex.map(job, flows.items()))
    entries = []
    for b in boards:
        syn = syn_by_flow.get(_flow_key(b))
        v = vendor if vendor and (vendor.get("part") in (None, b.part)) else None
        entries.append(_board_entry(b, est0, syn, v, rtl_meta, io_bits))
    rep = {"model": str(onnx_path), "rtl": str(rtl_dir) if rtl_dir else None, "estimate_formula": est0["formula"],
           "boards": entries}
    for e in entries:
        _plot(e, run_dir / f"hw_{e['board']}.png")
    write_json(run_dir / "hw_report.json", rep)
    write_text(run_dir / "hw_report.md", render_markdown(rep))
    write_text(run_dir / "hw_report.html", render_html(rep))
    return rep


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"estimate": e["estimate"]}
    if e["synthesis"] and e["synthesis"].get("lut") is not None:
        series["open synthesis"] = e["synthesis"]
    if e["vendor_report"]:
        series["vendor HLS"] = e["vendor_report"]
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
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}"


def _rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in rep["boards"]:
        s = e["synthesis"] or {}
        lat = e["latency"]
        rows.append([
            e["board"], _f(e["estimate"]["lut"]), _f(s.get("lut")), _f(s.get("ff")),
            f"{_f(e['utilization_pct']['lut'])} %", _f(s.get("fmax_mhz")),
            f"{lat['cycles'] if lat['cycles'] is not None else '—'} / {_f(lat['ns_at_board_clock'])} ns",
            "yes" if e["fits"] else "**no**",
            f"{e['io']['pins_needed_parallel']} / {e['io']['pins']}"
            + ("" if e["io"]["fits_parallel"] else f" (serialize ×{e['io']['serialization_factor']})"),
        ])
    return rows


HEAD = ["board", "est. LUT", "synth LUT", "synth FF", "LUT util", "fmax MHz", "latency cycles / at board clock",
        "fits", "I/O pins needed / available"]


def render_markdown(rep: dict[str, Any]) -> str:
    lines = ["# kdhw hardware report", "", f"Model `{rep['model']}`; RTL `{rep['rtl']}`.", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(rep)]
    lines += ["", f"Estimate formula: `{rep['estimate_formula']}`", ""]
    for e in rep["boards"]:
        s = e["synthesis"]
        note = (s or {}).get("note") or (s or {}).get("error") or "no open synthesis run"
        lines += [f"## {e['board']}", "", f"Tool: {(s or {}).get('tool', '—')}. {note}.", "",
                  f"![{e['board']} utilization](hw_{e['board']}.png)", ""]
        if e["vendor_report"]:
            v = e["vendor_report"]
            lines += [f"Vendor HLS report `{v['file']}`: LUT {_f(v['lut'])}, FF {_f(v['ff'])}, DSP {_f(v['dsp'])}, "
                      f"BRAM36 {_f(v['bram36'])}, latency {v['latency_cycles']} cycles.", ""]
    return "\n".join(lines) + "\n"


def render_html(rep: dict[str, Any]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in r) + "</tr>" for r in _rows(rep))
    imgs = "".join(f"<h2>{esc(e['board'])}</h2><img src='hw_{esc(e['board'])}.png' alt='utilization'>"
                   for e in rep["boards"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kdhw hardware report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}</style></head><body>"
            f"<h1>kdhw hardware report</h1><p>Model {esc(rep['model'])}</p><table><tr>{head}</tr>{body}</table>"
            f"<p>Estimate formula: <code>{esc(rep['estimate_formula'])}</code></p>{imgs}</body></html>\n")
