"""cocotb testbench for a kdhw RTL top (``clk``, packed ``model_inp``, packed ``model_out``).

Driven by ``kdhw.verify.sim.runner.simulate_rtl``, which writes into ``$KDHW_SIM_DIR``: ``config.json`` (latency,
widths, rows), ``inputs.hex`` (one packed input word per line) and, when expectations exist,
``expected.hex``.  The bench writes ``outputs.hex`` and one ``<test>.json`` per test back there.

Inputs change and outputs are sampled on falling edges, so nothing races the rising edge that the
design's registers use: the word set at falling edge k is captured at the next rising edge, and what is
read at falling edge k is the state after the previous rising edge.  With a pipeline latency of L, the
result of the word set at falling edge t is therefore read at falling edge t + L + 1.
"""

from __future__ import annotations

import json
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from tb_common import CLOCK_NS, MAX_REPORTED_MISMATCHES
from tb_common import setup as _setup
from tb_common import words as _words


def _read(dut: Any) -> int | None:
    """The output word, or None while any bit is X/Z (no reset: the pipeline starts unknown)."""
    try:
        return int(dut.model_out.value.to_unsigned())
    except ValueError:
        return None


async def _start(dut: Any, zero: int, cycles: int) -> None:
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.model_inp.value = zero
    for _ in range(cycles):
        await FallingEdge(dut.clk)


def _element_diff(cfg: dict[str, Any], got: int | None, want: int) -> list[dict[str, Any]]:
    """Which output elements differ, with both codes: the first thing a hardware engineer asks."""
    if got is None:
        return [{"element": None, "got": "X", "expected": hex(want)}]
    w, n = cfg["out_bits"], cfg["n_outputs"]
    mask = (1 << w) - 1
    diffs = []
    for j in range(n):
        g, e = (got >> (j * w)) & mask, (want >> (j * w)) & mask
        if g != e:
            diffs.append({"element": j, "got": g, "expected": e, "bits_differing": bin(g ^ e).count("1")})
    return diffs


@cocotb.test()
async def impulse_latency(dut: Any) -> None:
    """One non-zero vector between zero vectors: the output must change exactly L edges after capture.

    The vector is one whose result differs from the all-zero input's result (chosen by the runner), and
    the output must return to the zero-input result on the next cycle: a one-cycle pulse also shows that
    a new vector can be accepted every clock.
    """
    d, cfg = _setup()
    lat = int(cfg["latency_reported"])
    zero = 0
    await _start(dut, zero, lat + 4)
    base = _read(dut)
    await FallingEdge(dut.clk)
    stable = _read(dut) == base and base is not None
    impulse = int(cfg["impulse_word"], 16)
    dut.model_inp.value = impulse  # set at falling edge F0, captured at the next rising edge
    samples: list[int | None] = []
    for _ in range(lat + 8):
        await FallingEdge(dut.clk)
        dut.model_inp.value = zero
        samples.append(_read(dut))  # samples[k] = state after k+1 rising edges since F0
    changed = [k for k, s in enumerate(samples) if s != base]
    measured = changed[0] if changed else None
    pulse_len = len(changed)
    res = {
        "latency_reported": lat,
        "latency_measured": measured,
        "pulse_cycles": pulse_len,
        "baseline_stable": stable,
        "impulse_row": cfg["impulse_row"],
        "baseline": None if base is None else hex(base),
        "impulse_output": None if measured is None else hex(samples[measured] or 0),
    }
    (d / "impulse_latency.json").write_text(json.dumps(res, indent=1))
    assert stable, "the output for a constant all-zero input is not stable (or is X)"
    assert measured is not None, f"the output never changed within {lat + 8} cycles after the impulse"
    assert measured == lat, f"output changed {measured} clock edges after capture; rtl.json says {lat}"
    assert pulse_len == 1, f"a one-cycle input pulse changed the output for {pulse_len} cycles"


@cocotb.test()
async def stream_vectors(dut: Any) -> None:
    """One vector per clock, back to back; every output bit compared at the reported latency."""
    d, cfg = _setup()
    lat = int(cfg["latency_reported"])
    rows = _words(d / "inputs.hex")
    exp_file = d / "expected.hex"
    expected = _words(exp_file) if exp_file.is_file() else None
    await _start(dut, 0, lat + 4)
    samples: list[int | None] = []
    n = len(rows)
    for k in range(n + lat + 2):
        await FallingEdge(dut.clk)
        samples.append(_read(dut))
        dut.model_inp.value = rows[k] if k < n else 0
    # The word set in iteration t is captured at the rising edge after it; its result is read in
    # iteration t + lat + 1.
    got = samples[lat + 1:lat + 1 + n]
    (d / "outputs.hex").write_text("\n".join("x" if g is None else format(g, "x") for g in got) + "\n")
    res: dict[str, Any] = {"rows": n, "latency_reported": lat}
    if expected is not None:
        bad = [t for t in range(n) if got[t] != expected[t]]
        res["exact_rows"] = n - len(bad)
        res["mismatches"] = [{"row": t, "elements": _element_diff(cfg, got[t], expected[t])}
                             for t in bad[:MAX_REPORTED_MISMATCHES]]
        # Where do the outputs line up, if not at the reported latency? (a wrong latency shifts them all)
        best = max(range(0, lat + 2), key=lambda off: sum(
            samples[off + 1 + t] == expected[t] for t in range(min(n, len(samples) - off - 1))))
        res["best_alignment"] = best
        (d / "stream_vectors.json").write_text(json.dumps(res, indent=1))
        for m in res["mismatches"][:5]:
            dut._log.error("row %d differs: %s", m["row"], m["elements"][:4])
        assert not bad, (f"{len(bad)} of {n} rows differ from the expected outputs (first: row {bad[0]}); "
                         f"outputs line up best at latency {best}, rtl.json says {lat}")
    else:
        (d / "stream_vectors.json").write_text(json.dumps(res, indent=1))
