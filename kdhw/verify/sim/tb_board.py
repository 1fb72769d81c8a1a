"""cocotb bench for a ``kdhw board`` top: bytes in on the UART RX pin, bytes out of the TX pin, bit by bit.

It drives the board's pins only (``uart_rx``, ``button``; it reads ``uart_tx`` and ``led``; the oscillator
is in the simulation wrapper, ``kdhw.verify.board_sim.wrapper_verilog``), as the USB-serial chip and a person would, so the same bench runs on the RTL of the board top and on the netlist decoded from
its bitstream.  The bench is a plain executor of a script the runner writes (``kdhw.verify.board_sim`` builds
it and judges the result); the framing it parses is ``kdhw.hw.board.link``, the driver's own code.

``$KDHW_SIM_DIR/config.json``: ``clock_ns``, ``cpb`` (clock cycles per UART bit: the design's
CLKS_PER_BIT), ``button_active_low``, ``settle_cycles`` (reset time after the button is released),
``steps`` (the script) or ``pty`` (bridge a pseudo-terminal to the pins until ``stop`` appears).

Script steps, executed in order (each records what it saw into ``results.json``):

* ``{"stream": [hex...], "window": W}``: send requests back to back, at most W without a reply;
* ``{"send": hex, "press_after": k, "hold_cycles": h}``: send bytes; with ``press_after``, press the reset
  button after k bytes (mid-frame), hold it h cycles, release and let the reset finish;
* ``{"wait_replies": n, "limit_bits": m}``: wait until n replies in total have arrived (or m bit times);
* ``{"idle_bits": n}``: leave the line idle for n bit times.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, Timer, ValueChange

from kdhw.hw.board.link import ReplyParser


def _bit(sig: Any) -> int | None:
    v = sig.value
    return int(v) if v.is_resolvable else None


class Board:
    def __init__(self, dut: Any, cfg: dict[str, Any], run: Path) -> None:
        self.dut, self.cfg, self.run = dut, cfg, run
        self.bit_ns = cfg["cpb"] * cfg["clock_ns"]
        self.parser = ReplyParser()
        self.replies: list[dict[str, Any]] = []
        self.tx_bytes = 0
        self.tx_framing_errors = 0
        self.led_seen: list[set[int]] = []
        self.sink: Any = None  # pty mode: where the TX bytes go as well
        self.press_level = 0 if cfg["button_active_low"] else 1

    def cycle(self) -> int:
        return int(get_sim_time("ns") // self.cfg["clock_ns"])

    async def start(self) -> None:
        if not self.cfg.get("clock_inside"):  # else the simulation wrapper's oscillator runs it
            cocotb.start_soon(Clock(self.dut.clk, self.cfg["clock_ns"], unit="ns").start())
        self.dut.uart_rx.value = 1
        self.dut.button.value = 1 - self.press_level
        # A press at power-on too: the netlist decoded from a bitstream starts its flip-flops at 0 like the
        # chip, but a press makes the start independent of that
        await self.press(8)
        cocotb.start_soon(self.tx_monitor())
        cocotb.start_soon(self.led_monitor())

    async def press(self, hold_cycles: int) -> None:
        """Hold the button for ``hold_cycles`` clocks, release it, wait out the reset counter.  Timers, not
        ClockCycles: the same waveform without a Python wake-up per clock edge (2**16 of them per reset in the
        bitstream's netlist)."""
        await FallingEdge(self.dut.clk)
        self.dut.button.value = self.press_level
        await Timer(hold_cycles * self.cfg["clock_ns"], unit="ns")
        self.dut.button.value = 1 - self.press_level
        await Timer(self.cfg["settle_cycles"] * self.cfg["clock_ns"], unit="ns")

    async def send(self, data: bytes, press_after: int | None = None, hold_cycles: int = 0) -> None:
        """8N1, LSB first, one bit every ``cpb`` clocks, bytes back to back (no idle between them)."""
        await FallingEdge(self.dut.clk)
        for k, b in enumerate(data):
            if press_after is not None and k == press_after:
                self.dut.uart_rx.value = 1
                await self.press(hold_cycles)
                return
            # the same bits as one bit per bit time, but a run of equal bits is one wait (fewer wake-ups of
            # Python per simulated byte: the board sees exactly the same waveform)
            bits = [0, *((b >> i) & 1 for i in range(8)), 1]
            i = 0
            while i < 10:
                j = i
                while j < 10 and bits[j] == bits[i]:
                    j += 1
                self.dut.uart_rx.value = bits[i]
                await Timer((j - i) * self.bit_ns, unit="ns")
                i = j

    async def tx_monitor(self) -> None:
        """A UART receiver on the TX pin: start edge, then the middle of every bit."""
        tx = self.dut.uart_tx
        while True:
            await FallingEdge(tx)
            await Timer(self.bit_ns // 2, unit="ns")
            if _bit(tx) != 0:
                continue  # a glitch, not a start bit
            b = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                b |= (_bit(tx) or 0) << i
            await Timer(self.bit_ns, unit="ns")
            if _bit(tx) != 1:
                self.tx_framing_errors += 1
            self.tx_bytes += 1
            if self.sink is not None:
                self.sink(bytes([b]))
            for r in self.parser.feed(bytes([b])):
                self.replies.append({"seq": r.seq, "status": r.status, "payload": r.payload.hex(),
                                     "cycle": self.cycle()})

    async def led_monitor(self) -> None:
        """Which values each LED pin took in each step (every change is seen)."""
        led = self.dut.led
        while True:
            self.note_leds()
            await ValueChange(led)

    def note_leds(self) -> None:
        v = self.dut.led.value
        if v.is_resolvable and self.led_seen:
            iv = int(v)
            for i, seen in enumerate(self.led_seen[:len(self.dut.led)]):
                seen.add((iv >> i) & 1)

    async def wait_replies(self, n: int, limit_bits: int) -> None:
        for _ in range(limit_bits // 4 + 1):
            if len(self.replies) >= n:
                return
            await Timer(4 * self.bit_ns, unit="ns")

    def leds_now(self) -> list[int | None]:
        v = self.dut.led.value
        n = len(self.dut.led)
        if not v.is_resolvable:
            return [None] * n
        return [(int(v) >> i) & 1 for i in range(n)]


@cocotb.test()
async def board_script(dut: Any) -> None:
    run = Path(os.environ["KDHW_SIM_DIR"])
    cfg = json.loads((run / "config.json").read_text())
    b = Board(dut, cfg, run)
    n_led = len(dut.led)
    t_wall = time.perf_counter()
    await b.start()
    if cfg.get("pty"):
        await _pty_bridge(b, cfg, run)
        return
    steps_out = []
    for step in cfg["steps"]:
        seen = [set() for _ in range(n_led)]
        b.led_seen = seen  # the monitor fills this step's sets
        b.note_leds()  # the level at the start of the step
        first = len(b.replies)
        c0 = b.cycle()
        if "stream" in step:
            reqs = [bytes.fromhex(h) for h in step["stream"]]
            w = int(step.get("window", 2))
            for i, r in enumerate(reqs):
                await b.wait_replies(first + i - w + 1, step.get("limit_bits", 10**7))
                await b.send(r)
            await b.wait_replies(first + len(reqs), step.get("limit_bits", 10**7))
        elif "send" in step:
            await b.send(bytes.fromhex(step["send"]), step.get("press_after"), step.get("hold_cycles", 0))
        elif "wait_replies" in step:
            await b.wait_replies(step["wait_replies"], step["limit_bits"])
        elif "idle_bits" in step:
            await Timer(step["idle_bits"] * b.bit_ns, unit="ns")
        steps_out.append({"replies": [first, len(b.replies)], "cycles": b.cycle() - c0,
                          "leds_seen": [sorted(s) for s in seen], "leds_end": b.leds_now()})
    b.led_seen = []
    (run / "results.json").write_text(json.dumps({
        "steps": steps_out, "replies": b.replies, "tx_bytes": b.tx_bytes, "tx_framing_errors": b.tx_framing_errors,
        "parser_dropped": b.parser.dropped, "parser_skipped": b.parser.skipped, "cycles": b.cycle(),
        "wall_s": time.perf_counter() - t_wall,
    }))


async def _pty_bridge(b: Board, cfg: dict[str, Any], run: Path) -> None:
    """A pseudo-terminal stands in for the USB serial port: what a host writes to its slave side goes onto
    the RX pin, what the TX pin sends comes back on it.  Runs until ``stop`` appears in the run folder."""
    import fcntl
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    b.sink = lambda data: os.write(master, data)
    (run / "pty.tmp").write_text(os.ttyname(slave))
    os.replace(run / "pty.tmp", run / "pty")
    deadline = time.monotonic() + float(cfg.get("max_wall_s", 300))
    rx_bytes = 0
    try:
        while not (run / "stop").exists() and time.monotonic() < deadline:
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                rx_bytes += len(data)
                await b.send(data)
            else:
                await Timer(16 * b.bit_ns, unit="ns")
        await Timer(40 * b.bit_ns, unit="ns")  # let a reply in flight finish
    finally:
        (run / "results.json").write_text(json.dumps({"pty": True, "rx_bytes": rx_bytes, "tx_bytes": b.tx_bytes,
                                                      "replies": b.replies, "cycles": b.cycle()}))
        os.close(master)
        os.close(slave)
