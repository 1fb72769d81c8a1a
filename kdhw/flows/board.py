"""``kdhw board``: from a verified stream core to a bitstream a board runs, proved in simulation at its pins.

A flow, not a stage: it builds with ``kdhw.hw.board`` and proves with ``kdhw.verify.board_sim``.

``build_board(src, board)`` (``kdhw board SRC --board B``):

1. the core: ``src`` is a stream RTL folder (``kdhw rtl --mode stream``) or a run folder; a run whose
   ``rtl/`` is parallel gets a stream core generated from its ``student.qonnx.onnx`` (default stream
   options) into the board folder.  A parallel RTL folder is refused: it has no handshake to put a link on;
   the user regenerates it with ``--mode stream`` (or ``--mode auto --board B``);
2. the board top (``kdhw.hw.board.top``): the core behind a framed UART link on the board's real pins (``boards/*.yaml``
   ``pins``), button and power-on reset, status LEDs; constraints (``kdhw.hw.board.constraints``);
3. yosys -> nextpnr -> icepack / ecppack (``kdhw.hw.board.flow``): the bitstream, its fmax against the board clock;
4. the board-level simulation (``kdhw.verify.board_sim``): ``sim_rows`` frames through the UART pins bit-exact with the
   QONNX reference, corrupt frames answered as documented, a reset mid-frame;
5. iCE40: the bitstream decoded back to a netlist (iceunpack + icebox_vlog) and ``bitstream_rows`` frames
   through that netlist, bit-exact: the check covers what the board loads, not only the RTL.

``kdhw.hw.board.Link`` is the host driver for the board this makes.  ``docs/board.md`` has the protocol.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.boards import Board, load_board
from kdhw.errors import CheckFailed, InputError
from kdhw.util.atomic import atomic_dir, write_json, write_text

from kdhw.hw.board.link import DEFAULT_BAUD, frames_per_s, reply_len, request_len
from kdhw.hw.board.top import LED_ROLES, POR_BITS, baud_error, frame_bytes, link_params

OPEN_FAMILIES = ("ice40", "ecp5")
DEFAULT_SIM_ROWS = 200
DEFAULT_BITSTREAM_ROWS = 20
# An 8N1 receiver samples mid-bit: the bit period may be off by under ~5 % over ten bits; keep margin
MAX_BAUD_ERROR = 0.02

__all__ = ["build_board", "check_board", "resolve_source"]


def check_board(name: str) -> Board:
    """The board, if kdhw can build a bitstream for it: an open flow (iCE40, ECP5) and pin data."""
    board = load_board(name)
    if board.vendor != "lattice" or board.family not in OPEN_FAMILIES:
        raise InputError(f"board {name}: no open bitstream flow for {board.vendor} {board.family} (kdhw board builds "
                         f"for {', '.join(OPEN_FAMILIES)} boards: icebreaker, ulx3s-85f); for Xilinx boards use the "
                         "Vivado script kdhw report writes")
    if not board.pins:
        raise InputError(f"board {name}: boards/{name}.yaml has no pins (clk, uart_rx, uart_tx, button, led0...); add "
                         "them, each with its source, to build a bitstream")
    return board


def resolve_source(src: str | Path) -> dict[str, Any]:
    """What ``src`` is: ``{"kind": "rtl"|"run", "rtl": stream RTL dir or None, "model": QONNX path,
    "inputs": verification inputs path or None}``; one line naming what to do for anything else."""
    from kdhw.hw.rtl import load_meta

    src = Path(src)
    if (src / "rtl.json").is_file():
        meta = load_meta(src)
        if meta.get("mode") != "stream":
            raise InputError(f"{src}: an RTL folder in parallel form has no handshake for a board link; generate a "
                             "stream core: kdhw rtl M.onnx --out D --mode stream (or --mode auto --board B)")
        model = src / str(meta.get("model_file") or "model.qonnx.onnx")
        if not model.is_file():
            raise InputError(f"{src}: no copy of the QONNX model ({model.name}) to check the board against; "
                             "regenerate the folder with kdhw rtl")
        return {"kind": "rtl", "rtl": src, "model": model, "inputs": None}
    if (src / "student.qonnx.onnx").is_file():
        rtl = src / "rtl"
        stream = (rtl / "rtl.json").is_file() and load_meta(rtl).get("mode") == "stream"
        inputs = src / "verify_inputs.npy"
        return {"kind": "run", "rtl": rtl if stream else None, "model": src / "student.qonnx.onnx",
                "inputs": inputs if inputs.is_file() else None}
    raise InputError(f"{src}: neither a run folder (student.qonnx.onnx) nor an RTL folder (rtl.json)")


def _inputs(meta: dict[str, Any], given: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """Rows to check: ``given`` (the run's verification inputs, or the user's), else floats drawn over the
    input format's range and a little beyond (rounding and saturation are exercised too)."""
    from kdhw.hw.rtl._formats import FixedFormat

    shape = tuple(meta.get("input_shape", [meta["n_inputs"]]))
    if given is not None:
        x = np.asarray(given)
        if x.ndim >= 2 and x.shape[1:] != shape and x[0].size == int(meta["n_inputs"]):
            x = x.reshape(len(x), *shape)
        return x[:n]
    f = FixedFormat.from_json(meta["input_format"])
    lo, hi = f.lo * f.scale, f.hi * f.scale
    span = hi - lo
    rng = np.random.default_rng(seed)
    return rng.uniform(lo - 0.05 * span, hi + 0.05 * span, size=(n, *shape)).astype(np.float32)


