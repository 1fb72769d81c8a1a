"""Constraints files (iCE40 PCF, ECP5 LPF) from the board catalog's ``pins``.

The port names are those of ``kdhw_board`` (``top.py``); the sites come from ``boards/<board>.yaml``, each with
the source it was checked against, copied into the file as a comment so the file can be audited on its own.
Inputs from the USB-serial chip and the button get the FPGA's pull-up: an unplugged or idle line then reads
as UART idle / button released instead of floating.
"""

from __future__ import annotations

from kdhw.boards import Board, Pin
from kdhw.errors import InputError

# ULX3S banks run at 3.3 V; ulx3s_v20.lpf uses LVCMOS33 for every pin kdhw places (DRIVE=4 for outputs).
ECP5_IO = "LVCMOS33"


def _ports(board: Board) -> list[tuple[str, Pin, str]]:
    """(port name in kdhw_board, pin, direction)."""
    m = board.pin_map()
    out = [("clk", m["clk"], "in"), ("uart_rx", m["uart_rx"], "in"), ("uart_tx", m["uart_tx"], "out"),
           ("button", m["button"], "in")]
    leds = board.leds()
    # yosys names a one-bit vector port by its bare name: `led`, not `led[0]`
    out += [(f"led[{i}]" if len(leds) > 1 else "led", p, "out") for i, p in enumerate(leds)]
    return out


def pcf(board: Board) -> str:
    """nextpnr-ice40 PCF: ``set_io`` per pin (pull-ups on inputs) and the clock's ``set_frequency``."""
    lines = [f"# kdhw board top for {board.name} ({board.part}); pins from boards/{board.name}.yaml"]
    for port, pin, d in _ports(board):
        lines.append(f"# {port}: {pin.source}")
        pull = "-pullup yes " if d == "in" and port != "clk" else ""
        lines.append(f"set_io -nowarn {pull}{port} {pin.site}")
    lines.append(f"set_frequency clk {board.clock_mhz:g}")
    return "\n".join(lines) + "\n"


def pcf_plain(board: Board) -> str:
    """``set_io PORT PIN`` lines only: icebox_vlog's PCF reader takes no options (-nowarn, -pullup) and no
    set_frequency; it uses the file to name the netlist's ports after the design's."""
    return "".join(f"set_io {port} {pin.site}\n" for port, pin, _ in _ports(board))


def lpf(board: Board) -> str:
    """nextpnr-ecp5 LPF: ``LOCATE``/``IOBUF`` per pin and the clock's ``FREQUENCY``."""
    lines = [f"# kdhw board top for {board.name} ({board.part}); pins from boards/{board.name}.yaml",
             "BLOCK RESETPATHS ;", "BLOCK ASYNCPATHS ;"]
    for port, pin, d in _ports(board):
        lines.append(f"# {port}: {pin.source}")
        lines.append(f'LOCATE COMP "{port}" SITE "{pin.site}" ;')
        pull = "NONE" if port == "clk" or (d == "out" and port != "uart_tx") else "UP"
        drive = " DRIVE=4" if d == "out" else ""
        lines.append(f'IOBUF PORT "{port}" PULLMODE={pull} IO_TYPE={ECP5_IO}{drive} ;')
    lines.append(f'FREQUENCY PORT "clk" {board.clock_mhz:g} MHZ ;')
    return "\n".join(lines) + "\n"


def constraints(board: Board) -> tuple[str, str]:
    """(file name, text) for the board's family."""
    if board.family == "ice40":
        return "board.pcf", pcf(board)
    if board.family == "ecp5":
        return "board.lpf", lpf(board)
    raise InputError(f"board {board.name}: no open bitstream flow for family {board.family} (open flows: ice40, ecp5)")
