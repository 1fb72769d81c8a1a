"""Board-level simulation: the whole board top (UART, framing, reset, LEDs, core) driven through its pins.

``simulate_board`` writes a script for the bench (``kdhw.verify.sim.tb_board``), runs it through
``kdhw.verify.sim.runner.run_board_bench`` and judges what came back against the QONNX reference:

1. ``rows`` requests back to back (the next request starts right after the previous one, up to two
   unanswered), every reply bit-exact with the reference's output beats;
2. the protocol: a request with a flipped payload byte and one with a wrong CRC byte (BAD_CHECK), a wrong LEN
   (BAD_LEN), a request cut off mid-payload (TIMEOUT), line noise, then good requests answered exactly (the
   parser resynchronised), the reset button pressed in the middle of a request (no reply for it; the next
   two requests exact);
3. the LEDs: heartbeat blinking, error LED dark during clean traffic and lit after a NAK, reset LED lit
   while the button is held (on boards with those LEDs).

The RTL runs with a tiny UART bit period (``SIM_PARAMS``) so that hundreds of frames take seconds; the
netlist decoded from a bitstream runs with the bitstream's own parameters (nothing can be overridden in it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kdhw.errors import CheckFailed

from kdhw.hw.board.link import encode_request, reply_payloads, request_len, request_payloads
from kdhw.hw.board.top import ST_BAD_CHECK, ST_BAD_LEN, ST_OK, ST_TIMEOUT, STATUS_NAMES

# Simulation-only overrides of kdhw_board's parameters: 8 clocks per UART bit (the receiver needs >= 4), a
# timeout of 4 byte times, a 32-cycle reset, fast LED timers and heartbeat.
SIM_CPB = 8
SIM_PARAMS = {"CLKS_PER_BIT": SIM_CPB, "TIMEOUT_CYCLES": 40 * SIM_CPB, "POR_BITS": 5, "LED_BITS": 6, "HB_BIT": 6}
CLOCK_NS = 10
MAX_MISMATCHES = 10
# Sequence numbers of the protocol script (distinct from the data frames' 0..rows-1 mod 256 only by position:
# replies are matched by position and SEQ together)
_P_SEQ = 0xE0


def rtl_sources(root: Path, meta: dict[str, Any]) -> list[Path]:
    """The board top's sources in a board folder: the core's files, then the link and the top."""
    return [root / "core" / f for f in meta["verilog_files"]] + [root / "hdl" / f for f in
                                                                  ("kdhw_uart.v", "kdhw_link.v", "kdhw_board.v")]


def wrapper_verilog(top: str, n_led: int, params: dict[str, int] | None = None, clock_ns: int = CLOCK_NS) -> str:
    """``kdhw_board_sim``: the board top with its oscillator, the only thing the bench does not drive.

    The clock toggles inside the simulator: driven from cocotb every edge would cross into Python about two
    million times for 200 frames (measured: 45 s in Icarus, 17 s in Verilator, most of it clock callbacks).
    """
    half = clock_ns / 2
    prm = f" #({', '.join(f'.{k}({v})' for k, v in params.items())})" if params else ""
    return f"""`timescale 1 ns / 1 ps
module kdhw_board_sim (input uart_rx, output uart_tx, input button, output [{n_led - 1}:0] led, output reg clk);
    initial clk = 1'b0;
    always #{half:g} clk = ~clk;
    {top}{prm} dut (.clk(clk), .uart_rx(uart_rx), .uart_tx(uart_tx), .button(button), .led(led));
endmodule
"""


def _script(meta: dict[str, Any], codes: np.ndarray, rows: int, protocol: bool, cpb: int, timeout_cycles: int,
            settle: int) -> tuple[list[dict[str, Any]], list[tuple[int, int, int | None]]]:
    """(bench steps, expected protocol replies as (seq, status, row whose payload an OK carries))."""
    pay = request_payloads(meta, codes)
    steps: list[dict[str, Any]] = [{"stream": [encode_request(i & 0xFF, pay[i]).hex() for i in range(rows)],
                                    "window": 2, "name": "frames"}]
    expect: list[tuple[int, int, int | None]] = []
    if not protocol:
        return steps, expect
    n = len(codes)
    r = [i % n for i in range(6)]
    timeout_bits = timeout_cycles // cpb + 20
    s = _P_SEQ
    flipped = bytearray(encode_request(s, pay[r[0]]))
    flipped[5 + len(pay[r[0]]) // 2] ^= 0x10  # one payload bit: the CRC must catch it
    wrong_crc = bytearray(encode_request(s + 1, pay[r[0]]))
    wrong_crc[-1] ^= 0xFF
    bad_len = encode_request(s + 2, pay[r[0]] + b"\x00")[:5]  # the header alone: LEN is one too many
    cut = encode_request(s + 3, pay[r[0]])[:5 + max(1, request_len(meta) // 2)]
    good1 = encode_request(s + 4, pay[r[1]])
    noise = bytes([0x00, 0xA5, 0x13, 0xFF, 0x5A])
    good2 = encode_request(s + 5, pay[r[2]])
    reset_mid = encode_request(s + 6, pay[r[3]])
    after = [encode_request(s + 7, pay[r[4]]).hex(), encode_request(s + 8, pay[r[5]]).hex()]
    steps += [
        {"send": bytes(flipped).hex(), "name": "flipped_payload_bit"},
        {"send": bytes(wrong_crc).hex(), "name": "wrong_crc"},
        {"send": bad_len.hex(), "name": "bad_len"},
        {"wait_replies": rows + 3, "limit_bits": 400},
        {"send": cut.hex(), "name": "cut_off"},
        {"idle_bits": timeout_bits, "name": "timeout"},
        {"wait_replies": rows + 4, "limit_bits": 400},
        {"send": good1.hex(), "name": "good_after_naks"},
        {"send": noise.hex(), "name": "noise"},
        {"send": good2.hex(), "name": "good_after_noise"},
        {"wait_replies": rows + 6, "limit_bits": 20 * len(good2) + 400},
        {"send": reset_mid.hex(), "press_after": len(reset_mid) // 2, "hold_cycles": 4 * cpb, "name": "reset_mid_frame"},
        {"idle_bits": 30, "name": "after_reset"},
        {"stream": after, "window": 2, "name": "frames_after_reset"},
    ]
    expect = [(s, ST_BAD_CHECK, None), (s + 1, ST_BAD_CHECK, None), (s + 2, ST_BAD_LEN, None),
              (s + 3, ST_TIMEOUT, None), (s + 4, ST_OK, r[1]), (s + 5, ST_OK, r[2]), (s + 7, ST_OK, r[4]),
              (s + 8, ST_OK, r[5])]
    return steps, expect


def judge(meta: dict[str, Any], res: dict[str, Any], steps: list[dict[str, Any]], exp_codes: np.ndarray, rows: int,
          expect: list[tuple[int, int, int | None]], led_roles: list[str], check_heartbeat: bool) -> dict[str, Any]:
    """Compare a bench run with the expected replies; public so a test can show a flipped bit is caught."""
    want = reply_payloads(meta, exp_codes)
    reps = res["replies"]
    data = reps[:rows]
    exact, mism = 0, []
    for i in range(rows):
        got = data[i] if i < len(data) else None
        ok = got is not None and got["seq"] == (i & 0xFF) and got["status"] == ST_OK and \
            bytes.fromhex(got["payload"]) == want[i]
        exact += ok
        if not ok and len(mism) < MAX_MISMATCHES:
            mism.append({"row": i, "want": want[i].hex(), "got": None if got is None else
                         {"seq": got["seq"], "status": STATUS_NAMES.get(got["status"], got["status"]),
                          "payload": got["payload"]}})
    out: dict[str, Any] = {"rows": rows, "exact_rows": int(exact), "mismatches": mism,
                           "cycles": res.get("cycles"), "tx_framing_errors": res.get("tx_framing_errors"),
                           "parser_dropped": res.get("parser_dropped")}
    named = {st.get("name"): got for st, got in zip(steps, res["steps"]) if st.get("name")}
    leds: dict[str, Any] = {}
    role = {r: i for i, r in enumerate(led_roles)}
    clean = named.get("frames")
    if clean is not None and "error" in role:
        leds["error_dark_in_clean_traffic"] = clean["leds_seen"][role["error"]] == [0]
    if clean is not None and "heartbeat" in role and check_heartbeat:
        leds["heartbeat_blinks"] = clean["leds_seen"][role["heartbeat"]] == [0, 1]
    if clean is not None and "frame_ok" in role:
        leds["frame_led_lit"] = 1 in clean["leds_seen"][role["frame_ok"]]
    if expect:
        got_p = [(r["seq"], r["status"], r["payload"]) for r in reps[rows:]]
        want_p = [(s, st, want[row].hex() if row is not None else "") for s, st, row in expect]
        out["protocol"] = {
            "replies": [{"seq": s, "status": STATUS_NAMES.get(st, st), "exact": p == (want[row].hex()
                                                                                      if row is not None else "")}
                        for (s, st, p), (_, _, row) in zip(got_p, expect + [(0, 0, None)] * len(got_p))],
            "expected": [{"seq": s, "status": STATUS_NAMES[st]} for s, st, _ in expect],
            "no_reply_to_reset_frame": all(r["seq"] != _P_SEQ + 6 for r in reps[rows:]),
        }
        out["protocol_ok"] = got_p == want_p and out["protocol"]["no_reply_to_reset_frame"]
        if "error" in role and "flipped_payload_bit" in named:
            leds["error_lit_after_nak"] = 1 in named["bad_len"]["leds_seen"][role["error"]] or \
                1 in named["wrong_crc"]["leds_seen"][role["error"]]
        if "in_reset" in role and "reset_mid_frame" in named:
            leds["reset_led_lit_while_pressed"] = 1 in named["reset_mid_frame"]["leds_seen"][role["in_reset"]]
    out["leds"] = leds
    out["leds_ok"] = all(leds.values())
    out["ok"] = out["exact_rows"] == rows and out.get("protocol_ok", True) and out["leds_ok"] and \
        not res.get("tx_framing_errors")
    return out


def _led_levels(res: dict[str, Any], active_low: list[bool]) -> dict[str, Any]:
    """Raw pin values -> lit (1) / dark (0), per the pins' polarity."""
    for st in res["steps"]:
        st["leds_seen"] = [sorted({v ^ int(low) for v in seen}) for seen, low in zip(st["leds_seen"], active_low)]
    return res


def simulate_board(root: str | Path, meta: dict[str, Any], codes: np.ndarray, exp_codes: np.ndarray,
                   led_roles: list[str], led_active_low: list[bool], button_active_low: bool,
                   simulator: str = "icarus", protocol: bool = True, netlist: dict[str, Any] | None = None,
                   work: str | Path | None = None) -> dict[str, Any]:
    """Run the board bench on ``len(codes)`` rows (+ the protocol script) and judge it.

    ``netlist``: None for the RTL of ``root``'s board top (with ``SIM_PARAMS``), else ``{"sources": [...],
    "top": name, "params": the bitstream's real parameters}`` for a netlist decoded from a bitstream.
    """
    from kdhw.verify.sim.runner import run_board_bench

    root = Path(root).resolve()
    rows = len(codes)
    if netlist is None:
        sources, top, prm, override = rtl_sources(root, meta), "kdhw_board", SIM_PARAMS, SIM_PARAMS
    else:
        sources, top, prm, override = netlist["sources"], netlist["top"], netlist["params"], None
    cpb = int(prm["CLKS_PER_BIT"])
    settle = 2 ** int(prm["POR_BITS"]) + 4 * cpb
    steps, expect = _script(meta, codes, rows, protocol, cpb, int(prm["TIMEOUT_CYCLES"]), settle)
    cfg = {"clock_ns": CLOCK_NS, "cpb": cpb, "button_active_low": button_active_low, "settle_cycles": settle,
           "steps": steps, "clock_inside": True}
    with _work_dir(work, "kdhw-board-sim-") as work:
        run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        (run / "config.json").write_text(json.dumps(cfg))
        wrap = work / f"kdhw_board_sim_{'rtl' if netlist is None else 'bits'}.v"
        wrap.write_text(wrapper_verilog(top, len(led_roles), override))
        t0 = time.perf_counter()
        # cells_sim.v gives unconnected primitive inputs defaults with a SystemVerilog construct unless told not
        # to; icebox_vlog connects every input it uses, and the define keeps the file Verilog-2005
        defines = None if netlist is None else {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1}
        log = run_board_bench([*sources, wrap], "kdhw_board_sim", run,
                              work / f"build-{simulator}-{'rtl' if netlist is None else 'bits'}", simulator,
                              defines=defines)
        wall = time.perf_counter() - t0
        try:
            res = json.loads((run / "results.json").read_text())
        except (OSError, ValueError):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else "(no log)"
            raise CheckFailed(f"{simulator} board simulation ended without results:\n{tail}") from None
    res = _led_levels(res, led_active_low)
    out = judge(meta, res, steps, exp_codes, rows, expect, led_roles, check_heartbeat=netlist is None)
    out.update(simulator=simulator, seconds=round(wall, 2), bench_seconds=round(res.get("wall_s", 0.0), 2),
               clks_per_bit=cpb, design="bitstream netlist" if netlist else "board top RTL")
    return out


@contextlib.contextmanager
def _work_dir(work: str | Path | None, prefix: str) -> Iterator[Path]:
    """``work`` (created), or a temporary folder removed afterwards when none is given."""
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
        yield Path(work)
        return
    owned = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(owned)
    finally:
        shutil.rmtree(owned, ignore_errors=True)


@contextlib.contextmanager
def board_pty(root: str | Path, meta: dict[str, Any], n_led: int, button_active_low: bool, simulator: str = "icarus",
              max_wall_s: float = 300.0, work: str | Path | None = None) -> Iterator[str]:
    """A pseudo-terminal wired to the simulated board's UART pins (``SIM_PARAMS``), for a host driver.

    Yields the pty's path (open it like ``/dev/ttyUSB1``: ``Link(path, root)``); the simulation runs in a
    thread until the ``with`` block ends.  Simulated time is far slower than real time at the real baud
    rate, so give the driver a generous timeout.
    """

    root = Path(root).resolve()
    with _work_dir(work, "kdhw-board-pty-") as work:
        yield from _pty_session(root, meta, n_led, button_active_low, simulator, max_wall_s, work)


def _pty_session(root: Path, meta: dict[str, Any], n_led: int, button_active_low: bool, simulator: str,
                 max_wall_s: float, work: Path) -> Iterator[str]:
    from kdhw.verify.sim.runner import run_board_bench

    run = Path(tempfile.mkdtemp(prefix="pty-", dir=work))
    cpb = SIM_PARAMS["CLKS_PER_BIT"]
    cfg = {"clock_ns": CLOCK_NS, "cpb": cpb, "button_active_low": button_active_low, "pty": True, "clock_inside": True,
           "settle_cycles": 2 ** SIM_PARAMS["POR_BITS"] + 4 * cpb, "max_wall_s": max_wall_s}
    (run / "config.json").write_text(json.dumps(cfg))
    err: list[BaseException] = []

    wrap = work / "kdhw_board_sim_rtl.v"
    wrap.write_text(wrapper_verilog("kdhw_board", n_led, SIM_PARAMS))

    def target() -> None:
        try:
            run_board_bench([*rtl_sources(root, meta), wrap], "kdhw_board_sim", run, work / f"build-{simulator}-rtl",
                            simulator)
        except BaseException as e:  # reported to the caller below
            err.append(e)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + max_wall_s
        while not (run / "pty").is_file():
            if err or not th.is_alive():
                raise CheckFailed(f"board simulation for the pty bridge stopped before it started: {err[:1]}")
            if time.monotonic() > deadline:
                raise CheckFailed("board simulation for the pty bridge did not start in time")
            time.sleep(0.1)
        yield (run / "pty").read_text().strip()
    finally:
        (run / "stop").write_text("")
        th.join(timeout=120)