def _netlist_params(meta: dict[str, Any], board: Board, baud: int) -> dict[str, int]:
    p = link_params(meta, board.clock_mhz * 1e6, baud)
    return {"CLKS_PER_BIT": p["CLKS_PER_BIT"], "TIMEOUT_CYCLES": p["TIMEOUT_CYCLES"], "POR_BITS": POR_BITS}


def build_board(src: str | Path, board_name: str, out: str | Path | None = None, baud: int = DEFAULT_BAUD,
                sim_rows: int = DEFAULT_SIM_ROWS, bitstream_rows: int = DEFAULT_BITSTREAM_ROWS,
                simulator: str = "icarus", netlist_simulator: str = "verilator", inputs: np.ndarray | None = None,
                seed: int = 1, progress: Any = None) -> dict[str, Any]:
    """Build and prove a board folder (default ``src/board_<board>``); returns board.json's content.

    Raises ``InputError`` (exit 2) for a board without an open flow or pins and for a source that is not a
    stream core or a run; ``CheckFailed`` (exit 1) for a design that does not fit or misses the clock, and for
    any simulation that is not bit-exact.  Nothing is written unless everything passed.
    """
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import input_codes, load_meta, output_codes, qonnx_to_rtl
    from kdhw.verify.sim.runner import check_simulator

    from kdhw.hw.board import constraints, flow, top
    from kdhw.verify.board_sim import SIM_PARAMS, simulate_board

    say = progress or (lambda *_: None)
    board = check_board(board_name)
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise InputError(f"baud = {baud!r} must be a positive integer (bits per second)")
    clock_hz = board.clock_mhz * 1e6
    if clock_hz / baud < 4:
        raise InputError(f"baud = {baud}: the {board.clock_mhz:g} MHz clock gives under 4 clocks per bit; at most "
                         f"{int(clock_hz // 4)}")
    err = baud_error(clock_hz, baud)
    if err > MAX_BAUD_ERROR:
        raise InputError(f"baud = {baud}: {board.clock_mhz:g} MHz / {round(clock_hz / baud)} clocks per bit is "
                         f"{100 * err:.1f} % off; choose a rate the clock divides more evenly (e.g. 115200)")
    for name, v, lo in (("sim_rows", sim_rows, 1), ("bitstream_rows", bitstream_rows, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"{name} = {v!r} must be an integer >= {lo}")
    srcinfo = resolve_source(src)
    flow.tool_commands(board)
    check_simulator(simulator)
    if board.family == "ice40" and bitstream_rows:
        check_simulator(netlist_simulator)
        from kdhw.hw import synth

        synth.ice40_decompilers()
    out = Path(out) if out is not None else Path(src) / f"board_{board.name}"
    t_all = time.perf_counter()
    with atomic_dir(out) as tmp:
        # 1. the core
        core = tmp / "core"
        if srcinfo["rtl"] is not None:
            # not hidden build folders, not earlier board folders (the default output lives inside the RTL folder)
            shutil.copytree(srcinfo["rtl"], core, ignore=shutil.ignore_patterns(".*", "board_*"))
            core_note = f"copied from {srcinfo['rtl']}"
        else:
            say("generating a stream core from student.qonnx.onnx")
            qonnx_to_rtl(srcinfo["model"], core, mode="stream")
            core_note = (f"generated here from {srcinfo['model']} with kdhw rtl --mode stream defaults (the run's "
                         "rtl/ is in parallel form, which has no handshake for the link)")
        meta = load_meta(core)
        # 2. board top and constraints
        (tmp / "hdl").mkdir()
        write_text(tmp / "hdl" / "kdhw_uart.v", top.UART_V)
        write_text(tmp / "hdl" / "kdhw_link.v", top.LINK_V)
        write_text(tmp / "hdl" / "kdhw_board.v", top.board_verilog(board, meta, clock_hz, baud))
        con_name, con_text = constraints.constraints(board)
        write_text(tmp / con_name, con_text)
        # 3. bitstream
        say(f"yosys -> nextpnr -> {'icepack' if board.family == 'ice40' else 'ecppack'} for {board.name}")
        rel = [f"core/{f}" for f in meta["verilog_files"]] + [f"hdl/{f}" for f in
                                                               ("kdhw_uart.v", "kdhw_link.v", "kdhw_board.v")]
        bit = flow.build_bitstream(tmp, board, rel, con_name, seed=seed)
        # 4. board-level simulation against the QONNX reference
        given = inputs if inputs is not None else (np.load(srcinfo["inputs"]) if srcinfo["inputs"] else None)
        n = max(sim_rows, bitstream_rows)
        x = _inputs(meta, given, n, seed)
        if len(x) < sim_rows:
            raise InputError(f"only {len(x)} input rows to simulate; sim_rows = {sim_rows}")
        mw = load_qonnx(srcinfo["model"])
        exp = output_codes(meta, reference(mw, x))
        codes = input_codes(meta, x)
        leds = board.leds()
        roles = list(LED_ROLES[:len(leds)])
        low = [p.active_low for p in leds]
        btn_low = board.pin_map()["button"].active_low
        say(f"board-level simulation ({simulator}): {sim_rows} frames through the UART pins")
        sim = simulate_board(tmp, meta, codes[:sim_rows], exp[:sim_rows], roles, low, btn_low, simulator,
                             work=tmp / "build" / "sim")
        if not sim["ok"]:
            raise CheckFailed(_sim_failure("board-level simulation", sim))
        # 5. the bitstream itself (iCE40)
        bsim: dict[str, Any] | None = None
        if board.family == "ice40" and bitstream_rows:
            say(f"bitstream -> netlist (iceunpack + icebox_vlog) -> {netlist_simulator}: {bitstream_rows} frames")
            plain = tmp / "build" / "plain.pcf"
            plain.write_text(constraints.pcf_plain(board))
            net = flow.decompile_ice40(tmp, bit["bitstream"], "build/plain.pcf")
            nl = {"sources": [net, flow.ice40_cells_sim()], "top": "kdhw_board_bits",
                  "params": _netlist_params(meta, board, baud)}
            bsim = simulate_board(tmp, meta, codes[:bitstream_rows], exp[:bitstream_rows], roles, low, btn_low,
                                  netlist_simulator, protocol=True, netlist=nl, work=tmp / "build" / "sim")
            if not bsim["ok"]:
                raise CheckFailed(_sim_failure("simulation of the netlist decoded from the bitstream", bsim))
            net.unlink()  # megabytes, like the unpacked .asc: both are regenerated from the bitstream in seconds
            (tmp / "build" / "unpacked.asc").unlink(missing_ok=True)
        shutil.rmtree(tmp / "build" / "sim", ignore_errors=True)
        prm = link_params(meta, clock_hz, baud)
        req_b, rep_b = frame_bytes(prm)
        rep = {
            "board": board.name, "part": board.part, "family": board.family, "clock_mhz": board.clock_mhz,
            "bitstream": bit["bitstream"], "bitstream_bytes": (tmp / bit["bitstream"]).stat().st_size,
            "fmax_mhz": bit["fmax_mhz"], "meets_clock": bit["meets_clock"], "cells": bit["cells"],
            "yosys_cells": bit["yosys_cells"], "build_seconds": bit["seconds"],
            "pins": {p.role if not p.role.startswith("led") else f"{p.role} ({LED_ROLES[int(p.role[3:])]})":
                     {"site": p.site, "active_low": p.active_low, "source": p.source} for p in board.pins},
            "constraints": con_name, "core": {"rtl": "core/", "note": core_note, "top": meta["top"],
                                              "beats_in": meta["stream"]["beats_in"],
                                              "beats_out": meta["stream"]["beats_out"],
                                              "output": meta["stream"]["output"]},
            "baud": baud, "clks_per_bit": prm["CLKS_PER_BIT"], "baud_error": round(err, 5),
            "request_bytes": req_b, "reply_bytes": rep_b, "payload_bytes": [request_len(meta), reply_len(meta)],
            "frames_per_s": round(frames_per_s(meta, baud), 2),
            "frames_per_s_note": "stop-and-wait, as kdhw.hw.board.Link drives it: baud / (10 bits x (request + "
                                 "reply bytes)); the core itself is far faster (II cycles per frame)",
            "sim": _sim_summary(sim, SIM_PARAMS),
            "bitstream_sim": _sim_summary(bsim, _netlist_params(meta, board, baud)) if bsim else None,
            "bitstream_sim_note": None if bsim else _no_bitstream_sim(board, bitstream_rows),
            "seconds": round(time.perf_counter() - t_all, 1),
        }
        write_json(tmp / "board.json", rep)
        write_text(tmp / "board.md", board_md(rep, board))
    return rep


def _sim_failure(what: str, sim: dict[str, Any]) -> str:
    parts = [f"{sim['exact_rows']}/{sim['rows']} frames bit-exact"]
    if sim["mismatches"]:
        m = sim["mismatches"][0]
        parts.append(f"first difference row {m['row']}: want {m['want']}, got {m['got']}")
    if not sim.get("protocol_ok", True):
        parts.append(f"protocol replies {sim['protocol']['replies']} != expected {sim['protocol']['expected']}")
    if not sim["leds_ok"]:
        parts.append(f"LED checks {sim['leds']}")
    if sim.get("tx_framing_errors"):
        parts.append(f"{sim['tx_framing_errors']} UART framing errors on TX")
    return f"{what} failed: " + "; ".join(parts)


def _sim_summary(sim: dict[str, Any], params: dict[str, int]) -> dict[str, Any]:
    keep = ("rows", "exact_rows", "protocol_ok", "protocol", "leds", "simulator", "design", "seconds", "cycles",
            "clks_per_bit")
    return {**{k: sim.get(k) for k in keep}, "parameters": params}


def _no_bitstream_sim(board: Board, rows: int) -> str:
    if board.family == "ecp5":
        return ("no open ECP5 bitstream-to-netlist decompiler gives a simulable netlist: prjtrellis' ecpunpack turns a "
                ".bit back into a textual config (tile bits), not a netlist; an equivalent check would need a "
                "simulation model of ECP5 tiles driven by that config (see docs/board.md)")
    return f"skipped (bitstream_rows = {rows})"


def board_md(rep: dict[str, Any], board: Board) -> str:
    """A page for people: what was built, how to load it, how to talk to it, what was proved."""
    sim, bsim = rep["sim"], rep["bitstream_sim"]
    port, port_note = (("/dev/ttyUSB1", "the iCEBreaker's UART is the FT2232H's second interface, usually /dev/ttyUSB1")
                       if board.family == "ice40" else
                       ("/dev/ttyUSB0", "the board's USB-serial port, usually /dev/ttyUSB0 on Linux"))
    load = (f"iceprog {rep['bitstream']}" if board.family == "ice40"
            else f"openFPGALoader --board ulx3s {rep['bitstream']}   (or fujprog {rep['bitstream']})")
    cells = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in rep["cells"].items())
    pins = "\n".join(f"| {role} | {p['site']} | {'low' if p['active_low'] else 'high'} | {p['source']} |"
                     for role, p in rep["pins"].items())
    bs = (f"{bsim['exact_rows']}/{bsim['rows']} frames bit-exact on the netlist decoded from `{rep['bitstream']}` "
          f"(iceunpack + icebox_vlog, {bsim['simulator']}, {bsim['clks_per_bit']} clocks per bit as in the "
          f"bitstream; protocol script {'passed' if bsim.get('protocol_ok') else 'not run'})" if bsim
          else rep["bitstream_sim_note"])
    return f"""# {rep['board']}: bitstream `{rep['bitstream']}`

Part {rep['part']} at {rep['clock_mhz']:g} MHz. Core: `core/` ({rep['core']['note']}), {rep['core']['beats_in']} input
beats and {rep['core']['beats_out']} output beats per frame ({rep['core']['output']}).

| | |
|---|---|
| fmax | {rep['fmax_mhz']:.1f} MHz (board clock {rep['clock_mhz']:g} MHz: {'met' if rep['meets_clock'] else 'MISSED'}) |
| cells | {cells} |
| bitstream | {rep['bitstream_bytes']:,} bytes |
| link | UART {rep['baud']} baud 8N1, {rep['clks_per_bit']} clocks per bit ({100 * rep['baud_error']:.2f} % rate error) |
| frame | request {rep['request_bytes']} bytes, reply {rep['reply_bytes']} bytes: {rep['frames_per_s']:.1f} frames/s stop-and-wait |

## Load and run

    {load}

then, from Python ({port_note}):

    from kdhw.hw.board import Link
    with Link("{port}", "path/to/this/folder", baud={rep['baud']}) as link:
        logits, classes = link.infer(x)      # x: (N, *input_shape) floats, quantized like the QONNX input

The request/reply format is in docs/board.md ("Link protocol"). Reset: the button (held, then {2 ** POR_BITS} clock
cycles) and at power-on. LEDs, in pin order: {', '.join(k.split(' ')[1].strip('()') for k in rep['pins'] if k.startswith('led'))}
(heartbeat blinks about once a second; error lights ~0.1 s after a NAK reply or a core tlast error).

## Pins

| role | site | active | source |
|---|---|---|---|
{pins}

## What was proved, and what needs the board

- Board-level simulation of the RTL ({sim['simulator']}, UART bit period {sim['clks_per_bit']} clocks in simulation): {sim['exact_rows']}/{sim['rows']}
  frames sent bit by bit into the RX pin back to back were answered bit-exact with the QONNX reference on the TX pin;
  a flipped payload bit and a wrong CRC got BAD_CHECK, a wrong LEN BAD_LEN, a cut-off request TIMEOUT, good frames
  after them and after line noise were exact, and a button reset in mid-frame gave no reply for that frame and exact
  replies after it (protocol {'passed' if sim.get('protocol_ok') else 'FAILED'}); LED checks: {sim['leds']}.
- Bitstream: {bs}.
- Needs the physical board: that the pins are wired as the catalog says (checked against the cited constraints
  files, not on hardware), the oscillator's frequency, the USB-serial adapter's timing (its latency timer adds
  up to 16 ms per reply on FTDI parts unless lowered), and power-on behaviour of the real configuration.
"""
